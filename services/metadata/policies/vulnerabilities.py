"""Vulnerability report policies: images in covered repositories are served (manifest GET/HEAD,
by tag or digest) only when their newest scan report is recent enough and lists nothing at or
above a severity, apart from allow-listed ids.

Reports are referrers of the image, as scanners attach them (`trivy ... --format sarif` then
`oras attach`, Grype the same): artifactType (or, without one, config media type) `application/
sarif+json` (SARIF 2.1) or `application/vnd.cyclonedx+json` (CycloneDX with `vulnerabilities`).
The newest such referrer (by push time) is the image's report; its first layer is the document,
read from the blob plane.

Severities, worst first: critical, high, medium, low. SARIF: a rule's numeric
`properties.security-severity` (CVSS: >= 9 critical, >= 7 high, >= 4 medium, else low), else the
result's `level` (error high, warning medium, note low). CycloneDX: the worst `ratings[].severity`.
A policy (`vulnerability_policies`): `severity` (refuse a finding at or above it; "" : none),
`max_age_seconds` (refuse when the newest report is older, or missing; 0 : a report is not
required), `allow` (ids never counted, e.g. CVE-2024-3094). Exempt, as for signatures: manifests
that are themselves referrers, cosign's `sha256-*` tags; a platform image without a report of its
own is judged by its index's report. Policies are read at most once per
`governance.policy_cache_seconds` (1 s) per replica.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select

from services.common.errors import ErrorKind, RegistryError
from services.metadata.policies.policy_cache import PolicyCache
from services.metadata.policies.signatures import Rows, manifest_facts_read, parents_read
from services.metadata.policies.tables import vulnerability_policies
from services.metadata.store.access import Read, hot_read
from services.metadata.store.schema import manifests

SARIF = "application/sarif+json"
CYCLONEDX = "application/vnd.cyclonedx+json"
SEVERITIES = ("critical", "high", "medium", "low")
_RANK = {name: rank for rank, name in enumerate(reversed(SEVERITIES), start=1)}  # low 1 ... critical 4

ReadBlob = Callable[[str], Awaitable[bytes]]
# Parsed report documents kept per replica, by the document's blob digest (content-addressed, so
# an entry never goes stale); the oldest go first past this many.
_DOCUMENTS_KEPT = 512


def _newest_report_read() -> Read:
    """The newest report referrer of `digest` in `repo_id`. Its push time comes back as the
    database's own value (a datetime through SQLAlchemy, ISO text from the one-hop SQLite
    readers); `_moment` reads both."""
    m = manifests
    return hot_read(select(m.c.digest, m.c.payload, m.c.created_at)
                    .where(m.c.repository_id == bindparam("repo_id"), m.c.subject_digest == bindparam("digest"),
                           or_(m.c.artifact_type == SARIF, m.c.artifact_type == CYCLONEDX))
                    .order_by(m.c.created_at.desc(), m.c.id.desc()).limit(1))


def _moment(value: datetime | str) -> datetime:
    return _aware(value if isinstance(value, datetime) else datetime.fromisoformat(value))


@dataclass(frozen=True, slots=True)
class VulnerabilityPolicy:
    name: str
    repository_pattern: str
    severity: str
    max_age_seconds: float
    # Comma-separated ids.
    allow: str

    def covers(self, repository: str) -> bool:
        return fnmatch.fnmatchcase(repository, self.repository_pattern)

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(item.strip().upper() for item in self.allow.split(",") if item.strip())


def _cvss(score: Any) -> str | None:
    try:
        value = float(score)
    except (TypeError, ValueError):
        return None
    return "critical" if value >= 9 else "high" if value >= 7 else "medium" if value >= 4 else "low"


def findings(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(id, severity) of every finding of a SARIF or CycloneDX document."""
    found: list[tuple[str, str]] = []
    for run in document.get("runs") or []:  # SARIF
        rules: dict[str, Any] = {}
        for rule in ((run.get("tool") or {}).get("driver") or {}).get("rules") or []:
            rules[rule.get("id", "")] = rule
        for result in run.get("results") or []:
            rule_id = str(result.get("ruleId", ""))
            severity = _cvss(((rules.get(rule_id) or {}).get("properties") or {}).get("security-severity"))
            if severity is None:
                severity = {"error": "high", "warning": "medium", "note": "low"}.get(result.get("level", ""), "medium")
            found.append((rule_id, severity))
    for vulnerability in document.get("vulnerabilities") or []:  # CycloneDX
        ratings = [str(r.get("severity", "")).lower() for r in vulnerability.get("ratings") or []]
        known = [r for r in ratings if r in _RANK]
        found.append((str(vulnerability.get("id", "")), max(known, key=_RANK.__getitem__) if known else "medium"))
    return found


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class VulnerabilityGate:
    def __init__(self, read: Callable[[Any], Awaitable[list[Any]]], rows: Rows, read_blob: ReadBlob | None, *,
                 cache_seconds: float = 1.0) -> None:
        """`read`: the policy table (the primary); `rows`: the declared reads of a pull."""
        self._read = read
        self._rows = rows
        self._facts = manifest_facts_read()
        self._parents = parents_read()
        self._newest = _newest_report_read()
        self._documents: dict[str, list[tuple[str, str]]] = {}
        self._read_blob = read_blob
        self._policies = PolicyCache(self._load_policies, cache_seconds)

    async def policies(self, *, fresh: bool = False) -> list[VulnerabilityPolicy]:
        return await self._policies.get(fresh=fresh)

    async def _load_policies(self) -> list[VulnerabilityPolicy]:
        p = vulnerability_policies
        rows = await self._read(select(p.c.name, p.c.repository_pattern, p.c.severity, p.c.max_age_seconds,
                                       p.c.allow).order_by(p.c.name))
        return [VulnerabilityPolicy(r[0], r[1], r[2], float(r[3]), r[4]) for r in rows]

    async def check(self, repository: str, tag: str | None, digest: str) -> None:
        covering = [p for p in await self.policies() if p.covers(repository)]
        if not covering or (tag or "").startswith("sha256-"):
            return
        rows = await self._rows(self._facts, {"repository": repository, "digest": digest})
        if not rows or rows[0][1] is not None:
            return
        repo_id = int(rows[0][0])
        report = await self._newest_report(repository, repo_id, digest)
        if report is None:
            report = await self._parent_report(repository, repo_id, digest)
        for policy in covering:
            problem = await self._problem(policy, report)
            if problem:
                raise RegistryError(
                    ErrorKind.DENIED,
                    f"{repository}@{digest} may not be pulled: vulnerability policy {policy.name!r} (repositories "
                    f"{policy.repository_pattern!r}): {problem}",
                    {"policy": "vulnerability", "rule": policy.name, "repository": repository, "digest": digest,
                     "reason": problem},
                )

    async def _newest_report(self, repository: str, repo_id: int,
                             digest: str) -> tuple[str, bytes, datetime] | None:
        rows = await self._rows(self._newest, {"repository": repository, "repo_id": repo_id, "digest": digest})
        return (rows[0][0], bytes(rows[0][1]), _moment(rows[0][2])) if rows else None

    async def _parent_report(self, repository: str, repo_id: int,
                             digest: str) -> tuple[str, bytes, datetime] | None:
        parents = await self._rows(self._parents, {"repository": repository, "repo_id": repo_id, "digest": digest})
        for (parent,) in parents:
            found = await self._newest_report(repository, repo_id, parent)
            if found is not None:
                return found
        return None

    async def _findings(self, document_digest: str) -> list[tuple[str, str]]:
        """The findings of the report document `document_digest` (read from the blob plane once
        per replica while it stays among the last `_DOCUMENTS_KEPT`). ValueError, KeyError or
        RegistryError when it cannot be read."""
        found = self._documents.get(document_digest)
        if found is None:
            assert self._read_blob is not None
            found = findings(json.loads(await self._read_blob(document_digest)))
            if len(self._documents) >= _DOCUMENTS_KEPT:
                del self._documents[next(iter(self._documents))]
            self._documents[document_digest] = found
        return found

    async def _problem(self, policy: VulnerabilityPolicy, report: tuple[str, bytes, datetime] | None) -> str:
        if report is None:
            if policy.max_age_seconds > 0:
                return "the image has no vulnerability report (SARIF or CycloneDX referrer); scan it and attach one"
            return ""
        digest, payload, pushed = report
        if policy.max_age_seconds > 0 and pushed < datetime.now(UTC) - timedelta(seconds=policy.max_age_seconds):
            return (f"its newest vulnerability report ({digest}, pushed {pushed.isoformat()}) is older than "
                    f"{int(policy.max_age_seconds)} s; scan it again and attach the report")
        if not policy.severity:
            return ""
        if self._read_blob is None:
            return "its report cannot be read (no blob plane configured)"
        layers = json.loads(payload).get("layers") or []
        if not layers:
            return f"its report {digest} has no document layer"
        try:
            found = await self._findings(layers[0]["digest"])
        except (ValueError, KeyError, TypeError, AttributeError, RegistryError):
            return f"its report {digest} cannot be read as SARIF or CycloneDX JSON"
        allowed = policy.allowed
        counted = [(ident, severity) for ident, severity in found if ident.upper() not in allowed]
        if not counted:
            return ""
        worst = max(counted, key=lambda item: _RANK.get(item[1], 0))
        if _RANK.get(worst[1], 0) >= _RANK[policy.severity]:
            return (f"its newest report ({digest}) lists {worst[0] or 'a finding'} ({worst[1]}), at or above the "
                    f"policy's {policy.severity}; fix or allow-list it")
        return ""
