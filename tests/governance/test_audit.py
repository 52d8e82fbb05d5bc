"""The audit log (issue 16, item 7) on SQLite and PostgreSQL: API writes (ok and denied), policy,
admin and account changes are recorded with actor, target, address, request id and outcome,
never a secret; filters work; rows are exported to an event endpoint that asked for "audit"."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc
import httpx
from lading.metadata.v1 import accounts_pb2, accounts_pb2_grpc

from tests.events.receiver import Receiver
from tests.gc.stack_support import targets
from tests.governance.conftest import Policies, delivered
from tests.support import oci
from tests.support.stack import Stack


def test_audit_log_records_writes_and_changes(stack: Stack, client: httpx.Client, policies: Policies,
                                              siem: Receiver) -> None:
    started = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    first, second = oci.image(1, layer_size=256), oci.image(1, layer_size=256)
    oci.push(client, "audit/app", first, "v1")
    oci.push(client, "audit/app", second)
    policies.add_rule("audit-rule", "audit/*", "v*")
    oci.assert_error(oci.push_manifest_only(client, "audit/app", "v1", second), 403, "DENIED")
    policies.remove_rule("audit-rule")
    with grpc.insecure_channel(targets(stack)[0]) as channel:
        accounts_pb2_grpc.AccountServiceStub(channel).CreateUser(
            accounts_pb2.CreateUserRequest(name="auditee", password="s3cret-Passw0rd!"), timeout=30)

    records = policies.audit(since=started, limit=1000)
    mine = [r for r in records if r.repository == "audit/app"]
    pushes = [r for r in mine if r.action == "manifest.push"]
    assert [r.outcome for r in pushes] == ["denied", "ok", "ok"]  # newest first
    denied = pushes[0]
    assert denied.actor == "anonymous" and "rule 'audit-rule'" in denied.detail
    assert "reference=v1" in denied.target and "repository=audit/app" in denied.target
    assert denied.client_address.startswith("127.0.0.1") and denied.request_id
    blob_pushes = [r for r in mine if r.action == "blob.push" and r.outcome == "ok"]
    assert len(blob_pushes) == 4  # config + layer of each image
    assert "payload=" not in " ".join(r.target for r in records)

    changes = {(r.action, r.actor, r.outcome) for r in records if r.repository != "audit/app"}
    assert ("policy.immutable.set", "lading-admin", "ok") in changes
    assert ("policy.immutable.delete", "lading-admin", "ok") in changes
    assert ("account.create-user", "operator", "ok") in changes
    created = next(r for r in records if r.action == "account.create-user")
    assert "name=auditee" in created.target and "s3cret" not in created.target + created.detail

    # Filters.
    assert {r.repository for r in policies.audit(repository="audit/app", since=started, limit=1000)} == {"audit/app"}
    assert {r.actor for r in policies.audit(actor="lading-admin", since=started)} == {"lading-admin"}
    assert policies.audit(since="2999-01-01T00:00:00Z") == []
    assert len(policies.audit(since=started, limit=2)) == 2

    # Exported: every row reaches the endpoint that asked for "audit", as action "audit".
    deadline = time.monotonic() + 15
    wanted = {r.request_id + r.action for r in records if r.request_id}
    while time.monotonic() < deadline:
        seen = {e["target"]["request_id"] + e["target"]["action"]
                for _, body in list(siem.posts) for e in body["events"] if e["action"] == "audit"}
        if wanted <= seen:
            break
        time.sleep(0.1)
    assert wanted <= seen
    exported = next(e for _, body in list(siem.posts) for e in body["events"] if e["action"] == "audit"
                    and e["target"]["action"] == "manifest.push" and e["target"]["outcome"] == "denied")
    assert exported["target"]["repository"] == "audit/app" and exported["target"]["at"].endswith("Z")
    # The endpoint asked only for audit records: no push or delete events.
    assert {e["action"] for path, body in delivered(siem) if path.endswith("/events") for e in body["events"]} == {
        "audit"}
