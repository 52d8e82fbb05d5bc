"""Process-wide logging set-up, called once from each composition root."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "info", process: str = "lading") -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format=f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s",
    )
