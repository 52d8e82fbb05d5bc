"""Crashing a whole process tree the way a power cut does: every process stops at the same
moment, none of them runs another instruction, and nothing is shut down gracefully.

`lading serve`'s planes run in process groups of their own and get SIGTERM (PR_SET_PDEATHSIG)
when the supervisor dies, which is a graceful shutdown, not a crash. So the whole tree is first
frozen (SIGSTOP, repeated until no new process appears), and only then killed (SIGKILL): a frozen
process cannot react to its parent's death.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

GONE_TIMEOUT_SECONDS = 15.0


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process (zombies are already dead: left out)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            found[int(entry.name)] = int(fields[1])
    return found


def tree_of(root: int) -> set[int]:
    """`root` and every live descendant of it."""
    parents = _parents()
    tree = {root} if root in parents else set()
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def freeze_and_kill(root: int) -> int:
    """SIGSTOPs `root` and all its descendants, then SIGKILLs them; returns how many there were.
    Waits until none of them is alive (a zombie holds no file open)."""
    frozen: set[int] = set()
    while True:
        fresh = tree_of(root) - frozen
        if not fresh:
            break
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        frozen |= fresh
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + GONE_TIMEOUT_SECONDS
    while (alive := frozen & set(_parents())) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive:
        raise RuntimeError(f"processes {sorted(alive)} survived SIGKILL")
    return len(frozen)
