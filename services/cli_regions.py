"""`lading region status`: this region's view of the regions (issue 15, item 7), over the metadata
plane's RegionService (gRPC; found as services/cli_targets.py says, like the other operator
commands): its name and role, the primary region, its standby's replication lag, the writes that
waited for the standby and those forwarded to the primary, and whether each other region's
metadata plane answers (with its own lag and fetch-on-miss count when it does), and the blobs
fetched from other regions on a miss. Exit code 1 when the primary region cannot be reached.

    lading region status [--json]
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from services.cli_targets import add_target_flags

if TYPE_CHECKING:  # kept out of `lading serve`'s and `lading --help`'s imports
    import grpc

COMMAND = "region"


def add_commands(commands: Any) -> None:
    region = commands.add_parser("region", help="regions: this region's role, standby lag, forwarded writes")
    actions = region.add_subparsers(dest="region_action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="this region's view of every region")
    status.add_argument("--json", action="store_true")
    add_target_flags(status, ("metadata",))


async def _dispatch(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    from google.protobuf.json_format import MessageToDict
    from lading.metadata.v1 import regions_pb2 as pb
    from lading.metadata.v1 import regions_pb2_grpc

    reply = await regions_pb2_grpc.RegionServiceStub(channel).GetRegionStatus(pb.GetRegionStatusRequest(),
                                                                              timeout=30)
    primary_down = any(p.primary and not p.reachable for p in reply.peers)
    if args.json:
        print(json.dumps(MessageToDict(reply, always_print_fields_with_no_presence=True), indent=2))
        return 1 if primary_down else 0
    if reply.role == "single":
        print("no regions configured (regions.local is empty): one site")
    else:
        print(f"region {reply.local} ({reply.role}); primary region: {reply.primary}")
    lag = "unknown (the standby does not answer)" if reply.replication_lag_seconds < 0 else \
        f"{reply.replication_lag_seconds:.3f} s"
    print(f"  standby replication lag: {lag}")
    print(f"  writes that waited for the standby: {reply.replay_waits} ({reply.replay_wait_timeouts} past the bound)")
    if reply.role == "replica":
        print(f"  writes forwarded to {reply.primary}: {reply.forwarded_writes} "
              f"({reply.forward_failures} refused: primary unreachable)")
        print(f"  reads answered by {reply.primary}: {reply.read_failovers} with the standby down "
              f"(regions.read_failover), {reply.pinned_reads} pinned after a forwarded write the standby "
              "had not replayed in time")
    if reply.role != "single":
        print(f"  blobs fetched from other regions on a miss: {reply.blob_fetches_completed} "
              f"({reply.blob_fetch_bytes} bytes; {reply.blob_fetches_failed} failed, {reply.blob_fetches_started} "
              f"started here, {reply.blob_fetches_shared} answered by another replica's fetch)")
    for peer in reply.peers:
        state = "reachable" if peer.reachable else f"UNREACHABLE ({peer.detail})"
        theirs = ""
        if peer.reachable and peer.replication_lag_seconds >= 0:
            theirs = f"; lag {peer.replication_lag_seconds:.3f} s, {peer.blob_fetches_completed} blobs fetched"
        print(f"  {peer.name:12} {'primary ' if peer.primary else 'replica '} {peer.metadata_target}  {state}{theirs}")
    return 1 if primary_down else 0


async def _call(args: argparse.Namespace) -> int:
    from services.cli_channels import with_planes
    from services.cli_targets import resolve
    from services.common.settings import load_settings

    settings = load_settings()
    targets = resolve(args, settings, ("metadata",))
    return await with_planes(f"region {args.region_action}", targets, settings,
                             lambda channels: _dispatch(args, channels["metadata"]))


def run(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_call(args))
