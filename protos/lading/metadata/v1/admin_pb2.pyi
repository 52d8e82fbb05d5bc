from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GcPlanRequest(_message.Message):
    __slots__ = ("delete_untagged",)
    DELETE_UNTAGGED_FIELD_NUMBER: _ClassVar[int]
    delete_untagged: bool
    def __init__(self, delete_untagged: _Optional[bool] = ...) -> None: ...

class GcPlanResponse(_message.Message):
    __slots__ = ("manifests", "manifest_bytes", "links", "blobs", "blob_bytes", "deleting")
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    BLOB_BYTES_FIELD_NUMBER: _ClassVar[int]
    DELETING_FIELD_NUMBER: _ClassVar[int]
    manifests: int
    manifest_bytes: int
    links: int
    blobs: int
    blob_bytes: int
    deleting: int
    def __init__(self, manifests: _Optional[int] = ..., manifest_bytes: _Optional[int] = ..., links: _Optional[int] = ..., blobs: _Optional[int] = ..., blob_bytes: _Optional[int] = ..., deleting: _Optional[int] = ...) -> None: ...

class GcSweepMetadataRequest(_message.Message):
    __slots__ = ("delete_untagged",)
    DELETE_UNTAGGED_FIELD_NUMBER: _ClassVar[int]
    delete_untagged: bool
    def __init__(self, delete_untagged: _Optional[bool] = ...) -> None: ...

class GcSweepMetadataResponse(_message.Message):
    __slots__ = ("manifests_deleted", "links_removed")
    MANIFESTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    LINKS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    manifests_deleted: int
    links_removed: int
    def __init__(self, manifests_deleted: _Optional[int] = ..., links_removed: _Optional[int] = ...) -> None: ...

class GcMarkBlobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BlobInfo(_message.Message):
    __slots__ = ("digest", "size", "state")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    state: str
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., state: _Optional[str] = ...) -> None: ...

class GcMarkBlobsResponse(_message.Message):
    __slots__ = ("blobs",)
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    blobs: _containers.RepeatedCompositeFieldContainer[BlobInfo]
    def __init__(self, blobs: _Optional[_Iterable[_Union[BlobInfo, _Mapping]]] = ...) -> None: ...

class GcForgetBlobRequest(_message.Message):
    __slots__ = ("digest",)
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    digest: str
    def __init__(self, digest: _Optional[str] = ...) -> None: ...

class GcForgetBlobResponse(_message.Message):
    __slots__ = ("forgotten",)
    FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    forgotten: bool
    def __init__(self, forgotten: _Optional[bool] = ...) -> None: ...

class OrphanCandidate(_message.Message):
    __slots__ = ("digest", "size", "modified_at")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    modified_at: float
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., modified_at: _Optional[float] = ...) -> None: ...

