"""Helpers for gRPC listen/target addresses that point at local unix sockets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from services.common.private_files import FOLDER_MODE as PRIVATE_FOLDER_MODE
from services.common.private_files import make_private_folder


class UnsafeFolder(RuntimeError):
    """A folder that must be private is not (the message says why and what to do)."""


def unix_socket_path(address: str) -> Path | None:
    """The filesystem path of a `unix:` address, or None for a TCP address."""
    if address.startswith("unix://"):
        return Path(address[len("unix://") :])
    if address.startswith("unix:"):
        return Path(address[len("unix:") :])
    return None


def prepare_listen_address(address: str) -> None:
    """Creates the socket's folder (0700, whatever the umask) when it is missing, and removes a
    stale socket file left by a killed process. An existing folder is left as it is: it may be a
    shared one such as /tmp (the socket itself is bound 0600, services/common/grpc_server.py)."""
    path = unix_socket_path(address)
    if path is None:
        return
    if not path.parent.exists():
        make_private_folder(path.parent, tighten=False)
    if path.exists():
        path.unlink()


def ensure_private_folder(path: Path) -> None:
    """Makes `path` a folder only its owner may enter (what `lading serve` keeps its sockets in):
    created 0700 whatever the umask; an existing one of ours with wider permissions is narrowed
    to 0700. Raises UnsafeFolder when it is not a folder, or belongs to another user (who could
    put their own socket in our place)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        make_private_folder(path, tighten=False)
        return
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFolder(f"{path} is not a folder; remove it, or pick another --data-dir")
    if info.st_uid != os.geteuid():
        raise UnsafeFolder(
            f"{path} belongs to user id {info.st_uid}, not to this user ({os.geteuid()}): another user could "
            "replace the planes' sockets there; remove it, or pick another --data-dir"
        )
    if stat.S_IMODE(info.st_mode) != PRIVATE_FOLDER_MODE:
        os.chmod(path, PRIVATE_FOLDER_MODE)
