"""Fetches under way in this blob plane, as the direct-read server sees them.

A cold fetch of the pull-through cache (services/blob/fetch.py) stores the blob through an
ordinary upload session, whose bytes grow in one file (the filesystem backend's writer). When the
fetch is served from the direct-read server (services/blob/direct_reads.py), the client's GET of
the blob's signed URL arrives while that file grows: the server finds the fetch here by digest,
sends the file's bytes as they land (sendfile(2) from the page cache; nothing passes through
gRPC or the gateway), holds back the last `hold` bytes until the fetch reports the blob verified
and committed, and cuts the connection if it fails. A reader that comes after the commit finds
the blob's own file instead.

On a backend without local files (S3), the file is the fetch's spool file
(services/blob/fetch_spool.py), unlinked from the start: a reader gets its own descriptor of it
when it finds the fetch (`reopen`, on the event loop, while the fetch still holds the file), so
the file lives exactly as long as the fetch or its last reader. The end is released once the
fetch's own hash of the bytes matches the digest (`verified`), S3's commit following; a reader
that comes after the fetch is sent to storage's presigned URL.

Everything here runs on the event loop, except `FetchesInProgress.get` (a dict lookup, also
called from the direct-read server's worker threads).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import BinaryIO

# Bytes of a fetched blob a reader receives only once it is verified and committed: any positive
# amount keeps a wrong body from looking complete (its Content-Length is never reached); a small
# one keeps the wait after the commit short.
HOLD_BYTES = 64 * 1024


class Outcome(Enum):
    RUNNING = "running"
    COMMITTED = "committed"
    FAILED = "failed"


class FetchProgress:
    """One fetch: its blob's size (known: only fetches with a size are served this way), where its
    bytes grow (`path`, the upload session's file, which may not exist before the first bytes; or
    `reopen`, which gives a reader its own handle on the fetch's spool file), how it ended, and
    whether readers may have the held-back end (`released`: once committed, or verified)."""

    def __init__(self, digest: str, size: int, path: Path | None = None,
                 reopen: Callable[[], BinaryIO | None] | None = None) -> None:
        self.digest = digest
        self.size = size
        self.path = path
        self._reopen = reopen
        self.hold = min(size, HOLD_BYTES)
        self.outcome = Outcome.RUNNING
        # Sticky: bytes verified stay so even when storing them fails afterwards.
        self.released = False
        self._changed = asyncio.Event()

    def reopen(self) -> BinaryIO | None:
        """A handle of its own on the fetch's file for one reader (the caller closes it), or None
        when the fetch's file is found by `path` instead (or is gone). On the event loop only."""
        return self._reopen() if self._reopen is not None else None

    def verified(self) -> None:
        """Every byte is in the file and hashes to the digest: readers may send the end now,
        before the blob is stored."""
        self.released = True
        self.advanced()

    def changed(self) -> asyncio.Event:
        """An event set at the next change (more bytes, or the end): take it BEFORE reading the
        state, then wait for it."""
        return self._changed

    def advanced(self) -> None:
        """More bytes were handed to the writer (readers look at the file again)."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def end(self, outcome: Outcome) -> None:
        self.outcome = outcome
        if outcome is Outcome.COMMITTED:
            self.released = True
        self.advanced()


class FetchesInProgress:
    """The fetches this process runs, by digest (at most one per digest: the metadata plane's
    lease sees to it; a second one would only replace the first here)."""

    def __init__(self) -> None:
        self._by_digest: dict[str, FetchProgress] = {}

    def get(self, digest: str) -> FetchProgress | None:
        return self._by_digest.get(digest)

    @contextlib.contextmanager
    def running(self, digest: str, size: int, path: Path | None = None,
                reopen: Callable[[], BinaryIO | None] | None = None) -> Iterator[FetchProgress]:
        """Registers a fetch for its duration (see FetchProgress for `path` and `reopen`); it ends
        FAILED unless the caller ended it."""
        progress = FetchProgress(digest, size, path, reopen)
        self._by_digest[digest] = progress
        try:
            yield progress
        finally:
            if progress.outcome is Outcome.RUNNING:
                progress.end(Outcome.FAILED)
            if self._by_digest.get(digest) is progress:
                del self._by_digest[digest]
