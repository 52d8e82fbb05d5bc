from lading.common.v1 import common_pb2 as _common_pb2
from lading.common.v1 import sources_pb2 as _sources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvictCachedRequest(_message.Message):
    __slots__ = ("older_than_seconds", "upstream", "dry_run")
    OLDER_THAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    older_than_seconds: float
    upstream: str
    dry_run: bool
    def __init__(self, older_than_seconds: _Optional[float] = ..., upstream: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class EvictedBlob(_message.Message):
    __slots__ = ("upstream", "digest", "size", "reason")
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    upstream: str
    digest: str
    size: int
    reason: str
    def __init__(self, upstream: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class EvictCachedResponse(_message.Message):
    __slots__ = ("blobs", "manifests_removed")
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    blobs: _containers.RepeatedCompositeFieldContainer[EvictedBlob]
    manifests_removed: int
    def __init__(self, blobs: _Optional[_Iterable[_Union[EvictedBlob, _Mapping]]] = ..., manifests_removed: _Optional[int] = ...) -> None: ...

class BeginBlobFetchRequest(_message.Message):
    __slots__ = ("repository", "digest", "wait_seconds", "context")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    wait_seconds: float
    context: _common_pb2.RequestContext
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., wait_seconds: _Optional[float] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class BeginBlobFetchResponse(_message.Message):
    __slots__ = ("outcome", "size", "lease_id", "source", "lease_seconds")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[BeginBlobFetchResponse.Outcome]
        OUTCOME_NO_SOURCE: _ClassVar[BeginBlobFetchResponse.Outcome]
        OUTCOME_LINKED: _ClassVar[BeginBlobFetchResponse.Outcome]
        OUTCOME_FETCH: _ClassVar[BeginBlobFetchResponse.Outcome]
    OUTCOME_UNSPECIFIED: BeginBlobFetchResponse.Outcome
    OUTCOME_NO_SOURCE: BeginBlobFetchResponse.Outcome
    OUTCOME_LINKED: BeginBlobFetchResponse.Outcome
    OUTCOME_FETCH: BeginBlobFetchResponse.Outcome
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    outcome: BeginBlobFetchResponse.Outcome
    size: int
    lease_id: str
    source: _sources_pb2.BlobSource
    lease_seconds: float
    def __init__(self, outcome: _Optional[_Union[BeginBlobFetchResponse.Outcome, str]] = ..., size: _Optional[int] = ..., lease_id: _Optional[str] = ..., source: _Optional[_Union[_sources_pb2.BlobSource, _Mapping]] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class RenewBlobFetchRequest(_message.Message):
    __slots__ = ("digest", "lease_id")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    digest: str
    lease_id: str
    def __init__(self, digest: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class RenewBlobFetchResponse(_message.Message):
    __slots__ = ("held",)
    HELD_FIELD_NUMBER: _ClassVar[int]
    held: bool
    def __init__(self, held: _Optional[bool] = ...) -> None: ...

class EndBlobFetchRequest(_message.Message):
    __slots__ = ("repository", "digest", "lease_id", "fetched", "size", "context")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    FETCHED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    lease_id: str
    fetched: bool
    size: int
    context: _common_pb2.RequestContext
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., lease_id: _Optional[str] = ..., fetched: _Optional[bool] = ..., size: _Optional[int] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class EndBlobFetchResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProxyStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpstreamStatus(_message.Message):
    __slots__ = ("name", "url", "prefix", "cached_blobs", "cached_bytes", "cached_tags", "byte_budget", "hits", "misses", "stale_serves", "last_error", "offline")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    CACHED_BLOBS_FIELD_NUMBER: _ClassVar[int]
    CACHED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CACHED_TAGS_FIELD_NUMBER: _ClassVar[int]
    BYTE_BUDGET_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    STALE_SERVES_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    prefix: str
    cached_blobs: int
    cached_bytes: int
    cached_tags: int
    byte_budget: int
    hits: int
    misses: int
    stale_serves: int
    last_error: str
    offline: bool
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., prefix: _Optional[str] = ..., cached_blobs: _Optional[int] = ..., cached_bytes: _Optional[int] = ..., cached_tags: _Optional[int] = ..., byte_budget: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., stale_serves: _Optional[int] = ..., last_error: _Optional[str] = ..., offline: _Optional[bool] = ...) -> None: ...

class ProxyStatusResponse(_message.Message):
    __slots__ = ("upstreams",)
    UPSTREAMS_FIELD_NUMBER: _ClassVar[int]
    upstreams: _containers.RepeatedCompositeFieldContainer[UpstreamStatus]
    def __init__(self, upstreams: _Optional[_Iterable[_Union[UpstreamStatus, _Mapping]]] = ...) -> None: ...
