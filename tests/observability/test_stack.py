"""Observability of a real `lading serve` stack: one trace across the three processes, Prometheus
`/metrics` on each, JSON log lines carrying the trace id, and the health endpoints.

The stack runs with tracing exported to an in-test OTLP/HTTP receiver, JSON logs at debug level
(so uvicorn writes an access line per request) and a metrics port for every process (the
gateway's off its public port, where `/metrics` is a 404).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.observability.otlp import OtlpReceiver, ReceivedSpan
from tests.support import oci
from tests.support.stack import Stack, free_port

GATEWAY, METADATA, BLOB = "lading-gateway", "lading-metadata", "lading-blob"
SERVER, CLIENT = 2, 3  # OTLP span kinds


@dataclass
class Observed:
    stack: Stack
    receiver: OtlpReceiver
    gateway_metrics: str
    metadata_metrics: str
    blob_metrics: str


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    gateway_port, metadata_port, blob_port = free_port(), free_port(), free_port()
    with OtlpReceiver() as receiver:
        env = {
            "LADING_OBSERVABILITY__OTLP_ENDPOINT": receiver.endpoint,
            "LADING_OBSERVABILITY__LOG_FORMAT": "json",
            "LADING_OBSERVABILITY__GATEWAY_METRICS_LISTEN": f"127.0.0.1:{gateway_port}",
            "LADING_OBSERVABILITY__METADATA_METRICS_LISTEN": f"127.0.0.1:{metadata_port}",
            "LADING_OBSERVABILITY__BLOB_METRICS_LISTEN": f"127.0.0.1:{blob_port}",
            "LADING_GATEWAY__LOG_LEVEL": "debug",
        }
        with Stack(tmp_path_factory.mktemp("observed") / "data", env=env) as stack:
            yield Observed(stack, receiver, f"http://127.0.0.1:{gateway_port}/metrics",
                           f"http://127.0.0.1:{metadata_port}/metrics", f"http://127.0.0.1:{blob_port}/metrics")


@pytest.fixture
def client(observed: Observed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=observed.stack.base_url, timeout=30.0) as http:
        yield http


def traceparent() -> tuple[str, str]:
    """(trace id, traceparent header) for a fresh sampled trace started by 'the client'."""
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
    return trace_id, f"00-{trace_id}-{parent_id}-01"


def services_of(spans: list[ReceivedSpan], trace_id: str) -> set[str]:
    return {span.service for span in spans if span.trace_id == trace_id}


def test_one_trace_spans_gateway_metadata_and_blob(observed: Observed, client: httpx.Client) -> None:
    trace_id, header = traceparent()
    client.headers["traceparent"] = header
    image = oci.image(layers=1, layer_size=2048)
    oci.push(client, "traced/app", image, tag="v1")  # blob uploads + manifest PUT, one trace

    # Each process exports its spans in its own batches, and the gateway's server span of the
    # manifest PUT ends last (after the response is sent): wait for it too, not only the planes'.
    spans = observed.receiver.wait_for(
        lambda spans: {GATEWAY, METADATA, BLOB} <= services_of(spans, trace_id)
        and any(s.service == METADATA and "PutManifest" in s.name for s in spans if s.trace_id == trace_id)
        and any(s.service == METADATA and s.attributes.get("db.system") for s in spans if s.trace_id == trace_id)
        and any(s.service == GATEWAY and s.kind == SERVER and s.name == "PUT /v2/{name:path}/manifests/{reference}"
                for s in spans if s.trace_id == trace_id)
    )
    mine = [span for span in spans if span.trace_id == trace_id]
    assert services_of(spans, trace_id) == {GATEWAY, METADATA, BLOB}, sorted({(s.service, s.name) for s in mine})

    by_id = {span.span_id: span for span in mine}
    # The manifest PUT: gateway server span (named by route template) → gRPC client span →
    # metadata server span → SQL spans under it.
    put_request = [s for s in mine if s.service == GATEWAY and s.kind == SERVER
                   and s.name == "PUT /v2/{name:path}/manifests/{reference}"]
    assert len(put_request) == 1, sorted(s.name for s in mine if s.service == GATEWAY)
    metadata_put = [s for s in mine if s.service == METADATA and s.kind == SERVER and s.name.endswith("/PutManifest")]
    assert len(metadata_put) == 1
    grpc_client = by_id[metadata_put[0].parent_span_id]
    assert (grpc_client.service, grpc_client.kind) == (GATEWAY, CLIENT)
    assert grpc_client.parent_span_id == put_request[0].span_id
    sql = [s for s in mine if s.service == METADATA and s.attributes.get("db.system")]
    assert any(_descends_from(s, metadata_put[0], by_id) for s in sql), "no SQL span under PutManifest"

    # The blob upload: gateway → blob service → storage operations.
    commit = [s for s in mine if s.service == BLOB and s.kind == SERVER and s.name.endswith("/CommitUpload")]
    assert commit and by_id[commit[0].parent_span_id].service == GATEWAY
    storage = [s for s in mine if s.service == BLOB and s.name.startswith("blob.backend.")]
    assert any(_descends_from(s, commit[0], by_id) for s in storage), "no storage span under CommitUpload"
    # Everything hangs off the client's own span: the gateway continued the given traceparent.
    roots = {s.parent_span_id for s in mine if s.parent_span_id not in by_id}
    assert roots == {header.split("-")[2]}


def test_a_trace_the_gateway_starts_reaches_metadata(observed: Observed, client: httpx.Client) -> None:
    image = oci.image(layers=1, layer_size=512)
    for blob in image.blobs:
        oci.push_blob(client, "traced/plain", blob)
    assert oci.push_manifest_only(client, "traced/plain", "v1", image).status_code == 201

    def put_traced(spans: list[ReceivedSpan]) -> bool:
        return any(s.service == GATEWAY and s.kind == SERVER and s.name.startswith("PUT /v2/{name:path}/manifests")
                   and METADATA in services_of(spans, s.trace_id) and s.parent_span_id == ""
                   for s in spans)

    spans = observed.receiver.wait_for(put_traced)
    assert put_traced(spans)


def _descends_from(span: ReceivedSpan, ancestor: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> bool:
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        if span.span_id == ancestor.span_id:
            return True
    return False


def _families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """{family name: [(sample name, labels, value)]} from the Prometheus text format."""
    return {
        family.name: [(sample.name, sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


def _value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(value for sample, have, value in samples if sample == name
               and all(have.get(k) == v for k, v in labels.items()))


def _only(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The value of the one sample of `name` with `labels`; fails when there is none (or several)."""
    values = [value for sample, have, value in samples if sample == name
              and all(have.get(k) == v for k, v in labels.items())]
    assert len(values) == 1, f"{name} {labels}: {len(values)} samples"
    return values[0]


