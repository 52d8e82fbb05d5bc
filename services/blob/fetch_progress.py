"""Fetches under way in this blob plane, as the direct-read server sees them.

A cold fetch of the pull-through cache (services/blob/fetch.py) stores the blob through an
ordinary upload session, whose bytes grow in one file (the filesystem backend's writer). When the
fetch is served from the direct-read server (services/blob/direct_reads.py), the client's GET of
the blob's signed URL arrives while that file grows: the server finds the fetch here by digest,
sends the file's bytes as they land (sendfile(2) from the page cache; nothing passes through
gRPC or the gateway), holds back the last `hold` bytes until the fetch reports the blob verified
and committed, and cuts the connection if it fails. A reader that comes after the commit finds
the blob's own file instead.

Everything here runs on the event loop, except `FetchesInProgress.get` (a dict lookup, also
called from the direct-read server's worker threads).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

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
    bytes grow (`path`, the upload session's file; it may not exist before the first bytes), and
    how it ended."""

    def __init__(self, digest: str, size: int, path: Path) -> None:
        self.digest = digest
        self.size = size
        self.path = path
        self.hold = min(size, HOLD_BYTES)
        self.outcome = Outcome.RUNNING
        self._changed = asyncio.Event()

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
        self.advanced()


class FetchesInProgress:
    """The fetches this process runs, by digest (at most one per digest: the metadata plane's
    lease sees to it; a second one would only replace the first here)."""

    def __init__(self) -> None:
        self._by_digest: dict[str, FetchProgress] = {}

    def get(self, digest: str) -> FetchProgress | None:
        return self._by_digest.get(digest)

    @contextlib.contextmanager
    def running(self, digest: str, size: int, path: Path) -> Iterator[FetchProgress]:
        """Registers a fetch for its duration; it ends FAILED unless the caller ended it."""
        progress = FetchProgress(digest, size, path)
        self._by_digest[digest] = progress
        try:
            yield progress
        finally:
            if progress.outcome is Outcome.RUNNING:
                progress.end(Outcome.FAILED)
            if self._by_digest.get(digest) is progress:
                del self._by_digest[digest]
