"""What every backend needs, done once around any of them: `InstrumentedBackend`.

Like CNCF Distribution's `base.Base` around its storage drivers, each call of the BlobBackend
contract (and of its writers) goes through here, so no backend repeats it:

- keys, prefixes and `delete_all` targets are checked (`InvalidKey` before the backend sees them);
- a histogram `lading_blob_backend_seconds{backend, operation, outcome}` counts and times each
  call, where `outcome` is `ok` or the kind of failure (`not_found`, `busy`, `unavailable`,
  `access_denied`, ... and `error` for anything that is not a BackendError, such as the caller's
  own chunk stream failing);
- a span `blob.backend.<operation>` (with the backend's name and the key) when tracing is on.

Backends raise only `BackendError` kinds on purpose; the wrapper passes every exception on
unchanged (translating them into registry errors is the blob plane's core's job). Anything that is
not part of the contract (the filesystem's `local_path`, S3's `presigned_get_url`) is the wrapped
backend's own, reached through attribute lookup, so capability checks see what it has.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from services.blob.backends.base import (
    BackendAccessDenied,
    BackendError,
    BackendFull,
    BackendLimitExceeded,
    BackendUnavailable,
    BlobBackend,
    BlobWriter,
    InvalidKey,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    Observer,
    Part,
    SaveParts,
    WriterBusy,
    validate_key,
    validate_prefix,
    validate_target,
)

if TYPE_CHECKING:
    from services.common.metrics import Metrics

_OUTCOMES: dict[type[BaseException], str] = {
    ObjectNotFound: "not_found",
    InvalidKey: "invalid_key",
    InvalidRange: "invalid_range",
    WriterBusy: "busy",
    BackendUnavailable: "unavailable",
    BackendAccessDenied: "access_denied",
    BackendFull: "full",
    BackendLimitExceeded: "limit_exceeded",
}


def _outcome(error: BaseException) -> str:
    for kind in type(error).__mro__:
        if kind in _OUTCOMES:
            return _OUTCOMES[kind]
    if isinstance(error, BackendError):
        return "backend_error"
    if isinstance(error, GeneratorExit):
        return "ok"  # a listing the caller stopped early
    return "error"


class BackendMetrics:
    """The per-operation histogram of one process's backend (registered once in `metrics`)."""

    def __init__(self, metrics: Metrics) -> None:
        self.seconds = metrics.histogram(
            "lading_blob_backend_seconds",
            "blob backend calls by backend, operation and outcome (ok, not_found, busy, unavailable, ...)",
            labels=("backend", "operation", "outcome"),
        )


