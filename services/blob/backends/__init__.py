"""Byte stores behind the blob plane: the `BlobBackend` protocol and its implementations."""

from services.blob.backends.base import (
    BackendError,
    BlobBackend,
    InvalidKey,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    PartTooSmall,
)

__all__ = [
    "BackendError",
    "BlobBackend",
    "InvalidKey",
    "InvalidRange",
    "ObjectInfo",
    "ObjectNotFound",
    "PartTooSmall",
]
