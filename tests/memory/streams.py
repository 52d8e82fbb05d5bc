"""Big blobs without big memory: streamed pushes and pulls, and RSS sampling of processes.

Shared by tests/memory (the 300 MiB bound of issue 5) and bench/ (the "16 × 256 MiB" memory rows).

- `PatternBlob(seed, size)`: a blob that exists only as a recipe. Its bytes are made one 1 MiB
  chunk at a time (a fixed random block with the seed and chunk number written over its first 16
  bytes), so no client ever holds the blob, two seeds never give the same blob, and the digest is
  computed while the chunks are produced (`digest()` makes them once without sending anything).
- `push_streamed`: POST a session, then ONE PUT `?digest=` whose body is the generator (http.client
  sends each chunk with `sendall` as it is made); returns the digest hashed on the way out.
- `pull_hashed`: GET the blob (following an S3 redirect), `readinto` one reused 1 MiB buffer,
  hash as it arrives; returns (bytes, digest).
- `RssSampler`: a thread reading VmRSS of labelled pids from /proc every `interval` seconds;
  `reset_peaks` writes 5 to /proc/<pid>/clear_refs (resets VmHWM, the kernel's peak RSS) so a
  later `peaks()` covers only what came after.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import random
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MiB = 1024 * 1024
CHUNK = MiB

_BLOCK = random.Random(20251127).randbytes(CHUNK)


@dataclass(frozen=True)
class PatternBlob:
    """`size` deterministic bytes named by `seed` (see the module docstring)."""

    seed: int
    size: int

    def chunks(self, hasher: hashlib._Hash | None = None) -> Iterator[memoryview]:
        """The blob's bytes in ≤ 1 MiB pieces, each fed to `hasher` before it is yielded.

        One buffer is reused: a piece is valid only until the next one is asked for (http.client
        sends each piece before it asks for the next)."""
        buffer = bytearray(_BLOCK)
        view = memoryview(buffer)
        for index, start in enumerate(range(0, self.size, CHUNK)):
            buffer[:16] = struct.pack(">QQ", self.seed, index)
            piece = view[: min(CHUNK, self.size - start)]
            if hasher is not None:
                hasher.update(piece)
            yield piece

    def digest(self) -> str:
        hasher = hashlib.sha256()
        for _ in self.chunks(hasher):
            pass
        return "sha256:" + hasher.hexdigest()


def _connection(base_url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(base_url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)


def _read_all(response: http.client.HTTPResponse, what: str, expect: int) -> bytes:
    body = response.read()
    if response.status != expect:
        raise RuntimeError(f"{what}: HTTP {response.status} {body[:500]!r}")
    return body


def push_streamed(base_url: str, repository: str, blob: PatternBlob, *, digest: str | None = None,
                  verify: bool = True, timeout: float = 600.0) -> str:
    """Pushes `blob` as POST + one streamed PUT with its digest; returns that digest.

    The digest has to be on the PUT's URL before the body goes out, so unless the caller knows it
    (`digest`) the blob is generated twice: once to hash it (nothing sent, nothing kept), once into
    the socket. With `verify` the bytes sent are hashed too and must hash to the digest named."""
    digest = digest or blob.digest()
    conn = _connection(base_url, timeout)
    sent = hashlib.sha256() if verify else None
    try:
        conn.request("POST", f"/v2/{repository}/blobs/uploads/", body=b"", headers={"Content-Length": "0"})
        response = conn.getresponse()
        _read_all(response, f"POST upload to {repository}", 202)
        location = response.headers["Location"]
        parts = urlsplit(location)
        target = parts.path + "?" + "&".join(filter(None, [parts.query, f"digest={digest}"]))
        conn.request("PUT", target, body=blob.chunks(sent), headers={
            "Content-Length": str(blob.size), "Content-Type": "application/octet-stream",
        })
        response = conn.getresponse()
        _read_all(response, f"PUT {blob.size} bytes to {repository}", 201)
    finally:
        conn.close()
    if sent is not None and "sha256:" + sent.hexdigest() != digest:
        raise RuntimeError(f"blob {blob.seed}: the bytes sent do not hash to {digest}")
    return digest


def pull_hashed(base_url: str, repository: str, digest: str, *, verify: bool = True,
                timeout: float = 600.0) -> tuple[int, str | None]:
    """GETs a blob into one reused buffer, hashing it as it arrives when `verify`; returns
    (bytes received, their digest or None). A redirect (S3 backends answer 307 to a presigned
    URL) is followed once, on a connection to wherever it points."""
    target = f"{base_url}/v2/{repository}/blobs/{digest}"
    for _ in range(2):
        parts = urlsplit(target)
        conn = _connection(f"{parts.scheme}://{parts.netloc}", timeout)
        try:
            conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
            response = conn.getresponse()
            if response.status in (302, 307):
                response.read()
                target = response.headers["Location"]
                continue
            if response.status != 200:
                _read_all(response, f"GET {repository}@{digest}", 200)
            hasher = hashlib.sha256() if verify else None
            buffer = memoryview(bytearray(CHUNK))
            received = 0
            while n := response.readinto(buffer):
                if hasher is not None:
                    hasher.update(buffer[:n])
                received += n
            return received, None if hasher is None else "sha256:" + hasher.hexdigest()
        finally:
            conn.close()
    raise RuntimeError(f"GET {repository}@{digest}: redirected more than once")


# -- memory of other processes -------------------------------------------------------------------

def _status_kib(pid: int, field_name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib(pid: int) -> int | None:
    """VmRSS (resident set now) of `pid` in KiB; None when the process is gone."""
    return _status_kib(pid, "VmRSS")


def hwm_kib(pid: int) -> int | None:
    """VmHWM (peak resident set since start or the last reset) of `pid` in KiB."""
    return _status_kib(pid, "VmHWM")


def reset_peak(pid: int) -> bool:
    """Resets VmHWM to the current RSS (`echo 5 > /proc/<pid>/clear_refs`); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class RssSampler:
    """Samples VmRSS of {label: pid} every `interval` seconds in a thread, between start and stop.

    `max_rss_mib()` is the largest sample per label; `peaks_mib()` the kernel's VmHWM now (exact,
    and it also sees spikes shorter than `interval`); `timeline` keeps every sample
    (seconds since start, {label: MiB}) for a report when a bound is missed."""

    processes: dict[str, int]
    interval: float = 0.05
    timeline: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def reset_peaks(self) -> None:
        for pid in self.processes.values():
            reset_peak(pid)

    def start(self) -> RssSampler:
        started = time.monotonic()

        def loop() -> None:
            while not self._stop.is_set():
                sample = {label: (rss_kib(pid) or 0) / 1024 for label, pid in self.processes.items()}
                self.timeline.append((time.monotonic() - started, sample))
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def max_rss_mib(self) -> dict[str, float]:
        return {label: max((s[label] for _, s in self.timeline), default=0.0) for label in self.processes}

    def peaks_mib(self) -> dict[str, float]:
        return {label: (hwm_kib(pid) or 0) / 1024 for label, pid in self.processes.items()}

    def describe(self, every: float = 2.0) -> str:
        """The timeline thinned to one line per `every` seconds (for failure messages)."""
        lines, next_at = [], 0.0
        for at, sample in self.timeline:
            if at >= next_at:
                lines.append(f"{at:6.1f}s " + "  ".join(f"{k} {v:6.1f}" for k, v in sorted(sample.items())))
                next_at = at + every
        return "\n".join(lines)


