"""`lading events list|replay`: the event-notification outbox, over the metadata service's
EventsService (gRPC; found as services/cli_targets.py says: `--metadata`, `--data-dir`, the
settings, else the `lading serve` of the data folder; the gateway's client TLS settings apply, see
services/cli_channels.py).

    lading events list [--state pending|delivered|dead] [--endpoint NAME] [--limit N] [--json]
    lading events replay ID            # one outbox row, whatever its state
    lading events replay --dead [--endpoint NAME]
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from services.cli_targets import add_target_flags

if TYPE_CHECKING:  # kept out of `lading serve`'s and `lading --help`'s imports
    import grpc

COMMAND = "events"


def add_commands(commands: Any) -> None:
    events = commands.add_parser("events", help="list and replay event notifications (the outbox)")
    actions = events.add_subparsers(dest="events_action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="outbox rows, newest first")
    listing.add_argument("--state", choices=["pending", "delivered", "dead"], default="")
    listing.add_argument("--endpoint", default="", help="only rows of this endpoint")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="print each event's JSON body too")
    replay = actions.add_parser("replay", help="make rows pending again with a fresh attempt budget")
    replay.add_argument("id", nargs="?", type=int, default=0, help="outbox row id (see `events list`)")
    replay.add_argument("--dead", action="store_true", help="every dead row")
    replay.add_argument("--endpoint", default="", help="with --dead: only this endpoint's rows")
    for parser in (listing, replay):
        add_target_flags(parser, ("metadata",))


async def _dispatch(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    from lading.metadata.v1 import events_pb2 as pb
    from lading.metadata.v1 import events_pb2_grpc

    stub = events_pb2_grpc.EventsServiceStub(channel)
    if args.events_action == "list":
        reply = await stub.ListEvents(pb.ListEventsRequest(state=args.state, endpoint=args.endpoint, limit=args.limit))
        print(f"{'ID':>8}  {'STATE':9}  {'ENDPOINT':16}  {'ACTION':6}  {'TRIES':>5}  {'CREATED':25}  REPOSITORY / LAST ERROR")
        for row in reply.rows:
            print(f"{row.id:>8}  {row.state:9}  {row.endpoint[:16]:16}  {row.action:6}  {row.attempts:>5}  "
                  f"{row.created_at[:25]:25}  {row.repository}{'  ' + row.last_error if row.last_error else ''}")
            if args.json:
                print(f"          {row.body}")
        return 0
    if not args.id and not args.dead:
        print("lading events replay: give an outbox row ID or --dead", file=sys.stderr)
        return 2
    reply = await stub.ReplayEvents(pb.ReplayEventsRequest(id=args.id, dead=args.dead, endpoint=args.endpoint))
    print(f"lading events replay: {reply.replayed} event(s) pending again")
    return 0 if reply.replayed or args.dead else 1


async def _call(args: argparse.Namespace) -> int:
    from services.cli_channels import with_planes
    from services.cli_targets import resolve
    from services.common.settings import load_settings

    settings = load_settings()
    targets = resolve(args, settings, ("metadata",))
    return await with_planes(f"events {args.events_action}", targets, settings,
                             lambda channels: _dispatch(args, channels["metadata"]))


def run(args: argparse.Namespace) -> int:
    """Runs one `lading events` command; returns the exit code."""
    import asyncio

    return asyncio.run(_call(args))
