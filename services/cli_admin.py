"""`lading gc|repo|tag|manifest|blob|check|maintenance`: operate the registry over gRPC
(AdminService and MetadataService on the metadata plane, BlobService on the blob plane).

Targets: `--metadata`, `--blob`, `--data-dir`, the settings, else the `lading serve` of the data
folder (services/cli_targets.py); only the planes a command calls must be reachable (the blob
plane: `gc` runs and dry runs, `check`). Dialled with the gateway's client TLS settings
(services/cli_channels.py). A plane that cannot be reached, or stops answering, ends the command
with exit 2 and its target named; it is never reported as missing data.
Deletes name the actor `lading-admin` in their delete events. Progress of long operations goes to
stderr, one line per N items.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from datetime import UTC, datetime
from typing import Any

from services.cli_targets import add_target_flags

COMMANDS = ("gc", "repo", "tag", "manifest", "check", "maintenance")


def handles(args: argparse.Namespace) -> bool:
    """True for the commands this module runs (`lading blob` without an action is the plane)."""
    return args.command in COMMANDS or (args.command == "blob" and getattr(args, "action", None) is not None)
_TIMEOUT = 60.0


def add_commands(commands: Any) -> None:
    def targets(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return add_target_flags(parser, ("metadata", "blob"))

    gc = targets(commands.add_parser("gc", help="garbage-collect unreferenced manifests, links and blob bytes"))
    gc.add_argument("action", nargs="?", choices=["run", "stats"], default="run")
    gc.add_argument("--dry-run", action="store_true", help="only report what would be freed")
    gc.add_argument("--delete-untagged", action="store_true",
                    help="also delete untagged manifests nothing references (default: gc.delete_untagged_manifests)")
    gc.add_argument("--progress-every", type=int, default=100)

    repo = commands.add_parser("repo", help="repositories").add_subparsers(dest="action", required=True)
    targets(repo.add_parser("list", help="repositories with tag/manifest counts and sizes"))
    targets(repo.add_parser("delete", help="delete a repository's metadata (GC reclaims bytes)")).add_argument("repository")
    tag = commands.add_parser("tag", help="tags").add_subparsers(dest="action", required=True)
    targets(tag.add_parser("list", help="tags of a repository")).add_argument("repository")
    tag_delete = targets(tag.add_parser("delete", help="delete a tag (the manifest stays)"))
    tag_delete.add_argument("repository")
    tag_delete.add_argument("tag")
    from services.cli_policies import add_tag_actions

    add_tag_actions(tag, targets)
    manifest = commands.add_parser("manifest", help="manifests").add_subparsers(dest="action", required=True)
    targets(manifest.add_parser("list", help="manifests of a repository")).add_argument("repository")
    manifest_delete = targets(manifest.add_parser("delete", help="delete a manifest and its tags"))
    manifest_delete.add_argument("repository")
    manifest_delete.add_argument("digest")
    # `lading blob` alone runs the blob plane (services/cli.py); `lading blob where` is ours.
    blob_parser = commands.choices.get("blob") or commands.add_parser("blob", help="blobs")
    blob = blob_parser.add_subparsers(dest="action", required=False, metavar="ACTION")
    targets(blob.add_parser("where", help="repositories and manifests using a blob")).add_argument("digest")
    check = targets(commands.add_parser("check", help="verify every referenced blob exists in storage"))
    check.add_argument("--verify-sample", type=int, default=0, metavar="N",
                       help="also re-hash N randomly chosen blobs")
    check.add_argument("--progress-every", type=int, default=1000)
    maintenance = targets(commands.add_parser("maintenance", help="read-only maintenance mode"))
    maintenance.add_argument("state", nargs="?", choices=["on", "off", "status"], default="status")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _check(admin: Any, blob: Any, pb: Any, blob_pb: Any, sample: int, every: int) -> int:
    """Stats every blob the metadata plane knows on the blob plane. Only the blob plane's own
    answer "unknown blob" counts as missing; any other failure (unreachable, timed out, refused)
    says nothing about the data and stops the check with PlaneFailed."""
    import grpc

    from services.cli_targets import PlaneFailed
    from services.common.errors import ErrorKind, from_rpc_error

    last, checked, missing = "", 0, []
    seen: list[tuple[str, int]] = []

    def stopped(error: grpc.RpcError, doing: str) -> PlaneFailed:
        return PlaneFailed("blob", f"{from_rpc_error(error).message} ({doing}); the check stopped after {checked} "
                                   f"blob(s), {len(missing)} of them missing; run it again once the blob plane "
                                   "answers")

    while True:
        page = (await admin.ListBlobs(pb.ListBlobsRequest(last=last, limit=1000), timeout=_TIMEOUT)).blobs
        if not page:
            break
        for item in page:
            try:
                await blob.StatBlob(blob_pb.StatBlobRequest(digest=item.digest), timeout=_TIMEOUT)
                seen.append((item.digest, item.size))
            except grpc.RpcError as error:
                if from_rpc_error(error).kind is not ErrorKind.BLOB_UNKNOWN:
                    raise stopped(error, f"asking for {item.digest}") from None
                missing.append(item.digest)
                _err(f"missing: {item.digest} (the blob plane has no bytes for it)")
            checked += 1
            if checked % every == 0:
                _err(f"check: {checked} blobs checked")
        last = page[-1].digest
    corrupt = []
    for digest, _ in random.sample(seen, min(sample, len(seen))):
        algorithm, _, expected = digest.partition(":")
        hasher = hashlib.new(algorithm)
        try:
            async for chunk in blob.ReadBlob(blob_pb.ReadBlobRequest(digest=digest), timeout=3600):
                hasher.update(chunk.data)
        except grpc.RpcError as error:
            raise stopped(error, f"reading {digest} to re-hash it") from None
        if hasher.hexdigest() != expected:
            corrupt.append(digest)
            _err(f"corrupt: {digest} hashes to {algorithm}:{hasher.hexdigest()}")
    print(f"checked {checked} blobs: {len(missing)} missing; re-hashed {min(sample, len(seen))}: "
          f"{len(corrupt)} corrupt")
    return 0 if not missing and not corrupt else 1


async def _dispatch(args: argparse.Namespace, channels: dict[str, Any]) -> int:
    from lading.blob.v1 import blob_pb2, blob_pb2_grpc
    from lading.metadata.v1 import admin_pb2 as pb
    from lading.metadata.v1 import admin_pb2_grpc, metadata_pb2, metadata_pb2_grpc

    admin = admin_pb2_grpc.AdminServiceStub(channels["metadata"])
    metadata = metadata_pb2_grpc.MetadataServiceStub(channels["metadata"])
    blob = blob_pb2_grpc.BlobServiceStub(channels["blob"]) if "blob" in channels else None
    command, action = args.command, getattr(args, "action", None)
    if command == "gc" and action == "stats":
        stats = await admin.GcStats(pb.GcStatsRequest(last_runs=5), timeout=_TIMEOUT)
        print(f"blobs: {stats.active_blobs} active ({_size(stats.active_bytes)}), {stats.pending_blobs} pending, "
              f"{stats.deleting_blobs} deleting")
        print(f"queue: {stats.manifest_candidates} manifest(s), {stats.link_candidates} link(s), "
              f"{stats.blob_candidates} blob(s) collectable now; {stats.held} item(s) held for review")
        for run in stats.runs:
            when = datetime.fromtimestamp(run.started_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(f"run {when}: {run.manifests_deleted} manifest(s), {run.links_removed} link(s), "
                  f"{run.blobs_deleted} blob(s), {_size(run.bytes_freed)} freed, {run.errors} error(s)")
    elif command == "gc":
        from services.metadata.gc.worker import run_gc

        report = await run_gc(admin, blob, dry_run=args.dry_run, delete_untagged=args.delete_untagged,
                              progress=_err, progress_every=max(1, args.progress_every),
                              replica_region=await _in_replica_region(channels["metadata"]))
        if args.dry_run:
            plan = report.plan
            print(f"would free: {plan.manifests} manifest(s) ({_size(plan.manifest_bytes)}), {plan.links} link(s), "
                  f"{plan.blobs} blob(s) ({_size(plan.blob_bytes)}), {report.orphans} orphan blob(s) "
                  f"({_size(report.orphan_bytes)})")
            if report.errors:
                # Part of the plan could not be computed: the figures above are incomplete.
                _err(f"lading gc --dry-run: {report.errors} error(s) (see above); the figures are incomplete")
                return 1
        else:
            print(f"freed: {report.manifests_deleted} manifest(s), {report.links_removed} link(s), "
                  f"{report.blobs_deleted} blob(s) ({_size(report.bytes_freed)}; {report.orphans} of them orphans, "
                  f"{_size(report.orphan_bytes)}) in {report.seconds:.1f}s; {report.errors} error(s)")
            return 0 if report.errors == 0 else 1
    elif command == "repo" and action == "list":
        for repo in (await admin.ListRepositories(pb.AdminListRepositoriesRequest(), timeout=_TIMEOUT)).repositories:
            print(f"{repo.name}\t{repo.tags} tag(s)\t{repo.manifests} manifest(s)\t{_size(repo.bytes)}")
    elif command == "repo" and action == "delete":
        reply = await admin.DeleteRepository(pb.DeleteRepositoryRequest(repository=args.repository), timeout=_TIMEOUT)
        print(f"deleted {args.repository}: {reply.manifests} manifest(s), {reply.links} blob link(s); "
              "run `lading gc` to reclaim the bytes")
    elif command == "tag" and action == "list":
        for item in (await admin.ListTags(pb.AdminListTagsRequest(repository=args.repository), timeout=_TIMEOUT)).tags:
            print(f"{item.name}\t{item.digest}")
    elif command == "manifest" and action == "list":
        reply = await admin.ListManifests(pb.AdminListManifestsRequest(repository=args.repository), timeout=_TIMEOUT)
        for item in reply.manifests:
            print(f"{item.digest}\t{item.media_type}\t{item.size}\t{','.join(item.tags) or '-'}")
    elif command == "tag" and action in ("history", "restore"):
        from services.cli_policies import tag_action

        return await tag_action(args, channels["metadata"])
    elif (command, action) in (("tag", "delete"), ("manifest", "delete")):
        from services.cli_channels import admin_request_context

        reference = args.tag if command == "tag" else args.digest
        await metadata.DeleteManifest(metadata_pb2.DeleteManifestRequest(
            repository=args.repository, reference=reference, context=admin_request_context()), timeout=_TIMEOUT)
        print(f"deleted {args.repository}:{reference}" if command == "tag" else f"deleted {args.repository}@{reference}")
    elif command == "blob":
        reply = await admin.WhereBlob(pb.WhereBlobRequest(digest=args.digest), timeout=_TIMEOUT)
        print(f"{args.digest}\tstate={reply.state or 'unknown'}\tsize={reply.size}")
        for name in reply.repositories:
            print(f"linked\t{name}")
        for ref in reply.manifests:
            print(f"used-by\t{ref.repository}@{ref.digest}")
    elif command == "check":
        return await _check(admin, blob, pb, blob_pb2, args.verify_sample, max(1, args.progress_every))
    elif command == "maintenance":
        if args.state == "status":
            on = (await admin.GetMaintenance(pb.GetMaintenanceRequest(), timeout=_TIMEOUT)).on
        else:
            on = (await admin.SetMaintenance(pb.SetMaintenanceRequest(on=args.state == "on"), timeout=_TIMEOUT)).on
        print("maintenance mode: " + ("on (read-only)" if on else "off"))
    return 0


async def _in_replica_region(channel: Any) -> bool:
    """Whether the metadata plane is a replica region's (issue 15): `lading gc` there collects
    only that region's bucket (services/metadata/gc/worker.py). A plane without the RegionService
    (an older version) is one site."""
    import grpc
    from lading.metadata.v1 import regions_pb2, regions_pb2_grpc

    try:
        reply = await regions_pb2_grpc.RegionServiceStub(channel).GetRegionStatus(
            regions_pb2.GetRegionStatusRequest(local_only=True), timeout=_TIMEOUT)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            return False
        raise
    return reply.role == "replica"


async def _call(args: argparse.Namespace) -> int:
    from services.cli_channels import with_planes
    from services.cli_targets import resolve
    from services.common.settings import load_settings

    settings = load_settings()
    targets = resolve(args, settings, planes_of(args))
    name = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
    return await with_planes(name, targets, settings, lambda channels: _dispatch(args, channels))


def planes_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The planes a command calls: all need the metadata plane; `gc` (but `gc stats`) and `check`
    also the blob plane."""
    if args.command == "check" or (args.command == "gc" and getattr(args, "action", None) != "stats"):
        return ("metadata", "blob")
    return ("metadata",)


def run(args: argparse.Namespace) -> int:
    """Runs one admin command; returns the exit code."""
    import asyncio  # here, not at the top: `lading serve` builds this parser and never runs asyncio

    return asyncio.run(_call(args))
