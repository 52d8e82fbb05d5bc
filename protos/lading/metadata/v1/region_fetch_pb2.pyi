from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BeginRegionFetchRequest(_message.Message):
    __slots__ = ("digest", "wait_seconds", "region", "missing_here")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    MISSING_HERE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    wait_seconds: float
    region: str
    missing_here: bool
    def __init__(self, digest: _Optional[str] = ..., wait_seconds: _Optional[float] = ..., region: _Optional[str] = ..., missing_here: _Optional[bool] = ...) -> None: ...

class BeginRegionFetchResponse(_message.Message):
    __slots__ = ("outcome", "lease_id", "regions", "lease_seconds")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[BeginRegionFetchResponse.Outcome]
        OUTCOME_NO_SOURCE: _ClassVar[BeginRegionFetchResponse.Outcome]
        OUTCOME_PRESENT: _ClassVar[BeginRegionFetchResponse.Outcome]
        OUTCOME_FETCH: _ClassVar[BeginRegionFetchResponse.Outcome]
    OUTCOME_UNSPECIFIED: BeginRegionFetchResponse.Outcome
    OUTCOME_NO_SOURCE: BeginRegionFetchResponse.Outcome
    OUTCOME_PRESENT: BeginRegionFetchResponse.Outcome
    OUTCOME_FETCH: BeginRegionFetchResponse.Outcome
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    outcome: BeginRegionFetchResponse.Outcome
    lease_id: str
    regions: _containers.RepeatedScalarFieldContainer[str]
    lease_seconds: float
    def __init__(self, outcome: _Optional[_Union[BeginRegionFetchResponse.Outcome, str]] = ..., lease_id: _Optional[str] = ..., regions: _Optional[_Iterable[str]] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class EndRegionFetchRequest(_message.Message):
    __slots__ = ("digest", "lease_id", "fetched", "size", "region")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    FETCHED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    digest: str
    lease_id: str
    fetched: bool
    size: int
    region: str
    def __init__(self, digest: _Optional[str] = ..., lease_id: _Optional[str] = ..., fetched: _Optional[bool] = ..., size: _Optional[int] = ..., region: _Optional[str] = ...) -> None: ...

class EndRegionFetchResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RenewRegionFetchRequest(_message.Message):
    __slots__ = ("digest", "lease_id", "region")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    digest: str
    lease_id: str
    region: str
    def __init__(self, digest: _Optional[str] = ..., lease_id: _Optional[str] = ..., region: _Optional[str] = ...) -> None: ...

class RenewRegionFetchResponse(_message.Message):
    __slots__ = ("held",)
    HELD_FIELD_NUMBER: _ClassVar[int]
    held: bool
    def __init__(self, held: _Optional[bool] = ...) -> None: ...
