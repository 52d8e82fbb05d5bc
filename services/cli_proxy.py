"""`lading proxy status|evict`: the pull-through cache, over the metadata service's ProxyService
(gRPC; found as services/cli_targets.py says: `--metadata`, `--data-dir`, the settings, else the
`lading serve` of the data folder).

    lading proxy status [--json]
    lading proxy evict [--older-than SECONDS] [--upstream NAME] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from services.cli_targets import add_target_flags

if TYPE_CHECKING:  # kept out of `lading serve`'s and `lading --help`'s imports
    import grpc

COMMAND = "proxy"


def add_commands(commands: Any) -> None:
    proxy = commands.add_parser("proxy", help="the pull-through cache: per-upstream status, eviction")
    actions = proxy.add_subparsers(dest="proxy_action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="per upstream: cached blobs, bytes, tags, hits, misses, last error")
    status.add_argument("--json", action="store_true", help="one JSON object per upstream")
    evict = actions.add_parser("evict", help="evict cached blobs by age and byte budget (GC reclaims the bytes)")
    evict.add_argument("--older-than", type=float, default=0.0, metavar="SECONDS",
                       help="blobs nobody pulled for this long (default: proxy.evict_after_seconds)")
    evict.add_argument("--upstream", default="", help="only this upstream")
    evict.add_argument("--dry-run", action="store_true", help="list what would go, change nothing")
    for parser in (status, evict):
        add_target_flags(parser, ("metadata",))


async def _dispatch(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    from google.protobuf.json_format import MessageToDict
    from lading.metadata.v1 import proxy_pb2 as pb
    from lading.metadata.v1 import proxy_pb2_grpc

    stub = proxy_pb2_grpc.ProxyServiceStub(channel)
    if args.proxy_action == "status":
        reply = await stub.ProxyStatus(pb.ProxyStatusRequest())
        if not reply.upstreams:
            print("lading proxy status: no upstream is configured ([[proxy.upstreams]])")
            return 0
        if args.json:
            for row in reply.upstreams:
                print(json.dumps(MessageToDict(row, always_print_fields_with_no_presence=True,
                                               preserving_proto_field_name=True)))
            return 0
        print(f"{'UPSTREAM':16}  {'PREFIX':20}  {'BLOBS':>6}  {'BYTES':>12}  {'BUDGET':>12}  {'TAGS':>5}  "
              f"{'HIT%':>5}  {'STALE':>5}  LAST ERROR")
        for row in reply.upstreams:
            asked = row.hits + row.misses
            ratio = f"{100 * row.hits / asked:.0f}" if asked else "-"
            print(f"{row.name[:16]:16}  {row.prefix[:20]:20}  {row.cached_blobs:>6}  {row.cached_bytes:>12}  "
                  f"{row.byte_budget or '-':>12}  {row.cached_tags:>5}  {ratio:>5}  {row.stale_serves:>5}  "
                  f"{'(offline) ' if row.offline else ''}{row.last_error}")
        return 0
    reply = await stub.EvictCached(pb.EvictCachedRequest(older_than_seconds=args.older_than,
                                                         upstream=args.upstream, dry_run=args.dry_run))
    for blob in reply.blobs:
        print(f"{'would evict' if args.dry_run else 'evicted'} {blob.upstream} {blob.digest} {blob.size} ({blob.reason})")
    total = sum(blob.size for blob in reply.blobs)
    print(f"lading proxy evict: {len(reply.blobs)} blob(s), {total} bytes"
          f"{'' if args.dry_run else f', {reply.manifests_removed} cached manifest(s) removed'}")
    return 0


async def _call(args: argparse.Namespace) -> int:
    from services.cli_channels import with_planes
    from services.cli_targets import resolve
    from services.common.settings import load_settings

    settings = load_settings()
    targets = resolve(args, settings, ("metadata",))
    return await with_planes(f"proxy {args.proxy_action}", targets, settings,
                             lambda channels: _dispatch(args, channels["metadata"]))


def run(args: argparse.Namespace) -> int:
    """Runs one `lading proxy` command; returns the exit code."""
    import asyncio

    return asyncio.run(_call(args))
