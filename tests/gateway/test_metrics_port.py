"""The gateway's `/metrics` is off its public port unless asked for (issue 11, item 5): served on
`observability.gateway_metrics_listen`, like the metadata and blob planes' metrics."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.serving import serving, settings_for
from tests.support.stack import free_port


async def test_the_public_port_has_no_metrics_by_default(tmp_path: Path) -> None:
    async with serving(settings_for(tmp_path)) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for method in ("GET", "HEAD"):
            response = await client.request(method, "/metrics")
            assert response.status_code == 404
            assert b"lading_http" not in response.content
        assert (await client.get("/v2/")).status_code == 200


async def test_metrics_listen_serves_them_on_their_own_port(tmp_path: Path) -> None:
    metrics_port = free_port()
    settings = settings_for(tmp_path, observability={"gateway_metrics_listen": f"127.0.0.1:{metrics_port}"})
    async with serving(settings) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/v2/")).status_code == 200
        assert (await client.get("/metrics")).status_code == 404
        scraped = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert scraped.status_code == 200
        samples = [s for family in text_string_to_metric_families(scraped.text) for s in family.samples]
        served = [s for s in samples if s.name == "lading_http_requests_total" and s.labels["route"] == "/v2/"
                  and s.labels["status"] == "200"]
        assert served and served[0].value >= 1
        # The public request for /metrics was counted as what it was: a 404 on no route.
        assert any(s.name == "lading_http_requests_total" and s.labels["status"] == "404" for s in samples)
    # The metrics port closes with the gateway.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", metrics_port)) != 0


async def test_the_public_port_serves_metrics_only_when_asked(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, observability={"gateway_metrics": True})
    async with serving(settings) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        response = await client.get("/metrics")
        assert response.status_code == 200 and "lading_http_requests" in response.text