def test_metrics_of_every_process_parse_and_count_traffic(observed: Observed, client: httpx.Client) -> None:
    repo = "metered/app"
    image = oci.image(layers=2, layer_size=4096)
    oci.push(client, repo, image, tag="v1")
    assert oci.get_manifest(client, repo, "v1").status_code == 200
    open_session = client.post(f"/v2/{repo}/blobs/uploads/")
    assert open_session.status_code == 202

    gateway = _families(httpx.get(observed.gateway_metrics, timeout=10).text)
    manifests = "/v2/{name:path}/manifests/{reference}"
    requests = gateway["lading_http_requests"]
    assert _value(requests, "lading_http_requests_total", route=manifests, method="PUT", status="201") >= 1
    assert _value(requests, "lading_http_requests_total", route=manifests, method="GET", status="200") >= 1
    # Labels are route templates, never raw paths.
    assert all(not labels["route"].startswith("/v2/metered") for _, labels, _ in requests)
    durations = gateway["lading_http_request_duration_seconds"]
    assert _value(durations, "lading_http_request_duration_seconds_count", route=manifests, method="PUT") >= 1
    uploaded = sum(blob.size for blob in image.blobs)
    assert _value(gateway["lading_http_request_bytes"], "lading_http_request_bytes_total") >= uploaded + image.size
    assert _value(gateway["lading_http_response_bytes"], "lading_http_response_bytes_total", route=manifests,
                  method="GET") >= image.size

    metadata = _families(httpx.get(observed.metadata_metrics, timeout=10).text)
    handled = metadata["lading_grpc_server_handled"]
    assert _value(handled, "lading_grpc_server_handled_total", grpc_method="PutManifest", grpc_code="OK") >= 1
    # The GET above reached the metadata plane: the PUT emptied the gateway's cache of the repository.
    assert _value(handled, "lading_grpc_server_handled_total", grpc_method="GetManifest", grpc_code="OK") >= 1
    assert _value(metadata["lading_grpc_server_handling_seconds"], "lading_grpc_server_handling_seconds_count",
                  grpc_method="PutManifest") >= 1
    pool = metadata["lading_db_pool_connections"]
    size = _only(pool, "lading_db_pool_connections", pool="primary", state="size")
    assert size >= 1
    # A gauge that is there (a missing one would read 0 above) and counts within the pool.
    assert 0 <= _only(pool, "lading_db_pool_connections", pool="primary", state="checked_out") <= size

    blob = _families(httpx.get(observed.blob_metrics, timeout=10).text)
    blob_handled = blob["lading_grpc_server_handled"]
    assert _value(blob_handled, "lading_grpc_server_handled_total", grpc_method="CommitUpload", grpc_code="OK") >= 2
    # The session opened above is still open: at least one upload is active.
    assert _value(blob["lading_blob_active_uploads"], "lading_blob_active_uploads") >= 1
    assert client.delete(oci.absolute(client, open_session.headers["Location"])).status_code == 204


