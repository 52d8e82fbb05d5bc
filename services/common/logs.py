"""Process-wide logging set-up, called once from each composition root, and per-request log fields.

Two formats (`observability.log_format`):
- "text": `time process LEVEL logger: message`, for people at a terminal (the default);
- "json": one JSON object per line with `timestamp`, `level`, `logger`, `message`, `process`,
  `trace_id`/`span_id` when the line is written inside a recorded span, the fields bound with
  `log_context(...)`/`bind_log_fields(...)` (e.g. `repository`, `digest`, `account`), and
  `exception` with the traceback when there is one.

Fields live in a ContextVar, so they follow the request through awaits and never leak into
another request. They are only read when a line is actually written: binding costs one
ContextVar set per request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar, Token
from typing import Any

# Fields of the current request/call: a lazy provider (read at write time) and plain fields.
FieldProvider = Callable[[], Mapping[str, Any]]
_provider: ContextVar[FieldProvider | None] = ContextVar("lading_log_provider", default=None)
_fields: ContextVar[Mapping[str, Any] | None] = ContextVar("lading_log_fields", default=None)


def bind_log_fields(provider: FieldProvider | None) -> Token[FieldProvider | None]:
    """Makes `provider()` supply fields to every line written in this context (until reset with
    the returned token). The provider runs only when a line is written, so it may read state that
    is filled in later (the gateway reads the matched route's path parameters this way)."""
    return _provider.set(provider)


def reset_log_fields(token: Token[FieldProvider | None]) -> None:
    _provider.reset(token)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Adds `fields` (e.g. `repository=`, `digest=`, `account=`) to every line written inside the
    block; None values are left out. Nested blocks add to (and may override) outer ones."""
    merged = {**(_fields.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    token = _fields.set(merged)
    try:
        yield
    finally:
        _fields.reset(token)


def current_log_fields() -> dict[str, Any]:
    """The fields a line written now would carry (provider first, explicit fields win)."""
    found: dict[str, Any] = {}
    provider = _provider.get()
    if provider is not None:
        try:
            found.update({k: v for k, v in provider().items() if v not in (None, "")})
        except Exception:  # noqa: BLE001 - a log line must never fail because of its extras
            pass
    found.update(_fields.get() or {})
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the keys)."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process
        # Loaded with the JSON format only: text logs never ask for the current span.
        from opentelemetry import trace

        self._trace = trace

    def format(self, record: logging.LogRecord) -> str:
        seconds = record.created
        entry: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": self.process,
        }
        span_context = self._trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        entry.update(current_log_fields())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "info", process: str = "lading", log_format: str = "text") -> None:
    """Sends every logger's records to stderr at `level`, as text or JSON (`log_format`)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # httpx writes an INFO line per request with the whole URL (for event deliveries: one per
    # POST, with whatever secret the URL carries); the delivery worker logs its own, redacted.
    logging.getLogger("httpx").setLevel(logging.WARNING)
