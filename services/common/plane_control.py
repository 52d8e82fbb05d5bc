"""How a host process drives a plane that shares the process with other work.

`lading serve` runs the metadata plane inside its supervisor (services/supervisor.py): signals
belong to the supervisor, so it stops the plane by setting `stop`, and learns that the plane
serves from `serving` (set once its grpc.health reports SERVING). Kept free of grpc imports so that
the supervisor can start its children before it loads grpc.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class PlaneControl:
    """`stop`: set by the host to begin the plane's graceful shutdown; `serving`: set by the plane
    once it serves."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    serving: asyncio.Event = field(default_factory=asyncio.Event)
