"""Where the operator commands (`lading user|robot|grant|gc|repo|tag|manifest|blob where|check|
maintenance|events`) find the planes, and what they say when one cannot be reached.

Each plane's target, first match wins:
  1. `--metadata TARGET` / `--blob TARGET` (before or after the subcommand);
  2. `--data-dir DIR`: the targets `lading serve` recorded in `DIR/run/serve.json` while it runs
     (services/common/serve_record.py), else its default sockets `DIR/run/metadata.sock`, `blob.sock`;
  3. the setting: `gateway.metadata_target` (LADING_GATEWAY__METADATA_TARGET); for the blob plane
     `gc.blob_target` (LADING_GC__BLOB_TARGET), then `gateway.blob_target`; set in the environment
     or in LADING_CONFIG_FILE (their built-in defaults do not count);
  4. the data folder of the settings (`data_dir`, LADING_DATA_DIR; default `./data`, i.e. under the
     current folder): its record, else its default sockets, as in 2.

Before a command calls anything, every plane it needs must accept a connection; one that does not
is an error naming the target, where it came from and how to change it (exit UNREACHABLE_EXIT):
never "missing" data, never success.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.common.paths import unix_socket_path
from services.common.serve_record import read_record

if TYPE_CHECKING:  # kept out of `lading --help`'s imports
    import grpc

    from services.common.settings import Settings

# Exit status of a command that cannot reach a plane it needs (the same as for unusable TLS settings:
# the command cannot run as configured).
UNREACHABLE_EXIT = 2
# How long a plane may take to accept the first connection before it counts as unreachable.
CONNECT_WITHIN_SECONDS = 10.0

_FLAG = {"metadata": "--metadata", "blob": "--blob"}
_SETTINGS = {"metadata": (("gateway.metadata_target", "LADING_GATEWAY__METADATA_TARGET"),),
             "blob": (("gc.blob_target", "LADING_GC__BLOB_TARGET"),
                      ("gateway.blob_target", "LADING_GATEWAY__BLOB_TARGET"))}
_SOCKET = {"metadata": "metadata.sock", "blob": "blob.sock"}
_HELP = {
    "data-dir": "data folder of the `lading serve` to talk to (default: LADING_DATA_DIR, else ./data)",
    "metadata": "gRPC target of the metadata plane (default: see --data-dir, LADING_GATEWAY__METADATA_TARGET)",
    "blob": "gRPC target of the blob plane (default: see --data-dir, LADING_GC__BLOB_TARGET)",
}


def add_target_flags(parser: argparse.ArgumentParser, planes: tuple[str, ...],
                     *, default: object = argparse.SUPPRESS) -> argparse.ArgumentParser:
    """Adds `--data-dir` and `--metadata`/`--blob` (those of `planes`) to `parser`. `lading` has
    them too, so they work before or after the subcommand: a subcommand's flags default to
    SUPPRESS, so an absent one leaves the value given before the subcommand in place."""
    parser.add_argument("--data-dir", default=default, help=_HELP["data-dir"])
    for plane in planes:
        parser.add_argument(_FLAG[plane], default=default, help=_HELP[plane])
    return parser


@dataclass(frozen=True)
class PlaneTarget:
    """A plane's gRPC target and, for messages, where it came from."""

    plane: str  # "metadata" or "blob"
    address: str
    origin: str

    def how_to_change(self) -> str:
        setting = _SETTINGS[self.plane][0][1]
        return (f"point at the running registry with --data-dir DIR (the folder `lading serve` uses), "
                f"{_FLAG[self.plane]} TARGET or {setting}, or start `lading serve`")

    def unreachable(self, why: str) -> str:
        return (f"cannot reach the {self.plane} plane at {self.address}: {why}. The target is {self.origin}. "
                f"Nothing was checked or changed. To fix it, {self.how_to_change()}.")

    def failed(self, message: str) -> str:
        return f"the {self.plane} plane at {self.address} ({self.origin}) failed: {message}"


