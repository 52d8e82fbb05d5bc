from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RunReplicationRequest(_message.Message):
    __slots__ = ("rule",)
    RULE_FIELD_NUMBER: _ClassVar[int]
    rule: str
    def __init__(self, rule: _Optional[str] = ...) -> None: ...

class RunReplicationResponse(_message.Message):
    __slots__ = ("repositories", "tags", "copied", "unchanged", "failures")
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    COPIED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    repositories: int
    tags: int
    copied: int
    unchanged: int
    failures: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, repositories: _Optional[int] = ..., tags: _Optional[int] = ..., copied: _Optional[int] = ..., unchanged: _Optional[int] = ..., failures: _Optional[_Iterable[str]] = ...) -> None: ...
