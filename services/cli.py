"""The `lading` command: `serve` (the embedded registry), one plane each (`gateway`, `metadata`,
`blob`), and `migrate` (apply the metadata schema migrations).

Planes are imported only when their command runs, so one plane's dependencies never load in another,
and `lading serve`'s supervisor (services/supervisor.py) loads nothing but the standard library.
`--data-dir`, `--metadata` and `--blob` work before or after the subcommand (services/cli_targets.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# gRPC's fork handlers (on by default in grpcio's core, off in its Python layer: a mixed state,
# grpc/grpc#41433) can abort a child forked while a gRPC thread is busy, e.g. a subprocess started
# by a plane that serves gRPC. Lading forks only before gRPC starts, or to exec at once, so it
# needs none of them. Read when gRPC initialises, which happens after this.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# Commands that run a plane themselves: it reads its addresses from the LADING_* settings.
_PLANES = ("gateway", "metadata", "blob", "migrate")

DISTRIBUTION = "lading-registry"


def _version() -> str:
    """The installed distribution's version (a source tree that was never installed has none)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return f"unknown ({DISTRIBUTION} is not installed: pip install .)"


def _plain_serve(argv: Sequence[str]) -> dict[str, str | int | None] | None:
    """The flags of a plain `lading [--data-dir D] serve [--data-dir D] [--host H] [--port P]`, or
    None for anything else (help, errors, other flags: the full parser answers those). Lets
    `lading serve` start its supervisor without importing the operator commands (~7 MiB)."""
    if "serve" not in argv:
        return None
    at = list(argv).index("serve")
    before = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    before.add_argument("--data-dir", default=None)
    after = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    after.add_argument("--data-dir", default=None)
    after.add_argument("--host", default=None)
    after.add_argument("--port", default=None, type=int)
    try:
        head, head_rest = before.parse_known_args(argv[:at])
        tail, tail_rest = after.parse_known_args(argv[at + 1:])
    except argparse.ArgumentError:
        return None
    if head_rest or tail_rest:
        return None
    return {"data_dir": tail.data_dir if tail.data_dir is not None else head.data_dir,
            "host": tail.host, "port": tail.port}


def _parser() -> argparse.ArgumentParser:
    from services import (
        cli_accounts,
        cli_admin,
        cli_events,
        cli_policies,
        cli_proxy,
        cli_regions,
        cli_replication,
        cli_watch,
    )
    from services.cli_targets import add_target_flags

    parser = argparse.ArgumentParser(
        prog="lading",
        description="Lading, an OCI Distribution v1.1 container registry. Planes read LADING_* "
        "environment variables (and LADING_CONFIG_FILE).",
    )
    add_target_flags(parser, ("metadata", "blob"), default=None)
    parser.add_argument("--version", action="version", version=f"lading {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the embedded registry: all three planes on this machine (SQLite + files under --data-dir)",
    )
    serve.add_argument(
        "--data-dir", default=argparse.SUPPRESS, help="folder for the database, blobs and sockets (default ./data)"
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
    cli_proxy.add_commands(commands)
    cli_replication.add_commands(commands)
    cli_watch.add_commands(commands)
    cli_regions.add_commands(commands)
    cli_policies.add_commands(commands)
    return parser


def _misplaced_flags(args: argparse.Namespace) -> str | None:
    """Why the global flags given do not apply to this command, or None."""
    plane = args.command in _PLANES and getattr(args, "action", None) is None
    given = [flag for flag, value in (("--data-dir", args.data_dir), ("--metadata", args.metadata),
                                      ("--blob", args.blob)) if value is not None]
    if plane and given:
        return (f"{', '.join(given)} apply to `lading serve` and the operator commands; `lading {args.command}` "
                "reads its addresses from the LADING_* settings (e.g. LADING_METADATA__LISTEN)")
    if args.command == "serve" and (args.metadata is not None or args.blob is not None):
        return ("--metadata and --blob are for the operator commands; `lading serve` puts its planes' "
                "sockets under --data-dir (or set LADING_METADATA__LISTEN, LADING_BLOB__LISTEN)")
    return None


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    serve_flags = _plain_serve(argv)
    if serve_flags is not None:
        from services.supervisor import serve

        sys.exit(serve(**serve_flags))  # type: ignore[arg-type]
    from services import (
        cli_accounts,
        cli_admin,
        cli_events,
        cli_policies,
        cli_proxy,
        cli_regions,
        cli_replication,
        cli_watch,
    )

    args = _parser().parse_args(argv)
    misplaced = _misplaced_flags(args)
    if misplaced is not None:
        print(f"lading {args.command}: {misplaced}", file=sys.stderr)
        sys.exit(2)
    if args.command in cli_accounts.COMMANDS:
        sys.exit(cli_accounts.run(args))
    if args.command == cli_events.COMMAND:
        sys.exit(cli_events.run(args))
    if args.command == cli_proxy.COMMAND:
        sys.exit(cli_proxy.run(args))
    if args.command == cli_replication.COMMAND:
        sys.exit(cli_replication.run(args))
    if args.command == cli_watch.COMMAND:
        sys.exit(cli_watch.run(args))
    if args.command == cli_regions.COMMAND:
        sys.exit(cli_regions.run(args))
    if args.command in cli_policies.COMMANDS:
        sys.exit(cli_policies.run(args))
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
        import inspect

        if inspect.iscoroutine(outcome):
            import asyncio

            outcome = asyncio.run(outcome)
        if isinstance(outcome, int):
            sys.exit(outcome)


if __name__ == "__main__":
    main()
