from lading.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImmutableRule(_message.Message):
    __slots__ = ("name", "repository_pattern", "tag_pattern", "created_by", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_PATTERN_FIELD_NUMBER: _ClassVar[int]
    TAG_PATTERN_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    repository_pattern: str
    tag_pattern: str
    created_by: str
    created_at: str
    def __init__(self, name: _Optional[str] = ..., repository_pattern: _Optional[str] = ..., tag_pattern: _Optional[str] = ..., created_by: _Optional[str] = ..., created_at: _Optional[str] = ...) -> None: ...

class SetImmutableRuleRequest(_message.Message):
    __slots__ = ("name", "repository_pattern", "tag_pattern", "context")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_PATTERN_FIELD_NUMBER: _ClassVar[int]
    TAG_PATTERN_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    repository_pattern: str
    tag_pattern: str
    context: _common_pb2.RequestContext
    def __init__(self, name: _Optional[str] = ..., repository_pattern: _Optional[str] = ..., tag_pattern: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class DeleteImmutableRuleRequest(_message.Message):
    __slots__ = ("name", "context")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    context: _common_pb2.RequestContext
    def __init__(self, name: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class DeleteImmutableRuleResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ListImmutableRulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListImmutableRulesResponse(_message.Message):
    __slots__ = ("rules",)
    RULES_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[ImmutableRule]
    def __init__(self, rules: _Optional[_Iterable[_Union[ImmutableRule, _Mapping]]] = ...) -> None: ...

class AllowTagOverrideRequest(_message.Message):
    __slots__ = ("repository", "tag", "reason", "context")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    repository: str
    tag: str
    reason: str
    context: _common_pb2.RequestContext
    def __init__(self, repository: _Optional[str] = ..., tag: _Optional[str] = ..., reason: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class AllowTagOverrideResponse(_message.Message):
    __slots__ = ("rule", "expires_at")
    RULE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    rule: str
    expires_at: str
    def __init__(self, rule: _Optional[str] = ..., expires_at: _Optional[str] = ...) -> None: ...

class TagHistoryEntry(_message.Message):
    __slots__ = ("tag", "old_digest", "new_digest", "action", "actor", "at")
    TAG_FIELD_NUMBER: _ClassVar[int]
    OLD_DIGEST_FIELD_NUMBER: _ClassVar[int]
    NEW_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    tag: str
    old_digest: str
    new_digest: str
    action: str
    actor: str
    at: str
    def __init__(self, tag: _Optional[str] = ..., old_digest: _Optional[str] = ..., new_digest: _Optional[str] = ..., action: _Optional[str] = ..., actor: _Optional[str] = ..., at: _Optional[str] = ...) -> None: ...

class GetTagHistoryRequest(_message.Message):
    __slots__ = ("repository", "tag", "limit")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    repository: str
    tag: str
    limit: int
    def __init__(self, repository: _Optional[str] = ..., tag: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class GetTagHistoryResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[TagHistoryEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[TagHistoryEntry, _Mapping]]] = ...) -> None: ...

class RestoreTagRequest(_message.Message):
    __slots__ = ("repository", "tag", "digest", "at", "context")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    repository: str
    tag: str
    digest: str
    at: str
    context: _common_pb2.RequestContext
    def __init__(self, repository: _Optional[str] = ..., tag: _Optional[str] = ..., digest: _Optional[str] = ..., at: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class RestoreTagResponse(_message.Message):
    __slots__ = ("digest", "moved")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MOVED_FIELD_NUMBER: _ClassVar[int]
    digest: str
    moved: bool
    def __init__(self, digest: _Optional[str] = ..., moved: _Optional[bool] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("since", "actor", "repository", "limit")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    since: str
    actor: str
    repository: str
    limit: int
    def __init__(self, since: _Optional[str] = ..., actor: _Optional[str] = ..., repository: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("id", "at", "actor", "action", "target", "repository", "client_address", "request_id", "outcome", "detail")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    id: int
    at: str
    actor: str
    action: str
    target: str
    repository: str
    client_address: str
    request_id: str
    outcome: str
    detail: str
    def __init__(self, id: _Optional[int] = ..., at: _Optional[str] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., repository: _Optional[str] = ..., client_address: _Optional[str] = ..., request_id: _Optional[str] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ...) -> None: ...

class QuotaUsage(_message.Message):
    __slots__ = ("name", "repository_pattern", "limit_bytes", "used_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_PATTERN_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    repository_pattern: str
    limit_bytes: int
    used_bytes: int
    def __init__(self, name: _Optional[str] = ..., repository_pattern: _Optional[str] = ..., limit_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ...) -> None: ...

class SetQuotaRequest(_message.Message):
    __slots__ = ("name", "repository_pattern", "limit", "context")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_PATTERN_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    repository_pattern: str
    limit: str
    context: _common_pb2.RequestContext
    def __init__(self, name: _Optional[str] = ..., repository_pattern: _Optional[str] = ..., limit: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class DeleteQuotaRequest(_message.Message):
    __slots__ = ("name", "context")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    context: _common_pb2.RequestContext
    def __init__(self, name: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class DeleteQuotaResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ListQuotasRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListQuotasResponse(_message.Message):
    __slots__ = ("quotas",)
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    quotas: _containers.RepeatedCompositeFieldContainer[QuotaUsage]
    def __init__(self, quotas: _Optional[_Iterable[_Union[QuotaUsage, _Mapping]]] = ...) -> None: ...

class RecountQuotasRequest(_message.Message):
    __slots__ = ("context",)
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class QuotaRecount(_message.Message):
    __slots__ = ("name", "before_bytes", "after_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BEFORE_BYTES_FIELD_NUMBER: _ClassVar[int]
    AFTER_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    before_bytes: int
    after_bytes: int
    def __init__(self, name: _Optional[str] = ..., before_bytes: _Optional[int] = ..., after_bytes: _Optional[int] = ...) -> None: ...

class RecountQuotasResponse(_message.Message):
    __slots__ = ("quotas",)
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    quotas: _containers.RepeatedCompositeFieldContainer[QuotaRecount]
    def __init__(self, quotas: _Optional[_Iterable[_Union[QuotaRecount, _Mapping]]] = ...) -> None: ...

class RetentionPolicy(_message.Message):
    __slots__ = ("name", "repository_pattern", "keep_last", "keep_tags", "untagged_after_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_PATTERN_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    KEEP_TAGS_FIELD_NUMBER: _ClassVar[int]
    UNTAGGED_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    repository_pattern: str
    keep_last: int
    keep_tags: str
    untagged_after_seconds: int
    def __init__(self, name: _Optional[str] = ..., repository_pattern: _Optional[str] = ..., keep_last: _Optional[int] = ..., keep_tags: _Optional[str] = ..., untagged_after_seconds: _Optional[int] = ...) -> None: ...

class SetRetentionPolicyRequest(_message.Message):
    __slots__ = ("policy", "context")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    policy: RetentionPolicy
    context: _common_pb2.RequestContext
    def __init__(self, policy: _Optional[_Union[RetentionPolicy, _Mapping]] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class SetRetentionPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteRetentionPolicyRequest(_message.Message):
    __slots__ = ("name", "context")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    context: _common_pb2.RequestContext
    def __init__(self, name: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class DeleteRetentionPolicyResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ListRetentionPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRetentionPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[RetentionPolicy]
    def __init__(self, policies: _Optional[_Iterable[_Union[RetentionPolicy, _Mapping]]] = ...) -> None: ...

class PlanRetentionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PlannedDeletion(_message.Message):
    __slots__ = ("repository", "tag", "digest", "policy")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    repository: str
    tag: str
    digest: str
    policy: str
    def __init__(self, repository: _Optional[str] = ..., tag: _Optional[str] = ..., digest: _Optional[str] = ..., policy: _Optional[str] = ...) -> None: ...

class RetentionPlan(_message.Message):
    __slots__ = ("tags", "manifests", "bytes")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedCompositeFieldContainer[PlannedDeletion]
    manifests: _containers.RepeatedCompositeFieldContainer[PlannedDeletion]
    bytes: int
    def __init__(self, tags: _Optional[_Iterable[_Union[PlannedDeletion, _Mapping]]] = ..., manifests: _Optional[_Iterable[_Union[PlannedDeletion, _Mapping]]] = ..., bytes: _Optional[int] = ...) -> None: ...

class RunRetentionRequest(_message.Message):
    __slots__ = ("context",)
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class RunRetentionResponse(_message.Message):
    __slots__ = ("plan", "tags_deleted", "manifests_deleted", "skipped")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    TAGS_DELETED_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    plan: RetentionPlan
    tags_deleted: int
    manifests_deleted: int
    skipped: int
    def __init__(self, plan: _Optional[_Union[RetentionPlan, _Mapping]] = ..., tags_deleted: _Optional[int] = ..., manifests_deleted: _Optional[int] = ..., skipped: _Optional[int] = ...) -> None: ...

class SignaturePolicy(_message.Message):
    __slots__ = ("name", "repository_pattern", "type", "public_keys")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_PATTERN_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEYS_FIELD_NUMBER: _ClassVar[int]
    name: str
    repository_pattern: str
    type: str
    public_keys: str
    def __init__(self, name: _Optional[str] = ..., repository_pattern: _Optional[str] = ..., type: _Optional[str] = ..., public_keys: _Optional[str] = ...) -> None: ...

class SetSignaturePolicyRequest(_message.Message):
    __slots__ = ("policy", "context")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    policy: SignaturePolicy
    context: _common_pb2.RequestContext
    def __init__(self, policy: _Optional[_Union[SignaturePolicy, _Mapping]] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class SetSignaturePolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteSignaturePolicyRequest(_message.Message):
    __slots__ = ("name", "context")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    context: _common_pb2.RequestContext
    def __init__(self, name: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class DeleteSignaturePolicyResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ListSignaturePoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSignaturePoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[SignaturePolicy]
    def __init__(self, policies: _Optional[_Iterable[_Union[SignaturePolicy, _Mapping]]] = ...) -> None: ...

class VulnerabilityPolicy(_message.Message):
    __slots__ = ("name", "repository_pattern", "severity", "max_age_seconds", "allow")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_PATTERN_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    repository_pattern: str
    severity: str
    max_age_seconds: int
    allow: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., repository_pattern: _Optional[str] = ..., severity: _Optional[str] = ..., max_age_seconds: _Optional[int] = ..., allow: _Optional[_Iterable[str]] = ...) -> None: ...

class SetVulnerabilityPolicyRequest(_message.Message):
    __slots__ = ("policy", "context")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    policy: VulnerabilityPolicy
    context: _common_pb2.RequestContext
    def __init__(self, policy: _Optional[_Union[VulnerabilityPolicy, _Mapping]] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class SetVulnerabilityPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteVulnerabilityPolicyRequest(_message.Message):
    __slots__ = ("name", "context")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    context: _common_pb2.RequestContext
    def __init__(self, name: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class DeleteVulnerabilityPolicyResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ListVulnerabilityPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVulnerabilityPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[VulnerabilityPolicy]
    def __init__(self, policies: _Optional[_Iterable[_Union[VulnerabilityPolicy, _Mapping]]] = ...) -> None: ...
