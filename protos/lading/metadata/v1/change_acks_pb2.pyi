from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class AcknowledgeChangesRequest(_message.Message):
    __slots__ = ("subscriber", "position", "leaving")
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    subscriber: str
    position: int
    leaving: bool
    def __init__(self, subscriber: _Optional[str] = ..., position: _Optional[int] = ..., leaving: _Optional[bool] = ...) -> None: ...

class AcknowledgeChangesResponse(_message.Message):
    __slots__ = ("lease_ms", "epoch")
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    lease_ms: int
    epoch: int
    def __init__(self, lease_ms: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class FenceSubscribersRequest(_message.Message):
    __slots__ = ("position",)
    POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    def __init__(self, position: _Optional[int] = ...) -> None: ...

class FenceSubscribersResponse(_message.Message):
    __slots__ = ("subscribers",)
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    subscribers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, subscribers: _Optional[_Iterable[str]] = ...) -> None: ...
