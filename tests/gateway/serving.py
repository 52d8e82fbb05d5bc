"""The gateway's own HTTP server (uvicorn with the options and protocol `lading gateway` uses), in
the test's event loop, on a free 127.0.0.1 port. The planes' targets point at nothing: requests
that need a plane answer 503, which the tests here do not send."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.connections import ConnectionLimits, GatewayServerConfig
from gateway.main import uvicorn_options
from services.common.settings import Settings


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # leave pytest's signal handling alone
        yield


def settings_for(tmp_path: Path, *, gateway: dict[str, object] | None = None,
                 observability: dict[str, object] | None = None) -> Settings:
    return Settings(
        gateway={"metadata_target": f"unix:{tmp_path}/none.sock", "blob_target": f"unix:{tmp_path}/none.sock",
                 **(gateway or {})},
        observability=observability or {},
    )


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[int]:
    """Runs the gateway as `lading gateway` would (one worker); yields its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    options = uvicorn_options(settings)
    for name in ("host", "port", "loop"):
        options.pop(name)
    config = GatewayServerConfig(
        create_app(settings), limits=ConnectionLimits.from_settings(settings.gateway), **options
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()
