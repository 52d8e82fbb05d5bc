"""Finding real registry clients; a missing one skips on a laptop and fails in CI."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

REQUIRE_CLIENTS = os.environ.get("LADING_TEST_REQUIRE_CLIENTS") == "1"


def missing_tool(reason: str) -> NoReturn:
    """Skips the test for want of a tool (`reason` names it and how to install it); fails it
    instead with LADING_TEST_REQUIRE_CLIENTS=1 (CI), where a skip would hide that nothing ran."""
    if REQUIRE_CLIENTS:
        pytest.fail(f"{reason}; LADING_TEST_REQUIRE_CLIENTS=1 makes a missing tool an error")
    pytest.skip(reason)


def require_binary(name: str, *, install_hint: str) -> str:
    """Path of the `name` executable; skip (or, with LADING_TEST_REQUIRE_CLIENTS=1, fail) if absent."""
    path = shutil.which(name)
    if path:
        return path
    missing_tool(f"{name} is not installed ({install_hint})")
