"""Tuning of the C allocator for processes that stream blob bytes (gateway, blob plane).

glibc serves allocations above `M_MMAP_THRESHOLD` (128 KiB at start, raised dynamically up to
32 MiB) with a fresh `mmap` and returns them with `munmap` when freed. Streaming blobs allocates
and frees ~1 MiB buffers all the time (protobuf arenas, gRPC slices, read buffers): whenever the
dynamic threshold does not cover them, every MiB costs 256 page faults, measured here as ~1.4 ms
per MiB for a protobuf message around 1 MiB instead of ~0.1 ms, and as ~2× the pull throughput
end to end. A fixed threshold above the largest message keeps those buffers in the heap; a trim
threshold bounds how much freed heap a process keeps before giving it back (the RSS cost).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("lading.allocator")

MiB = 1024 * 1024
# mallopt parameter numbers (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Above the blob messages the defaults use (1 MiB plus framing); 4 MiB messages stay mmap-backed.
DEFAULT_MMAP_THRESHOLD = 2 * MiB
# Freed heap kept per arena before it is returned, and how many arenas the (I/O) threads share:
# together they bound the RSS the fixed threshold adds. Measured (`make bench` blob rows, peak
# RSS): blob 169 -> 143 MiB, gateway 175 -> 190 MiB; with a 32 MiB trim threshold and no arena
# cap it was 271 / 207 MiB, too close to the 300 MiB per-process bound.
DEFAULT_TRIM_THRESHOLD = 8 * MiB
DEFAULT_ARENA_MAX = 2


def tune_allocator(
    mmap_threshold: int = DEFAULT_MMAP_THRESHOLD,
    trim_threshold: int = DEFAULT_TRIM_THRESHOLD,
    arena_max: int = DEFAULT_ARENA_MAX,
) -> bool:
    """Sets glibc's mmap and trim thresholds and arena count for this process; True when applied.

    A no-op (False) on another C library, or when the operator set `MALLOC_MMAP_THRESHOLD_` /
    `MALLOC_TRIM_THRESHOLD_` / `MALLOC_ARENA_MAX` in the environment (theirs win). Safe to call at any time: it only
    changes how later allocations are served.
    """
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        # gnu_get_libc_version exists only in glibc: mallopt numbers differ elsewhere (musl has none).
        libc.gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = all(
        mallopt(parameter, value)
        for parameter, value in (
            (_M_MMAP_THRESHOLD, mmap_threshold),
            (_M_TRIM_THRESHOLD, trim_threshold),
            (_M_ARENA_MAX, arena_max),
        )
    )
    if not applied:
        log.warning("mallopt refused the blob streaming thresholds; large buffers stay mmap-backed")
    return applied
