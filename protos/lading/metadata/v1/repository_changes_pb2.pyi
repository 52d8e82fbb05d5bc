from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_UNSPECIFIED: _ClassVar[ChangeKind]
    CHANGE_KIND_ACCOUNT: _ClassVar[ChangeKind]
    CHANGE_KIND_REPOSITORY: _ClassVar[ChangeKind]

class RepositoryChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPOSITORY_CHANGE_KIND_UNSPECIFIED: _ClassVar[RepositoryChangeKind]
    REPOSITORY_CHANGE_KIND_TAG_PUSHED: _ClassVar[RepositoryChangeKind]
    REPOSITORY_CHANGE_KIND_TAG_MOVED: _ClassVar[RepositoryChangeKind]
    REPOSITORY_CHANGE_KIND_TAG_DELETED: _ClassVar[RepositoryChangeKind]
    REPOSITORY_CHANGE_KIND_MANIFEST_DELETED: _ClassVar[RepositoryChangeKind]
    REPOSITORY_CHANGE_KIND_REPOSITORY_DELETED: _ClassVar[RepositoryChangeKind]
CHANGE_KIND_UNSPECIFIED: ChangeKind
CHANGE_KIND_ACCOUNT: ChangeKind
CHANGE_KIND_REPOSITORY: ChangeKind
REPOSITORY_CHANGE_KIND_UNSPECIFIED: RepositoryChangeKind
REPOSITORY_CHANGE_KIND_TAG_PUSHED: RepositoryChangeKind
REPOSITORY_CHANGE_KIND_TAG_MOVED: RepositoryChangeKind
REPOSITORY_CHANGE_KIND_TAG_DELETED: RepositoryChangeKind
REPOSITORY_CHANGE_KIND_MANIFEST_DELETED: RepositoryChangeKind
REPOSITORY_CHANGE_KIND_REPOSITORY_DELETED: RepositoryChangeKind

class RepositoryChange(_message.Message):
    __slots__ = ("repository", "kind", "tag", "digest", "previous_digest", "tags")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    repository: str
    kind: RepositoryChangeKind
    tag: str
    digest: str
    previous_digest: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, repository: _Optional[str] = ..., kind: _Optional[_Union[RepositoryChangeKind, str]] = ..., tag: _Optional[str] = ..., digest: _Optional[str] = ..., previous_digest: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...
