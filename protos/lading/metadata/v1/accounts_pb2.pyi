from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccountKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCOUNT_KIND_UNSPECIFIED: _ClassVar[AccountKind]
    ACCOUNT_KIND_USER: _ClassVar[AccountKind]
    ACCOUNT_KIND_ROBOT: _ClassVar[AccountKind]
ACCOUNT_KIND_UNSPECIFIED: AccountKind
ACCOUNT_KIND_USER: AccountKind
ACCOUNT_KIND_ROBOT: AccountKind

class Account(_message.Message):
    __slots__ = ("name", "kind", "is_admin", "description", "expires_at", "created_at", "id", "credential_generation", "disabled", "origin", "groups", "groups_checked_at", "secret_expires_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    IS_ADMIN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_GENERATION_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    SECRET_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: AccountKind
    is_admin: bool
    description: str
    expires_at: int
    created_at: int
    id: str
    credential_generation: int
    disabled: bool
    origin: str
    groups: _containers.RepeatedScalarFieldContainer[str]
    groups_checked_at: int
    secret_expires_at: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[AccountKind, str]] = ..., is_admin: _Optional[bool] = ..., description: _Optional[str] = ..., expires_at: _Optional[int] = ..., created_at: _Optional[int] = ..., id: _Optional[str] = ..., credential_generation: _Optional[int] = ..., disabled: _Optional[bool] = ..., origin: _Optional[str] = ..., groups: _Optional[_Iterable[str]] = ..., groups_checked_at: _Optional[int] = ..., secret_expires_at: _Optional[int] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("name", "password", "is_admin", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    IS_ADMIN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    password: str
    is_admin: bool
    description: str
    def __init__(self, name: _Optional[str] = ..., password: _Optional[str] = ..., is_admin: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class CreateUserResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class SetPasswordRequest(_message.Message):
    __slots__ = ("name", "password")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    name: str
    password: str
    def __init__(self, name: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class SetPasswordResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteAccountRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteAccountResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateRobotRequest(_message.Message):
    __slots__ = ("name", "description", "expires_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    expires_at: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class CreateRobotResponse(_message.Message):
    __slots__ = ("account", "secret")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    account: Account
    secret: str
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListAccountsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAccountsResponse(_message.Message):
    __slots__ = ("accounts",)
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedCompositeFieldContainer[Account]
    def __init__(self, accounts: _Optional[_Iterable[_Union[Account, _Mapping]]] = ...) -> None: ...

class Permission(_message.Message):
    __slots__ = ("account", "pattern", "actions")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    account: str
    pattern: str
    actions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, account: _Optional[str] = ..., pattern: _Optional[str] = ..., actions: _Optional[_Iterable[str]] = ...) -> None: ...

class GrantRequest(_message.Message):
    __slots__ = ("account", "pattern", "actions")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    account: str
    pattern: str
    actions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, account: _Optional[str] = ..., pattern: _Optional[str] = ..., actions: _Optional[_Iterable[str]] = ...) -> None: ...

class GrantResponse(_message.Message):
    __slots__ = ("permission",)
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    permission: Permission
    def __init__(self, permission: _Optional[_Union[Permission, _Mapping]] = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("account", "pattern", "actions")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    account: str
    pattern: str
    actions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, account: _Optional[str] = ..., pattern: _Optional[str] = ..., actions: _Optional[_Iterable[str]] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: _Optional[bool] = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: str
    def __init__(self, account: _Optional[str] = ...) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("permissions",)
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    permissions: _containers.RepeatedCompositeFieldContainer[Permission]
    def __init__(self, permissions: _Optional[_Iterable[_Union[Permission, _Mapping]]] = ...) -> None: ...

class AuthenticateRequest(_message.Message):
    __slots__ = ("name", "secret", "client_address", "verified_recently")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_RECENTLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    secret: str
    client_address: str
    verified_recently: bool
    def __init__(self, name: _Optional[str] = ..., secret: _Optional[str] = ..., client_address: _Optional[str] = ..., verified_recently: _Optional[bool] = ...) -> None: ...

class AuthenticateResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class Scope(_message.Message):
    __slots__ = ("type", "name", "actions")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    type: str
    name: str
    actions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type: _Optional[str] = ..., name: _Optional[str] = ..., actions: _Optional[_Iterable[str]] = ...) -> None: ...

class AuthorizeRequest(_message.Message):
    __slots__ = ("account", "scopes", "account_id", "credential_generation")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_GENERATION_FIELD_NUMBER: _ClassVar[int]
    account: str
    scopes: _containers.RepeatedCompositeFieldContainer[Scope]
    account_id: str
    credential_generation: int
    def __init__(self, account: _Optional[str] = ..., scopes: _Optional[_Iterable[_Union[Scope, _Mapping]]] = ..., account_id: _Optional[str] = ..., credential_generation: _Optional[int] = ...) -> None: ...

class AuthorizeResponse(_message.Message):
    __slots__ = ("granted", "account_valid")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_VALID_FIELD_NUMBER: _ClassVar[int]
    granted: _containers.RepeatedCompositeFieldContainer[Scope]
    account_valid: bool
    def __init__(self, granted: _Optional[_Iterable[_Union[Scope, _Mapping]]] = ..., account_valid: _Optional[bool] = ...) -> None: ...

class RevokeTokensRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RevokeTokensResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class RotateRobotSecretRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RotateRobotSecretResponse(_message.Message):
    __slots__ = ("account", "secret")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    account: Account
    secret: str
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class SetAccountDisabledRequest(_message.Message):
    __slots__ = ("name", "disabled")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    name: str
    disabled: bool
    def __init__(self, name: _Optional[str] = ..., disabled: _Optional[bool] = ...) -> None: ...

class SetAccountDisabledResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class GetCredentialStatesRequest(_message.Message):
    __slots__ = ("account_ids",)
    ACCOUNT_IDS_FIELD_NUMBER: _ClassVar[int]
    account_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, account_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CredentialState(_message.Message):
    __slots__ = ("account_id", "name", "credential_generation", "active", "expires_at")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_GENERATION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    name: str
    credential_generation: int
    active: bool
    expires_at: int
    def __init__(self, account_id: _Optional[str] = ..., name: _Optional[str] = ..., credential_generation: _Optional[int] = ..., active: _Optional[bool] = ..., expires_at: _Optional[int] = ...) -> None: ...

class GetCredentialStatesResponse(_message.Message):
    __slots__ = ("states",)
    STATES_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedCompositeFieldContainer[CredentialState]
    def __init__(self, states: _Optional[_Iterable[_Union[CredentialState, _Mapping]]] = ...) -> None: ...

class GroupMapping(_message.Message):
    __slots__ = ("provider", "group", "pattern", "actions", "admin")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    provider: str
    group: str
    pattern: str
    actions: _containers.RepeatedScalarFieldContainer[str]
    admin: bool
    def __init__(self, provider: _Optional[str] = ..., group: _Optional[str] = ..., pattern: _Optional[str] = ..., actions: _Optional[_Iterable[str]] = ..., admin: _Optional[bool] = ...) -> None: ...

class MapGroupRequest(_message.Message):
    __slots__ = ("mapping",)
    MAPPING_FIELD_NUMBER: _ClassVar[int]
    mapping: GroupMapping
    def __init__(self, mapping: _Optional[_Union[GroupMapping, _Mapping]] = ...) -> None: ...

class MapGroupResponse(_message.Message):
    __slots__ = ("mapping",)
    MAPPING_FIELD_NUMBER: _ClassVar[int]
    mapping: GroupMapping
    def __init__(self, mapping: _Optional[_Union[GroupMapping, _Mapping]] = ...) -> None: ...

class UnmapGroupRequest(_message.Message):
    __slots__ = ("mapping",)
    MAPPING_FIELD_NUMBER: _ClassVar[int]
    mapping: GroupMapping
    def __init__(self, mapping: _Optional[_Union[GroupMapping, _Mapping]] = ...) -> None: ...

class UnmapGroupResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    def __init__(self, removed: _Optional[bool] = ...) -> None: ...

class ListGroupMappingsRequest(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: str
    def __init__(self, provider: _Optional[str] = ...) -> None: ...

class ListGroupMappingsResponse(_message.Message):
    __slots__ = ("mappings",)
    MAPPINGS_FIELD_NUMBER: _ClassVar[int]
    mappings: _containers.RepeatedCompositeFieldContainer[GroupMapping]
    def __init__(self, mappings: _Optional[_Iterable[_Union[GroupMapping, _Mapping]]] = ...) -> None: ...
