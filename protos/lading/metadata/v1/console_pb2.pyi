from lading.common.v1 import common_pb2 as _common_pb2
from lading.metadata.v1 import accounts_pb2 as _accounts_pb2
from lading.metadata.v1 import admin_pb2 as _admin_pb2
from lading.metadata.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetSignInOptionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SignInOptions(_message.Message):
    __slots__ = ("auth_enabled", "oidc", "oidc_display_name", "ldap")
    AUTH_ENABLED_FIELD_NUMBER: _ClassVar[int]
    OIDC_FIELD_NUMBER: _ClassVar[int]
    OIDC_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    LDAP_FIELD_NUMBER: _ClassVar[int]
    auth_enabled: bool
    oidc: bool
    oidc_display_name: str
    ldap: bool
    def __init__(self, auth_enabled: _Optional[bool] = ..., oidc: _Optional[bool] = ..., oidc_display_name: _Optional[str] = ..., ldap: _Optional[bool] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("account_id", "credential_generation", "client_address")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    credential_generation: int
    client_address: str
    def __init__(self, account_id: _Optional[str] = ..., credential_generation: _Optional[int] = ..., client_address: _Optional[str] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("session", "account", "is_admin", "expires_at", "signed_in")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    IS_ADMIN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SIGNED_IN_FIELD_NUMBER: _ClassVar[int]
    session: str
    account: _accounts_pb2.Account
    is_admin: bool
    expires_at: int
    signed_in: bool
    def __init__(self, session: _Optional[str] = ..., account: _Optional[_Union[_accounts_pb2.Account, _Mapping]] = ..., is_admin: _Optional[bool] = ..., expires_at: _Optional[int] = ..., signed_in: _Optional[bool] = ...) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OidcAuthorizationUrlRequest(_message.Message):
    __slots__ = ("redirect_uri", "state", "nonce", "code_challenge")
    REDIRECT_URI_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CODE_CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    redirect_uri: str
    state: str
    nonce: str
    code_challenge: str
    def __init__(self, redirect_uri: _Optional[str] = ..., state: _Optional[str] = ..., nonce: _Optional[str] = ..., code_challenge: _Optional[str] = ...) -> None: ...

class OidcAuthorizationUrlResponse(_message.Message):
    __slots__ = ("url",)
    URL_FIELD_NUMBER: _ClassVar[int]
    url: str
    def __init__(self, url: _Optional[str] = ...) -> None: ...

class CompleteOidcSignInRequest(_message.Message):
    __slots__ = ("code", "code_verifier", "redirect_uri", "nonce", "client_address")
    CODE_FIELD_NUMBER: _ClassVar[int]
    CODE_VERIFIER_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_URI_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    code: str
    code_verifier: str
    redirect_uri: str
    nonce: str
    client_address: str
    def __init__(self, code: _Optional[str] = ..., code_verifier: _Optional[str] = ..., redirect_uri: _Optional[str] = ..., nonce: _Optional[str] = ..., client_address: _Optional[str] = ...) -> None: ...

class CreateCliSecretRequest(_message.Message):
    __slots__ = ("session", "lifetime_seconds")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session: str
    lifetime_seconds: int
    def __init__(self, session: _Optional[str] = ..., lifetime_seconds: _Optional[int] = ...) -> None: ...

class CreateCliSecretResponse(_message.Message):
    __slots__ = ("secret", "expires_at", "session")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    secret: str
    expires_at: int
    session: SessionResponse
    def __init__(self, secret: _Optional[str] = ..., expires_at: _Optional[int] = ..., session: _Optional[_Union[SessionResponse, _Mapping]] = ...) -> None: ...

class SearchRepositoriesRequest(_message.Message):
    __slots__ = ("session", "query", "page")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    session: str
    query: str
    page: _common_pb2.PageRequest
    def __init__(self, session: _Optional[str] = ..., query: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class RepositoryEntry(_message.Message):
    __slots__ = ("name", "tags")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    tags: int
    def __init__(self, name: _Optional[str] = ..., tags: _Optional[int] = ...) -> None: ...

class SearchRepositoriesResponse(_message.Message):
    __slots__ = ("repositories", "page")
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    repositories: _containers.RepeatedCompositeFieldContainer[RepositoryEntry]
    page: _common_pb2.PageResponse
    def __init__(self, repositories: _Optional[_Iterable[_Union[RepositoryEntry, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class TagDetail(_message.Message):
    __slots__ = ("name", "digest", "media_type", "size", "pushed_at", "pushed_by", "pull_refusal")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PUSHED_AT_FIELD_NUMBER: _ClassVar[int]
    PUSHED_BY_FIELD_NUMBER: _ClassVar[int]
    PULL_REFUSAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    digest: str
    media_type: str
    size: int
    pushed_at: int
    pushed_by: str
    pull_refusal: PullRefusal
    def __init__(self, name: _Optional[str] = ..., digest: _Optional[str] = ..., media_type: _Optional[str] = ..., size: _Optional[int] = ..., pushed_at: _Optional[int] = ..., pushed_by: _Optional[str] = ..., pull_refusal: _Optional[_Union[PullRefusal, _Mapping]] = ...) -> None: ...

class PullRefusal(_message.Message):
    __slots__ = ("policy_type", "policy", "reason", "message")
    POLICY_TYPE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    policy_type: str
    policy: str
    reason: str
    message: str
    def __init__(self, policy_type: _Optional[str] = ..., policy: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ListTagDetailsRequest(_message.Message):
    __slots__ = ("session", "repository", "query", "page")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    session: str
    repository: str
    query: str
    page: _common_pb2.PageRequest
    def __init__(self, session: _Optional[str] = ..., repository: _Optional[str] = ..., query: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListTagDetailsResponse(_message.Message):
    __slots__ = ("tags", "page", "can_delete", "can_push")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    CAN_DELETE_FIELD_NUMBER: _ClassVar[int]
    CAN_PUSH_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedCompositeFieldContainer[TagDetail]
    page: _common_pb2.PageResponse
    can_delete: bool
    can_push: bool
    def __init__(self, tags: _Optional[_Iterable[_Union[TagDetail, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ..., can_delete: _Optional[bool] = ..., can_push: _Optional[bool] = ...) -> None: ...

class GetManifestDetailsRequest(_message.Message):
    __slots__ = ("session", "repository", "reference")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    session: str
    repository: str
    reference: str
    def __init__(self, session: _Optional[str] = ..., repository: _Optional[str] = ..., reference: _Optional[str] = ...) -> None: ...

class GetManifestDetailsResponse(_message.Message):
    __slots__ = ("digest", "media_type", "size", "payload", "pushed_at", "pushed_by", "tags", "can_delete", "pull_refusal")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PUSHED_AT_FIELD_NUMBER: _ClassVar[int]
    PUSHED_BY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CAN_DELETE_FIELD_NUMBER: _ClassVar[int]
    PULL_REFUSAL_FIELD_NUMBER: _ClassVar[int]
    digest: str
    media_type: str
    size: int
    payload: bytes
    pushed_at: int
    pushed_by: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    can_delete: bool
    pull_refusal: str
    def __init__(self, digest: _Optional[str] = ..., media_type: _Optional[str] = ..., size: _Optional[int] = ..., payload: _Optional[bytes] = ..., pushed_at: _Optional[int] = ..., pushed_by: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., can_delete: _Optional[bool] = ..., pull_refusal: _Optional[str] = ...) -> None: ...

class ListReferrerTreeRequest(_message.Message):
    __slots__ = ("session", "repository", "digest", "max_depth", "max_nodes")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_NODES_FIELD_NUMBER: _ClassVar[int]
    session: str
    repository: str
    digest: str
    max_depth: int
    max_nodes: int
    def __init__(self, session: _Optional[str] = ..., repository: _Optional[str] = ..., digest: _Optional[str] = ..., max_depth: _Optional[int] = ..., max_nodes: _Optional[int] = ...) -> None: ...

class ReferrerNode(_message.Message):
    __slots__ = ("subject", "descriptor", "depth")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    subject: str
    descriptor: _common_pb2.Descriptor
    depth: int
    def __init__(self, subject: _Optional[str] = ..., descriptor: _Optional[_Union[_common_pb2.Descriptor, _Mapping]] = ..., depth: _Optional[int] = ...) -> None: ...

class ListReferrerTreeResponse(_message.Message):
    __slots__ = ("nodes", "truncated")
    NODES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[ReferrerNode]
    truncated: bool
    def __init__(self, nodes: _Optional[_Iterable[_Union[ReferrerNode, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class ConsoleDeleteTagRequest(_message.Message):
    __slots__ = ("session", "repository", "tag", "context")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    session: str
    repository: str
    tag: str
    context: _common_pb2.RequestContext
    def __init__(self, session: _Optional[str] = ..., repository: _Optional[str] = ..., tag: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class ConsoleDeleteTagResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AdminListAccountsRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class AdminCreateUserRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _accounts_pb2.CreateUserRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_accounts_pb2.CreateUserRequest, _Mapping]] = ...) -> None: ...

class AdminDeleteAccountRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _accounts_pb2.DeleteAccountRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_accounts_pb2.DeleteAccountRequest, _Mapping]] = ...) -> None: ...

class AdminSetAccountDisabledRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _accounts_pb2.SetAccountDisabledRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_accounts_pb2.SetAccountDisabledRequest, _Mapping]] = ...) -> None: ...

class AdminCreateRobotRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _accounts_pb2.CreateRobotRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_accounts_pb2.CreateRobotRequest, _Mapping]] = ...) -> None: ...

class AdminGrantRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _accounts_pb2.GrantRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_accounts_pb2.GrantRequest, _Mapping]] = ...) -> None: ...

class AdminRevokeRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _accounts_pb2.RevokeRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_accounts_pb2.RevokeRequest, _Mapping]] = ...) -> None: ...

class AdminListGrantsRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _accounts_pb2.ListGrantsRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_accounts_pb2.ListGrantsRequest, _Mapping]] = ...) -> None: ...

class AdminListGroupMappingsRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _accounts_pb2.ListGroupMappingsRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_accounts_pb2.ListGroupMappingsRequest, _Mapping]] = ...) -> None: ...

class AdminMapGroupRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _accounts_pb2.MapGroupRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_accounts_pb2.MapGroupRequest, _Mapping]] = ...) -> None: ...

class AdminUnmapGroupRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _accounts_pb2.UnmapGroupRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_accounts_pb2.UnmapGroupRequest, _Mapping]] = ...) -> None: ...

class AdminGcStatsRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _admin_pb2.GcStatsRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_admin_pb2.GcStatsRequest, _Mapping]] = ...) -> None: ...

class AdminGcPlanRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _admin_pb2.GcPlanRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_admin_pb2.GcPlanRequest, _Mapping]] = ...) -> None: ...

class AdminListEventsRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _events_pb2.ListEventsRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_events_pb2.ListEventsRequest, _Mapping]] = ...) -> None: ...

class AdminReplayEventsRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _events_pb2.ReplayEventsRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_events_pb2.ReplayEventsRequest, _Mapping]] = ...) -> None: ...

class AdminGetMaintenanceRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class AdminSetMaintenanceRequest(_message.Message):
    __slots__ = ("session", "request")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    request: _admin_pb2.SetMaintenanceRequest
    def __init__(self, session: _Optional[str] = ..., request: _Optional[_Union[_admin_pb2.SetMaintenanceRequest, _Mapping]] = ...) -> None: ...

class AdminStorageRequest(_message.Message):
    __slots__ = ("session", "limit")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    session: str
    limit: int
    def __init__(self, session: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class AdminStorageResponse(_message.Message):
    __slots__ = ("repositories", "total_bytes", "repository_count")
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_COUNT_FIELD_NUMBER: _ClassVar[int]
    repositories: _containers.RepeatedCompositeFieldContainer[_admin_pb2.RepositorySummary]
    total_bytes: int
    repository_count: int
    def __init__(self, repositories: _Optional[_Iterable[_Union[_admin_pb2.RepositorySummary, _Mapping]]] = ..., total_bytes: _Optional[int] = ..., repository_count: _Optional[int] = ...) -> None: ...
