"""`lading replication list|status|run|retry`: push-based replication (README "Replication"), whose
copies are rows of the event outbox under the endpoints `replicate-<rule>`; over the metadata
service's EventsService and ReplicationService (found as services/cli_targets.py says).

    lading replication list              # the rules in this command's settings (LADING_CONFIG_FILE)
    lading replication status [RULE]
    lading replication run RULE          # copy now everything RULE matches (idempotent)
    lading replication retry RULE        # dead copies of RULE become pending again
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from services.cli_targets import add_target_flags

if TYPE_CHECKING:  # kept out of `lading serve`'s and `lading --help`'s imports
    import grpc

COMMAND = "replication"
ENDPOINT_PREFIX = "replicate-"
# Rows looked at per state (the outbox keeps delivered rows for events.delivered_retention_seconds).
_PAGE = 1000


def add_commands(commands: Any) -> None:
    replication = commands.add_parser("replication",
                                      help="push-based replication: rules, status, copy now, retry dead copies")
    actions = replication.add_subparsers(dest="replication_action", required=True, metavar="ACTION")
    actions.add_parser("list", help="the [[replication.rules]] of this command's settings (LADING_CONFIG_FILE)")
    status = actions.add_parser("status", help="per rule: pending, delivered and dead copies, last error")
    status.add_argument("rule", nargs="?", default="", help="only this rule")
    retry = actions.add_parser("retry", help="make a rule's dead copies pending again")
    retry.add_argument("rule", help="the rule's name")
    run_now = actions.add_parser("run", help="copy now every repository and tag a rule matches (idempotent)")
    run_now.add_argument("rule", help="the rule's name")
    for parser in (status, retry, run_now):
        add_target_flags(parser, ("metadata",))


async def _rows(stub: Any, pb: Any, state: str, endpoint: str) -> list[Any]:
    rows: list[Any] = []
    before = 0
    while True:
        page = (await stub.ListEvents(pb.ListEventsRequest(state=state, endpoint=endpoint, limit=_PAGE,
                                                           before_id=before))).rows
        rows.extend(page)
        if len(page) < _PAGE:
            return rows
        before = page[-1].id


async def _run_rule(rule: str, channel: grpc.aio.Channel) -> int:
    from lading.metadata.v1 import replication_pb2 as pb
    from lading.metadata.v1 import replication_pb2_grpc

    stub = replication_pb2_grpc.ReplicationServiceStub(channel)
    reply = await stub.RunReplication(pb.RunReplicationRequest(rule=rule))
    for failure in reply.failures:
        print(f"failed {failure}")
    print(f"lading replication run {rule}: {reply.repositories} repository(ies), {reply.tags} tag(s) matched; "
          f"{reply.copied} copied, {reply.unchanged} already on the target, {len(reply.failures)} failed")
    if reply.failures:
        print(f"lading replication run: {len(reply.failures)} copy(ies) failed (listed above); fix the cause "
              "and run again (what was copied is not sent twice)", file=sys.stderr)
        return 1
    return 0


async def _dispatch(args: argparse.Namespace, channel: grpc.aio.Channel, rules: list[str]) -> int:
    from lading.metadata.v1 import events_pb2 as pb
    from lading.metadata.v1 import events_pb2_grpc

    if args.replication_action == "run":
        return await _run_rule(args.rule, channel)
    stub = events_pb2_grpc.EventsServiceStub(channel)
    if args.replication_action == "retry":
        reply = await stub.ReplayEvents(pb.ReplayEventsRequest(dead=True, endpoint=ENDPOINT_PREFIX + args.rule))
        print(f"lading replication retry: {reply.replayed} dead copy(ies) of {args.rule} pending again")
        return 0
    names = [args.rule] if args.rule else rules
    if not names:
        seen = {row.endpoint for row in await _rows(stub, pb, "", "") if row.endpoint.startswith(ENDPOINT_PREFIX)}
        names = sorted(name[len(ENDPOINT_PREFIX):] for name in seen)
    if not names:
        print("lading replication status: no replication rule ([[replication.rules]]) has copied anything yet")
        return 0
    print(f"{'RULE':20}  {'PENDING':>8}  {'DELIVERED':>9}  {'DEAD':>6}  LAST ERROR")
    for name in names:
        counts = {}
        last_error = ""
        for state in ("pending", "delivered", "dead"):
            rows = await _rows(stub, pb, state, ENDPOINT_PREFIX + name)
            counts[state] = len(rows)
            if state != "delivered" and rows and rows[0].last_error and not last_error:
                last_error = rows[0].last_error
        print(f"{name[:20]:20}  {counts['pending']:>8}  {counts['delivered']:>9}  {counts['dead']:>6}  {last_error}")
    return 0


async def _call(args: argparse.Namespace) -> int:
    from services.cli_channels import with_planes
    from services.cli_targets import resolve
    from services.common.settings import load_settings

    settings = load_settings()
    targets = resolve(args, settings, ("metadata",))
    rules = [rule.name for rule in settings.replication.rules]
    return await with_planes(f"replication {args.replication_action}", targets, settings,
                             lambda channels: _dispatch(args, channels["metadata"], rules))


def _list() -> int:
    from services.common.settings import load_settings

    rules = load_settings().replication.rules
    if not rules:
        print("lading replication list: no [[replication.rules]] in these settings (set LADING_CONFIG_FILE)")
        return 0
    print(f"{'RULE':20}  {'TARGET':32}  {'REPOSITORIES':24}  {'TAGS':16}  PREFIX  DELETES")
    for rule in rules:
        print(f"{rule.name[:20]:20}  {rule.url[:32]:32}  {','.join(rule.repositories or ['*'])[:24]:24}  "
              f"{rule.tags[:16]:16}  {rule.target_prefix or '-':6}  {'yes' if rule.deletes else 'no'}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Runs one `lading replication` command; returns the exit code."""
    import asyncio

    if args.replication_action == "list":
        return _list()

    try:
        return asyncio.run(_call(args))
    except KeyboardInterrupt:
        print("lading replication: interrupted", file=sys.stderr)
        return 130
