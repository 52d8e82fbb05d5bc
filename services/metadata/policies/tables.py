"""The governance tables (created by migration 0010_governance).

- `immutable_tag_rules`: a tag whose repository matches `repository_pattern` and whose name
  matches `tag_pattern` (shell-style globs, `fnmatch`: `*` also crosses `/`) may be created but
  never moved to another digest nor deleted (policies/tags.py).
- `tag_overrides`: one-time admin overrides (`lading immutable override`): the next move or
  delete of that tag is let through once, before `expires_at`, and the row is consumed.
- `tag_history`: every tag creation, move and delete (old and new digest, who, when, how).
  Repository names, not ids: the history outlives a deleted repository. GC keeps a manifest
  that a tag left within `governance.history_window_seconds` (gc/store.py).
- `audit_log`: who changed what, from where, with what outcome (policies/audit.py).
- `quotas`: storage quotas by repository pattern, with their running usage; `quota_blobs`: the
  distinct digests counted in each quota and how many of its repositories link each (a layer
  shared by two repositories of a quota counts once). policies/quotas.py keeps both exact.
- `retention_policies`: which tags and untagged manifests retention deletes (policies/retention.py).
- `signature_policies`: repositories whose images must be signed to be pulled (policies/signatures.py).
- `vulnerability_policies`: what a scan report must (not) say for a pull (policies/vulnerabilities.py).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text, UniqueConstraint

from services.metadata.store.schema import DIGEST_LENGTH, NAME_LENGTH, TAG_LENGTH, bytewise, metadata

immutable_tag_rules = Table(
    "immutable_tag_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("repository_pattern", String(NAME_LENGTH), nullable=False),
    Column("tag_pattern", String(TAG_LENGTH), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(NAME_LENGTH), nullable=False),
    UniqueConstraint("name"),
)

tag_overrides = Table(
    "tag_overrides",
    metadata,
    Column("repository", bytewise(NAME_LENGTH), primary_key=True),
    Column("tag", bytewise(TAG_LENGTH), primary_key=True),
    Column("granted_by", String(NAME_LENGTH), nullable=False),
    Column("reason", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

tag_history = Table(
    "tag_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("repository", bytewise(NAME_LENGTH), nullable=False),
    Column("tag", bytewise(TAG_LENGTH), nullable=False),
    # NULL old: the tag was created; NULL new: it was deleted.
    Column("old_digest", bytewise(DIGEST_LENGTH), nullable=True),
    Column("new_digest", bytewise(DIGEST_LENGTH), nullable=True),
    # push | delete | restore | repository-delete; "+override" when an immutable rule was overridden.
    Column("action", String(32), nullable=False),
    Column("actor", String(NAME_LENGTH), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index(None, "repository", "tag", "id"),
    # GC: "did a tag leave this manifest within the window?"
    Index(None, "old_digest"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(NAME_LENGTH), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False),
    Column("repository", bytewise(NAME_LENGTH), nullable=True),
    Column("client_address", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    # "ok", "denied" or "failed".
    Column("outcome", String(16), nullable=False),
    # Free text: the rule, the reason given, what changed.
    Column("detail", Text, nullable=False),
    Index(None, "at"),
    Index(None, "actor", "at"),
    Index(None, "repository", "at"),
)

quotas = Table(
    "quotas",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("repository_pattern", String(NAME_LENGTH), nullable=False),
    Column("limit_bytes", BigInteger, nullable=False),
    Column("used_bytes", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

quota_blobs = Table(
    "quota_blobs",
    metadata,
    Column("quota", String(128), primary_key=True),
    Column("digest", bytewise(DIGEST_LENGTH), primary_key=True),
    Column("size", BigInteger, nullable=False),
    # Repositories of the quota that link the digest; the row goes when it reaches 0.
    Column("refs", Integer, nullable=False),
)

retention_policies = Table(
    "retention_policies",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("repository_pattern", String(NAME_LENGTH), nullable=False),
    # Keep the N most recently moved tags (0: every tag).
    Column("keep_last", Integer, nullable=False),
    # Tags matching this glob are always kept ("" : none).
    Column("keep_tags", String(TAG_LENGTH), nullable=False),
    # Delete manifests untagged for longer than this (0: never).
    Column("untagged_after_seconds", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

signature_policies = Table(
    "signature_policies",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("repository_pattern", String(NAME_LENGTH), nullable=False),
    # any | cosign | notation
    Column("kind", String(16), nullable=False),
    # PEM public keys (cosign, ECDSA P-256), concatenated; "" : a signature's presence is enough.
    Column("public_keys", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

vulnerability_policies = Table(
    "vulnerability_policies",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("repository_pattern", String(NAME_LENGTH), nullable=False),
    # critical | high | medium | low | "" (no severity threshold)
    Column("severity", String(16), nullable=False),
    # The newest report must be younger than this (0: a report is not required).
    Column("max_age_seconds", BigInteger, nullable=False),
    # Comma-separated finding ids never counted (CVE ids).
    Column("allow", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

POLICY_TABLES = (immutable_tag_rules, tag_overrides, tag_history, audit_log, quotas, quota_blobs, retention_policies,
                 signature_policies, vulnerability_policies)
