"""Modules imported on first use, for dependencies that only some configurations need.

`jwt = lazy_module("jwt")` gives an object that imports `jwt` (a plain `importlib.import_module`)
the first time one of its attributes is read, and reads through to it from then on. A gateway
without token auth so never pays for PyJWT and `cryptography` (~0.1 s and ~11 MiB), while the
code that uses them still reads like a plain `import`. Only for modules whose import has no side
effect anyone relies on.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module `name` until an attribute is read; then it is imported."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attribute)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"


def lazy_module(name: str) -> Any:
    """A stand-in for the module `name`, imported when one of its attributes is first read.
    A missing module raises ModuleNotFoundError then, not here."""
    return LazyModule(name)
