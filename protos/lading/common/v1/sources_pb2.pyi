from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BlobSource(_message.Message):
    __slots__ = ("upstream",)
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    upstream: UpstreamSource
    def __init__(self, upstream: _Optional[_Union[UpstreamSource, _Mapping]] = ...) -> None: ...

class UpstreamSource(_message.Message):
    __slots__ = ("upstream", "repository")
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    upstream: str
    repository: str
    def __init__(self, upstream: _Optional[str] = ..., repository: _Optional[str] = ...) -> None: ...
