"""A stand-in for `python -m <plane>` in the supervisor's tests (run as a script, not imported by
pytest): metadata/blob serve grpc.health SERVING on their LADING_*__LISTEN socket, the gateway
answers `GET /v2/` on the sockets in LADING_GATEWAY__LISTEN_FDS (what `lading serve` hands
its gateway), else on LADING_GATEWAY__HOST/PORT. Each logs "start NAME"/"stop NAME" to
$FAKE_PLANE_LOG; with FAKE_PLANE_DIE=NAME that plane exits with status 3 soon after starting."""

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


async def main(name: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if name == "gateway":
        server = await serve_http(os.environ["LADING_GATEWAY__HOST"], int(os.environ["LADING_GATEWAY__PORT"]))
    else:
        grpc_server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, grpc_server)
        grpc_server.add_insecure_port(os.environ[f"LADING_{name.upper()}__LISTEN"])
        await grpc_server.start()
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log(f"start {name}")
    if os.environ.get("FAKE_PLANE_DIE") == name:
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


if __name__ == "__main__":
    assert sys.argv[1] == "-m"
    sys.exit(asyncio.run(main(NAMES[sys.argv[2]])))
