"""Docker token scopes (`docker-auth-scope.md`): parsing, formatting, and the `access` claim.

`resourcetype:resourcename:action[,action]*`, several separated by spaces. The resource name may
contain one ':' (a `host:port` prefix), so the actions are split off from the RIGHT and the type
from the LEFT: `repository:localhost:5000/app:pull` is type `repository`, name
`localhost:5000/app`, actions `pull`. A resource class (`repository(plugin)`) is deprecated and
treated as `repository`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_TYPE = re.compile(r"[a-z0-9]+(\([a-z0-9]+\))?")
_ACTION = re.compile(r"[a-z]*|\*")

CATALOG_NAME = "catalog"


@dataclass(frozen=True, slots=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def _base_type(text: str) -> str:
    return text.split("(", 1)[0]


def parse_scope(text: str) -> Scope | None:
    """One scope, or None when it does not follow the grammar (the caller then ignores it)."""
    head, sep, actions = text.rpartition(":")
    if not sep:
        return None
    kind, sep, name = head.partition(":")
    if not sep or not name or not _TYPE.fullmatch(kind):
        return None
    parsed = tuple(a for a in actions.split(",") if a)
    if not all(_ACTION.fullmatch(a) for a in parsed):
        return None
    return Scope(_base_type(kind), name, parsed)


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Every well-formed scope in `values` (each may hold several, space-separated)."""
    scopes: list[Scope] = []
    for value in values:
        for item in value.split():
            scope = parse_scope(item)
            if scope is not None:
                scopes.append(scope)
    return scopes


def repository_scope(name: str, *actions: str) -> Scope:
    return Scope("repository", name, tuple(actions))


CATALOG_SCOPE = Scope("registry", CATALOG_NAME, ("*",))


@dataclass(frozen=True, slots=True)
class Access:
    """The `access` claim of a verified token: (type, name) → actions."""

    entries: dict[tuple[str, str], frozenset[str]]

    @classmethod
    def from_claim(cls, claim: object) -> Access:
        """Reads the claim leniently: malformed entries grant nothing."""
        entries: dict[tuple[str, str], frozenset[str]] = {}
        if isinstance(claim, list):
            for item in claim:
                if not isinstance(item, dict):
                    continue
                kind, name, actions = item.get("type"), item.get("name"), item.get("actions")
                if not (isinstance(kind, str) and isinstance(name, str) and isinstance(actions, list)):
                    continue
                key = (_base_type(kind), name)
                entries[key] = entries.get(key, frozenset()) | {a for a in actions if isinstance(a, str)}
        return cls(entries)

    def allows(self, kind: str, name: str, action: str) -> bool:
        actions = self.entries.get((kind, name), frozenset())
        return action in actions or "*" in actions

    def names_with(self, kind: str, action: str) -> list[str]:
        """Resource names of `kind` on which `action` is granted, sorted."""
        return sorted(name for (k, name), actions in self.entries.items()
                      if k == kind and (action in actions or "*" in actions))


def access_claim(scopes: Iterable[Scope]) -> list[dict[str, object]]:
    """The JWT `access` claim for granted scopes (entries without actions are left out)."""
    merged: dict[tuple[str, str], list[str]] = {}
    for scope in scopes:
        if not scope.actions:
            continue
        actions = merged.setdefault((scope.type, scope.name), [])
        actions.extend(a for a in scope.actions if a not in actions)
    return [{"type": kind, "name": name, "actions": actions} for (kind, name), actions in merged.items()]
