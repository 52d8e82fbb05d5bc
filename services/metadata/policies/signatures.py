"""Signature policies: images in covered repositories are served (GET/HEAD manifest, by tag or
by digest) only when a signature referrer exists, optionally one that verifies.

A policy (`signature_policies`) names a repository pattern (`fnmatch`), the signature formats it
accepts and, optionally, cosign public keys (PEM, ECDSA P-256):
- cosign: a manifest tagged `sha256-<hex>.sig` (cosign's tag convention) in the repository, or a
  referrer whose artifactType is `application/vnd.dev.cosign.artifact.sig.v1+json`;
- notation (Notary v2): a referrer whose artifactType is `application/vnd.cncf.notary.signature`.
With keys, only cosign signatures count, and one of them must verify: a layer of the signature
manifest whose annotation `dev.cosignproject.cosign/signature` is an ECDSA-SHA256 signature by
one of the keys over the layer's bytes (the simple-signing payload, read from the blob plane),
and that payload's `critical.image.docker-manifest-digest` must be the image's digest.

Never refused (so that signing and multi-platform pulls work): manifests that are themselves
referrers (they have a subject) or carry a cosign tag (`sha256-*.sig|.att|.sbom`), and the children
of a signed index in the repository (a platform image pulled by digest). Refused: `DENIED`
naming the policy and what is missing. The rules are read from the database at most once per
`governance.policy_cache_seconds` (1 s) per replica (a changed policy applies within that time); repositories no policy covers pay one
in-memory pattern check per pull. The gateway's manifest cache (1 s by default) may serve a pull
it answered just before a policy appeared.
"""

from __future__ import annotations

import base64
import fnmatch
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, or_, select

from services.common.errors import ErrorKind, RegistryError
from services.metadata.policies.policy_cache import PolicyCache
from services.metadata.policies.tables import signature_policies
from services.metadata.store.access import Read, hot_read
from services.metadata.store.schema import manifest_references, manifests, repositories, tags

COSIGN_SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"
NOTARY_SIGNATURE = "application/vnd.cncf.notary.signature"
COSIGN_ANNOTATION = "dev.cosignproject.cosign/signature"
KINDS = ("any", "cosign", "notation")

# Reads a blob's bytes from the blob plane (None: no blob plane configured).
ReadBlob = Callable[[str], Awaitable[bytes]]
# Verified cosign signatures kept per replica (see SignatureGate._verified).
_VERIFIED_KEPT = 4096
# Runs a declared read (store/access.py) with its parameters.
Rows = Callable[[Read, dict[str, Any]], Awaitable[list[Any]]]


def manifest_facts_read() -> Read:
    """(repository id, subject digest) of manifest `digest` in `repository`: one hot read (the
    columns are plain: on a SQLite file it takes the one-hop readers, like GetManifest itself)."""
    m, r = manifests, repositories
    return hot_read(select(r.c.id, m.c.subject_digest).select_from(m.join(r, r.c.id == m.c.repository_id))
                    .where(r.c.name == bindparam("repository"), m.c.digest == bindparam("digest")))


def parents_read() -> Read:
    """Digests of the manifests of repository `repo_id` (indexes) that list manifest `digest`."""
    m, mr = manifests, manifest_references
    return hot_read(select(m.c.digest).select_from(mr.join(m, m.c.id == mr.c.manifest_id))
                    .where(m.c.repository_id == bindparam("repo_id"), mr.c.digest == bindparam("digest"),
                           mr.c.kind == "manifest"))


def _signatures_read(kinds: tuple[str, ...]) -> Read:
    """(digest, payload, artifact_type) of the signature manifests of `digest` in `repo_id` (cosign
    also by its tag `cosign_tag`). Equalities rather than IN lists: the one-hop readers take no
    expanding parameters."""
    m, t = manifests, tags
    types = [COSIGN_SIGNATURE] if "cosign" in kinds else []
    types += [NOTARY_SIGNATURE] if "notation" in kinds else []
    conditions = [and_(m.c.subject_digest == bindparam("digest"), or_(*(m.c.artifact_type == kind for kind in types)))]
    if "cosign" in kinds:
        conditions.append(m.c.id.in_(select(t.c.manifest_id).where(t.c.repository_id == bindparam("repo_id"),
                                                                   t.c.name == bindparam("cosign_tag"))))
    return hot_read(select(m.c.digest, m.c.payload, m.c.artifact_type)
                    .where(m.c.repository_id == bindparam("repo_id"), or_(*conditions)))


@dataclass(frozen=True, slots=True)
class SignaturePolicy:
    name: str
    repository_pattern: str
    kind: str
    # PEM public keys, concatenated ("" : presence is enough).
    public_keys: str

    def covers(self, repository: str) -> bool:
        return fnmatch.fnmatchcase(repository, self.repository_pattern)


