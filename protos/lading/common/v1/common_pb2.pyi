from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Descriptor(_message.Message):
    __slots__ = ("media_type", "digest", "size", "artifact_type", "annotations")
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    media_type: str
    digest: str
    size: int
    artifact_type: str
    annotations: _containers.ScalarMap[str, str]
    def __init__(self, media_type: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., artifact_type: _Optional[str] = ..., annotations: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PageRequest(_message.Message):
    __slots__ = ("limit", "has_limit", "last")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    HAS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    limit: int
    has_limit: bool
    last: str
    def __init__(self, limit: _Optional[int] = ..., has_limit: _Optional[bool] = ..., last: _Optional[str] = ...) -> None: ...

class PageResponse(_message.Message):
    __slots__ = ("has_more",)
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    has_more: bool
    def __init__(self, has_more: _Optional[bool] = ...) -> None: ...

class RequestContext(_message.Message):
    __slots__ = ("request_id", "addr", "host", "method", "user_agent", "actor", "scheme", "base_url")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    addr: str
    host: str
    method: str
    user_agent: str
    actor: str
    scheme: str
    base_url: str
    def __init__(self, request_id: _Optional[str] = ..., addr: _Optional[str] = ..., host: _Optional[str] = ..., method: _Optional[str] = ..., user_agent: _Optional[str] = ..., actor: _Optional[str] = ..., scheme: _Optional[str] = ..., base_url: _Optional[str] = ...) -> None: ...
