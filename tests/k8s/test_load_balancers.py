"""The load-balancer examples in deploy/: the registry rules they must follow, and a syntax check
by the real HAProxy (`haproxy -c`) and NGINX (`nginx -t`) when those are installed.

The syntax checks run on a copy whose certificate, log and pid paths point into a temporary
folder (with a throwaway self-signed certificate), so they need neither root nor /etc. Neither
check starts a server or binds a port.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def _binary(name: str) -> str:
    """Path of `name`, also looking in sbin folders that a non-root PATH may lack; skips if absent."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if not path:
        pytest.skip(f"{name} is not installed (Debian: apt-get install {name}); syntax not checked")
    return path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key (PEM files)."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("openssl is not installed; cannot make a certificate for the TLS examples")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "registry.crt", folder / "registry.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=registry.example.com",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def _check(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _haproxy_copy(tmp_path: Path, certificate: tuple[Path, Path], text: str | None = None) -> Path:
    cert, key = certificate
    bundle = tmp_path / "registry.pem"
    bundle.write_text(cert.read_text() + key.read_text())
    config = tmp_path / "haproxy.cfg"
    source = HAPROXY_CFG.read_text() if text is None else text
    config.write_text(source.replace("/etc/haproxy/certs/registry.pem", str(bundle)))
    return config


def _nginx_copy(tmp_path: Path, certificate: tuple[Path, Path], text: str | None = None) -> Path:
    cert, key = certificate
    source = NGINX_CONF.read_text() if text is None else text
    config = tmp_path / "nginx.conf"
    config.write_text(
        source.replace("/etc/nginx/tls/registry.crt", str(cert))
        .replace("/etc/nginx/tls/registry.key", str(key))
        .replace("/var/log/nginx/", f"{tmp_path}/")
        .replace("/run/nginx.pid", f"{tmp_path}/nginx.pid")
    )
    return config


def _nginx_test(nginx: str, config: Path) -> subprocess.CompletedProcess[str]:
    prefix = config.parent
    return _check(
        [nginx, "-t", "-q", "-p", f"{prefix}/", "-e", str(prefix / "startup.log"), "-c", str(config)]
    )


# --- syntax, by the real programs -------------------------------------------------------------------


def test_haproxy_accepts_the_example(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    haproxy = _binary("haproxy")
    result = _check([haproxy, "-c", "-f", str(_haproxy_copy(tmp_path, certificate))])
    assert result.returncode == 0, result.stdout + result.stderr


def test_haproxy_check_rejects_a_broken_copy(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    """Guards the guard: a misspelt keyword must fail `haproxy -c`."""
    haproxy = _binary("haproxy")
    broken = HAPROXY_CFG.read_text().replace("http-check expect rstatus", "http-check expect rstatuss")
    result = _check([haproxy, "-c", "-f", str(_haproxy_copy(tmp_path, certificate, broken))])
    assert result.returncode != 0


def test_nginx_accepts_the_example(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    nginx = _binary("nginx")
    result = _nginx_test(nginx, _nginx_copy(tmp_path, certificate))
    assert result.returncode == 0, result.stdout + result.stderr


def test_nginx_check_rejects_a_broken_copy(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    nginx = _binary("nginx")
    broken = NGINX_CONF.read_text().replace("proxy_request_buffering off;", "proxy_request_buffering of;")
    result = _nginx_test(nginx, _nginx_copy(tmp_path, certificate, broken))
    assert result.returncode != 0


# --- the registry rules, read from the files --------------------------------------------------------


def _directives(text: str) -> list[str]:
    """Non-comment lines, stripped, with runs of blanks folded to one space."""
    lines = (re.sub(r"\s+", " ", line.split("#", 1)[0]).strip() for line in text.splitlines())
    return [line for line in lines if line]


def test_nginx_streams_unlimited_bodies_with_long_timeouts_and_forwarded_headers() -> None:
    directives = _directives(NGINX_CONF.read_text())
    for required in (
        "client_max_body_size 0;",
        "proxy_request_buffering off;",
        "proxy_buffering off;",
        "chunked_transfer_encoding on;",
        "proxy_http_version 1.1;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-Host $http_host;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "listen 443 ssl;",
    ):
        assert required in directives, f"nginx.conf lacks `{required}`"
    for timeout in ("proxy_read_timeout", "proxy_send_timeout", "client_body_timeout", "send_timeout"):
        (line,) = [d for d in directives if d.startswith(timeout + " ")]
        assert int(re.search(r"(\d+)s?;", line).group(1)) >= 900, line
    servers = [d for d in directives if d.startswith("server 127.0.0.1:")]
    assert len(servers) >= 2, "the example balances over several gateways"


def test_haproxy_streams_with_long_timeouts_forwarded_headers_and_401_tolerant_checks() -> None:
    directives = _directives(HAPROXY_CFG.read_text())
    assert "option http-buffer-request" not in directives, "HAProxy must not buffer request bodies"
    for required in (
        "option forwardfor",
        "option httpchk",
        "http-check send meth GET uri /v2/ ver HTTP/1.1 hdr Host registry.example.com",
        "http-check expect rstatus ^(200|401)$",
        "http-request set-header X-Forwarded-Proto https",
        "http-request set-header X-Forwarded-Host %[req.hdr(host)]",
    ):
        assert required in directives, f"haproxy.cfg lacks `{required}`"
    for timeout in ("client", "server", "tunnel"):
        (line,) = [d for d in directives if d.startswith(f"timeout {timeout} ")]
        assert int(re.search(r"(\d+)s$", line).group(1)) >= 900, line
    assert any(re.fullmatch(r"bind :443 ssl crt \S+ .*", d) for d in directives), "no TLS termination"
    servers = [d for d in directives if d.startswith("server ")]
    assert len(servers) >= 2, "the example balances over several gateways"
    assert "default-server check inter 5s fall 3 rise 2 maxconn 2000" in directives
