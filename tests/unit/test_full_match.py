"""Every validator matches the WHOLE string (issue 11, item 7).

Python's `$` also matches before a final newline, so `^v1$` accepted `"v1\n"` and a tag `"v1\n"`
was stored. Each validator here is fed a valid value (accepted) and that value followed by a
newline, CRLF and NUL (each refused).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.routing import Match

from gateway import params
from gateway.auth.scopes import parse_scope
from gateway.bodies import declared_length
from gateway.pagination import parse_page
from gateway.ranges import parse_blob_range, parse_chunk_range
from gateway.routes import build_routes
from services.blob.backends import keys
from services.blob.backends.base import InvalidKey, validate_key, validate_prefix
from services.blob.direct_reads import SignedBlobUrls
from services.cli_accounts import parse_expiry
from services.common.digests import Digest
from services.common.errors import RegistryError
from services.common.names import is_valid_tag, validate_repository
from services.common.numbers import wire_int
from services.common.settings import MetadataSettings
from services.metadata.accounts.core import AccountsCore
from services.metadata.accounts.passwords import Passwords
from services.metadata.accounts.policy import validate_pattern
from services.metadata.accounts.store import AccountStore
from services.metadata.migrations import migrate
from services.metadata.store.engine import open_database

SUFFIXES = {"newline": "\n", "crlf": "\r\n", "nul": "\x00"}
HEX = "a" * 64
UPLOAD_ID = uuid.uuid4().hex


def _accepts(check: Callable[[str], object], *refusals: type[BaseException]) -> Callable[[str], bool]:
    """A predicate: True when `check(text)` does not raise one of `refusals`."""

    def accepted(text: str) -> bool:
        try:
            check(text)
        except refusals:
            return False
        return True

    return accepted


def _request(path_params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Request:
    return Request({
        "type": "http",
        "path_params": path_params or {},
        "headers": [(k.encode(), v.encode("latin-1")) for k, v in (headers or {}).items()],
    })


def _route_matches(path: str) -> bool:
    """True when a route other than the catch-all takes `path` whole."""
    for route in build_routes()[:-1]:
        match, _ = route.matches({"type": "http", "path": path, "method": "GET"})
        if match is Match.FULL:
            return True
    return False


_URLS = SignedBlobUrls(b"k" * 32, 300, clock=lambda: 1000.0)
_SIGNED_KEY = f"blobs/sha256/aa/{HEX}"
_SIGNATURE = _URLS._signature(_SIGNED_KEY, 2000)  # noqa: SLF001 - a genuine signature to vary around

# name: (valid value, predicate "is it accepted?")
VALIDATORS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "repository name": ("library/alpine", _accepts(validate_repository, RegistryError)),
    "tag": ("v1.0", is_valid_tag),
    "digest": (f"sha256:{HEX}", _accepts(Digest.parse, RegistryError)),
    "digest (sha512)": ("sha512:" + "b" * 128, _accepts(Digest.parse, RegistryError)),
    "manifest reference (tag)": ("latest", _accepts(params.reference, RegistryError)),
    "manifest reference (digest)": (f"sha256:{HEX}", _accepts(params.reference, RegistryError)),
    "manifest reference to read": ("latest", _accepts(params.stored_reference, RegistryError)),
    "blob digest to read": (f"sha256:{HEX}", _accepts(params.stored_digest, RegistryError)),
    "upload id in the URL": (
        UPLOAD_ID, _accepts(lambda text: params.upload_id(_request({"upload_id": text})), RegistryError)
    ),
    "upload id of the blob plane": (UPLOAD_ID, keys.is_valid_upload_id),
    "part/probe token": ("0123456789abcdef", _accepts(keys.probe_key, ValueError)),
    "storage key": (f"blobs/sha256/aa/{HEX}", _accepts(validate_key, InvalidKey)),
    "storage key prefix": ("uploads/", _accepts(validate_prefix, InvalidKey)),
    "token scope": ("repository:team/app:pull,push", lambda text: parse_scope(text) is not None),
    "grant pattern": ("team-a/*", _accepts(validate_pattern, RegistryError, ValueError)),
    "page size n": ("50", _accepts(lambda text: parse_page({"n": text}, default_size=10, max_size=100),
                                   RegistryError)),
    "Content-Range": ("0-1023", _accepts(parse_chunk_range, RegistryError)),
    "Range": ("bytes=0-5", lambda text: parse_blob_range(text, 100) is not None),
    "Content-Length": (
        "10", _accepts(lambda text: declared_length(_request(headers={"content-length": text})), RegistryError)
    ),
    "decimal number": ("42", lambda text: wire_int(text) is not None),
    "expiry duration": ("90d", _accepts(lambda text: parse_expiry(text, datetime.now(UTC)), ValueError)),
    "signed URL expiry": ("2000", lambda text: _URLS.verify(_SIGNED_KEY, text, _SIGNATURE) is None),
    "route path": ("/v2/team/app/tags/list", _route_matches),
}


@pytest.mark.parametrize("suffix", list(SUFFIXES.values()), ids=list(SUFFIXES))
@pytest.mark.parametrize("validator", list(VALIDATORS))
def test_a_trailing_control_character_is_refused(validator: str, suffix: str) -> None:
    valid, accepted = VALIDATORS[validator]
    assert accepted(valid), f"{validator}: the valid value {valid!r} was refused"
    assert not accepted(valid + suffix), f"{validator}: {valid + suffix!r} was accepted"


@pytest.mark.parametrize("suffix", list(SUFFIXES.values()), ids=list(SUFFIXES))
def test_account_names_are_whole(tmp_path: Path, suffix: str) -> None:
    async def scenario() -> None:
        database = open_database(MetadataSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/registry.db"))
        await migrate(database)
        try:
            core = AccountsCore(AccountStore(database), Passwords(rounds=4), anonymous_pull=[])
            with pytest.raises(RegistryError) as user:
                await core.create_user("alice" + suffix, "secret")
            with pytest.raises(RegistryError) as robot:
                await core.create_robot("ci" + suffix)
            assert user.value.kind.name == robot.value.kind.name == "NAME_INVALID"
            # The same names, whole, are fine.
            await core.create_user("alice", "secret")
            await core.create_robot("ci")
        finally:
            await database.dispose()

    asyncio.run(scenario())
