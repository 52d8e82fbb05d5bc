"""The pull policies' reads take the hot path (store/access.py): a covered manifest pull runs its
signature and report checks as hot reads — on a SQLite file the one-hop sqlite3 readers, no
statement through SQLAlchemy's async engine at all — and still decides right (signed / unsigned,
a report's age and findings, a platform image judged by its index). A report document is read from
the blob plane once per replica, not once per pull.

In process, on a real SQLite file and a real PostgreSQL database (the stack tests in this folder
cover the same decisions end to end)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event

from services.common.errors import ErrorKind, RegistryError
from services.metadata.policies.signatures import SignatureGate, SignaturePolicy
from services.metadata.policies.store import PolicyStore
from services.metadata.policies.vulnerabilities import SARIF, VulnerabilityGate, VulnerabilityPolicy
from services.metadata.store.access import Route
from services.metadata.store.base import NewManifest
from services.metadata.store.engine import Database
from services.metadata.store.sql import SqlMetadataStore
from tests.metadata import docs
from tests.support.metadata_db import migrated_database

REPO = "prod/app"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                   ) -> AsyncIterator[Database]:
    async with migrated_database(request.param, request, tmp_path_factory.mktemp("pull-reads")) as db:
        yield db


async def _push(store: SqlMetadataStore, document: dict[str, Any], tag: str | None, *,
                subject: str | None = None, artifact_type: str | None = None,
                children: tuple[str, ...] = ()) -> str:
    payload = docs.render(document)
    blobs = tuple(digest for digest, _ in docs.blobs_of(document)) if not children else ()
    for digest in blobs:
        await store.link_blob(REPO, digest, 100)
    manifest = NewManifest(digest=docs.sha256(payload), media_type=document["mediaType"], payload=payload,
                           subject_digest=subject, artifact_type=artifact_type, config_media_type=None,
                           annotations=None, blob_digests=blobs, manifest_digests=children)
    await store.put_manifest(REPO, manifest, tag)
    return manifest.digest


def _assert_hot(database: Database, before: Any, through_engine: list[str]) -> None:
    taken = database.access.taken - before
    if database.dialect == "sqlite":
        assert through_engine == [] and set(taken) == {Route.SQLITE3}, (through_engine, taken)
    else:
        assert set(taken) == {Route.READS}, taken  # no primary reads for a pull


async def test_covered_pulls_take_the_hot_reads(database: Database) -> None:
    store = SqlMetadataStore(database)
    policies = PolicyStore(database)
    signed = await _push(store, docs.image(layers=1), "v1")
    unsigned = await _push(store, docs.image(layers=1), "v2")
    child = await _push(store, docs.image(layers=1), None)
    index = await _push(store, docs.index([]) | {"manifests": [docs.descriptor(docs.OCI_MANIFEST, child)]}, "multi",
                        children=(child,))
    for image in (signed, index):  # cosign's tag convention
        await _push(store, docs.image(layers=1), "sha256-" + image.split(":", 1)[1] + ".sig")
    # A SARIF report on `signed` with one critical finding; its document lives in the "blob plane".
    sarif = json.dumps({"runs": [{"tool": {"driver": {"rules": [
        {"id": "CVE-2026-1", "properties": {"security-severity": "9.8"}}]}},
        "results": [{"ruleId": "CVE-2026-1", "level": "error"}]}]}).encode()
    blobs = {docs.sha256(sarif): sarif}
    report = docs.image(layers=0, artifact_type=SARIF, extra_layers=[docs.descriptor(SARIF, docs.sha256(sarif))],
                        subject=docs.descriptor(docs.OCI_MANIFEST, signed))
    await store.link_blob(REPO, docs.sha256(sarif), len(sarif))
    await _push(store, report, None, subject=signed, artifact_type=SARIF)
    blob_reads: list[str] = []

    async def read_blob(digest: str) -> bytes:
        blob_reads.append(digest)
        return blobs[digest]

    await policies.set_signature_policy(SignaturePolicy("signed", "prod/*", "cosign", ""))
    await policies.set_vulnerability_policy(VulnerabilityPolicy("scanned", "prod/*", "high", 3600, ""))
    signatures = SignatureGate(policies.read, policies.rows, read_blob, cache_seconds=3600)
    vulnerabilities = VulnerabilityGate(policies.read, policies.rows, read_blob, cache_seconds=3600)
    await signatures.policies()
    await vulnerabilities.policies()

    # Statements run through SQLAlchemy (either engine) while the checks run.
    through_engine: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        through_engine.append(statement)

    engines = {database.engine.sync_engine, database.write_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", seen)
    before = database.access.taken.copy()
    try:
        await signatures.check(REPO, "v1", signed)
        await signatures.check(REPO, None, child)  # a platform image of a signed index
        with pytest.raises(RegistryError) as refused:
            await signatures.check(REPO, "v2", unsigned)
        assert refused.value.kind is ErrorKind.DENIED and "signature policy 'signed'" in refused.value.message
        for _ in range(2):
            with pytest.raises(RegistryError) as refused:
                await vulnerabilities.check(REPO, "v1", signed)
            assert refused.value.kind is ErrorKind.DENIED and "CVE-2026-1 (critical)" in refused.value.message
        with pytest.raises(RegistryError) as refused:
            await vulnerabilities.check(REPO, "v2", unsigned)
        assert "has no vulnerability report" in refused.value.message
        _assert_hot(database, before, through_engine)
        # The report's push time was read and judged (a young report passes the age rule) ...
        await policies.set_vulnerability_policy(VulnerabilityPolicy("scanned", "prod/*", "", 3600, ""))
        await vulnerabilities.policies(fresh=True)
        before = database.access.taken.copy()
        through_engine.clear()
        await vulnerabilities.check(REPO, "v1", signed)
        # ... and the child of an index without a report is judged by the index's (none here).
        with pytest.raises(RegistryError):
            await vulnerabilities.check(REPO, None, child)
        _assert_hot(database, before, through_engine)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", seen)
    # The report document was read once for both refusals.
    assert blob_reads == [docs.sha256(sarif)]


async def test_a_verified_cosign_signature_is_verified_once(database: Database) -> None:
    """With keys, a signature that verified is kept (its outcome depends only on the keys, the
    signature manifest's digest and the image's): later pulls read no blob; a payload naming
    another digest is refused every time, and a new key set verifies afresh."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    store = SqlMetadataStore(database)
    policies = PolicyStore(database)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    blobs: dict[str, bytes] = {}

    async def sign(image: str, names: str) -> None:
        payload = json.dumps({"critical": {"image": {"docker-manifest-digest": names}}}).encode()
        signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
        blobs[docs.sha256(payload)] = payload
        await store.link_blob(REPO, docs.sha256(payload), len(payload))
        layer = docs.descriptor(docs.OCI_LAYER, docs.sha256(payload), len(payload),
                                annotations={"dev.cosignproject.cosign/signature": signature})
        await _push(store, docs.image(layers=0, extra_layers=[layer]), "sha256-" + image.split(":", 1)[1] + ".sig")

    good = await _push(store, docs.image(layers=1), "keyed")
    bad = await _push(store, docs.image(layers=1), "misnamed")
    await sign(good, good)
    await sign(bad, good)  # names another image
    reads: list[str] = []

    async def read_blob(digest: str) -> bytes:
        reads.append(digest)
        return blobs[digest]

    await policies.set_signature_policy(SignaturePolicy("keyed", "prod/*", "cosign", pem))
    gate = SignatureGate(policies.read, policies.rows, read_blob, cache_seconds=3600)
    for _ in range(3):
        await gate.check(REPO, "keyed", good)
    assert len(reads) == 1
    for _ in range(2):
        with pytest.raises(RegistryError) as refused:
            await gate.check(REPO, "misnamed", bad)
        assert refused.value.kind is ErrorKind.DENIED and "verifies with one of its keys" in refused.value.message
    assert len(reads) == 3  # refusals are not kept
    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    await policies.set_signature_policy(SignaturePolicy("keyed", "prod/*", "cosign", other))
    await gate.policies(fresh=True)
    with pytest.raises(RegistryError) as refused:
        await gate.check(REPO, "keyed", good)  # verified with the old key only: not kept for the new one
    assert refused.value.kind is ErrorKind.DENIED and "verifies with one of its keys" in refused.value.message
