from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListEventsRequest(_message.Message):
    __slots__ = ("state", "endpoint", "limit", "before_id")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_ID_FIELD_NUMBER: _ClassVar[int]
    state: str
    endpoint: str
    limit: int
    before_id: int
    def __init__(self, state: _Optional[str] = ..., endpoint: _Optional[str] = ..., limit: _Optional[int] = ..., before_id: _Optional[int] = ...) -> None: ...

class OutboxRow(_message.Message):
    __slots__ = ("id", "event_id", "endpoint", "action", "repository", "state", "attempts", "created_at", "next_attempt_at", "delivered_at", "last_error", "body")
    ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    id: int
    event_id: str
    endpoint: str
    action: str
    repository: str
    state: str
    attempts: int
    created_at: str
    next_attempt_at: str
    delivered_at: str
    last_error: str
    body: str
    def __init__(self, id: _Optional[int] = ..., event_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., action: _Optional[str] = ..., repository: _Optional[str] = ..., state: _Optional[str] = ..., attempts: _Optional[int] = ..., created_at: _Optional[str] = ..., next_attempt_at: _Optional[str] = ..., delivered_at: _Optional[str] = ..., last_error: _Optional[str] = ..., body: _Optional[str] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[OutboxRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[OutboxRow, _Mapping]]] = ...) -> None: ...

class ReplayEventsRequest(_message.Message):
    __slots__ = ("id", "dead", "endpoint")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    id: int
    dead: bool
    endpoint: str
    def __init__(self, id: _Optional[int] = ..., dead: _Optional[bool] = ..., endpoint: _Optional[str] = ...) -> None: ...

class ReplayEventsResponse(_message.Message):
    __slots__ = ("replayed",)
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    replayed: int
    def __init__(self, replayed: _Optional[int] = ...) -> None: ...
