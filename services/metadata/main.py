"""Composition root of the metadata service: builds everything from Settings and runs it.

Start-up order: open the database pool → migrate (auto_migrate) or refuse an out-of-date schema →
build store, core, servicer → bind the gRPC listener → health SERVING once the database answers.
Shutdown order is GrpcService's (health NOT_SERVING → drain in-flight calls → close the pool).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from lading.metadata.v1 import accounts_pb2_grpc, metadata_pb2_grpc

from services.common.errors import ErrorKind, RegistryError
from services.common.grpc_server import GrpcService
from services.common.logs import configure_logging
from services.common.paths import prepare_listen_address
from services.common.settings import Settings, load_settings
from services.metadata.accounts.main import bootstrap_admin, build_account_servicer
from services.metadata.core import MetadataCore, MetadataLimits
from services.metadata.migrations import check_schema_current, head_revision, migrate
from services.metadata.servicer import MetadataServicer
from services.metadata.store.dialect import is_unavailable
from services.metadata.store.engine import Database, open_database
from services.metadata.store.sql import SqlMetadataStore

SERVICE_NAME = "lading.metadata.v1.MetadataService"
ACCOUNT_SERVICE_NAME = "lading.metadata.v1.AccountService"
log = logging.getLogger("lading.metadata")


class SchemaOutOfDate(RuntimeError):
    """The database is not at the newest migration and auto_migrate is off."""


async def _prepare_schema(database: Database, *, auto_migrate: bool) -> None:
    try:
        if auto_migrate:
            await migrate(database)
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


async def run(settings: Settings) -> None:
    """Runs the metadata service until SIGTERM/SIGINT.

    Raises SchemaOutOfDate when auto_migrate is off and the schema is not current, RegistryError
    (UNAVAILABLE) or a driver error when the database cannot be reached at start-up.
    """
    config = settings.metadata
    database = open_database(config)
    try:
        await _prepare_schema(database, auto_migrate=config.auto_migrate)
        store = SqlMetadataStore(database)
        core = MetadataCore(
            store,
            MetadataLimits(
                max_manifest_bytes=settings.gateway.max_manifest_bytes,
                default_page_size=settings.gateway.default_page_size,
                max_page_size=settings.gateway.max_page_size,
            ),
        )
        accounts = build_account_servicer(database, settings.auth)
        await bootstrap_admin(accounts, settings.auth)
        service = GrpcService(
            listen=config.listen,
            service_names=[SERVICE_NAME, ACCOUNT_SERVICE_NAME],
            grace_seconds=config.shutdown_grace_seconds,
            tls=config.tls,
            tls_section="metadata.tls",
        )
        metadata_pb2_grpc.add_MetadataServiceServicer_to_server(MetadataServicer(core), service.server)
        accounts_pb2_grpc.add_AccountServiceServicer_to_server(accounts, service.server)
        prepare_listen_address(config.listen)
        await service.serve_forever(ready=store.ping, on_shutdown=store.close)
    finally:
        await database.dispose()


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


def main() -> int:
    """`python -m services.metadata` / `lading metadata`. Returns the exit code."""
    settings = load_settings()
    configure_logging(settings.gateway.log_level, "metadata")
    try:
        asyncio.run(run(settings))
    except SchemaOutOfDate as exc:
        log.error("%s", exc)
        return 2
    except RegistryError as exc:
        log.error("cannot start: %s", exc.message)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception:  # noqa: BLE001 - e.g. the database refused the connection at start-up
        log.exception("metadata service failed")
        return 1
    return 0
