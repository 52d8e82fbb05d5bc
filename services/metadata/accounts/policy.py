"""Who may do what: repository name patterns and the intersection of requested and granted scopes.

Patterns are repository names in which `*` matches any run of characters, slashes included:
`team-a/*` matches `team-a/x` and `team-a/x/y` (not `team-a` itself), `*` matches everything.
Actions on repositories are `pull`, `push` and `delete` (`*` in a request means all three).
Admins may do everything, including the `registry:catalog:*` scope; anonymous callers may only
`pull`, and only where an anonymous pull pattern matches; every account may also do what
anonymous callers may.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from services.common.errors import ErrorKind, RegistryError

REPOSITORY_ACTIONS = ("pull", "push", "delete")
_PATTERN = re.compile(r"[a-z0-9*][a-z0-9._/*-]{0,254}")


@dataclass(frozen=True, slots=True)
class Scope:
    """One requested or granted scope (`type:name:actions`)."""

    type: str
    name: str
    actions: tuple[str, ...]


def validate_pattern(pattern: str) -> str:
    """The pattern, or NAME_INVALID when it has characters a repository name cannot have."""
    if not _PATTERN.fullmatch(pattern) or "**" in pattern:
        raise RegistryError(
            ErrorKind.NAME_INVALID,
            f"invalid repository pattern {pattern!r}: use a repository name where `*` matches anything "
            "(`team-a/*`, `*`)",
            {"pattern": pattern},
        )
    return pattern


def normalize_actions(actions: Iterable[str]) -> tuple[str, ...]:
    """Sorted known actions; `*` expands to all; an unknown action raises DENIED."""
    wanted: set[str] = set()
    for action in actions:
        action = action.strip()
        if not action:
            continue
        if action == "*":
            wanted.update(REPOSITORY_ACTIONS)
        elif action in REPOSITORY_ACTIONS:
            wanted.add(action)
        else:
            raise RegistryError(
                ErrorKind.DENIED, f"unknown action {action!r}: use pull, push or delete", {"action": action}
            )
    return tuple(a for a in REPOSITORY_ACTIONS if a in wanted)


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def matches(pattern: str, name: str) -> bool:
    """True when repository `name` matches `pattern` (see the module docstring)."""
    return _compiled(pattern).fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Subject:
    """What one caller may do: admin, or per-pattern actions (anonymous: `anonymous_pull` only)."""

    is_admin: bool
    grants: Mapping[str, tuple[str, ...]]

    def repository_actions(self, name: str) -> set[str]:
        if self.is_admin:
            return set(REPOSITORY_ACTIONS)
        allowed: set[str] = set()
        for pattern, actions in self.grants.items():
            if matches(pattern, name):
                allowed.update(actions)
        return allowed


def anonymous_grants(patterns: Sequence[str]) -> dict[str, tuple[str, ...]]:
    return {pattern: ("pull",) for pattern in patterns}


def intersect(subject: Subject, requested: Iterable[Scope], *, valid_name: Callable[[str], bool]) -> list[Scope]:
    """For each requested scope, the actions both requested and allowed (possibly none).

    Never an error for what is not granted (the token spec: the intersection is the answer).
    Unknown types or actions, and repository names that are not valid names, get nothing.
    """
    granted: list[Scope] = []
    for scope in requested:
        actions: tuple[str, ...] = ()
        if scope.type == "repository" or scope.type.startswith("repository("):
            if valid_name(scope.name):
                allowed = subject.repository_actions(scope.name)
                asked = {a for a in scope.actions if a in REPOSITORY_ACTIONS}
                if "*" in scope.actions:
                    asked.update(REPOSITORY_ACTIONS)
                actions = tuple(a for a in REPOSITORY_ACTIONS if a in asked and a in allowed)
        elif scope.type == "registry" and scope.name == "catalog" and subject.is_admin:
            actions = ("*",) if "*" in scope.actions else ()
        granted.append(Scope(scope.type, scope.name, actions))
    return granted

