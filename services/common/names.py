"""Repository names and tags, validated with the OCI distribution spec's grammar."""

from __future__ import annotations

import re

from services.common.errors import ErrorKind, RegistryError

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

# Many clients cap host + "/" + name at 255 characters; the registry caps the name itself.
MAX_NAME_LENGTH = 255


def validate_repository(name: str) -> str:
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise RegistryError(
            ErrorKind.NAME_INVALID,
            f"invalid repository name {name!r}: use lowercase path components of [a-z0-9] joined by "
            f"'.', '_', '__' or '-', separated by '/', at most {MAX_NAME_LENGTH} characters",
            {"name": name},
        )
    return name


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG.fullmatch(tag))


def validate_tag(tag: str) -> str:
    if not is_valid_tag(tag):
        raise RegistryError(
            ErrorKind.TAG_INVALID,
            f"invalid tag {tag!r}: up to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
            {"tag": tag},
        )
    return tag
