"""One site (region) of Lading on loopback for the regions tests and `bench.coherence`:
two metadata replicas on one PostgreSQL database, one blob plane, two gateways, each gateway on
its own metadata replica (gateway 1 → metadata A, gateway 2 → metadata B), so a change made through
gateway 1 reaches gateway 2 only through PostgreSQL NOTIFY → replica B's change feed → gateway 2.

The metadata replicas poll the feed only every 60 s and the gateways' fallback TTL is an hour:
nothing but the change feed can make gateway 2 drop what it cached in time. Every process is
`lading <plane>` with LADING_* variables; all are stopped by pid when the `with` ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.slowlink import SlowLink
from tests.support.stack import (
    LadingProcess,
    free_port,
    lading_command,
    running,
    wait_until_http_ok,
    wait_until_path_exists,
)

# Long enough that only the change feed can explain a fresh answer within a test.
FALLBACK_TTL_SECONDS = 3600


@dataclass
class Site:
    gateway_urls: tuple[str, str]
    processes: dict[str, LadingProcess]
    metrics_urls: tuple[str, str]
    # With `slow_link_b`: the proxy between gateway 2 and metadata B (set its `delay`).
    link_b: SlowLink | None = None


@contextlib.contextmanager
def site(root: Path, database_url: str, *, metadata_env: Mapping[str, str] | None = None,
         metadata_a_env: Mapping[str, str] | None = None,
         gateway_env: Mapping[str, str] | None = None, slow_link_b: bool = False) -> Iterator[Site]:
    """`slow_link_b`: gateway 2 reaches metadata B through a `SlowLink` (Site.link_b), which can
    make it hear of changes late."""
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    sockets = {"a": run / "ma.sock", "b": run / "mb.sock"}
    blob_socket = run / "b.sock"
    ports = (free_port(), free_port())
    metrics_ports = (free_port(), free_port())
    link_b = SlowLink(run / "mb-slow.sock", sockets["b"]) if slow_link_b else None
    targets = (sockets["a"], link_b.listen if link_b is not None else sockets["b"])
    metadata = [
        LadingProcess(f"metadata-{name}", lading_command("metadata"), log_dir=logs, cwd=root, env={
            "LADING_METADATA__LISTEN": f"unix://{socket}",
            "LADING_METADATA__DATABASE_URL": database_url,
            "LADING_METADATA__CHANGE_FEED__POLL_SECONDS": "60",
            "LADING_METADATA__SHUTDOWN_GRACE_SECONDS": "1",
            **(metadata_env or {}),
            **((metadata_a_env or {}) if name == "a" else {}),
        })
        for name, socket in sockets.items()
    ]
    blob = LadingProcess("blob", lading_command("blob"), log_dir=logs, cwd=root, env={
        "LADING_BLOB__LISTEN": f"unix://{blob_socket}",
        "LADING_BLOB__FILESYSTEM__ROOT": str(root / "blobs"),
    })
    gateways = [
        LadingProcess(f"gateway{i + 1}", lading_command("gateway"), log_dir=logs, cwd=root, env={
            "LADING_GATEWAY__HOST": "127.0.0.1",
            "LADING_GATEWAY__PORT": str(port),
            "LADING_GATEWAY__METADATA_TARGET": f"unix://{socket}",
            "LADING_GATEWAY__BLOB_TARGET": f"unix://{blob_socket}",
            "LADING_GATEWAY__MANIFEST_CACHE_TTL_SECONDS": str(FALLBACK_TTL_SECONDS),
            "LADING_GATEWAY__SHUTDOWN_GRACE_SECONDS": "1",
            "LADING_GATEWAY__CACHE_FEED__COHERENT_TTL_SECONDS": str(FALLBACK_TTL_SECONDS),
            "LADING_OBSERVABILITY__GATEWAY_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            **(gateway_env or {}),
        })
        for i, (port, socket, metrics_port) in enumerate(zip(ports, targets, metrics_ports, strict=True))
    ]
    # Replica A first: it migrates the new database before B looks at it.
    with contextlib.ExitStack() as stack:
        if link_b is not None:
            stack.enter_context(link_b)
        stack.enter_context(running(metadata[0]))
        wait_until_path_exists(sockets["a"], metadata[0])
        with running(metadata[1], blob, *gateways):
            wait_until_path_exists(sockets["b"], metadata[1])
            wait_until_path_exists(blob_socket, blob)
            urls = tuple(f"http://127.0.0.1:{port}" for port in ports)
            for process, url in zip(gateways, urls, strict=True):
                wait_until_http_ok(f"{url}/v2/", process)
            yield Site(
                gateway_urls=urls,  # type: ignore[arg-type]
                processes={p.name: p for p in (*metadata, blob, *gateways)},
                metrics_urls=tuple(f"http://127.0.0.1:{p}/metrics" for p in metrics_ports),  # type: ignore[arg-type]
                link_b=link_b,
            )
