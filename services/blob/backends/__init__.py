"""Byte stores behind the blob plane: the `BlobBackend` contract (base.py), the wrapper every
backend runs in (instrumented.py), and the backends: filesystem, S3, memory."""

from services.blob.backends.base import (
    BackendAccessDenied,
    BackendError,
    BackendLimitExceeded,
    BackendUnavailable,
    BlobBackend,
    BlobWriter,
    InvalidKey,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    Part,
    WriterBusy,
)

__all__ = [
    "BackendAccessDenied",
    "BackendError",
    "BackendLimitExceeded",
    "BackendUnavailable",
    "BlobBackend",
    "BlobWriter",
    "InvalidKey",
    "InvalidRange",
    "ObjectInfo",
    "ObjectNotFound",
    "Part",
    "WriterBusy",
]