class InstrumentedBackend:
    """A BlobBackend around `inner` (see the module docstring). `name` labels its metrics and
    spans ("filesystem", "s3", "memory"); `metrics` None records none, `tracer` None starts no
    spans."""

    def __init__(
        self, inner: BlobBackend, *, name: str, metrics: BackendMetrics | None = None, tracer: Any = None
    ) -> None:
        self.inner = inner
        self.name = name
        self._seconds = metrics.seconds if metrics is not None else None
        self._tracer = tracer
        self._quiet = metrics is None and tracer is None

    @property
    def min_part_size(self) -> int:
        return self.inner.min_part_size

    def __getattr__(self, name: str) -> Any:
        # Only reached for what this class lacks: the wrapped backend's extras.
        return getattr(self.inner, name)

    @contextlib.contextmanager
    def _measured(self, operation: str, key: str, *, current: bool = True) -> Iterator[None]:
        """Times `operation` into the histogram and runs it in a span. `current=False` for
        generators: their span must not stay the current one across yields."""
        span: Any = None
        scope: Any = contextlib.nullcontext()
        if self._tracer is not None:
            attributes = {"lading.blob.backend": self.name, "lading.blob.key": key}
            if current:
                scope = self._tracer.start_as_current_span(f"blob.backend.{operation}", attributes=attributes)
            else:
                span = self._tracer.start_span(f"blob.backend.{operation}", attributes=attributes)
        outcome = "ok"
        started = time.perf_counter()
        try:
            with scope:
                yield
        except BaseException as error:
            outcome = _outcome(error)
            raise
        finally:
            if span is not None:
                span.end()
            if self._seconds is not None:
                self._seconds.labels(self.name, operation, outcome).observe(time.perf_counter() - started)

    def _measure(self, operation: str, key: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext() if self._quiet else self._measured(operation, key)

    # -- the contract -----------------------------------------------------------------------

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        validate_key(key)
        with self._measure("put", key):
            return await self.inner.put(key, chunks)

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        validate_key(key)
        with self._measure("put_if_absent", key):
            return await self.inner.put_if_absent(key, data)

    async def replace(self, key: str, data: bytes) -> None:
        validate_key(key)
        with self._measure("replace", key):
            await self.inner.replace(key, data)

    async def create_unsynced(
        self, objects: Sequence[tuple[str, bytes]], *, count_prefix: str = "", limit: int = 0
    ) -> int:
        for key, _ in objects:
            validate_key(key)
        validate_prefix(count_prefix)
        with self._measure("create_unsynced", objects[0][0] if objects else count_prefix):
            return await self.inner.create_unsynced(objects, count_prefix=count_prefix, limit=limit)

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        validate_key(key)
        with self._measure("get", key):
            return await self.inner.get(key, offset, length)

    async def read_whole(self, key: str) -> bytes:
        validate_key(key)
        with self._measure("read_whole", key):
            return await self.inner.read_whole(key)

    async def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        with self._measure("stat", key):
            return await self.inner.stat(key)

    async def delete(self, key: str) -> None:
        validate_key(key)
        with self._measure("delete", key):
            await self.inner.delete(key)

    async def delete_all(self, targets: Sequence[str]) -> None:
        for target in targets:
            validate_target(target)
        with self._measure("delete_all", targets[0] if targets else ""):
            await self.inner.delete_all(targets)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        validate_prefix(prefix)
        with contextlib.nullcontext() if self._quiet else self._measured("list", prefix, current=False):
            async for info in self.inner.list(prefix):
                yield info

    async def list_blobs(self, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        if start_after:
            validate_key(start_after)
        with contextlib.nullcontext() if self._quiet else self._measured("list_blobs", start_after, current=False):
            async for info in self.inner.list_blobs(start_after):
                yield info

    async def open_writer(self, key: str) -> InstrumentedWriter:
        validate_key(key)
        with self._measure("open_writer", key):
            return InstrumentedWriter(self, await self.inner.open_writer(key))

    async def prepare(self) -> None:
        with self._measure("prepare", ""):
            await self.inner.prepare()

    async def clean_up(self, older_than: float) -> int:
        with self._measure("clean_up", ""):
            return await self.inner.clean_up(older_than)

    async def close(self) -> None:
        await self.inner.close()


class InstrumentedWriter:
    """A BlobWriter whose calls are checked, timed and traced like its backend's."""

    def __init__(self, backend: InstrumentedBackend, inner: BlobWriter) -> None:
        self._backend = backend
        self.inner = inner
        self.key = inner.key

    async def append(
        self,
        parts: Sequence[Part],
        chunks: AsyncIterable[bytes],
        *,
        observe: Observer | None = None,
        save: SaveParts | None = None,
    ) -> tuple[Part, ...]:
        with self._backend._measure("writer.append", self.key):
            return await self.inner.append(parts, chunks, observe=observe, save=save)

    async def commit(self, parts: Sequence[Part], dest: str) -> None:
        validate_key(dest)
        with self._backend._measure("writer.commit", dest):
            await self.inner.commit(parts, dest)

    async def cancel(self) -> None:
        with self._backend._measure("writer.cancel", self.key):
            await self.inner.cancel()

    async def close(self) -> None:
        await self.inner.close()
