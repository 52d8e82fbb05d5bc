"""One `lading serve` stack per metadata store (SQLite, PostgreSQL) for the governance tests,
with the CLI, skopeo and an HTTP client bound to it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.events.receiver import Receiver
from tests.gc.stack_support import gc_stack, targets
from tests.support.clients import require_binary
from tests.support.stack import Stack, child_env, free_port, lading_command

STORES = [pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="package", params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    """The metadata store under test: "sqlite" or "postgres"."""
    return request.param


@pytest.fixture(scope="package")
def siem(store: str) -> Iterator[Receiver]:
    """An event endpoint that asked for the audit log (and only for it)."""
    server = Receiver().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def metrics_port(store: str) -> int:
    """Where the stack's metadata plane serves /metrics (observability.metadata_metrics_listen)."""
    return free_port()


@pytest.fixture(scope="package")
def stack(store: str, siem: Receiver, metrics_port: int, request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    endpoint = {"name": "siem", "url": siem.url, "include_actions": ["audit"], "backoff_base_seconds": 0.1,
                "backoff_cap_seconds": 0.3}
    # Delete events (retention's) go to the same receiver under another path.
    deletes = {**endpoint, "name": "deletes", "url": f"http://127.0.0.1:{siem.port}/deletes",
               "include_actions": ["delete"]}
    # CLI writes (restore) bypass the gateway: its manifest cache would show them after its TTL.
    with gc_stack(store, request, tmp_path_factory.mktemp(f"governance-{store}"),
                  LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS="0", LADING_EVENTS__ENDPOINTS=json.dumps([endpoint, deletes]),
                  LADING_EVENTS__DELIVERY_INTERVAL_SECONDS="0.05",
                  LADING_GOVERNANCE__HISTORY_WINDOW_SECONDS="3600",
                  LADING_OBSERVABILITY__METADATA_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
                  # Pull policies apply at once (no sleeping for each replica's policy cache).
                  LADING_GOVERNANCE__POLICY_CACHE_SECONDS="0") as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        yield http


Lading = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def lading(stack: Stack) -> Lading:
    """Runs `lading ARGS --metadata ... --blob ...`; `ok=False` returns a failure instead of asserting."""
    metadata, blob = targets(stack)

    def run(*args: str, ok: bool = True, blob_plane: bool = False) -> subprocess.CompletedProcess[str]:
        extra = ["--metadata", metadata] + (["--blob", blob] if blob_plane else [])
        done = subprocess.run(lading_command(*args, *extra), env=child_env(), capture_output=True, text=True,
                              timeout=60)
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    return run


@pytest.fixture(scope="package")
def skopeo_bin() -> str:
    return require_binary("skopeo", install_hint="apt-get install skopeo")


Skopeo = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def skopeo(skopeo_bin: str, tmp_path: Path) -> Skopeo:
    """Runs skopeo with no trust policy and no user configuration; returns the finished process."""
    home = tmp_path / "home"
    home.mkdir()
    auth = tmp_path / "auth.json"
    auth.write_text("{}")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([skopeo_bin, "--insecure-policy", *args], capture_output=True, text=True, timeout=180,
                              env={"HOME": str(home), "PATH": "/usr/bin:/bin", "REGISTRY_AUTH_FILE": str(auth)})

    return run


class Policies:
    """PolicyService over the stack's metadata socket, in process (a `lading` command costs a
    Python start-up each; the CLI itself is covered once). Calls carry the admin's context, as
    the CLI sends it."""

    def __init__(self, stack: Stack) -> None:
        import grpc
        from lading.metadata.v1 import policies_pb2, policies_pb2_grpc

        self.pb = policies_pb2
        self._channel = grpc.insecure_channel(targets(stack)[0])
        self.stub = policies_pb2_grpc.PolicyServiceStub(self._channel)

    def context(self):  # noqa: ANN201 - a RequestContext
        from services.cli_channels import admin_request_context

        return admin_request_context()

    def add_rule(self, name: str, repository: str, tag: str) -> None:
        self.stub.SetImmutableRule(self.pb.SetImmutableRuleRequest(
            name=name, repository_pattern=repository, tag_pattern=tag, context=self.context()), timeout=30)

    def remove_rule(self, name: str) -> bool:
        return self.stub.DeleteImmutableRule(self.pb.DeleteImmutableRuleRequest(name=name, context=self.context()),
                                             timeout=30).deleted

    def override(self, repository: str, tag: str, reason: str) -> str:
        return self.stub.AllowTagOverride(self.pb.AllowTagOverrideRequest(
            repository=repository, tag=tag, reason=reason, context=self.context()), timeout=30).rule

    def history(self, repository: str, tag: str) -> list[tuple[str, str, str]]:
        reply = self.stub.GetTagHistory(self.pb.GetTagHistoryRequest(repository=repository, tag=tag), timeout=30)
        return [(e.action, e.old_digest, e.new_digest) for e in reply.entries]

    def restore(self, repository: str, tag: str, *, digest: str = "", at: str = "") -> tuple[str, bool]:
        reply = self.stub.RestoreTag(self.pb.RestoreTagRequest(repository=repository, tag=tag, digest=digest, at=at,
                                                               context=self.context()), timeout=30)
        return reply.digest, reply.moved

    def audit(self, *, since: str = "", actor: str = "", repository: str = "", limit: int = 0) -> list:  # noqa: ANN001
        reply = self.stub.ListAudit(self.pb.ListAuditRequest(since=since, actor=actor, repository=repository,
                                                             limit=limit), timeout=30)
        return list(reply.records)

    def set_quota(self, name: str, pattern: str, limit: int | str):  # noqa: ANN201 - a QuotaUsage
        return self.stub.SetQuota(self.pb.SetQuotaRequest(name=name, repository_pattern=pattern, limit=str(limit),
                                                          context=self.context()), timeout=30)

    def quota(self, name: str):  # noqa: ANN201 - a QuotaUsage
        reply = self.stub.ListQuotas(self.pb.ListQuotasRequest(), timeout=30)
        return next(q for q in reply.quotas if q.name == name)

    def recount(self) -> dict[str, tuple[int, int]]:
        reply = self.stub.RecountQuotas(self.pb.RecountQuotasRequest(context=self.context()), timeout=30)
        return {q.name: (q.before_bytes, q.after_bytes) for q in reply.quotas}

    def remove_quota(self, name: str) -> bool:
        return self.stub.DeleteQuota(self.pb.DeleteQuotaRequest(name=name, context=self.context()), timeout=30).deleted

    def close(self) -> None:
        self._channel.close()


@pytest.fixture
def policies(stack: Stack) -> Iterator[Policies]:
    helper = Policies(stack)
    yield helper
    helper.close()


def run_gc(stack: Stack, *, delete_untagged: bool = True) -> None:
    import asyncio

    from services.metadata.gc.worker import run_gc as collect
    from tests.gc.stack_support import stubs

    async def once() -> None:
        async with stubs(stack) as (admin, blob):
            report = await collect(admin, blob, delete_untagged=delete_untagged)
            assert report.errors == 0

    asyncio.run(once())


def delivered(receiver: Receiver) -> list[tuple[str, dict]]:
    """(path, body) of every POST the receiver accepted (it answers 200 to all here)."""
    with receiver._lock:
        return [(path, body) for (path, _), (_, body) in zip(receiver.requests, receiver.posts, strict=True)]