class PlaneFailed(Exception):
    """A plane stopped answering in the middle of a command (not a fact about the data)."""

    def __init__(self, plane: str, message: str) -> None:
        super().__init__(message)
        self.plane = plane
        self.message = message


def _data_dir(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> tuple[Path, str]:
    """The data folder and, in words, where it came from."""
    from services.common.settings import is_user_set

    flag = getattr(args, "data_dir", None)
    if flag:
        return Path(flag).resolve(), "from --data-dir"
    if is_user_set(settings, "data_dir", environ):
        return Path(settings.data_dir).resolve(), "from the setting data_dir (LADING_DATA_DIR or LADING_CONFIG_FILE)"
    return Path(settings.data_dir).resolve(), (f"./{settings.data_dir} in the current folder: neither --data-dir "
                                               "nor LADING_DATA_DIR is set")


def _under(plane: str, data_dir: Path, why: str) -> PlaneTarget:
    record = read_record(data_dir)
    if record is not None:
        address = record.metadata_target if plane == "metadata" else record.blob_target
        return PlaneTarget(plane, address, f"what `lading serve` (pid {record.pid}) recorded in {record.path} "
                                           f"(data folder {why})")
    path = data_dir / "run" / _SOCKET[plane]
    return PlaneTarget(plane, f"unix:{path}", f"the default socket under the data folder {data_dir} ({why}), "
                                              "where no `lading serve` has recorded itself")


def resolve(args: argparse.Namespace, settings: Settings, planes: tuple[str, ...],
            environ: Mapping[str, str] | None = None) -> dict[str, PlaneTarget]:
    """The target of each plane in `planes`, in the order of the module docstring."""
    from services.common.settings import is_user_set

    environ = os.environ if environ is None else environ
    chosen: dict[str, PlaneTarget] = {}
    for plane in planes:
        flag = getattr(args, plane, None)
        if flag:
            chosen[plane] = PlaneTarget(plane, flag, f"the value of {_FLAG[plane]}")
            continue
        if getattr(args, "data_dir", None):
            data_dir, why = _data_dir(args, settings, environ)
            chosen[plane] = _under(plane, data_dir, why)
            continue
        for dotted, env_name in _SETTINGS[plane]:
            if is_user_set(settings, dotted, environ):
                node: object = settings
                for part in dotted.split("."):
                    node = getattr(node, part)
                if node:
                    chosen[plane] = PlaneTarget(plane, str(node), f"the setting {dotted} ({env_name} or "
                                                                  "LADING_CONFIG_FILE)")
                    break
        else:
            data_dir, why = _data_dir(args, settings, environ)
            chosen[plane] = _under(plane, data_dir, why)
    return chosen


async def check_reachable(channel: grpc.aio.Channel, target: PlaneTarget,
                          within_seconds: float = CONNECT_WITHIN_SECONDS) -> str | None:
    """None once `channel` is connected; otherwise the message saying why the plane cannot be
    reached. A first failed connection attempt answers at once (gRPC's state TRANSIENT_FAILURE);
    a target that neither accepts nor refuses is given `within_seconds`."""
    import asyncio

    import grpc

    ready = grpc.ChannelConnectivity.READY
    failed = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)
    try:
        async with asyncio.timeout(within_seconds):
            state = channel.get_state(try_to_connect=True)
            while state != ready:
                if state in failed:
                    return target.unreachable(_why_not(target.address))
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=True)
    except TimeoutError:
        return target.unreachable(f"no connection within {within_seconds:.0f}s")
    return None


def _why_not(address: str) -> str:
    """Words for a failed connection; for a unix socket, whether the file is even there."""
    path = unix_socket_path(address)
    if path is None:
        return ("the connection failed: nothing accepts connections there, or the plane's TLS does not match this "
                "command's (LADING_GATEWAY__GRPC__TLS__*)")
    if not path.exists():
        return "no such socket file"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError as error:
            return f"nothing listens on that socket ({error.strerror or error})"
    return "the connection failed: the plane's TLS may not match this command's (LADING_GATEWAY__GRPC__TLS__*)"
