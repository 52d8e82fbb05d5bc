"""Composition root of the blob service: settings in, a running gRPC server out.

Start-up: build the backend named by `settings.blob.backend` (an unknown name fails here, with
the names that exist), the store and the servicer; bind; report SERVING once the backend answers
a write/read/delete probe. While running, a background task purges expired upload sessions every
`purge_interval_seconds`. Shutdown (SIGTERM/SIGINT): health NOT_SERVING, in-flight calls drain
for `shutdown_grace_seconds`, the purge task stops, the backend closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable

from lading.blob.v1 import blob_pb2_grpc
from pydantic import ValidationError

from services.blob.backends.base import BlobBackend
from services.blob.backends.filesystem import FilesystemBackend
from services.blob.backends.memory import MemoryBackend
from services.blob.core import BlobStore
from services.blob.servicer import BlobServiceServicer
from services.common.grpc_server import GrpcService
from services.common.logs import configure_logging
from services.common.paths import prepare_listen_address
from services.common.settings import BlobSettings, Settings, load_settings

log = logging.getLogger("lading.blob")

SERVICE_NAME = "lading.blob.v1.BlobService"


class UnknownBackend(ValueError):
    """`settings.blob.backend` names no backend this build has."""


def _filesystem(settings: BlobSettings) -> BlobBackend:
    return FilesystemBackend(settings.filesystem.root, io_threads=settings.io_threads)


def _memory(settings: BlobSettings) -> BlobBackend:
    return MemoryBackend()


BACKENDS: dict[str, Callable[[BlobSettings], BlobBackend]] = {
    "filesystem": _filesystem,
    "memory": _memory,
}


def build_backend(settings: BlobSettings) -> BlobBackend:
    """The backend named by `settings.backend`; raises UnknownBackend for any other name."""
    factory = BACKENDS.get(settings.backend)
    if factory is None:
        raise UnknownBackend(
            f"unknown blob backend {settings.backend!r} (LADING_BLOB__BACKEND); "
            f"choose one of: {', '.join(sorted(BACKENDS))}"
        )
    return factory(settings)


async def purge_periodically(store: BlobStore, interval_seconds: float) -> None:
    """Purges expired uploads every `interval_seconds` until cancelled; failures are logged."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await store.purge_uploads()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed purge is retried at the next interval
            log.exception("purging expired uploads failed; retrying in %ss", interval_seconds)


async def wait_for_backend(store: BlobStore, *, attempts: int = 8, first_delay: float = 0.25) -> None:
    """Returns once the backend passes its probe; retries with backoff, then raises the last error.

    Bounded so that a misconfigured backend ends the process (with the reason in the log)
    instead of idling NOT_SERVING forever.
    """
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            await store.check()
            return
        except Exception as error:  # noqa: BLE001 - any failure means "not ready yet"
            if attempt == attempts:
                raise
            log.warning("blob backend not ready (attempt %d/%d): %s", attempt, attempts, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def run(settings: Settings) -> None:
    """Runs the blob service until SIGTERM/SIGINT."""
    blob = settings.blob
    backend = build_backend(blob)
    store = BlobStore(backend, upload_expiry_seconds=blob.upload_expiry_seconds)
    service = GrpcService(listen=blob.listen, service_names=[SERVICE_NAME], grace_seconds=blob.shutdown_grace_seconds)
    blob_pb2_grpc.add_BlobServiceServicer_to_server(BlobServiceServicer(store), service.server)
    purger: asyncio.Task[None] | None = None

    async def ready() -> None:
        nonlocal purger
        await wait_for_backend(store)
        if blob.purge_interval_seconds > 0:
            purger = asyncio.create_task(purge_periodically(store, blob.purge_interval_seconds))

    async def on_shutdown() -> None:
        if purger is not None:
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
        await backend.close()

    prepare_listen_address(blob.listen)
    await service.serve_forever(ready=ready, on_shutdown=on_shutdown)


def main() -> int:
    """`python -m services.blob`: settings from LADING_* variables (and LADING_CONFIG_FILE)."""
    try:
        settings = load_settings()
    except ValidationError as error:
        # e.g. LADING_BLOB__BACKEND naming a backend that does not exist.
        print(f"lading blob: invalid settings: {error}", file=sys.stderr)
        return 2
    configure_logging(process="blob")
    try:
        asyncio.run(run(settings))
    except UnknownBackend as error:
        print(f"lading blob: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
