from lading.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LinkBlobRequest(_message.Message):
    __slots__ = ("repository", "digest", "size", "context", "stored_seconds_ago")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    STORED_SECONDS_AGO_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    size: int
    context: _common_pb2.RequestContext
    stored_seconds_ago: float
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., stored_seconds_ago: _Optional[float] = ...) -> None: ...

class LinkBlobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatBlobRequest(_message.Message):
    __slots__ = ("repository", "digest", "context")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    context: _common_pb2.RequestContext
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class StatBlobResponse(_message.Message):
    __slots__ = ("digest", "size")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class UnlinkBlobRequest(_message.Message):
    __slots__ = ("repository", "digest", "context")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    context: _common_pb2.RequestContext
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class UnlinkBlobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MountBlobRequest(_message.Message):
    __slots__ = ("repository", "digest", "from_repository", "context")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    FROM_REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    from_repository: str
    context: _common_pb2.RequestContext
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., from_repository: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class MountBlobResponse(_message.Message):
    __slots__ = ("mounted", "size")
    MOUNTED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    mounted: bool
    size: int
    def __init__(self, mounted: _Optional[bool] = ..., size: _Optional[int] = ...) -> None: ...

class PutManifestRequest(_message.Message):
    __slots__ = ("repository", "reference", "media_type", "payload", "context")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    repository: str
    reference: str
    media_type: str
    payload: bytes
    context: _common_pb2.RequestContext
    def __init__(self, repository: _Optional[str] = ..., reference: _Optional[str] = ..., media_type: _Optional[str] = ..., payload: _Optional[bytes] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class PutManifestResponse(_message.Message):
    __slots__ = ("digest", "subject_digest")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    digest: str
    subject_digest: str
    def __init__(self, digest: _Optional[str] = ..., subject_digest: _Optional[str] = ...) -> None: ...

class GetManifestRequest(_message.Message):
    __slots__ = ("repository", "reference", "omit_payload", "context", "held_digests")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    OMIT_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    HELD_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    repository: str
    reference: str
    omit_payload: bool
    context: _common_pb2.RequestContext
    held_digests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, repository: _Optional[str] = ..., reference: _Optional[str] = ..., omit_payload: _Optional[bool] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., held_digests: _Optional[_Iterable[str]] = ...) -> None: ...

class GetManifestResponse(_message.Message):
    __slots__ = ("digest", "media_type", "size", "payload", "warning", "pull_events")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    PULL_EVENTS_FIELD_NUMBER: _ClassVar[int]
    digest: str
    media_type: str
    size: int
    payload: bytes
    warning: str
    pull_events: bool
    def __init__(self, digest: _Optional[str] = ..., media_type: _Optional[str] = ..., size: _Optional[int] = ..., payload: _Optional[bytes] = ..., warning: _Optional[str] = ..., pull_events: _Optional[bool] = ...) -> None: ...

class DeleteManifestRequest(_message.Message):
    __slots__ = ("repository", "reference", "context")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    repository: str
    reference: str
    context: _common_pb2.RequestContext
    def __init__(self, repository: _Optional[str] = ..., reference: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class DeleteManifestResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTagsRequest(_message.Message):
    __slots__ = ("repository", "page")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    repository: str
    page: _common_pb2.PageRequest
    def __init__(self, repository: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListTagsResponse(_message.Message):
    __slots__ = ("tags", "page")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedScalarFieldContainer[str]
    page: _common_pb2.PageResponse
    def __init__(self, tags: _Optional[_Iterable[str]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class ListRepositoriesRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListRepositoriesResponse(_message.Message):
    __slots__ = ("repositories", "page")
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    repositories: _containers.RepeatedScalarFieldContainer[str]
    page: _common_pb2.PageResponse
    def __init__(self, repositories: _Optional[_Iterable[str]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class ListReferrersRequest(_message.Message):
    __slots__ = ("repository", "subject_digest", "artifact_type", "page")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    repository: str
    subject_digest: str
    artifact_type: str
    page: _common_pb2.PageRequest
    def __init__(self, repository: _Optional[str] = ..., subject_digest: _Optional[str] = ..., artifact_type: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListReferrersResponse(_message.Message):
    __slots__ = ("referrers", "page")
    REFERRERS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    referrers: _containers.RepeatedCompositeFieldContainer[_common_pb2.Descriptor]
    page: _common_pb2.PageResponse
    def __init__(self, referrers: _Optional[_Iterable[_Union[_common_pb2.Descriptor, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...
