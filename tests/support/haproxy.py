"""HAProxy in front of several Lading gateways, for the HA tests (Debian package `haproxy`).

`haproxy_config()` renders the configuration; `HAProxy` runs `haproxy -db` (foreground, no
daemon) on a free 127.0.0.1 port in its own process group, waits until GET /v2/ answers through
it, and stops it by pid. The configuration follows deploy/haproxy.cfg where it matters for a
registry (no request buffering, long timeouts, health checks on GET /v2/, no stickiness), with
test-sized check intervals so a killed gateway leaves rotation within about a second, and
OCI-shaped error bodies for the errors HAProxy itself answers (no server up, server gone):
registry clients then always get `{"errors": [...]}`, as from the gateway.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tests.support.clients import require_binary
from tests.support.stack import LadingProcess, free_port, wait_until_http_ok

# HAProxy answers these itself when no gateway can take a request (down, gone mid-response,
# too slow); each gets an OCI error body with the spec's UNAVAILABLE-style code.
_PROXY_ERRORS = {
    502: "the gateway went away while answering; retry the request",
    503: "no gateway is available; retry the request shortly",
    504: "the gateway did not answer in time; retry the request",
}


def haproxy_binary() -> str:
    """Path of `haproxy`; skips the test without it (fails with LADING_TEST_REQUIRE_CLIENTS=1)."""
    return require_binary("haproxy", install_hint="apt-get install haproxy")


def _http_error(status: int, message: str) -> str:
    body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": message, "detail": {"proxy": "haproxy"}}]})
    # `lf-string` would interpret '%'; the body has none. Single quotes protect the JSON's.
    return f"    http-error status {status} content-type application/json string '{body}'"


def haproxy_config(*, port: int, servers: Sequence[tuple[str, int]], check_interval_ms: int = 500) -> str:
    """A configuration listening on 127.0.0.1:`port`, balancing round-robin over `servers`
    ((name, port) on 127.0.0.1), health-checked with GET /v2/ every `check_interval_ms`."""
    lines = [
        "global",
        "    maxconn 2000",
        "",
        "defaults",
        "    mode http",
        "    option forwardfor",
        "    option http-keep-alive",
        "    timeout connect 2s",
        "    timeout http-request 30s",
        "    timeout http-keep-alive 10s",
        "    timeout queue 30s",
        # Long: slow uploads and pulls of big layers must not be cut.
        "    timeout client 900s",
        "    timeout server 900s",
        "    timeout tunnel 900s",
        # A refused connection (gateway down, not yet noticed by the checks) is retried on another
        # gateway; a request already sent is never replayed (uploads are not idempotent).
        "    retries 3",
        "    option redispatch 1",
        *(_http_error(status, message) for status, message in _PROXY_ERRORS.items()),
        "",
        "frontend registry",
        f"    bind 127.0.0.1:{port}",
        "    default_backend gateways",
        "",
        "backend gateways",
        "    balance roundrobin",
        "    option httpchk",
        "    http-check send meth GET uri /v2/ ver HTTP/1.1 hdr Host localhost",
        "    http-check expect status 200",
        f"    default-server check inter {check_interval_ms}ms fastinter {check_interval_ms // 2}ms "
        "fall 2 rise 1 maxconn 500",
        *(f"    server {name} 127.0.0.1:{server_port}" for name, server_port in servers),
        "",
    ]
    return "\n".join(lines)


class HAProxy:
    """One haproxy process in front of `servers`; `base_url`/`hostport` name its frontend."""

    def __init__(self, workdir: Path, servers: Sequence[tuple[str, int]], *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.config_path = workdir / "haproxy.cfg"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(haproxy_config(port=self.port, servers=servers))
        binary = haproxy_binary()
        self.process = LadingProcess("haproxy", [binary, "-db", "-f", str(self.config_path)], log_dir=workdir)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def check_config(self) -> None:
        """Raises with HAProxy's own message when the configuration is invalid."""
        import subprocess

        result = subprocess.run([haproxy_binary(), "-c", "-f", str(self.config_path)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"haproxy -c rejected {self.config_path}:\n{result.stdout}{result.stderr}")

    def start(self) -> HAProxy:
        self.check_config()
        self.process.start()
        try:
            wait_until_http_ok(f"{self.base_url}/v2/", self.process)
        except BaseException:
            self.process.stop()
            raise
        return self

    def stop(self) -> None:
        self.process.stop()
