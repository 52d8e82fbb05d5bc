from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetRegionStatusRequest(_message.Message):
    __slots__ = ("local_only",)
    LOCAL_ONLY_FIELD_NUMBER: _ClassVar[int]
    local_only: bool
    def __init__(self, local_only: _Optional[bool] = ...) -> None: ...

class GetRegionStatusResponse(_message.Message):
    __slots__ = ("local", "primary", "role", "replication_lag_seconds", "replay_waits", "replay_wait_timeouts", "forwarded_writes", "forward_failures", "peers", "blob_fetches_started", "blob_fetches_completed", "blob_fetches_failed", "blob_fetch_bytes", "blob_fetches_shared", "read_failovers", "pinned_reads")
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPLAY_WAITS_FIELD_NUMBER: _ClassVar[int]
    REPLAY_WAIT_TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_WRITES_FIELD_NUMBER: _ClassVar[int]
    FORWARD_FAILURES_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    BLOB_FETCHES_STARTED_FIELD_NUMBER: _ClassVar[int]
    BLOB_FETCHES_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    BLOB_FETCHES_FAILED_FIELD_NUMBER: _ClassVar[int]
    BLOB_FETCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    BLOB_FETCHES_SHARED_FIELD_NUMBER: _ClassVar[int]
    READ_FAILOVERS_FIELD_NUMBER: _ClassVar[int]
    PINNED_READS_FIELD_NUMBER: _ClassVar[int]
    local: str
    primary: str
    role: str
    replication_lag_seconds: float
    replay_waits: int
    replay_wait_timeouts: int
    forwarded_writes: int
    forward_failures: int
    peers: _containers.RepeatedCompositeFieldContainer[RegionPeerStatus]
    blob_fetches_started: int
    blob_fetches_completed: int
    blob_fetches_failed: int
    blob_fetch_bytes: int
    blob_fetches_shared: int
    read_failovers: int
    pinned_reads: int
    def __init__(self, local: _Optional[str] = ..., primary: _Optional[str] = ..., role: _Optional[str] = ..., replication_lag_seconds: _Optional[float] = ..., replay_waits: _Optional[int] = ..., replay_wait_timeouts: _Optional[int] = ..., forwarded_writes: _Optional[int] = ..., forward_failures: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[RegionPeerStatus, _Mapping]]] = ..., blob_fetches_started: _Optional[int] = ..., blob_fetches_completed: _Optional[int] = ..., blob_fetches_failed: _Optional[int] = ..., blob_fetch_bytes: _Optional[int] = ..., blob_fetches_shared: _Optional[int] = ..., read_failovers: _Optional[int] = ..., pinned_reads: _Optional[int] = ...) -> None: ...

class RegionPeerStatus(_message.Message):
    __slots__ = ("name", "metadata_target", "reachable", "detail", "primary", "replication_lag_seconds", "blob_fetches_completed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_TARGET_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BLOB_FETCHES_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    name: str
    metadata_target: str
    reachable: bool
    detail: str
    primary: bool
    replication_lag_seconds: float
    blob_fetches_completed: int
    def __init__(self, name: _Optional[str] = ..., metadata_target: _Optional[str] = ..., reachable: _Optional[bool] = ..., detail: _Optional[str] = ..., primary: _Optional[bool] = ..., replication_lag_seconds: _Optional[float] = ..., blob_fetches_completed: _Optional[int] = ...) -> None: ...