class GcClaimOrphansRequest(_message.Message):
    __slots__ = ("blobs", "dry_run")
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    blobs: _containers.RepeatedCompositeFieldContainer[OrphanCandidate]
    dry_run: bool
    def __init__(self, blobs: _Optional[_Iterable[_Union[OrphanCandidate, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class GcClaimOrphansResponse(_message.Message):
    __slots__ = ("orphans",)
    ORPHANS_FIELD_NUMBER: _ClassVar[int]
    orphans: _containers.RepeatedCompositeFieldContainer[BlobInfo]
    def __init__(self, orphans: _Optional[_Iterable[_Union[BlobInfo, _Mapping]]] = ...) -> None: ...

class GcRun(_message.Message):
    __slots__ = ("started_at", "finished_at", "dry_run", "manifests_deleted", "links_removed", "blobs_deleted", "bytes_freed", "errors")
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    LINKS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    BLOBS_DELETED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    started_at: int
    finished_at: int
    dry_run: bool
    manifests_deleted: int
    links_removed: int
    blobs_deleted: int
    bytes_freed: int
    errors: int
    def __init__(self, started_at: _Optional[int] = ..., finished_at: _Optional[int] = ..., dry_run: _Optional[bool] = ..., manifests_deleted: _Optional[int] = ..., links_removed: _Optional[int] = ..., blobs_deleted: _Optional[int] = ..., bytes_freed: _Optional[int] = ..., errors: _Optional[int] = ...) -> None: ...

class GcRecordRunResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GcStatsRequest(_message.Message):
    __slots__ = ("last_runs",)
    LAST_RUNS_FIELD_NUMBER: _ClassVar[int]
    last_runs: int
    def __init__(self, last_runs: _Optional[int] = ...) -> None: ...

class GcStatsResponse(_message.Message):
    __slots__ = ("active_blobs", "active_bytes", "pending_blobs", "deleting_blobs", "held", "manifest_candidates", "link_candidates", "blob_candidates", "runs")
    ACTIVE_BLOBS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PENDING_BLOBS_FIELD_NUMBER: _ClassVar[int]
    DELETING_BLOBS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    LINK_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    BLOB_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    active_blobs: int
    active_bytes: int
    pending_blobs: int
    deleting_blobs: int
    held: int
    manifest_candidates: int
    link_candidates: int
    blob_candidates: int
    runs: _containers.RepeatedCompositeFieldContainer[GcRun]
    def __init__(self, active_blobs: _Optional[int] = ..., active_bytes: _Optional[int] = ..., pending_blobs: _Optional[int] = ..., deleting_blobs: _Optional[int] = ..., held: _Optional[int] = ..., manifest_candidates: _Optional[int] = ..., link_candidates: _Optional[int] = ..., blob_candidates: _Optional[int] = ..., runs: _Optional[_Iterable[_Union[GcRun, _Mapping]]] = ...) -> None: ...

class AdminListRepositoriesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RepositorySummary(_message.Message):
    __slots__ = ("name", "tags", "manifests", "bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    tags: int
    manifests: int
    bytes: int
    def __init__(self, name: _Optional[str] = ..., tags: _Optional[int] = ..., manifests: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class AdminListRepositoriesResponse(_message.Message):
    __slots__ = ("repositories",)
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    repositories: _containers.RepeatedCompositeFieldContainer[RepositorySummary]
    def __init__(self, repositories: _Optional[_Iterable[_Union[RepositorySummary, _Mapping]]] = ...) -> None: ...

class AdminListTagsRequest(_message.Message):
    __slots__ = ("repository",)
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    repository: str
    def __init__(self, repository: _Optional[str] = ...) -> None: ...

class TagInfo(_message.Message):
    __slots__ = ("name", "digest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    digest: str
    def __init__(self, name: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class AdminListTagsResponse(_message.Message):
    __slots__ = ("tags",)
    TAGS_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedCompositeFieldContainer[TagInfo]
    def __init__(self, tags: _Optional[_Iterable[_Union[TagInfo, _Mapping]]] = ...) -> None: ...

class AdminListManifestsRequest(_message.Message):
    __slots__ = ("repository",)
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    repository: str
    def __init__(self, repository: _Optional[str] = ...) -> None: ...

class ManifestInfo(_message.Message):
    __slots__ = ("digest", "media_type", "size", "tags")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    digest: str
    media_type: str
    size: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, digest: _Optional[str] = ..., media_type: _Optional[str] = ..., size: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class AdminListManifestsResponse(_message.Message):
    __slots__ = ("manifests",)
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    manifests: _containers.RepeatedCompositeFieldContainer[ManifestInfo]
    def __init__(self, manifests: _Optional[_Iterable[_Union[ManifestInfo, _Mapping]]] = ...) -> None: ...

class DeleteRepositoryRequest(_message.Message):
    __slots__ = ("repository",)
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    repository: str
    def __init__(self, repository: _Optional[str] = ...) -> None: ...

class DeleteRepositoryResponse(_message.Message):
    __slots__ = ("manifests", "links")
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    manifests: int
    links: int
    def __init__(self, manifests: _Optional[int] = ..., links: _Optional[int] = ...) -> None: ...

class WhereBlobRequest(_message.Message):
    __slots__ = ("digest",)
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    digest: str
    def __init__(self, digest: _Optional[str] = ...) -> None: ...

class ManifestRef(_message.Message):
    __slots__ = ("repository", "digest")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class WhereBlobResponse(_message.Message):
    __slots__ = ("state", "size", "repositories", "manifests")
    STATE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    state: str
    size: int
    repositories: _containers.RepeatedScalarFieldContainer[str]
    manifests: _containers.RepeatedCompositeFieldContainer[ManifestRef]
    def __init__(self, state: _Optional[str] = ..., size: _Optional[int] = ..., repositories: _Optional[_Iterable[str]] = ..., manifests: _Optional[_Iterable[_Union[ManifestRef, _Mapping]]] = ...) -> None: ...

class ListBlobsRequest(_message.Message):
    __slots__ = ("last", "limit")
    LAST_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    last: str
    limit: int
    def __init__(self, last: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListBlobsResponse(_message.Message):
    __slots__ = ("blobs",)
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    blobs: _containers.RepeatedCompositeFieldContainer[BlobInfo]
    def __init__(self, blobs: _Optional[_Iterable[_Union[BlobInfo, _Mapping]]] = ...) -> None: ...

class SetMaintenanceRequest(_message.Message):
    __slots__ = ("on",)
    ON_FIELD_NUMBER: _ClassVar[int]
    on: bool
    def __init__(self, on: _Optional[bool] = ...) -> None: ...

class GetMaintenanceRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MaintenanceStatus(_message.Message):
    __slots__ = ("on",)
    ON_FIELD_NUMBER: _ClassVar[int]
    on: bool
    def __init__(self, on: _Optional[bool] = ...) -> None: ...
