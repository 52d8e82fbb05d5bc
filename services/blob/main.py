"""Composition root of the blob service: settings in, a running gRPC server out.

Start-up: build the backend named by `settings.blob.backend` (an unknown name, or settings the
backend cannot work with, fail here with the reason), the store and the servicer; bind; report
SERVING once the backend is prepared (S3: the bucket exists, or is created when
`s3.create_bucket` is on) and answers a write/read/delete probe. Reads are redirected to
presigned URLs when the backend is S3 and `s3.redirect_reads` is on, and to the blob plane's own
direct-read server (services/blob/direct_reads.py) when `direct_reads.enabled` on the filesystem;
on S3 that server serves the pull-through cache's cold fetches only (from their spool files). While running, a background
task purges expired upload sessions every `purge_interval_seconds`, and lets the backend clean up
abandoned partial writes (S3: multipart uploads of crashed writers). Shutdown (SIGTERM/SIGINT):
health NOT_SERVING, in-flight calls drain for `shutdown_grace_seconds`, the purge task stops, the
backend closes (its I/O threads finish the call they are in), then the clients and the trace
flush. A process still stopping `shutdown_cleanup_seconds` after the grace (a backend call stuck
on a mount that does not answer, a collector that never replies) exits at once with status 1,
saying on stderr which step it cut short (services/common/stop_deadline.py): `lading serve`, or
whatever runs the plane alone, is not held for ever.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from services.blob.backends.base import BlobBackend
from services.blob.backends.instrumented import BackendMetrics, InstrumentedBackend
from services.blob.core import BlobStore
from services.blob.direct_reads import DirectReadServer, SignedBlobUrls, signing_secret
from services.blob.fetch import FetchOnMiss
from services.blob.fetch_room import FetchRoom
from services.blob.fetch_servicer import SERVICE_NAME as FETCH_SERVICE_NAME
from services.blob.fetch_servicer import FetchServicer
from services.blob.fetch_servicer import add_to_server as add_fetch_to_server
from services.blob.fetch_spool import FetchSpool
from services.blob.region_source import RegionSources
from services.blob.servicer import BlobServiceServicer, add_to_server
from services.blob.uploads import UploadSessions
from services.common import start_up
from services.common.access import AccessConfigError
from services.common.allocator import tune_allocator
from services.common.grpc_server import GrpcService
from services.common.logs import configure_logging
from services.common.metrics import GrpcMetrics, Metrics, MetricsHttpServer, MetricsInterceptor
from services.common.paths import prepare_listen_address
from services.common.plane_control import PlaneControl
from services.common.private_files import make_private_folder, restrict_new_files
from services.common.settings import BlobSettings, Settings, load_settings
from services.common.stop_deadline import StopProgress, arm_stop_deadline
from services.common.tasks import cancel_and_wait
from services.common.telemetry import setup_tracing
from services.common.tls import TlsConfigError
from services.common.upstream import Upstreams

log = logging.getLogger("lading.blob")

SERVICE_NAME = "lading.blob.v1.BlobService"


class BackendConfigError(ValueError):
    """The blob backend cannot be built from these settings (the message names the setting)."""


class UnknownBackend(BackendConfigError):
    """`settings.blob.backend` names no backend this build has."""


class BackendNotReady(RuntimeError):
    """The backend never became ready at start-up (the message has the last reason)."""


# Each factory imports its backend: a plane loads only the one it runs (the S3 SDK alone costs
# ~0.2 s and ~7 MiB that the filesystem profile never needs).
def _filesystem(settings: BlobSettings) -> BlobBackend:
    from services.blob.backends.filesystem import FilesystemBackend

    return FilesystemBackend(
        settings.filesystem.root,
        io_threads=settings.io_threads,
        min_free_bytes=settings.filesystem.min_free_bytes,
    )


def _memory(settings: BlobSettings) -> BlobBackend:
    from services.blob.backends.memory import MemoryBackend

    return MemoryBackend()


def _s3(settings: BlobSettings) -> BlobBackend:
    from services.blob.backends.s3_factory import create_s3_backend

    # No I/O here: the bucket is checked (or created) before readiness.
    return create_s3_backend(settings)


BACKENDS: dict[str, Callable[[BlobSettings], BlobBackend]] = {
    "filesystem": _filesystem,
    "memory": _memory,
    "s3": _s3,
}


def build_backend(
    settings: BlobSettings, *, metrics: BackendMetrics | None = None, tracer: Any = None
) -> InstrumentedBackend:
    """The backend named by `settings.backend`, inside the wrapper every backend runs in (keys
    checked; a metric per call with `metrics`, a span with `tracer`). No I/O.

    Raises UnknownBackend for a name no backend has, BackendConfigError for settings the named
    backend cannot work with (e.g. S3 without a bucket).
    """
    factory = BACKENDS.get(settings.backend)
    if factory is None:
        raise UnknownBackend(
            f"unknown blob backend {settings.backend!r} (LADING_BLOB__BACKEND); "
            f"choose one of: {', '.join(sorted(BACKENDS))}"
        )
    try:
        backend = factory(settings)
    except ValueError as error:
        raise BackendConfigError(f"blob backend {settings.backend!r}: {error}") from error
    return InstrumentedBackend(backend, name=settings.backend, metrics=metrics, tracer=tracer)


def build_store(
    settings: BlobSettings, backend: BlobBackend, direct_urls: SignedBlobUrls | None = None
) -> BlobStore:
    """The store over `backend`. Reads redirect to presigned URLs for S3 with
    `s3.redirect_reads` on, and to `direct_urls` (the direct-read server's signed URLs) when
    given; otherwise they stream through gRPC."""
    return BlobStore(
        backend,
        upload_expiry_seconds=settings.upload_expiry_seconds,
        sessions=UploadSessions(backend, max_sessions_per_owner=settings.max_upload_sessions_per_owner),
        redirect_reads=direct_urls is not None or (settings.backend == "s3" and settings.s3.redirect_reads),
        presigner=direct_urls,
    )


def build_direct_reads(settings: BlobSettings, backend: BlobBackend) -> DirectReadServer | None:
    """The direct-read server when `direct_reads.enabled` (not started): of the backend's local
    files, or, on S3 (no local files), of cold fetches only, from their spool files, readers
    that come after a fetch sent to S3's presigned URLs. Raises BackendConfigError when the
    backend has no local files and that cannot work (BlobSettings.direct_reads_fetches_only_lack)."""
    direct = settings.direct_reads
    if not direct.enabled:
        return None
    local = callable(getattr(backend, "local_path", None))
    if not local and (missing := settings.direct_reads_fetches_only_lack()):
        raise BackendConfigError(
            f"blob.direct_reads serves local files, and the {settings.backend!r} backend has none; "
            f"without them it serves only cold fetches of the pull-through cache, which needs {missing}: "
            "turn LADING_BLOB__DIRECT_READS__ENABLED off, or provide it"
        )
    if direct.key_file is not None and direct.cert_file is None:
        raise BackendConfigError("blob.direct_reads.key_file is set without cert_file")
    urls = SignedBlobUrls(signing_secret(direct), direct.url_lifetime_seconds)
    if local:
        return DirectReadServer(direct, urls, backend)  # type: ignore[arg-type]
    return DirectReadServer(direct, urls, None, stored=backend)  # type: ignore[arg-type]


async def purge_periodically(store: BlobStore, interval_seconds: float) -> None:
    """Every `interval_seconds` until cancelled: purges expired upload sessions, then lets the
    backend clean up abandoned partial writes (S3 multipart uploads). Each failure is logged and
    retried at the next interval; one failing does not skip the other."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            purged = await store.purge_uploads()
            if purged:
                log.info("purged %d expired upload sessions", purged)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed purge is retried at the next interval
            log.exception("purging expired uploads failed; retrying in %ss", interval_seconds)
        try:
            cleaned = await store.purge_abandoned_writes()
            if cleaned:
                log.info("cleaned up %d abandoned partial writes or idle folders in the blob backend", cleaned)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - as above
            log.exception("cleaning up abandoned partial writes failed; retrying in %ss", interval_seconds)


async def wait_for_backend(store: BlobStore, *, attempts: int = 8, first_delay: float = 0.25) -> None:
    """Returns once the backend is prepared (`BlobBackend.prepare`) and passes its probe; retries
    both with backoff, then raises the last error.

    Bounded so that a misconfigured backend ends the process (with the reason in the log)
    instead of idling NOT_SERVING forever.
    """
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            await store.backend.prepare()
            await store.check()
            return
        except Exception as error:  # noqa: BLE001 - any failure means "not ready yet"
            if attempt == attempts:
                raise
            log.warning("blob backend not ready (attempt %d/%d): %s", attempt, attempts, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def run(settings: Settings, control: PlaneControl | None = None, *, freeze_start_up: bool = False) -> None:
    """Runs the blob service until SIGTERM/SIGINT (with a `control`: until `control.stop`;
    services/embedded.py runs it so, beside the other planes). Reads only its own settings
    sections: blob, proxy (upstreams of the pull-through cache), regions (other regions' blob
    planes, for fetch on miss between regions), and the shared observability and grpc_access.
    `freeze_start_up`: the process is the plane's (not a test's), so once wired, before it serves,
    its objects are frozen out of garbage collection (services/common/start_up.py)."""
    blob = settings.blob
    telemetry = setup_tracing(settings.observability, "blob")
    # Metrics are only kept when something can scrape them.
    metrics = Metrics("blob") if settings.observability.blob_metrics_listen else None
    # A metric per storage operation when something can scrape it, a span when tracing is on.
    backend = build_backend(
        blob,
        metrics=BackendMetrics(metrics) if metrics is not None else None,
        tracer=telemetry.tracer("lading.blob.backend") if telemetry.enabled else None,
    )
    # The direct-read server only needs the backend's file paths (`local_path`), or on S3 the
    # fetches' spool files; reads of stored blobs go to it only when it has their files.
    direct_reads = build_direct_reads(blob, backend)
    store = build_store(blob, backend,
                        direct_reads.urls if direct_reads is not None and direct_reads.files is not None else None)
    service = GrpcService(
        listen=blob.listen,
        service_names=[SERVICE_NAME, FETCH_SERVICE_NAME],
        grace_seconds=blob.shutdown_grace_seconds,
        access=settings.grpc_access,
        plane="blob",
        tls=blob.tls,
        health_listen=blob.health_listen,
        # Calls are only counted when something can scrape them.
        interceptors=[
            *telemetry.server_interceptors(),
            *([upload_metrics_interceptor(metrics)] if metrics is not None else []),
        ],
    )
    metrics_server: MetricsHttpServer | None = None
    # The pull-through cache's upstreams (None: none configured, no HTTP client loaded).
    upstreams = Upstreams.build(settings.proxy, metrics=metrics,
                                tracer=telemetry.tracer("lading.proxy") if telemetry.enabled else None)
    add_to_server(BlobServiceServicer(store, refuse_writes=upstreams.refuse_writes if upstreams else None),
                  service.server)
    # Fetch on miss between regions (None: no other region's blob plane configured).
    region_sources = RegionSources.build(settings.regions,
                                           stream_timeout_seconds=settings.regions.blob_fetch_timeout_seconds)
    # Cold fetches served from the direct-read server need URLs that reach this very process.
    serves_fetches = direct_reads is not None and blob.direct_reads.fetches and not blob.direct_reads.public_url
    # Fetches the gateway streams keep what storage has yet to take here (None: no spool).
    # The free-space reserve covers what a cold fetch writes: its session (the filesystem
    # backend's own writes) and its spool file, on whichever disk the spool folder is.
    reserve = blob.filesystem.min_free_bytes
    spool = (FetchSpool(blob.fetch_spool.folder, blob.fetch_spool.budget_bytes, min_free_bytes=reserve)
             if blob.fetch_spool.budget_bytes else None)
    room = FetchRoom(reserve, store_root=blob.filesystem.root if blob.backend == "filesystem" else None,
                     spool_folder=blob.fetch_spool.folder if spool is not None else None)
    add_fetch_to_server(FetchServicer(FetchOnMiss(store, direct_reads if serves_fetches else None, spool, room),
                                      upstreams, region_sources), service.server)
    purger: asyncio.Task[None] | None = None

    async def ready() -> None:
        nonlocal purger
        try:
            await wait_for_backend(store)
        except Exception as error:
            raise BackendNotReady(f"blob backend {blob.backend!r} is not ready: {error}") from error
        if blob.purge_interval_seconds > 0:
            purger = asyncio.create_task(purge_periodically(store, blob.purge_interval_seconds))

    # The step the stop is in, named by the stop's bound if it cuts the stop short.
    stopping = StopProgress("in-flight calls finishing (the grace)")

    async def on_draining() -> None:  # the stop begins
        if control is not None:
            return  # a process that hosts the plane beside other work bounds its own stop
        arm_stop_deadline(blob.stop_bound_seconds, process="blob", cut=stopping,
                          bound="shutdown grace + cleanup: LADING_BLOB__SHUTDOWN_GRACE_SECONDS, __SHUTDOWN_CLEANUP_SECONDS")

    async def on_shutdown() -> None:
        stopping.step = "stopping the purge task"
        await cancel_and_wait(purger)
        stopping.step = "closing the metrics and direct-read servers"
        if metrics_server is not None:
            await metrics_server.close()
        if direct_reads is not None:
            await direct_reads.close()
        stopping.step = f"closing the {blob.backend} backend (waiting for its I/O threads)"
        await backend.close()
        stopping.step = "closing the upstream and region clients"
        if upstreams is not None:
            await upstreams.aclose()
        if region_sources is not None:
            await region_sources.close()
        stopping.step = "flushing traces to the collector"
        telemetry.shutdown()

    prepare_listen_address(blob.listen)
    if metrics is not None:
        metrics_server = await MetricsHttpServer(metrics, settings.observability.blob_metrics_listen).start()
    if direct_reads is not None:
        # Before the gRPC port opens: a signed URL needs the bound port.
        await direct_reads.start()
    if freeze_start_up:
        start_up.freeze_start_up("blob")
    await service.serve_forever(ready=ready, on_shutdown=on_shutdown, on_draining=on_draining, control=control)


def upload_metrics_interceptor(metrics: Metrics) -> MetricsInterceptor:
    """gRPC call metrics, plus `lading_blob_active_uploads`: sessions this process started minus
    those it committed or cancelled (a session may end on another replica, or be purged, so sum
    over replicas and read it as an estimate)."""
    active = metrics.gauge(
        "lading_blob_active_uploads",
        "upload sessions started minus committed or cancelled, through this process (sum over replicas)",
    )
    return MetricsInterceptor(
        GrpcMetrics(metrics),
        on_ok={"StartUpload": active.inc, "CommitUpload": active.dec, "CancelUpload": active.dec},
    )


def main() -> int:
    """`python -m services.blob`: settings from LADING_* variables (and LADING_CONFIG_FILE)."""
    try:
        settings = load_settings()
    except ValidationError as error:
        # e.g. LADING_BLOB__BACKEND naming a backend that does not exist.
        print(f"lading blob: invalid settings: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.blob.log_level, "blob", settings.observability.log_format)
    if settings.blob.backend == "filesystem":
        # Blobs and upload state for the owner only, whatever the inherited umask; the root is
        # Lading's own folder: 0700 even if an older version made it wider.
        restrict_new_files()
        make_private_folder(settings.blob.filesystem.root, tighten=True)
    # Blob bytes stream through here in ~1 MiB buffers: keep them off mmap (services/common/allocator.py).
    tune_allocator()
    try:
        asyncio.run(run(settings, freeze_start_up=True))
    except (BackendConfigError, AccessConfigError, TlsConfigError) as error:
        print(f"lading blob: {error}", file=sys.stderr)
        return 2
    except BackendNotReady as error:
        print(f"lading blob: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
