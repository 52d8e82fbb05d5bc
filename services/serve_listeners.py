"""The addresses `lading serve` listens on, claimed or checked before any plane starts.

The gateway's port is bound here, by the supervisor, and the listening sockets are handed to the
gateway child (`gateway.listen_fds`): a port another process holds stops `lading serve` at once,
naming the port and the setting that moves it, and the start-up probe can only be answered by our
own child (nothing else can accept on a socket we own). The planes' other listen addresses (gRPC
over TCP, the direct-read server on a fixed port, the unix sockets in the data folder) are checked
the same way and released; the child binds them a moment later (if something takes one in between,
that child dies and the supervisor stops with its status).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from dataclasses import dataclass

from services.common.paths import unix_socket_path

# uvicorn's default listen backlog.
_BACKLOG = 2048


class ListenUnavailable(Exception):
    """An address `lading serve` must listen on cannot be bound; the message names it and how to move it."""


@dataclass(frozen=True)
class Listen:
    """One listen address and, for the message, what it is and how a user changes it."""

    address: str
    what: str
    change: str


def bind_gateway(host: str, port: int, change: str) -> list[socket.socket]:
    """Binds and listens on host:port (every address `host` resolves to, as uvicorn would), with
    sockets a child may inherit. Raises ListenUnavailable, naming the port and `change`."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ListenUnavailable(f"cannot listen on {host}:{port}: the host does not resolve ({error}); "
                                f"{change}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            # As asyncio does: a previous run's connections in TIME_WAIT do not block a restart
            # (on Linux this never lets two processes listen on one port).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(_BACKLOG)
            sock.set_inheritable(True)
    except OSError as error:
        for sock in sockets:
            sock.close()
        raise ListenUnavailable(_refusal(f"{host}:{port}", "the registry port", error, change)) from None
    return sockets


def check_free(listen: Listen) -> None:
    """Raises ListenUnavailable when `listen.address` (a gRPC listen address or host:port) is taken.
    A port 0 (any free port) always passes."""
    path = unix_socket_path(listen.address)
    if path is not None:
        _check_unix(path, listen)
        return
    try:
        host, port = _split(listen.address)
    except ValueError:
        raise ListenUnavailable(f"cannot listen on {listen.address} ({listen.what}): not host:port or unix:PATH; "
                                f"{listen.change}") from None
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ListenUnavailable(f"cannot listen on {listen.address} ({listen.what}): the host does not resolve "
                                f"({error}); {listen.change}") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                sock.listen(1)
            except OSError as error:
                raise ListenUnavailable(_refusal(listen.address, listen.what, error, listen.change)) from None


def _check_unix(path: object, listen: Listen) -> None:
    """A socket file something still accepts on belongs to a running process (the plane would
    remove it and take its place); a stale file is fine, the plane replaces it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return
    raise ListenUnavailable(
        f"cannot listen on {listen.address} ({listen.what}): another process is serving on that socket "
        f"(another `lading serve` using the same data folder?); stop it first, or {listen.change}")


def _split(address: str) -> tuple[str, int]:
    """(host, port) of `host:port`, `[v6]:port` or gRPC's `ipv4:`/`ipv6:` forms."""
    for prefix in ("ipv4:", "ipv6:"):
        if address.startswith(prefix):
            address = address[len(prefix):]
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _refusal(address: str, what: str, error: OSError, change: str) -> str:
    if error.errno == errno.EADDRINUSE:
        why = "the address is already in use (another process holds the port)"
    elif error.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
    elif error.errno == errno.EADDRNOTAVAIL:
        why = "no interface of this machine has that address"
    else:
        why = str(error)
    return f"cannot listen on {address} ({what}): {why}; {change}"


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
