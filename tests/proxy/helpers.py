"""Shared pieces of the pull-through cache tests."""

from __future__ import annotations

from pathlib import Path

PREFIX = "cache/"
UPSTREAM = "dist"


def proxy_config(path: Path, upstream_url: str, *, revalidate: float = 0.0, extra: str = "",
                 head: str = "", tail: str = "") -> Path:
    """A config file with one upstream; `head`: more sections first, `extra`: more `[proxy]`
    settings, `tail`: more at the end (`[[proxy.mirrors]]`)."""
    # No gateway manifest cache: each GET reaches the metadata plane, whose revalidation is tested.
    path.write_text(
        f"{head}"
        "[gateway]\nmanifest_cache_ttl_seconds = 0\n"
        "[proxy]\n"
        f"{extra}"
        "[[proxy.upstreams]]\n"
        f'name = "{UPSTREAM}"\n'
        f'url = "{upstream_url}"\n'
        f'prefix = "{PREFIX}"\n'
        f"revalidate_seconds = {revalidate}\n"
        "max_staleness_seconds = 3600\n"
        "timeout_seconds = 5\n"
        f"{tail}"
    )
    return path
