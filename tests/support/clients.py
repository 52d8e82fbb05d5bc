"""Finding real registry clients; a missing one skips on a laptop and fails in CI."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_CLIENTS = os.environ.get("LADING_TEST_REQUIRE_CLIENTS") == "1"


def require_binary(name: str, *, install_hint: str) -> str:
    """Path of the `name` executable; skip (or, with LADING_TEST_REQUIRE_CLIENTS=1, fail) if absent."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed ({install_hint})"
    if REQUIRE_CLIENTS:
        pytest.fail(f"{reason}; LADING_TEST_REQUIRE_CLIENTS=1 makes a missing client an error")
    pytest.skip(reason)
