"""`lading immutable add|remove|list|override` and `lading tag history|restore`: governance over
the metadata service's PolicyService (gRPC; found as services/cli_targets.py says). Changes are
sent as the actor `lading-admin` and land in the audit log.

    lading immutable add NAME --repository 'prod/*' --tag 'v*'
    lading immutable remove NAME
    lading immutable list
    lading immutable override REPOSITORY TAG --reason TEXT   # the next move/delete of that tag, once
    lading tag history REPOSITORY TAG [--limit N]
    lading tag restore REPOSITORY TAG (--to DIGEST | --at TIME)
    lading audit [--since TIME] [--actor NAME] [--repository NAME] [--limit N] [--json]
    lading quota set NAME (--repository 'team-a/*' | --namespace team-a) --limit 10GiB
    lading quota show | remove NAME | recount
    lading retention set NAME --repository 'ci/*' [--keep-last N] [--keep-tags 'v*'] [--untagged-after 7d]
    lading retention list | remove NAME | plan | run
    lading signature require NAME --repository 'prod/*' [--type any|cosign|notation] [--key cosign.pub ...]
    lading signature list | remove NAME
    lading vuln require NAME --repository 'prod/*' [--severity high] [--max-age 7d] [--allow CVE-2024-3094,...]
    lading vuln list | remove NAME
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from services.cli_targets import add_target_flags

if TYPE_CHECKING:  # kept out of `lading serve`'s and `lading --help`'s imports
    import grpc

COMMAND = "immutable"
AUDIT_COMMAND = "audit"
QUOTA_COMMAND = "quota"
RETENTION_COMMAND = "retention"
SIGNATURE_COMMAND = "signature"
VULN_COMMAND = "vuln"
COMMANDS = (COMMAND, AUDIT_COMMAND, QUOTA_COMMAND, RETENTION_COMMAND, SIGNATURE_COMMAND, VULN_COMMAND)
TAG_ACTIONS = ("history", "restore")
_TIMEOUT = 60.0


def add_commands(commands: Any) -> None:
    immutable = commands.add_parser("immutable", help="immutable-tag rules (tags that may never move)")
    actions = immutable.add_subparsers(dest="immutable_action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create or replace a rule")
    add.add_argument("name", help="rule name (lower case, digits, . _ -)")
    add.add_argument("--repository", required=True, help="repository glob, e.g. 'prod/*'")
    add.add_argument("--tag", required=True, help="tag glob, e.g. 'v*' or 'release-*'")
    actions.add_parser("remove", help="delete a rule").add_argument("name")
    actions.add_parser("list", help="the rules")
    override = actions.add_parser("override", help="let the next move or delete of one immutable tag through, once")
    override.add_argument("repository")
    override.add_argument("tag")
    override.add_argument("--reason", required=True, help="why (kept in the audit log)")
    for parser in actions.choices.values():
        add_target_flags(parser, ("metadata",))
    audit = commands.add_parser("audit", help="the audit log: writes, admin, policy and account changes")
    audit.add_argument("--since", default="", metavar="TIME", help="from this time on (RFC 3339)")
    audit.add_argument("--actor", default="", help="only this actor (account, lading-admin, operator, anonymous)")
    audit.add_argument("--repository", default="", help="only this repository")
    audit.add_argument("--limit", type=int, default=100)
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
    add_target_flags(audit, ("metadata",))
    quota = commands.add_parser("quota", help="storage quotas by repository pattern or namespace")
    quota_actions = quota.add_subparsers(dest="quota_action", required=True, metavar="ACTION")
    setting = quota_actions.add_parser("set", help="create or change a quota (its usage is counted at once)")
    setting.add_argument("name")
    scope = setting.add_mutually_exclusive_group(required=True)
    scope.add_argument("--repository", default="", help="repository glob, e.g. 'team-a/*'")
    scope.add_argument("--namespace", default="", help="a namespace: the same as --repository 'NAMESPACE/*'")
    setting.add_argument("--limit", required=True, help="bytes, or with a unit: 500MiB, 10GiB")
    quota_actions.add_parser("show", help="quotas with their usage")
    quota_actions.add_parser("remove", help="delete a quota").add_argument("name")
    quota_actions.add_parser("recount", help="rebuild every quota's usage from the links (GC does it too)")
    for parser in quota_actions.choices.values():
        add_target_flags(parser, ("metadata",))
    retention = commands.add_parser("retention", help="retention policies: delete old tags and untagged manifests")
    retention_actions = retention.add_subparsers(dest="retention_action", required=True, metavar="ACTION")
    policy = retention_actions.add_parser("set", help="create or replace a policy")
    policy.add_argument("name")
    policy.add_argument("--repository", required=True, help="repository glob, e.g. 'ci/*'")
    policy.add_argument("--keep-last", type=int, default=0, metavar="N",
                        help="keep the N most recently pushed tags (default 0: every tag)")
    policy.add_argument("--keep-tags", default="", metavar="GLOB", help="always keep tags matching this, e.g. 'v*'")
    policy.add_argument("--untagged-after", default="0", metavar="AGE",
                        help="delete manifests untagged for longer than this: 7d, 12h, 30m or seconds (default: never)")
    retention_actions.add_parser("list", help="the policies")
    retention_actions.add_parser("remove", help="delete a policy").add_argument("name")
    retention_actions.add_parser("plan", help="what a run would delete now (count and bytes)")
    retention_actions.add_parser("run", help="run retention now (GC reclaims the bytes)")
    for parser in retention_actions.choices.values():
        add_target_flags(parser, ("metadata",))
    signature = commands.add_parser("signature", help="signature policies: pull only signed images")
    signature_actions = signature.add_subparsers(dest="signature_action", required=True, metavar="ACTION")
    require = signature_actions.add_parser("require", help="create or replace a policy")
    require.add_argument("name")
    require.add_argument("--repository", required=True, help="repository glob, e.g. 'prod/*'")
    require.add_argument("--type", default="any", choices=["any", "cosign", "notation"],
                         help="which signatures count (default: any)")
    require.add_argument("--key", action="append", default=[], metavar="PEM_FILE",
                         help="a cosign public key (ECDSA P-256) signatures must verify with; repeatable")
    signature_actions.add_parser("list", help="the policies")
    signature_actions.add_parser("remove", help="delete a policy").add_argument("name")
    for parser in signature_actions.choices.values():
        add_target_flags(parser, ("metadata",))
    vuln = commands.add_parser("vuln", help="vulnerability report policies: pull only scanned, clean images")
    vuln_actions = vuln.add_subparsers(dest="vuln_action", required=True, metavar="ACTION")
    vuln_require = vuln_actions.add_parser("require", help="create or replace a policy")
    vuln_require.add_argument("name")
    vuln_require.add_argument("--repository", required=True, help="repository glob, e.g. 'prod/*'")
    vuln_require.add_argument("--severity", default="", choices=["", "critical", "high", "medium", "low"],
                              help="refuse images whose newest report lists a finding at or above this")
    vuln_require.add_argument("--max-age", default="0", metavar="AGE",
                              help="refuse images without a report younger than this: 7d, 12h, 30m or seconds")
    vuln_require.add_argument("--allow", default="", metavar="IDS", help="comma-separated finding ids never counted")
    vuln_actions.add_parser("list", help="the policies")
    vuln_actions.add_parser("remove", help="delete a policy").add_argument("name")
    for parser in vuln_actions.choices.values():
        add_target_flags(parser, ("metadata",))


def add_tag_actions(tag: Any, targets: Any) -> None:
    """`lading tag history|restore` (the `tag` command itself is services/cli_admin.py's)."""
    history = targets(tag.add_parser("history", help="every creation, move and delete of a tag, newest first"))
    history.add_argument("repository")
    history.add_argument("tag")
    history.add_argument("--limit", type=int, default=100)
    restore = targets(tag.add_parser("restore", help="point a tag back at an earlier manifest"))
    restore.add_argument("repository")
    restore.add_argument("tag")
    which = restore.add_mutually_exclusive_group(required=True)
    which.add_argument("--to", default="", metavar="DIGEST", help="the manifest digest to point at")
    which.add_argument("--at", default="", metavar="TIME",
                       help="where the tag pointed at this time (RFC 3339, e.g. 2026-12-06T04:00:00Z)")


async def tag_action(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    from lading.metadata.v1 import policies_pb2 as pb
    from lading.metadata.v1 import policies_pb2_grpc

    from services.cli_channels import admin_request_context

    stub = policies_pb2_grpc.PolicyServiceStub(channel)
    if args.action == "history":
        reply = await stub.GetTagHistory(pb.GetTagHistoryRequest(repository=args.repository, tag=args.tag,
                                                                 limit=args.limit), timeout=_TIMEOUT)
        print(f"{'TIME':27}  {'ACTION':22}  {'ACTOR':16}  OLD -> NEW")
        for entry in reply.entries:
            print(f"{entry.at:27}  {entry.action:22}  {entry.actor[:16]:16}  {entry.old_digest or '-'} -> "
                  f"{entry.new_digest or '-'}")
        return 0
    reply = await stub.RestoreTag(pb.RestoreTagRequest(repository=args.repository, tag=args.tag, digest=args.to,
                                                       at=args.at, context=admin_request_context()), timeout=_TIMEOUT)
    state = "restored" if reply.moved else "already at"
    print(f"{args.repository}:{args.tag} {state} {reply.digest}")
    return 0


async def _dispatch(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    from lading.metadata.v1 import policies_pb2 as pb
    from lading.metadata.v1 import policies_pb2_grpc

    from services.cli_channels import admin_request_context

    stub = policies_pb2_grpc.PolicyServiceStub(channel)
    action = args.immutable_action
    if action == "add":
        rule = await stub.SetImmutableRule(pb.SetImmutableRuleRequest(
            name=args.name, repository_pattern=args.repository, tag_pattern=args.tag,
            context=admin_request_context()), timeout=_TIMEOUT)
        print(f"immutable rule {rule.name}: repositories {rule.repository_pattern!r}, tags {rule.tag_pattern!r}")
    elif action == "remove":
        reply = await stub.DeleteImmutableRule(pb.DeleteImmutableRuleRequest(
            name=args.name, context=admin_request_context()), timeout=_TIMEOUT)
        return _removal_reported("immutable rule", args.name, reply.deleted)
    elif action == "list":
        reply = await stub.ListImmutableRules(pb.ListImmutableRulesRequest(), timeout=_TIMEOUT)
        for rule in reply.rules:
            print(f"{rule.name}\trepositories={rule.repository_pattern}\ttags={rule.tag_pattern}\t"
                  f"by {rule.created_by} at {rule.created_at}")
    else:
        reply = await stub.AllowTagOverride(pb.AllowTagOverrideRequest(
            repository=args.repository, tag=args.tag, reason=args.reason, context=admin_request_context()),
            timeout=_TIMEOUT)
        print(f"the next move or delete of {args.repository}:{args.tag} may override rule {reply.rule} once "
              f"(until {reply.expires_at}); audited")
    return 0


async def _audit(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    import json

    from lading.metadata.v1 import policies_pb2 as pb
    from lading.metadata.v1 import policies_pb2_grpc

    stub = policies_pb2_grpc.PolicyServiceStub(channel)
    reply = await stub.ListAudit(pb.ListAuditRequest(since=args.since, actor=args.actor, repository=args.repository,
                                                     limit=args.limit), timeout=_TIMEOUT)
    if args.json:
        for r in reply.records:
            print(json.dumps({"id": r.id, "at": r.at, "actor": r.actor, "action": r.action, "target": r.target,
                              "repository": r.repository or None, "client_address": r.client_address,
                              "request_id": r.request_id, "outcome": r.outcome, "detail": r.detail}))
        return 0
    print(f"{'TIME':27}  {'ACTOR':16}  {'ACTION':24}  {'OUTCOME':7}  TARGET")
    for r in reply.records:
        why = f"  ({r.detail})" if r.detail else ""
        print(f"{r.at:27}  {r.actor[:16]:16}  {r.action[:24]:24}  {r.outcome:7}  {r.target}{why}")
    return 0


async def _quota(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    from lading.metadata.v1 import policies_pb2 as pb
    from lading.metadata.v1 import policies_pb2_grpc

    from services.cli_channels import admin_request_context
    from services.metadata.policies.quotas import size_text

    stub = policies_pb2_grpc.PolicyServiceStub(channel)
    action = args.quota_action
    if action == "set":
        pattern = args.repository or f"{args.namespace.rstrip('/')}/*"
        quota = await stub.SetQuota(pb.SetQuotaRequest(name=args.name, repository_pattern=pattern, limit=args.limit,
                                                       context=admin_request_context()), timeout=_TIMEOUT)
        print(f"quota {quota.name}: repositories {quota.repository_pattern!r}, used {size_text(quota.used_bytes)} "
              f"of {size_text(quota.limit_bytes)}")
    elif action == "remove":
        reply = await stub.DeleteQuota(pb.DeleteQuotaRequest(name=args.name, context=admin_request_context()),
                                       timeout=_TIMEOUT)
        return _removal_reported("quota", args.name, reply.deleted)
    elif action == "show":
        reply = await stub.ListQuotas(pb.ListQuotasRequest(), timeout=_TIMEOUT)
        for q in reply.quotas:
            share = 100.0 * q.used_bytes / q.limit_bytes if q.limit_bytes else 100.0
            print(f"{q.name}\trepositories={q.repository_pattern}\tused={q.used_bytes}\tlimit={q.limit_bytes}\t"
                  f"{size_text(q.used_bytes)} of {size_text(q.limit_bytes)} ({share:.0f}%)")
    else:
        reply = await stub.RecountQuotas(pb.RecountQuotasRequest(context=admin_request_context()), timeout=_TIMEOUT)
        for q in reply.quotas:
            change = "unchanged" if q.before_bytes == q.after_bytes else f"was {q.before_bytes}"
            print(f"{q.name}\tused={q.after_bytes}\t{change}")
    return 0


def _removal_reported(what: str, name: str, deleted: bool) -> int:
    """Prints what a `remove` did; exit status 1 when there was nothing of that name."""
    print(f"removed {what} {name}" if deleted else f"no {what} {name}")
    return 0 if deleted else 1


def _age(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    text = text.strip().lower()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))


async def _retention(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    from lading.metadata.v1 import policies_pb2 as pb
    from lading.metadata.v1 import policies_pb2_grpc

    from services.cli_channels import admin_request_context
    from services.metadata.policies.quotas import size_text

    stub = policies_pb2_grpc.PolicyServiceStub(channel)
    action = args.retention_action
    if action == "set":
        try:
            age = _age(args.untagged_after)
        except ValueError:
            print(f"lading retention set: cannot read --untagged-after {args.untagged_after!r}: use 7d, 12h, 30m "
                  "or seconds", file=sys.stderr)
            return 2
        await stub.SetRetentionPolicy(pb.SetRetentionPolicyRequest(policy=pb.RetentionPolicy(
            name=args.name, repository_pattern=args.repository, keep_last=args.keep_last, keep_tags=args.keep_tags,
            untagged_after_seconds=age), context=admin_request_context()), timeout=_TIMEOUT)
        print(f"retention policy {args.name}: repositories {args.repository!r}")
    elif action == "remove":
        reply = await stub.DeleteRetentionPolicy(pb.DeleteRetentionPolicyRequest(
            name=args.name, context=admin_request_context()), timeout=_TIMEOUT)
        return _removal_reported("retention policy", args.name, reply.deleted)
    elif action == "list":
        for p in (await stub.ListRetentionPolicies(pb.ListRetentionPoliciesRequest(), timeout=_TIMEOUT)).policies:
            print(f"{p.name}\trepositories={p.repository_pattern}\tkeep-last={p.keep_last}\t"
                  f"keep-tags={p.keep_tags or '-'}\tuntagged-after={p.untagged_after_seconds}s")
    else:
        if action == "plan":
            plan = await stub.PlanRetention(pb.PlanRetentionRequest(), timeout=_TIMEOUT)
            head = "would delete"
        else:
            reply = await stub.RunRetention(pb.RunRetentionRequest(context=admin_request_context()), timeout=_TIMEOUT)
            plan, head = reply.plan, "deleting"
        for t in plan.tags:
            print(f"{head} tag\t{t.repository}:{t.tag}\t{t.digest}\t{t.policy}")
        for m in plan.manifests:
            print(f"{head} manifest\t{m.repository}@{m.digest}\t{m.policy}")
        print(f"{head}: {len(plan.tags)} tag(s), {len(plan.manifests)} manifest(s), {size_text(plan.bytes)} "
              "(GC frees the bytes)")
        if action == "run":
            print(f"deleted: {reply.tags_deleted} tag(s), {reply.manifests_deleted} manifest(s); "
                  f"{reply.skipped} skipped (changed since the plan)")
    return 0


async def _signature(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    from lading.metadata.v1 import policies_pb2 as pb
    from lading.metadata.v1 import policies_pb2_grpc

    from services.cli_channels import admin_request_context

    stub = policies_pb2_grpc.PolicyServiceStub(channel)
    action = args.signature_action
    if action == "require":
        keys = args.key_text
        await stub.SetSignaturePolicy(pb.SetSignaturePolicyRequest(policy=pb.SignaturePolicy(
            name=args.name, repository_pattern=args.repository, type=args.type, public_keys=keys),
            context=admin_request_context()), timeout=_TIMEOUT)
        verified = f", verified with {len(args.key)} key(s)" if args.key else ""
        print(f"signature policy {args.name}: repositories {args.repository!r} need a {args.type} signature{verified}")
    elif action == "remove":
        reply = await stub.DeleteSignaturePolicy(pb.DeleteSignaturePolicyRequest(
            name=args.name, context=admin_request_context()), timeout=_TIMEOUT)
        return _removal_reported("signature policy", args.name, reply.deleted)
    else:
        for p in (await stub.ListSignaturePolicies(pb.ListSignaturePoliciesRequest(), timeout=_TIMEOUT)).policies:
            keys = p.public_keys.count("BEGIN PUBLIC KEY")
            print(f"{p.name}\trepositories={p.repository_pattern}\ttype={p.type}\tkeys={keys}")
    return 0


async def _vuln(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    from lading.metadata.v1 import policies_pb2 as pb
    from lading.metadata.v1 import policies_pb2_grpc

    from services.cli_channels import admin_request_context

    stub = policies_pb2_grpc.PolicyServiceStub(channel)
    action = args.vuln_action
    if action == "require":
        try:
            age = _age(args.max_age)
        except ValueError:
            print(f"lading vuln require: cannot read --max-age {args.max_age!r}: use 7d, 12h, 30m or seconds",
                  file=sys.stderr)
            return 2
        allow = [item.strip() for item in args.allow.split(",") if item.strip()]
        await stub.SetVulnerabilityPolicy(pb.SetVulnerabilityPolicyRequest(policy=pb.VulnerabilityPolicy(
            name=args.name, repository_pattern=args.repository, severity=args.severity, max_age_seconds=age,
            allow=allow), context=admin_request_context()), timeout=_TIMEOUT)
        print(f"vulnerability policy {args.name}: repositories {args.repository!r}")
    elif action == "remove":
        reply = await stub.DeleteVulnerabilityPolicy(pb.DeleteVulnerabilityPolicyRequest(
            name=args.name, context=admin_request_context()), timeout=_TIMEOUT)
        return _removal_reported("vulnerability policy", args.name, reply.deleted)
    else:
        reply = await stub.ListVulnerabilityPolicies(pb.ListVulnerabilityPoliciesRequest(), timeout=_TIMEOUT)
        for p in reply.policies:
            print(f"{p.name}\trepositories={p.repository_pattern}\tseverity={p.severity or '-'}\t"
                  f"max-age={p.max_age_seconds}s\tallow={','.join(p.allow) or '-'}")
    return 0


async def _call(args: argparse.Namespace) -> int:
    from services.cli_channels import with_planes
    from services.cli_targets import resolve
    from services.common.settings import load_settings

    settings = load_settings()
    targets = resolve(args, settings, ("metadata",))
    if args.command == AUDIT_COMMAND:
        return await with_planes("audit", targets, settings, lambda channels: _audit(args, channels["metadata"]))
    if args.command == VULN_COMMAND:
        return await with_planes(f"vuln {args.vuln_action}", targets, settings,
                                 lambda channels: _vuln(args, channels["metadata"]))
    if args.command == SIGNATURE_COMMAND:
        return await with_planes(f"signature {args.signature_action}", targets, settings,
                                 lambda channels: _signature(args, channels["metadata"]))
    if args.command == RETENTION_COMMAND:
        return await with_planes(f"retention {args.retention_action}", targets, settings,
                                 lambda channels: _retention(args, channels["metadata"]))
    if args.command == QUOTA_COMMAND:
        return await with_planes(f"quota {args.quota_action}", targets, settings,
                                 lambda channels: _quota(args, channels["metadata"]))
    return await with_planes(f"immutable {args.immutable_action}", targets, settings,
                             lambda channels: _dispatch(args, channels["metadata"]))


def run(args: argparse.Namespace) -> int:
    """Runs one `lading immutable` or `lading audit` command; returns the exit code."""
    import asyncio

    if args.command == SIGNATURE_COMMAND and args.signature_action == "require":
        from pathlib import Path

        try:
            args.key_text = "".join(Path(name).read_text() for name in args.key)
        except OSError as error:
            print(f"lading signature require: cannot read a key file: {error}", file=sys.stderr)
            return 2
    return asyncio.run(_call(args))
