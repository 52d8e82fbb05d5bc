"""Validation of what the URL carries, before any plane is asked.

Each function raises the RegistryError the spec expects: NAME_INVALID, DIGEST_INVALID,
TAG_INVALID, BLOB_UPLOAD_UNKNOWN (an upload id that cannot be one of ours).

Reads name something that may or may not exist, and the spec's pull section answers anything not
in the repository with 404, so a reference that can never exist (it breaks the tag or digest
grammar) is unknown to reads, not invalid: `stored_reference` gives MANIFEST_UNKNOWN and
`stored_digest` BLOB_UNKNOWN. Writes keep the 400s, which tell a pusher what to fix.
"""

from __future__ import annotations

import re

from starlette.requests import Request

from services.common.digests import Digest, looks_like_digest
from services.common.errors import ErrorKind, RegistryError
from services.common.names import validate_repository, validate_tag

# Upload ids are opaque to the gateway but must be safe in a URL and as a storage key component:
# the blob plane issues UUIDs or hex strings, which this admits.
_UPLOAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def repository(request: Request) -> str:
    """The repository named in the URL path."""
    return validate_repository(request.path_params["name"])


def repository_name(text: str) -> str:
    """A repository named elsewhere (e.g. `?from=` of a mount)."""
    return validate_repository(text)


def digest(text: str) -> str:
    """The canonical text of a valid digest (DIGEST_INVALID otherwise)."""
    return str(Digest.parse(text))


def reference(text: str) -> str:
    """A manifest reference: a digest when it contains ':', else a tag."""
    if looks_like_digest(text):
        return digest(text)
    return validate_tag(text)


def stored_reference(text: str) -> str:
    """A manifest reference to read or delete: as `reference`, but one that breaks the grammar
    is MANIFEST_UNKNOWN (404), since no manifest can be stored under it."""
    try:
        return reference(text)
    except RegistryError:
        raise RegistryError(
            ErrorKind.MANIFEST_UNKNOWN,
            f"no manifest {text!r} in this repository: it is neither a valid tag nor a valid digest",
            {"reference": text},
        ) from None


def stored_digest(text: str) -> str:
    """A blob digest to read: as `digest`, but a malformed one is BLOB_UNKNOWN (404), since no
    blob can be stored under it."""
    try:
        return digest(text)
    except RegistryError:
        raise RegistryError(
            ErrorKind.BLOB_UNKNOWN,
            f"no blob {text!r} in this repository: it is not a valid digest (such as sha256:<64 hex digits>)",
            {"digest": text},
        ) from None


def upload_id(request: Request) -> str:
    value = request.path_params["upload_id"]
    if not _UPLOAD_ID.fullmatch(value):
        raise RegistryError(
            ErrorKind.BLOB_UPLOAD_UNKNOWN,
            f"upload {value!r} is not a valid upload id; start a new upload with POST /v2/<name>/blobs/uploads/",
            {"upload_id": value},
        )
    return value
