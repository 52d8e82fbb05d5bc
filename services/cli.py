"""The `lading` command: `serve` (the embedded registry), one plane each (`gateway`, `metadata`,
`blob`), and `migrate` (apply the metadata schema migrations).

Planes are imported only when their command runs, so one plane's dependencies never load in another.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from collections.abc import Sequence

from services import cli_accounts, cli_admin, cli_events

DISTRIBUTION = "lading-registry"


def _version() -> str:
    """The installed distribution's version (a source tree that was never installed has none)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return f"unknown ({DISTRIBUTION} is not installed: pip install .)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lading",
        description="Lading, an OCI Distribution v1.1 container registry. Planes read LADING_* "
        "environment variables (and LADING_CONFIG_FILE).",
    )
    parser.add_argument("--version", action="version", version=f"lading {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the embedded registry: all three planes on this machine (SQLite + files under --data-dir)",
    )
    serve.add_argument(
        "--data-dir", default=None, help="folder for the database, blobs and sockets (default ./data)"
    )
    serve.add_argument("--host", default=None, help="address the registry listens on (default 127.0.0.1)")
    serve.add_argument("--port", default=None, type=int, help="port the registry listens on (default 5000)")
    commands.add_parser("gateway", help="run the HTTP gateway plane (/v2/)")
    commands.add_parser("metadata", help="run the metadata plane (gRPC)")
    commands.add_parser("blob", help="run the blob plane (gRPC)")
    commands.add_parser("migrate", help="apply pending metadata database migrations and exit")
    cli_accounts.add_commands(commands)
    cli_admin.add_commands(commands)
    cli_events.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command in cli_accounts.COMMANDS:
        sys.exit(cli_accounts.run(args))
    if args.command == cli_events.COMMAND:
        sys.exit(cli_events.run(args))
    if cli_admin.handles(args):
        sys.exit(cli_admin.run(args))
    if args.command == "serve":
        from services.supervisor import serve

        sys.exit(serve(data_dir=args.data_dir, host=args.host, port=args.port))
    if args.command == "gateway":
        from gateway.main import main as gateway_main

        sys.exit(gateway_main())
    elif args.command == "metadata":
        from services.metadata.main import main as metadata_main

        sys.exit(metadata_main())
    elif args.command == "blob":
        from services.blob.main import main as blob_main

        sys.exit(blob_main())
    elif args.command == "migrate":
        from services.common.settings import load_settings
        from services.metadata.main import migrate_main

        outcome = migrate_main(load_settings())
        if inspect.iscoroutine(outcome):
            outcome = asyncio.run(outcome)
        if isinstance(outcome, int):
            sys.exit(outcome)


if __name__ == "__main__":
    main()
