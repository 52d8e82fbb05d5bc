"""Content digests (OCI image-spec grammar) and the hash algorithms Lading can verify."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass

from services.common.errors import ErrorKind, RegistryError

# algorithm-component(+separator)* ":" encoded, from the OCI image spec.
_DIGEST_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

# Registered algorithms and the exact form of their encoded part.
_ENCODED = {
    "sha256": re.compile(r"[a-f0-9]{64}"),
    "sha512": re.compile(r"[a-f0-9]{128}"),
}

SUPPORTED_ALGORITHMS = tuple(_ENCODED)


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    encoded: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parses and validates a digest; raises DIGEST_INVALID for anything else.

        Digests with a well-formed but unsupported algorithm are refused too: Lading cannot
        verify content it cannot hash.
        """
        if not isinstance(text, str) or not _DIGEST_GRAMMAR.fullmatch(text):
            raise RegistryError(
                ErrorKind.DIGEST_INVALID,
                f"invalid digest {text!r}: expected <algorithm>:<hex>, such as sha256:<64 hex digits>",
                {"digest": text},
            )
        algorithm, encoded = text.split(":", 1)
        pattern = _ENCODED.get(algorithm)
        if pattern is None:
            raise RegistryError(
                ErrorKind.DIGEST_INVALID,
                f"unsupported digest algorithm {algorithm!r}; use one of {', '.join(SUPPORTED_ALGORITHMS)}",
                {"digest": text},
            )
        if not pattern.fullmatch(encoded):
            raise RegistryError(
                ErrorKind.DIGEST_INVALID,
                f"invalid {algorithm} digest {text!r}: wrong length or non-lowercase-hex characters",
                {"digest": text},
            )
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())


def client_holds(held: Collection[str], digest: str) -> bool:
    """True when a client that says it holds `held` (the entity tags of its If-None-Match,
    unquoted: Lading's ETags are quoted digests; "*" for any) holds `digest`: its conditional GET
    is answered 304, which is no pull."""
    return bool(held) and (digest in held or "*" in held)


def looks_like_digest(reference: str) -> bool:
    """True when a manifest reference is meant as a digest (tags cannot contain ':')."""
    return ":" in reference
