"""Helpers for gRPC listen/target addresses that point at local unix sockets."""

from __future__ import annotations

from pathlib import Path


def unix_socket_path(address: str) -> Path | None:
    """The filesystem path of a `unix:` address, or None for a TCP address."""
    if address.startswith("unix://"):
        return Path(address[len("unix://") :])
    if address.startswith("unix:"):
        return Path(address[len("unix:") :])
    return None


def prepare_listen_address(address: str) -> None:
    """Creates the socket's folder and removes a stale socket file left by a killed process."""
    path = unix_socket_path(address)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
