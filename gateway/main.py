"""Composition root of the gateway process: settings → app → uvicorn (uvloop + httptools).

X-Forwarded-* handling is the app's own (gateway.middleware, driven by
`settings.gateway.trusted_proxies`), so uvicorn's proxy-header rewriting is switched off.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from starlette.applications import Starlette

from gateway.app import create_app
from services.common.logs import configure_logging
from services.common.settings import Settings, load_settings


def app_from_environment() -> Starlette:
    """App factory for uvicorn worker processes (`workers > 1`): settings from LADING_* again."""
    return create_app(load_settings())


def run(settings: Settings) -> None:
    """Serves the gateway until SIGINT/SIGTERM (uvicorn drains in-flight requests, then the
    lifespan closes the gRPC channels)."""
    config = settings.gateway
    configure_logging(config.log_level, "gateway")
    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "proxy_headers": False,
        "log_config": None,
        "log_level": config.log_level,
        # An access line per request costs a visible share of throughput; on at debug level.
        "access_log": config.log_level.lower() == "debug",
        "server_header": False,
    }
    if config.workers > 1:
        uvicorn.run("gateway.main:app_from_environment", factory=True, workers=config.workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)


def main() -> None:
    run(load_settings())
