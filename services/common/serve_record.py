"""Where a running `lading serve` can be reached, written down in its data folder.

`lading serve` writes `<data-dir>/run/serve.json` once its listeners are settled and removes it when
it stops; the operator commands (`lading user|gc|check|events ...`) read it to find the planes of
the `lading serve` that uses the same data folder, from whatever folder they run in. Fields:

    {"pid": 4242, "metadata_target": "unix:/abs/data/run/metadata.sock",
     "blob_target": "unix:/abs/data/run/blob.sock", "url": "http://127.0.0.1:5000"}

Targets are gRPC targets with `unix:` paths made absolute, so they work from any folder. A record
left by a killed `lading serve` names sockets nothing listens on any more; the commands then say
that the plane cannot be reached, naming this file.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from services.common.paths import unix_socket_path
from services.common.private_files import make_private_folder, write_private_file

RECORD_NAME = "serve.json"


@dataclass(frozen=True)
class ServeRecord:
    pid: int
    metadata_target: str
    blob_target: str
    url: str
    path: Path


def record_path(data_dir: Path) -> Path:
    return data_dir / "run" / RECORD_NAME


def absolute_target(target: str) -> str:
    """`target` with a relative `unix:` path made absolute (against the current folder)."""
    path = unix_socket_path(target)
    if path is None or path.is_absolute():
        return target
    return f"unix:{path.resolve()}"


def write_record(data_dir: Path, *, metadata_target: str, blob_target: str, url: str) -> Path:
    """Writes this process's record atomically (a reader never sees half of it)."""
    path = record_path(data_dir)
    make_private_folder(path.parent, tighten=False)  # new folders made durable too
    body = {"pid": os.getpid(), "metadata_target": absolute_target(metadata_target),
            "blob_target": absolute_target(blob_target), "url": url}
    # Readable by its owner only, like everything in the data folder, whatever the umask.
    write_private_file(path, (json.dumps(body) + "\n").encode(), replace=True)
    return path


def read_record(data_dir: Path) -> ServeRecord | None:
    """The record in `data_dir`, or None when there is none or it cannot be read."""
    path = record_path(data_dir)
    try:
        body = json.loads(path.read_text())
        return ServeRecord(pid=int(body["pid"]), metadata_target=str(body["metadata_target"]),
                           blob_target=str(body["blob_target"]), url=str(body.get("url", "")), path=path)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_record(data_dir: Path) -> None:
    """Removes the record if this process wrote it (another `lading serve` may have replaced it)."""
    record = read_record(data_dir)
    if record is not None and record.pid == os.getpid():
        with contextlib.suppress(OSError):
            record.path.unlink()