def test_the_public_port_does_not_serve_metrics(observed: Observed, client: httpx.Client) -> None:
    assert httpx.get(observed.gateway_metrics, timeout=10).status_code == 200
    for method in ("GET", "HEAD"):
        public = client.request(method, "/metrics")
        assert public.status_code == 404
        assert b"lading_http_requests" not in public.content


def test_errors_are_counted_with_their_grpc_code(observed: Observed, client: httpx.Client) -> None:
    missing = client.get("/v2/metered/none/manifests/nope", headers={"Accept": oci.ACCEPT_ALL})
    assert missing.status_code == 404
    gateway = _families(httpx.get(observed.gateway_metrics, timeout=10).text)
    assert _value(gateway["lading_http_requests"], "lading_http_requests_total",
                  route="/v2/{name:path}/manifests/{reference}", method="GET", status="404") >= 1
    metadata = _families(httpx.get(observed.metadata_metrics, timeout=10).text)
    assert _value(metadata["lading_grpc_server_handled"], "lading_grpc_server_handled_total",
                  grpc_method="GetManifest", grpc_code="NOT_FOUND") >= 1


def test_json_log_lines_carry_the_trace_id_and_repository(observed: Observed, client: httpx.Client) -> None:
    trace_id, header = traceparent()
    response = client.get("/v2/logged/app/tags/list", headers={"traceparent": header})
    assert response.status_code == 404

    def matching() -> list[dict[str, object]]:
        found = []
        for line in observed.stack.process.log_path.read_text(errors="replace").splitlines():
            if trace_id in line and line.startswith("{"):
                found.append(json.loads(line))
        return found

    import time

    deadline = time.monotonic() + 10
    while not matching() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = matching()
    assert lines, "no JSON log line with the request's trace id"
    entry = lines[0]
    assert entry["trace_id"] == trace_id and len(str(entry["span_id"])) == 16
    assert entry["process"] == "gateway" and entry["level"] in ("debug", "info")
    assert entry["repository"] == "logged/app"
    assert {"timestamp", "logger", "message"} <= entry.keys()


def test_health_endpoints_still_answer(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
