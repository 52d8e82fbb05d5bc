"""Resumable SHA-256/SHA-512 whose state can be saved with an upload session.

`hashlib` objects cannot be serialised, but OpenSSL's SHA-256 and SHA-512 contexts are plain
structs, and libcrypto 3 still exports `SHA256_Init/Update/Final` (and the SHA-512 ones). Through
ctypes they hash at native speed, and the raw context bytes are the state a blob-service replica
stores after each chunk so that any other replica can continue the upload.

When libcrypto cannot be loaded, `ResumableHash.available()` is False and callers rebuild the hash
by re-reading the staged bytes (see the uploads module); that path is slower but equally correct.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
from functools import cache

# sizeof(SHA256_CTX) and sizeof(SHA512_CTX) in OpenSSL (stable since 1.0).
_CTX_SIZE = {"sha256": 112, "sha512": 216}
_PREFIX = {"sha256": "SHA256", "sha512": "SHA512"}
_DIGEST_SIZE = {"sha256": 32, "sha512": 64}


@cache
def _libcrypto() -> ctypes.CDLL | None:
    candidates = [ctypes.util.find_library("crypto"), "libcrypto.so.3", "libcrypto.so"]
    # hashlib's own _hashlib module is linked against libcrypto; reuse whatever it loaded.
    try:
        import _hashlib  # noqa: F401

        candidates.insert(0, _hashlib.__file__)
    except ImportError:
        pass
    for name in candidates:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            for prefix in _PREFIX.values():
                for suffix in ("_Init", "_Update", "_Final"):
                    getattr(lib, prefix + suffix)
        except (OSError, AttributeError):
            continue
        for prefix in _PREFIX.values():
            getattr(lib, prefix + "_Init").argtypes = [ctypes.c_void_p]
            getattr(lib, prefix + "_Update").argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
            getattr(lib, prefix + "_Final").argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        return lib
    return None


class ResumableHash:
    """An incremental hash whose state round-trips through `state()` / `from_state()`."""

    __slots__ = ("algorithm", "_ctx", "_lib")

    def __init__(self, algorithm: str, state: bytes | None = None) -> None:
        if algorithm not in _CTX_SIZE:
            raise ValueError(f"unsupported algorithm {algorithm}")
        lib = _libcrypto()
        if lib is None:
            raise RuntimeError("libcrypto is not available; resumable hashing needs it")
        self.algorithm = algorithm
        self._lib = lib
        self._ctx = ctypes.create_string_buffer(_CTX_SIZE[algorithm])
        if state is None:
            getattr(lib, _PREFIX[algorithm] + "_Init")(self._ctx)
        else:
            if len(state) != _CTX_SIZE[algorithm]:
                raise ValueError("hash state has the wrong size for its algorithm")
            ctypes.memmove(self._ctx, state, len(state))

    @staticmethod
    def available() -> bool:
        return _libcrypto() is not None

    @classmethod
    def from_state(cls, algorithm: str, state: bytes) -> ResumableHash:
        return cls(algorithm, state)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        view = memoryview(data)
        if isinstance(data, bytes):
            buf: object = data
        elif not view.readonly and view.contiguous:
            buf = (ctypes.c_char * view.nbytes).from_buffer(view)  # a bytearray: no copy
        else:
            buf = (ctypes.c_char * view.nbytes).from_buffer_copy(view)
        getattr(self._lib, _PREFIX[self.algorithm] + "_Update")(self._ctx, buf, view.nbytes)

    def state(self) -> bytes:
        return self._ctx.raw

    def hexdigest(self) -> str:
        """The digest of everything so far; the saved state is left untouched."""
        scratch = ctypes.create_string_buffer(self._ctx.raw, len(self._ctx))
        out = ctypes.create_string_buffer(_DIGEST_SIZE[self.algorithm])
        getattr(self._lib, _PREFIX[self.algorithm] + "_Final")(out, scratch)
        return out.raw.hex()


def new_hash(algorithm: str):  # type: ignore[no-untyped-def]
    """A plain hashlib hash, for places that need no saved state."""
    return hashlib.new(algorithm)
