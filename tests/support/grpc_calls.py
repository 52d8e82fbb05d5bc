"""Completed gRPC calls of one plane, read from its Prometheus metrics (`lading_grpc_server_handled_total`)."""

from __future__ import annotations

import re

import httpx


def handled_calls(metrics_url: str) -> dict[str, float]:
    """Completed gRPC calls of the plane serving `metrics_url`, by "Service/Method" (all codes)."""
    text = httpx.get(metrics_url, timeout=10).text
    calls: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("lading_grpc_server_handled_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        method = labels.get("method") or labels.get("grpc_method", "")
        service = labels.get("service") or labels.get("grpc_service", "")
        key = f"{service.rsplit('.', 1)[-1]}/{method}" if service else method
        calls[key] = calls.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return calls
