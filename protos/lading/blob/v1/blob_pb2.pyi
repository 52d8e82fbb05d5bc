from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatBlobRequest(_message.Message):
    __slots__ = ("digest",)
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    digest: str
    def __init__(self, digest: _Optional[str] = ...) -> None: ...

class StatBlobResponse(_message.Message):
    __slots__ = ("digest", "size")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class ReadBlobRequest(_message.Message):
    __slots__ = ("digest", "offset", "length", "allow_redirect")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    ALLOW_REDIRECT_FIELD_NUMBER: _ClassVar[int]
    digest: str
    offset: int
    length: int
    allow_redirect: bool
    def __init__(self, digest: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., allow_redirect: _Optional[bool] = ...) -> None: ...

class ReadBlobResponse(_message.Message):
    __slots__ = ("data", "redirect_url")
    DATA_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_URL_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    redirect_url: str
    def __init__(self, data: _Optional[bytes] = ..., redirect_url: _Optional[str] = ...) -> None: ...

class DeleteBlobRequest(_message.Message):
    __slots__ = ("digest", "listed_modified_at")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    LISTED_MODIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    digest: str
    listed_modified_at: float
    def __init__(self, digest: _Optional[str] = ..., listed_modified_at: _Optional[float] = ...) -> None: ...

class DeleteBlobResponse(_message.Message):
    __slots__ = ("deleted", "kept_newer")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    KEPT_NEWER_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    kept_newer: bool
    def __init__(self, deleted: _Optional[bool] = ..., kept_newer: _Optional[bool] = ...) -> None: ...

class ListBlobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class StoredBlob(_message.Message):
    __slots__ = ("digest", "size", "modified_at")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    modified_at: float
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., modified_at: _Optional[float] = ...) -> None: ...

class ListBlobsResponse(_message.Message):
    __slots__ = ("blobs", "next_page_token")
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    blobs: _containers.RepeatedCompositeFieldContainer[StoredBlob]
    next_page_token: str
    def __init__(self, blobs: _Optional[_Iterable[_Union[StoredBlob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UploadStatus(_message.Message):
    __slots__ = ("upload_id", "repository", "offset", "started_at")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    repository: str
    offset: int
    started_at: int
    def __init__(self, upload_id: _Optional[str] = ..., repository: _Optional[str] = ..., offset: _Optional[int] = ..., started_at: _Optional[int] = ...) -> None: ...

class StartUploadRequest(_message.Message):
    __slots__ = ("repository", "owner")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    repository: str
    owner: str
    def __init__(self, repository: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class StartUploadResponse(_message.Message):
    __slots__ = ("status", "min_chunk_size")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MIN_CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    status: UploadStatus
    min_chunk_size: int
    def __init__(self, status: _Optional[_Union[UploadStatus, _Mapping]] = ..., min_chunk_size: _Optional[int] = ...) -> None: ...

class AppendUploadRequest(_message.Message):
    __slots__ = ("upload_id", "repository", "expected_offset", "data")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    repository: str
    expected_offset: int
    data: bytes
    def __init__(self, upload_id: _Optional[str] = ..., repository: _Optional[str] = ..., expected_offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class AppendUploadResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: UploadStatus
    def __init__(self, status: _Optional[_Union[UploadStatus, _Mapping]] = ...) -> None: ...

class GetUploadStatusRequest(_message.Message):
    __slots__ = ("upload_id", "repository")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    repository: str
    def __init__(self, upload_id: _Optional[str] = ..., repository: _Optional[str] = ...) -> None: ...

class GetUploadStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: UploadStatus
    def __init__(self, status: _Optional[_Union[UploadStatus, _Mapping]] = ...) -> None: ...

class CommitUploadRequest(_message.Message):
    __slots__ = ("upload_id", "repository", "digest", "expected_size", "final_data", "final_offset")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SIZE_FIELD_NUMBER: _ClassVar[int]
    FINAL_DATA_FIELD_NUMBER: _ClassVar[int]
    FINAL_OFFSET_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    repository: str
    digest: str
    expected_size: int
    final_data: bytes
    final_offset: int
    def __init__(self, upload_id: _Optional[str] = ..., repository: _Optional[str] = ..., digest: _Optional[str] = ..., expected_size: _Optional[int] = ..., final_data: _Optional[bytes] = ..., final_offset: _Optional[int] = ...) -> None: ...

class CommitUploadResponse(_message.Message):
    __slots__ = ("digest", "size", "stored_now")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    STORED_NOW_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    stored_now: bool
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., stored_now: _Optional[bool] = ...) -> None: ...

class CancelUploadRequest(_message.Message):
    __slots__ = ("upload_id", "repository")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    repository: str
    def __init__(self, upload_id: _Optional[str] = ..., repository: _Optional[str] = ...) -> None: ...

class CancelUploadResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PurgeUploadsRequest(_message.Message):
    __slots__ = ("older_than_seconds",)
    OLDER_THAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    older_than_seconds: int
    def __init__(self, older_than_seconds: _Optional[int] = ...) -> None: ...

class PurgeUploadsResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...