def process_labels(pids: list[int]) -> dict[str, int]:
    """{"gateway"|"metadata"|"blob": pid} for planes started separately, from their command line,
    or forked by `lading serve`, from their process name (`lading-blob`, `lading-gateway`)."""
    labelled: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            command = name + " " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            for plane in ("gateway", "metadata", "blob"):
                if plane in command:
                    labelled[plane] = pid
                    break
    return labelled


def serve_processes(serve_pid: int) -> dict[str, int]:
    """Every process of a `lading serve` tree, labelled: "serve+metadata" (the supervisor, which
    runs the metadata plane) and its children by plane (see services/supervisor.py)."""
    return {"serve+metadata": serve_pid, **process_labels(_children(serve_pid))}


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.extend(int(child) for child in task.read_text().split())
    return found


BOUND_MIB = 300


def _rounded(peaks: dict[str, float]) -> dict[str, float]:
    return {label: round(peak, 1) for label, peak in sorted(peaks.items())}


def push_then_pull_within_bound(stack: Any, repository: str, blobs: list[PatternBlob], what: str,
                                record_property: Any) -> None:
    """The issue's memory workload against a running `lading serve` (`stack`): every blob pushed
    concurrently (one client each), then pulled back concurrently; checks sizes and digests and
    that no Lading process reached BOUND_MIB resident (VmHWM, reset between the two phases)."""
    processes = serve_processes(stack.process.pid)
    assert sorted(processes) == ["blob", "gateway", "serve+metadata"], processes
    with RssSampler(processes) as sampler, ThreadPoolExecutor(len(blobs)) as pool:
        sampler.reset_peaks()
        digests = list(pool.map(lambda blob: push_streamed(stack.base_url, repository, blob), blobs))
        push_peaks = sampler.peaks_mib()
        sampler.reset_peaks()
        pulled = list(pool.map(lambda digest: pull_hashed(stack.base_url, repository, digest), digests))
        pull_peaks = sampler.peaks_mib()
    assert len(set(digests)) == len(blobs)
    for blob, digest, (received, pulled_digest) in zip(blobs, digests, pulled, strict=True):
        assert received == blob.size, f"{digest}: pulled {received} of {blob.size} bytes"
        assert pulled_digest == digest, f"pulled bytes hash to {pulled_digest}, pushed {digest}"
    over_push = {label: peak for label, peak in _rounded(push_peaks).items() if peak >= BOUND_MIB}
    over_pull = {label: peak for label, peak in _rounded(pull_peaks).items() if peak >= BOUND_MIB}
    assert not over_push and not over_pull, (
        f"{what}: Lading processes reached {BOUND_MIB} MiB resident (VmHWM) during the pushes {over_push} / "
        f"the pulls {over_pull}; all peaks: pushes {_rounded(push_peaks)}, pulls {_rounded(pull_peaks)}. "
        "VmRSS samples (MiB):\n" + sampler.describe()
    )
    for label in sorted(processes):
        record_property(f"peak_rss_mib_{label}_push", round(push_peaks[label], 1))
        record_property(f"peak_rss_mib_{label}_pull", round(pull_peaks[label], 1))
    print(f"{what}: peak RSS (MiB) pushes {_rounded(push_peaks)} (sum {sum(push_peaks.values()):.1f}), "
          f"pulls {_rounded(pull_peaks)} (sum {sum(pull_peaks.values()):.1f})")
