"""A stand-in for a plane in the supervisor's tests: run as a script for `python -m <plane>` (the
blob plane and the gateway are children of `lading serve`), or `main(name)` awaited in-process
(the metadata plane runs inside it; `in_process` wraps it as the supervisor's runner).
metadata/blob serve grpc.health SERVING on their LADING_*__LISTEN socket; the gateway waits at its
start gate (LADING_GATEWAY__START_GATE_FD: one byte opens it, end of file means "do not start"),
then answers `GET /v2/` on the sockets in LADING_GATEWAY__LISTEN_FDS (what `lading serve` hands
its gateway), else on LADING_GATEWAY__HOST/PORT. Each logs "start NAME"/"stop NAME" to
$FAKE_PLANE_LOG (the gateway "start gateway" once past its gate); with FAKE_PLANE_DIE=NAME that
plane exits with status 3 soon after starting, with FAKE_PLANE_FAIL=NAME before it serves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

NAMES = {"services.metadata": "metadata", "services.blob": "blob", "gateway": "gateway"}


def log(line: str) -> None:
    with open(os.environ["FAKE_PLANE_LOG"], "a") as out:
        out.write(line + "\n")


async def serve_http(host: str, port: int) -> asyncio.AbstractServer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    fds = json.loads(os.environ.get("LADING_GATEWAY__LISTEN_FDS") or "[]")
    if fds:
        return await asyncio.start_server(answer, sock=socket.socket(fileno=fds[0]))
    return await asyncio.start_server(answer, host, port)


async def main(name: str, env: dict[str, str] | None = None, stop: asyncio.Event | None = None,
               serving: asyncio.Event | None = None) -> int:
    """One fake plane until SIGTERM/SIGINT (as a process) or `stop` (in-process, with `env` for
    its settings)."""
    env = dict(os.environ if env is None else env)
    if env.get("FAKE_PLANE_FAIL") == name:
        log(f"fail {name}")
        return 3
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
    if name == "gateway":
        gate = env.get("LADING_GATEWAY__START_GATE_FD")
        if gate is not None:
            with os.fdopen(int(gate), "rb", buffering=0) as pipe:
                opened = await asyncio.to_thread(pipe.read, 1)
            if not opened:
                log("gate closed gateway")
                return 0
        server = await serve_http(env["LADING_GATEWAY__HOST"], int(env["LADING_GATEWAY__PORT"]))
    else:
        grpc_server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, grpc_server)
        grpc_server.add_insecure_port(env[f"LADING_{name.upper()}__LISTEN"])
        await grpc_server.start()
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log(f"start {name}")
    if serving is not None:
        serving.set()
    if env.get("FAKE_PLANE_DIE") == name:
        await asyncio.sleep(0.3)
        log(f"die {name}")
        return 3
    await stop.wait()
    log(f"stop {name}")
    if name == "gateway":
        server.close()
    else:
        await grpc_server.stop(None)
    return 0


def in_process(name: str, env: dict[str, str]):  # type: ignore[no-untyped-def]
    """A supervisor runner (`Supervisor(metadata=...)`) for the fake plane `name`."""
    async def run(control) -> int:  # type: ignore[no-untyped-def]
        return await main(name, env, control.stop, control.serving)

    return run


if __name__ == "__main__":
    assert sys.argv[1] == "-m"
    sys.exit(asyncio.run(main(NAMES[sys.argv[2]])))
