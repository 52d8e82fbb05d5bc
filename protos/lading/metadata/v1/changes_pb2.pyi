from lading.metadata.v1 import repository_changes_pb2 as _repository_changes_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccountChangeReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCOUNT_CHANGE_REASON_UNSPECIFIED: _ClassVar[AccountChangeReason]
    ACCOUNT_CHANGE_REASON_DELETED: _ClassVar[AccountChangeReason]
    ACCOUNT_CHANGE_REASON_DISABLED: _ClassVar[AccountChangeReason]
    ACCOUNT_CHANGE_REASON_ENABLED: _ClassVar[AccountChangeReason]
    ACCOUNT_CHANGE_REASON_TOKENS_REVOKED: _ClassVar[AccountChangeReason]
    ACCOUNT_CHANGE_REASON_PASSWORD_CHANGED: _ClassVar[AccountChangeReason]
    ACCOUNT_CHANGE_REASON_SECRET_ROTATED: _ClassVar[AccountChangeReason]
    ACCOUNT_CHANGE_REASON_GRANTS_CHANGED: _ClassVar[AccountChangeReason]
ACCOUNT_CHANGE_REASON_UNSPECIFIED: AccountChangeReason
ACCOUNT_CHANGE_REASON_DELETED: AccountChangeReason
ACCOUNT_CHANGE_REASON_DISABLED: AccountChangeReason
ACCOUNT_CHANGE_REASON_ENABLED: AccountChangeReason
ACCOUNT_CHANGE_REASON_TOKENS_REVOKED: AccountChangeReason
ACCOUNT_CHANGE_REASON_PASSWORD_CHANGED: AccountChangeReason
ACCOUNT_CHANGE_REASON_SECRET_ROTATED: AccountChangeReason
ACCOUNT_CHANGE_REASON_GRANTS_CHANGED: AccountChangeReason

class WatchChangesRequest(_message.Message):
    __slots__ = ("after", "heartbeat_ms", "kinds", "subject")
    AFTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    after: int
    heartbeat_ms: int
    kinds: _containers.RepeatedScalarFieldContainer[_repository_changes_pb2.ChangeKind]
    subject: str
    def __init__(self, after: _Optional[int] = ..., heartbeat_ms: _Optional[int] = ..., kinds: _Optional[_Iterable[_Union[_repository_changes_pb2.ChangeKind, str]]] = ..., subject: _Optional[str] = ...) -> None: ...

class WatchChangesResponse(_message.Message):
    __slots__ = ("changes", "position", "reset", "caught_up")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    position: int
    reset: bool
    caught_up: bool
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., position: _Optional[int] = ..., reset: _Optional[bool] = ..., caught_up: _Optional[bool] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("position", "changed_at_ms", "account", "repository")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    position: int
    changed_at_ms: int
    account: AccountChange
    repository: _repository_changes_pb2.RepositoryChange
    def __init__(self, position: _Optional[int] = ..., changed_at_ms: _Optional[int] = ..., account: _Optional[_Union[AccountChange, _Mapping]] = ..., repository: _Optional[_Union[_repository_changes_pb2.RepositoryChange, _Mapping]] = ...) -> None: ...

class AccountChange(_message.Message):
    __slots__ = ("account_id", "name", "credential_generation", "active", "reason")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_GENERATION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    name: str
    credential_generation: int
    active: bool
    reason: AccountChangeReason
    def __init__(self, account_id: _Optional[str] = ..., name: _Optional[str] = ..., credential_generation: _Optional[int] = ..., active: _Optional[bool] = ..., reason: _Optional[_Union[AccountChangeReason, str]] = ...) -> None: ...
