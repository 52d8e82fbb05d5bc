"""Composition root of the metadata service: builds everything from Settings and runs it.

Start-up order: open the database pool → migrate (auto_migrate) or refuse an out-of-date schema →
warn when the database acknowledges commits before they are durable (store/durability.py) →
build store, core, servicer → bind the gRPC listener → health SERVING once the database answers.
Shutdown order is GrpcService's (health NOT_SERVING → drain in-flight calls → close the pool).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

from lading.metadata.v1 import accounts_pb2_grpc, metadata_pb2_grpc

from services.common import start_up
from services.common.access import AccessConfigError
from services.common.errors import ErrorKind, RegistryError
from services.common.grpc_server import GrpcService
from services.common.logs import configure_logging
from services.common.metrics import GrpcMetrics, Metrics, MetricsHttpServer, MetricsInterceptor, pool_usage
from services.common.paths import prepare_listen_address
from services.common.plane_control import PlaneControl
from services.common.private_files import restrict_new_files
from services.common.settings import Settings, load_settings
from services.common.telemetry import setup_tracing
from services.common.tls import TlsConfigError
from services.metadata.accounts.main import bootstrap_admin, build_account_servicer
from services.metadata.changes.wiring import CHANGE_ACK_SERVICE_NAME, CHANGE_SERVICE_NAME, build_changes
from services.metadata.console.wiring import CONSOLE_SERVICE_NAME, build_console
from services.metadata.console.wiring import add_to_server as add_console_to_server
from services.metadata.core import MetadataCore, MetadataLimits
from services.metadata.events.destinations import EventsConfigError, validate
from services.metadata.events.wiring import EVENTS_SERVICE_NAME, build_events
from services.metadata.fetch_leases import FetchLeases
from services.metadata.gc.wiring import ADMIN_SERVICE_NAME, build_gc
from services.metadata.migrations import check_schema_current, head_revision, migrate, migrate_in_child
from services.metadata.policies.audit import AuditInterceptor, AuditWriter
from services.metadata.policies.wiring import POLICY_SERVICE_NAME, blob_reader, build_policies
from services.metadata.proxy.wiring import PROXY_SERVICE_NAME, build_proxy, build_upstreams
from services.metadata.queue_metrics import QueueMetrics
from services.metadata.region_fetch import REGION_FETCH_SERVICE_NAME, RegionFetches, RegionFetchServicer
from services.metadata.region_fetch import add_to_server as add_region_fetch_to_server
from services.metadata.regions import REGION_SERVICE_NAME, RegionParts
from services.metadata.regions import role as region_role
from services.metadata.replication.servicer import SERVICE_NAME as REPLICATION_SERVICE_NAME
from services.metadata.replication.servicer import add_to_server as add_replication_to_server
from services.metadata.replication.wiring import build_replicators, with_replication_endpoints
from services.metadata.servicer import MetadataServicer
from services.metadata.store.dialect import is_unavailable
from services.metadata.store.durability import commit_durability_warning
from services.metadata.store.engine import Database, open_database
from services.metadata.store.replay import ReplayGate, register_region_metrics
from services.metadata.store.sql import SqlMetadataStore

SERVICE_NAME = "lading.metadata.v1.MetadataService"
ACCOUNT_SERVICE_NAME = "lading.metadata.v1.AccountService"
log = logging.getLogger("lading.metadata")


class SchemaOutOfDate(RuntimeError):
    """The database is not at the newest migration and auto_migrate is off."""


async def _prepare_schema(database: Database, *, auto_migrate: bool) -> None:
    try:
        if auto_migrate:
            # A child process upgrades (Alembic stays out of this long-running plane).
            await migrate_in_child(database)
            return
        current = await check_schema_current(database)
    except Exception as exc:
        if is_unavailable(exc):
            raise RegistryError(
                ErrorKind.UNAVAILABLE, f"cannot reach the metadata database: {exc}"
            ) from exc
        raise
    if not current:
        raise SchemaOutOfDate(
            f"the metadata database schema is not at revision {head_revision()}; run `lading migrate` "
            "with the same LADING_METADATA__DATABASE_URL (or set LADING_METADATA__AUTO_MIGRATE=true)"
        )


async def run(settings: Settings, control: PlaneControl | None = None, *, freeze_start_up: bool = False) -> None:
    """Runs the metadata service until SIGTERM/SIGINT (with a `control`: until `control.stop`;
    services/embedded.py runs it so, beside the other planes). Reads only its own settings
    sections: metadata, gc, events, auth (accounts), proxy, and the shared observability and grpc_access.
    `freeze_start_up`: the process is the plane's (not a test's), so once wired, before it serves,
    its objects are frozen out of garbage collection (services/common/start_up.py).

    Raises EventsConfigError for event endpoints that cannot work, SchemaOutOfDate when
    auto_migrate is off and the schema is not current, RegistryError
    (UNAVAILABLE) or a driver error when the database cannot be reached at start-up.
    """
    config = settings.metadata
    regions = settings.regions
    validate(settings.events)  # event endpoints that cannot work stop the plane before the database is touched
    database = open_database(config)
    telemetry = setup_tracing(settings.observability, "metadata")
    # On a SQLite file, writes run on their own engine (store/writes.py): trace it too.
    writes = database.write_engine
    telemetry.instrument_engines(
        [database.engine, database.replica, writes if writes is not database.engine.sync_engine else None]
    )
    # Metrics are only kept when something can scrape them.
    metrics = build_metrics(database) if settings.observability.metadata_metrics_listen else None
    metrics_server: MetricsHttpServer | None = None
    metrics_interceptors = [MetricsInterceptor(GrpcMetrics(metrics))] if metrics is not None else []
    # Regions (services/metadata/regions.py): in a replica region `database_url` is the region's
    # standby, writes are forwarded to the primary region and wait for the standby's replay.
    replay = ReplayGate(database, config.read_your_writes,
                        standby=database.engine if region_role(regions) == "replica" else None)
    kicks: list[Callable[[], None]] = []
    region_parts = RegionParts(regions, replay, on_replayed=lambda: [kick() for kick in kicks])
    # The audit log (services/metadata/policies/audit.py); its event export is bound below. A replica
    # region records nothing itself: the primary region's plane audits the writes it forwards.
    audit = (AuditWriter(database)
             if settings.governance.audit_log and region_role(regions) != "replica" else None)
    audit_interceptors = [AuditInterceptor(audit.write)] if audit is not None else []
    try:
        # First: TLS and access settings that cannot work stop the process before it touches the database.
        service = GrpcService(
            listen=config.listen,
            service_names=[SERVICE_NAME, ACCOUNT_SERVICE_NAME, ADMIN_SERVICE_NAME, EVENTS_SERVICE_NAME,
                           CHANGE_SERVICE_NAME, CHANGE_ACK_SERVICE_NAME, CONSOLE_SERVICE_NAME, PROXY_SERVICE_NAME, REGION_SERVICE_NAME,
                           POLICY_SERVICE_NAME, REPLICATION_SERVICE_NAME, REGION_FETCH_SERVICE_NAME],
            grace_seconds=config.shutdown_grace_seconds,
            access=settings.grpc_access,
            plane="metadata",
            tls=config.tls,
            health_listen=config.health_listen,
            interceptors=[*telemetry.server_interceptors(), *metrics_interceptors, *audit_interceptors],
            inner_interceptors=region_parts.interceptors,
        )
        # A replica region's database is a read-only standby: the primary region migrates it.
        replica_region = region_parts.role == "replica"
        await _prepare_schema(database, auto_migrate=config.auto_migrate and not replica_region)
        durability = await commit_durability_warning(database)
        if durability:
            log.warning("%s", durability)
        events = build_events(with_replication_endpoints(settings.events, settings.replication), database)
        if metrics is not None:
            register_region_metrics(metrics, replay)
            region_parts.register(metrics)
        if audit is not None and events.outbox.enabled:
            audit.events = events.outbox
        database.access.use_replay(replay)
        changes = build_changes(database, config.change_feed, replay, read_only=replica_region,
                                region=regions.local)
        if region_parts.forward is not None:
            # A forwarded tag or manifest write answers once this region's gateways applied it too.
            region_parts.forward.settle = changes.acks.settle
            if region_parts.channel is not None:
                changes.acks.use_primary(region_parts.channel, regions.forward_timeout_seconds)
        kicks.append(changes.hub.kick)
        if metrics is not None:
            changes.acks.register(metrics)
        # Fetch on miss between regions (services/metadata/region_fetch.py): its counters show in
        # `lading region status`.
        region_fetch = RegionFetchServicer(
            regions, RegionFetches(regions, database, FetchLeases(database, settings.proxy.fetch_lease_seconds)),
            region_parts.channel)
        region_parts.servicer.fetches = region_fetch.counters
        add_region_fetch_to_server(region_fetch, service.server)
        if metrics is not None and regions.local:
            region_fetch.register(metrics)
        region_parts.add_to_server(service.server)
        store = SqlMetadataStore(database, events.outbox if events.outbox.enabled else None, changes.repositories)
        gc = build_gc(settings, database, store, events=events.outbox, changes=changes.repositories)
        upstreams = build_upstreams(settings.proxy, metrics=metrics,
                                    tracer=telemetry.tracer("lading.proxy") if telemetry.enabled else None)
        core = MetadataCore(
            gc.store,
            MetadataLimits(
                max_manifest_bytes=config.max_manifest_bytes,
                default_page_size=config.default_page_size,
                max_page_size=config.max_page_size,
                parse_inline_max_bytes=config.manifest_parse_inline_max_bytes,
            ),
            refuse_writes=None if upstreams is None else upstreams.refuse_writes,
        )
        proxy = build_proxy(upstreams, settings.proxy, core=core, store=gc.store, database=database,
                            blob_channel=gc.channel)
        accounts = build_account_servicer(database, settings.auth, changes.log, read_only=replica_region)
        if not replica_region:
            await bootstrap_admin(accounts, settings.auth)
        metadata_pb2_grpc.add_MetadataServiceServicer_to_server(
            MetadataServicer(core, events.outbox, database.access, events.worker.wake, proxy=proxy.cache),
            service.server,
        )
        proxy.add_to_server(service.server)
        events.add_to_server(service.server)
        # GC review queues and the outbox, counted in the background (never on a scrape).
        queues = QueueMetrics(
            gc.gc.queue_sizes, events.store.counts, endpoints=[e.name for e in settings.events.endpoints],
            interval_seconds=settings.observability.queue_metrics_interval_seconds,
        )
        if metrics is not None:
            queues.register(metrics)
        replicators = build_replicators(settings.replication, gc.store, gc.channel,
                                        parse_inline_max_bytes=settings.metadata.manifest_parse_inline_max_bytes)
        events.worker.use_replicators(replicators)
        add_replication_to_server(replicators, service.server)
        if replica_region:
            # The primary region delivers events, mirrors upstreams and collects garbage: they
            # write. The collector here only deletes this region's bytes no region references any
            # more (its claims go to the primary; services/metadata/gc/worker.py).
            if gc.loop is not None and region_parts.channel is not None:
                gc.loop.in_replica_region(region_parts.channel, regions.local)
        else:
            events.start()
            proxy.start()
        gc.add_to_server(service.server)
        accounts_pb2_grpc.add_AccountServiceServicer_to_server(accounts, service.server)
        changes.add_to_server(service.server)
        console = build_console(settings, database, metadata=core, accounts=accounts, admin=gc.admin,
                                events=events.servicer, on_change=events.worker.wake)
        add_console_to_server(console, service.server)
        policies = build_policies(settings, database, core, gc=gc.gc, events=events.outbox,
                                  read_blob=blob_reader(gc.channel) if gc.channel is not None else None,
                                  changes=changes.repositories)
        policies.add_to_server(service.server)
        gc.admin.after_run = policies.store.recount_quotas  # GC corrects the quota counts
        if gc.loop is not None and policies.retention is not None and not replica_region:
            gc.loop.before_run = policies.retention.run  # retention runs on the GC schedule
        if policies.pruner is not None and not replica_region:
            policies.pruner.start()
        if metrics is not None:
            policies.register_metrics(metrics)
        await changes.start()
        prepare_listen_address(config.listen)
        if metrics is not None:
            metrics_server = await MetricsHttpServer(metrics, settings.observability.metadata_metrics_listen).start()
            queues.start()
        if freeze_start_up:
            start_up.freeze_start_up("metadata")
        await service.serve_forever(
            ready=store.ping, on_draining=changes.close,
            on_shutdown=_closer(queues.close, events.close, gc.close, store.close, accounts.close, console.close,
                                *([policies.pruner.stop] if policies.pruner is not None else []),
                                proxy.close, region_parts.close, *[r.aclose for r in replicators.values()]),
            control=control,
        )
    finally:
        if metrics_server is not None:
            await metrics_server.close()
        await database.dispose()
        telemetry.shutdown()


def _closer(*steps):  # type: ignore[no-untyped-def]
    """One shutdown callback running `steps` in order."""
    async def close() -> None:
        for step in steps:
            await step()

    return close


def build_metrics(database: Database) -> Metrics:
    """The metadata service's metrics: gRPC calls (added by the interceptor) and the database
    pool's connections. The GC and outbox queue gauges are added by `QueueMetrics.register`
    (services/metadata/queue_metrics.py)."""
    metrics = Metrics("metadata")
    pools = {"primary": database.engine.sync_engine.pool}
    if database.replica is not None:
        pools["replica"] = database.replica.sync_engine.pool
    metrics.register_gauge_callback(
        "lading_db_pool_connections", "database pool connections by state (checked_out, idle, size)",
        pool_usage(pools), labels=("pool", "state"),
    )
    return metrics


async def _migrate(settings: Settings) -> None:
    database = open_database(settings.metadata)
    try:
        await migrate(database)
    finally:
        await database.dispose()


def migrate_main(settings: Settings) -> int:
    """`lading migrate`: upgrades the metadata database to head. Returns the exit code."""
    try:
        asyncio.run(_migrate(settings))
    except Exception as exc:  # noqa: BLE001 - a command-line tool reports, it does not trace back
        print(f"lading migrate: failed: {exc}", file=sys.stderr)
        return 1
    print(f"lading migrate: metadata database is at revision {head_revision()}")
    return 0


async def serve(settings: Settings, control: PlaneControl | None = None, *, freeze_start_up: bool = False) -> int:
    """`run` with its failures logged and turned into the exit code `main` returns: 2 for
    settings that cannot work, 1 when it failed, 0 after a clean stop. `lading serve` runs the
    metadata plane this way inside its own process (services/supervisor.py)."""
    try:
        await run(settings, control, freeze_start_up=freeze_start_up)
    except SchemaOutOfDate as exc:
        log.error("%s", exc)
        return 2
    except (AccessConfigError, TlsConfigError, EventsConfigError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    except RegistryError as exc:
        log.error("cannot start: %s", exc.message)
        return 1
    except Exception:  # noqa: BLE001 - e.g. the database refused the connection at start-up
        log.exception("metadata service failed")
        return 1
    return 0


def prepare_process(settings: Settings) -> None:
    """What the metadata plane sets for its whole process: logging, and file permissions."""
    configure_logging(settings.metadata.log_level, "metadata", settings.observability.log_format)
    if settings.metadata.database_url.startswith("sqlite"):
        # SQLite's files (and its -wal/-shm) for the owner only, whatever the inherited umask.
        restrict_new_files()


def main() -> int:
    """`python -m services.metadata` / `lading metadata`. Returns the exit code."""
    settings = load_settings()
    prepare_process(settings)
    try:
        return asyncio.run(serve(settings, freeze_start_up=True))
    except KeyboardInterrupt:
        return 0
