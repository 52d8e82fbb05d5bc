from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BlobSource(_message.Message):
    __slots__ = ("upstream", "region")
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    upstream: UpstreamSource
    region: RegionSource
    def __init__(self, upstream: _Optional[_Union[UpstreamSource, _Mapping]] = ..., region: _Optional[_Union[RegionSource, _Mapping]] = ...) -> None: ...

class UpstreamSource(_message.Message):
    __slots__ = ("upstream", "repository")
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    upstream: str
    repository: str
    def __init__(self, upstream: _Optional[str] = ..., repository: _Optional[str] = ...) -> None: ...

class RegionSource(_message.Message):
    __slots__ = ("regions",)
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    regions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, regions: _Optional[_Iterable[str]] = ...) -> None: ...