def load_keys(pem: str) -> list[Any]:
    """The ECDSA P-256 public keys in `pem`; NAME_INVALID for anything else."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    keys = []
    for block in pem.split("-----END PUBLIC KEY-----"):
        if "-----BEGIN PUBLIC KEY-----" not in block:
            continue
        try:
            key = load_pem_public_key((block.strip() + "\n-----END PUBLIC KEY-----\n").encode())
        except ValueError as error:
            raise RegistryError(ErrorKind.NAME_INVALID, f"cannot read a public key: {error}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise RegistryError(ErrorKind.NAME_INVALID, "only ECDSA P-256 public keys (cosign's default) are supported")
        keys.append(key)
    return keys


def _verifies(keys: list[Any], payload: bytes, signature_b64: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        return False
    for key in keys:
        try:
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            return True
        except InvalidSignature:
            continue
    return False


def _exempt_tag(tag: str | None) -> bool:
    return bool(tag) and tag.startswith("sha256-") and tag.rsplit(".", 1)[-1] in ("sig", "att", "sbom")


class SignatureGate:
    def __init__(self, read: Callable[[Any], Awaitable[list[Any]]], rows: Rows, read_blob: ReadBlob | None, *,
                 cache_seconds: float = 1.0) -> None:
        """`read`: the policy table (the primary); `rows`: the declared reads of a pull."""
        self._read = read
        self._rows = rows
        self._facts = manifest_facts_read()
        self._parents = parents_read()
        # (keys, signature manifest digest, image digest) that verified: the outcome is a function
        # of those three (a manifest's digest fixes its layers and annotations, a layer's digest its
        # bytes), so it is kept; failures are not (a blob read may fail for a while).
        self._verified: dict[tuple[str, str, str], None] = {}
        self._signature_reads = {kinds: _signatures_read(kinds)
                                 for kinds in (("cosign",), ("notation",), ("cosign", "notation"))}
        self._read_blob = read_blob
        self._policies = PolicyCache(self._load_policies, cache_seconds)

    async def policies(self, *, fresh: bool = False) -> list[SignaturePolicy]:
        return await self._policies.get(fresh=fresh)

    async def _load_policies(self) -> list[SignaturePolicy]:
        p = signature_policies
        rows = await self._read(select(p.c.name, p.c.repository_pattern, p.c.kind, p.c.public_keys).order_by(p.c.name))
        return [SignaturePolicy(*row) for row in rows]

    async def check(self, repository: str, tag: str | None, digest: str) -> None:
        """Raises DENIED when a policy covers `repository` and the manifest `digest` has no
        acceptable signature (see the module docstring)."""
        covering = [p for p in await self.policies() if p.covers(repository)]
        if not covering or _exempt_tag(tag):
            return
        repo_id, subject = await self._manifest_facts(repository, digest)
        if repo_id is None or subject:
            return
        for policy in covering:
            problem = await self._missing(policy, repository, repo_id, digest)
            if problem and await self._signed_parent(policy, repository, repo_id, digest):
                problem = ""
            if problem:
                raise RegistryError(
                    ErrorKind.DENIED,
                    f"{repository}@{digest} may not be pulled: signature policy {policy.name!r} (repositories "
                    f"{policy.repository_pattern!r}) requires {problem}; sign the image (cosign sign / notation sign) "
                    "and pull again",
                    {"policy": "signature", "rule": policy.name, "repository": repository, "digest": digest,
                     "reason": f"requires {problem}"},
                )

    async def _manifest_facts(self, repository: str, digest: str) -> tuple[int | None, bool]:
        rows = await self._rows(self._facts, {"repository": repository, "digest": digest})
        if not rows:
            return None, False
        return int(rows[0][0]), rows[0][1] is not None

    async def _signatures(self, repository: str, repo_id: int, digest: str, kinds: tuple[str, ...]) -> list[Any]:
        """(digest, payload, artifact_type) of the signature manifests of `digest`. (`repository`
        lets the replay gate send the read to the primary while a standby lags: store/replay.py.)"""
        cosign_tag = "sha256-" + digest.split(":", 1)[1] + ".sig"
        return await self._rows(self._signature_reads[kinds], {"repository": repository, "repo_id": repo_id,
                                                               "digest": digest, "cosign_tag": cosign_tag})

    async def _missing(self, policy: SignaturePolicy, repository: str, repo_id: int, digest: str) -> str:
        """"" when `digest` is signed as the policy asks; else what is missing."""
        kinds = ("cosign", "notation") if policy.kind == "any" else (policy.kind,)
        if policy.public_keys:
            kinds = ("cosign",)
        found = await self._signatures(repository, repo_id, digest, kinds)
        wanted = {"any": "a cosign or Notary v2 signature", "cosign": "a cosign signature",
                  "notation": "a Notary v2 (notation) signature"}[policy.kind if not policy.public_keys else "cosign"]
        if not found:
            return wanted + ", and the image has none"
        if not policy.public_keys:
            return ""
        if self._read_blob is None:
            return "a cosign signature verified with its keys, which this registry cannot read (no blob plane)"
        for signature_digest, _, _ in found:
            if (policy.public_keys, signature_digest, digest) in self._verified:
                return ""
        keys = load_keys(policy.public_keys)
        for signature_digest, payload, _ in found:
            for layer in json.loads(bytes(payload)).get("layers", []):
                signature = (layer.get("annotations") or {}).get(COSIGN_ANNOTATION)
                if not signature:
                    continue
                try:
                    body = await self._read_blob(layer["digest"])
                except RegistryError:
                    continue
                if not _verifies(keys, body, signature):
                    continue
                try:
                    named = json.loads(body)["critical"]["image"]["docker-manifest-digest"]
                except (ValueError, KeyError, TypeError):
                    continue
                if named == digest:
                    if len(self._verified) >= _VERIFIED_KEPT:
                        self._verified.pop(next(iter(self._verified)))
                    self._verified[(policy.public_keys, signature_digest, digest)] = None
                    return ""
        return "a cosign signature that verifies with one of its keys and names this digest; none of the image's " \
               f"{len(found)} signature(s) does"

    async def _signed_parent(self, policy: SignaturePolicy, repository: str, repo_id: int, digest: str) -> bool:
        parents = await self._rows(self._parents, {"repository": repository, "repo_id": repo_id, "digest": digest})
        for (parent,) in parents:
            if not await self._missing(policy, repository, repo_id, parent):
                return True
        return False
