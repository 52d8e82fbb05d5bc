"""The governance use cases, independent of gRPC: validate input, call the PolicyStore (rules,
overrides, history) or the MetadataCore (a tag restore moves a tag like a push does)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from services.common.errors import ErrorKind, RegistryError
from services.common.names import validate_repository, validate_tag
from services.metadata.core import MetadataCore
from services.metadata.policies.quotas import Quota
from services.metadata.policies.retention import Retention, RetentionPlan, RetentionPolicy, RetentionResult
from services.metadata.policies.signatures import KINDS, SignatureGate, SignaturePolicy, load_keys
from services.metadata.policies.store import AuditEntry, HistoryEntry, PolicyStore, StoredRule, rfc3339
from services.metadata.policies.tags import ImmutableRule
from services.metadata.policies.vulnerabilities import SEVERITIES, VulnerabilityGate, VulnerabilityPolicy

_RULE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
# Globs: the name grammar's characters plus * ? [ ] !
_PATTERN = re.compile(r"[A-Za-z0-9._/*?\[\]!-]+")
_HISTORY_DEFAULT, _HISTORY_MAX = 100, 1000
_AUDIT_DEFAULT, _AUDIT_MAX = 100, 10000
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """Bytes from "500", "10GiB", "1.5 TB" (binary units: 1 GB = 1 GiB)."""
    found = _SIZE.fullmatch(text.strip())
    if not found:
        raise _invalid(f"cannot read size {text!r}: use bytes or a unit, e.g. 500MiB or 10GiB", {"limit": text})
    unit = (found.group(2) or "").upper()[:1]
    return int(float(found.group(1)) * _UNITS[unit])


def _invalid(message: str, detail: dict[str, str]) -> RegistryError:
    return RegistryError(ErrorKind.NAME_INVALID, message, detail)


def parse_time(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time (a trailing Z, or no zone: UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _invalid(f"cannot read time {text!r}: use RFC 3339, e.g. 2026-12-06T04:00:00Z", {"at": text}) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class PolicyCore:
    def __init__(self, store: PolicyStore, metadata: MetadataCore, *, override_seconds: float,
                 retention: Retention | None = None, signatures: SignatureGate | None = None,
                 vulnerabilities: VulnerabilityGate | None = None) -> None:
        self._store = store
        self.signatures = signatures
        self.vulnerabilities = vulnerabilities
        self.retention = retention
        self._metadata = metadata
        self._override = timedelta(seconds=override_seconds)

    async def set_rule(self, name: str, repository_pattern: str, tag_pattern: str) -> StoredRule:
        if not _RULE_NAME.fullmatch(name):
            raise _invalid(f"invalid rule name {name!r}: lower-case letters, digits, '.', '_', '-' (up to 128)",
                           {"name": name})
        for what, pattern, limit in (("repository", repository_pattern, 255), ("tag", tag_pattern, 128)):
            if not pattern or len(pattern) > limit or not _PATTERN.fullmatch(pattern):
                raise _invalid(f"invalid {what} pattern {pattern!r}: a glob of name characters and * ? [ ] "
                               f"(up to {limit} characters), e.g. 'prod/*' or 'v*'", {"pattern": pattern})
        return await self._store.set_rule(ImmutableRule(name, repository_pattern, tag_pattern))

    async def delete_rule(self, name: str) -> bool:
        return await self._store.delete_rule(name)

    async def list_rules(self) -> list[StoredRule]:
        return await self._store.list_rules()

    async def allow_override(self, repository: str, tag: str, reason: str) -> tuple[ImmutableRule, datetime]:
        validate_repository(repository)
        validate_tag(tag)
        if not reason.strip():
            raise _invalid("an override needs a reason (--reason), kept in the audit log", {"tag": tag})
        return await self._store.allow_override(repository, tag, reason.strip(), self._override)

    async def history(self, repository: str, tag: str, limit: int) -> list[HistoryEntry]:
        validate_repository(repository)
        validate_tag(tag)
        if limit < 0:
            raise RegistryError(ErrorKind.PAGINATION_NUMBER_INVALID, f"invalid limit {limit}", {"n": limit})
        return await self._store.history(repository, tag, min(limit or _HISTORY_DEFAULT, _HISTORY_MAX))

    async def restore(self, repository: str, tag: str, *, digest: str, at: str) -> tuple[str, bool]:
        """(digest, moved). Exactly one of `digest` and `at`."""
        validate_repository(repository)
        validate_tag(tag)
        if bool(digest) == bool(at):
            raise _invalid("give exactly one of --to DIGEST and --at TIME", {"tag": tag})
        if at:
            moment = parse_time(at)
            found = await self._store.digest_at(repository, tag, moment)
            if found is None:
                raise RegistryError(
                    ErrorKind.MANIFEST_UNKNOWN,
                    f"tag {tag!r} did not exist in {repository!r} at {rfc3339(moment)}; "
                    f"see `lading tag history {repository} {tag}`",
                    {"name": repository, "reference": tag})
            digest = found
        moved = await self._metadata.restore_tag(repository, tag, digest)
        return digest, moved

    async def audit(self, *, since: str, actor: str, repository: str, limit: int) -> list[AuditEntry]:
        if limit < 0:
            raise RegistryError(ErrorKind.PAGINATION_NUMBER_INVALID, f"invalid limit {limit}", {"n": limit})
        return await self._store.audit(since=parse_time(since) if since else None, actor=actor,
                                       repository=repository, limit=min(limit or _AUDIT_DEFAULT, _AUDIT_MAX))

    async def set_quota(self, name: str, repository_pattern: str, limit: str) -> Quota:
        if not _RULE_NAME.fullmatch(name):
            raise _invalid(f"invalid quota name {name!r}: lower-case letters, digits, '.', '_', '-' (up to 128)",
                           {"name": name})
        if not repository_pattern or len(repository_pattern) > 255 or not _PATTERN.fullmatch(repository_pattern):
            raise _invalid(f"invalid repository pattern {repository_pattern!r}: a glob such as 'team-a/*'",
                           {"pattern": repository_pattern})
        return await self._store.set_quota(name, repository_pattern, parse_size(limit))

    async def delete_quota(self, name: str) -> bool:
        return await self._store.delete_quota(name)

    async def list_quotas(self) -> list[Quota]:
        return await self._store.list_quotas()

    async def recount_quotas(self) -> dict[str, tuple[int, int]]:
        return await self._store.recount_quotas()

    async def set_retention(self, policy: RetentionPolicy) -> None:
        if not _RULE_NAME.fullmatch(policy.name):
            raise _invalid(f"invalid policy name {policy.name!r}: lower-case letters, digits, '.', '_', '-'",
                           {"name": policy.name})
        if not policy.repository_pattern or not _PATTERN.fullmatch(policy.repository_pattern):
            raise _invalid(f"invalid repository pattern {policy.repository_pattern!r}: a glob such as 'ci/*'",
                           {"pattern": policy.repository_pattern})
        if policy.keep_tags and not _PATTERN.fullmatch(policy.keep_tags):
            raise _invalid(f"invalid tag pattern {policy.keep_tags!r}: a glob such as 'v*'", {"pattern": policy.keep_tags})
        if policy.keep_last < 0 or policy.untagged_after_seconds < 0:
            raise _invalid("keep-last and untagged-after must not be negative", {"name": policy.name})
        if policy.keep_last == 0 and policy.untagged_after_seconds == 0:
            raise _invalid("this policy would delete nothing: give --keep-last N and/or --untagged-after AGE",
                           {"name": policy.name})
        await self._store.set_retention(policy)

    async def delete_retention(self, name: str) -> bool:
        return await self._store.delete_retention(name)

    def _retention(self) -> Retention:
        if self.retention is None:
            raise RegistryError(ErrorKind.UNSUPPORTED, "retention is not available in this process")
        return self.retention

    async def list_retention(self) -> list[RetentionPolicy]:
        return await self._retention().policies()

    async def plan_retention(self) -> RetentionPlan:
        return await self._retention().plan()

    async def run_retention(self) -> tuple[RetentionPlan, RetentionResult]:
        return await self._retention().run()

    async def set_signature_policy(self, policy: SignaturePolicy) -> None:
        if not _RULE_NAME.fullmatch(policy.name):
            raise _invalid(f"invalid policy name {policy.name!r}: lower-case letters, digits, '.', '_', '-'",
                           {"name": policy.name})
        if not policy.repository_pattern or not _PATTERN.fullmatch(policy.repository_pattern):
            raise _invalid(f"invalid repository pattern {policy.repository_pattern!r}: a glob such as 'prod/*'",
                           {"pattern": policy.repository_pattern})
        if policy.kind not in KINDS:
            raise _invalid(f"invalid signature type {policy.kind!r}: one of {', '.join(KINDS)}", {"type": policy.kind})
        if policy.public_keys:
            if policy.kind == "notation":
                raise _invalid("public keys verify cosign signatures; a notation policy takes none", {"type": "notation"})
            if not load_keys(policy.public_keys):
                raise _invalid("no PEM public key found (-----BEGIN PUBLIC KEY-----)", {"name": policy.name})
        await self._store.set_signature_policy(policy)

    async def delete_signature_policy(self, name: str) -> bool:
        return await self._store.delete_signature_policy(name)

    async def list_signature_policies(self) -> list[SignaturePolicy]:
        if self.signatures is None:
            raise RegistryError(ErrorKind.UNSUPPORTED, "signature policies are not available in this process")
        return await self.signatures.policies(fresh=True)

    async def set_vulnerability_policy(self, policy: VulnerabilityPolicy) -> None:
        if not _RULE_NAME.fullmatch(policy.name):
            raise _invalid(f"invalid policy name {policy.name!r}: lower-case letters, digits, '.', '_', '-'",
                           {"name": policy.name})
        if not policy.repository_pattern or not _PATTERN.fullmatch(policy.repository_pattern):
            raise _invalid(f"invalid repository pattern {policy.repository_pattern!r}: a glob such as 'prod/*'",
                           {"pattern": policy.repository_pattern})
        if policy.severity and policy.severity not in SEVERITIES:
            raise _invalid(f"invalid severity {policy.severity!r}: one of {', '.join(SEVERITIES)}",
                           {"severity": policy.severity})
        if policy.max_age_seconds < 0:
            raise _invalid("the maximum report age must not be negative", {"name": policy.name})
        if not policy.severity and not policy.max_age_seconds:
            raise _invalid("this policy would refuse nothing: give --severity and/or --max-age", {"name": policy.name})
        await self._store.set_vulnerability_policy(policy)

    async def delete_vulnerability_policy(self, name: str) -> bool:
        return await self._store.delete_vulnerability_policy(name)

    async def list_vulnerability_policies(self) -> list[VulnerabilityPolicy]:
        if self.vulnerabilities is None:
            raise RegistryError(ErrorKind.UNSUPPORTED, "vulnerability policies are not available in this process")
        return await self.vulnerabilities.policies(fresh=True)
