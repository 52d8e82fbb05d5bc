from lading.common.v1 import sources_pb2 as _sources_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FetchBlobRequest(_message.Message):
    __slots__ = ("digest", "source", "allow_redirect", "tail_when_verified")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_REDIRECT_FIELD_NUMBER: _ClassVar[int]
    TAIL_WHEN_VERIFIED_FIELD_NUMBER: _ClassVar[int]
    digest: str
    source: _sources_pb2.BlobSource
    allow_redirect: bool
    tail_when_verified: bool
    def __init__(self, digest: _Optional[str] = ..., source: _Optional[_Union[_sources_pb2.BlobSource, _Mapping]] = ..., allow_redirect: _Optional[bool] = ..., tail_when_verified: _Optional[bool] = ...) -> None: ...

class FetchBlobResponse(_message.Message):
    __slots__ = ("size", "data", "redirect_url", "commit_follows", "committed")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_URL_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FOLLOWS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    size: int
    data: bytes
    redirect_url: str
    commit_follows: bool
    committed: bool
    def __init__(self, size: _Optional[int] = ..., data: _Optional[bytes] = ..., redirect_url: _Optional[str] = ..., commit_follows: _Optional[bool] = ..., committed: _Optional[bool] = ...) -> None: ...
