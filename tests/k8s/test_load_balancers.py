"""The load-balancer examples in deploy/: the registry rules they must follow, and a syntax check
by the real HAProxy (`haproxy -c`) and NGINX (`nginx -t`) when those are installed.

The syntax checks run on a copy whose certificate, log and pid paths point into a temporary
folder (with a throwaway self-signed certificate), so they need neither root nor /etc. Neither
check starts a server or binds a port.

The live tests run such a copy for real, on free 127.0.0.1 ports, in front of a `lading serve` in
token mode: the 401 challenge's realm must be the proxy's https:// /token, which must answer.
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.auth.keys import generate_signing_key_pem
from tests.auth.support import AuthStack, write
from tests.support import oci
from tests.support.clients import missing_tool
from tests.support.stack import START_TIMEOUT_SECONDS, LadingProcess, free_port
from tests.tls.pki import KeyPair, Pki

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def _binary(name: str) -> str:
    """Path of `name`, also looking in sbin folders that a non-root PATH may lack; skips if absent
    (fails with LADING_TEST_REQUIRE_CLIENTS=1, as in CI, which installs both)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if not path:
        missing_tool(f"{name} is not installed (Debian: apt-get install {name}); syntax not checked")
    return path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key (PEM files)."""
    openssl = shutil.which("openssl")
    if not openssl:
        missing_tool("openssl is not installed (apt-get install openssl): no certificate for the TLS examples")
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


def test_nginx_routes_the_token_endpoint_to_the_gateways() -> None:
    text = NGINX_CONF.read_text()
    directives = _directives(text)
    assert "location = /token {" in directives, "nginx.conf must route the token realm /token"
    block = re.search(r"location = /token \{(.*?)\}", text, re.S)
    assert block and "proxy_pass http://lading_gateways;" in _directives(block.group(1))
    # The forwarded headers are set once at server level, where both proxied locations inherit
    # them: a location with a proxy_set_header of its own would silently drop all the others.
    for location in re.findall(r"location [^{]*\{(.*?)\}", text, re.S):
        assert not any(d.startswith("proxy_set_header") for d in _directives(location)), location


def test_haproxy_routes_only_the_registry_and_the_token_endpoint() -> None:
    directives = _directives(HAPROXY_CFG.read_text())
    assert "acl registry_api path /v2 /token" in directives
    assert "acl registry_api path_beg /v2/" in directives
    assert "http-request deny deny_status 404 unless registry_api" in directives


# --- live: each example in front of a real gateway in token mode ------------------------------------
#
# A copy of each file listens on free 127.0.0.1 ports (TLS with a throwaway certificate for
# 127.0.0.1) and forwards to one `lading serve` in token mode, which stands in for the three
# gateways. A registry client must then be told, in the 401 challenge, to fetch its token from the
# PROXY's https:// address, get one there (GET and POST), and push and pull with it, with every
# Location pointing at the proxy too. The gateway's internal endpoints stay unreachable.

ADMIN = ("admin", "admin-secret-1")


@dataclass(frozen=True)
class Proxied:
    base_url: str  # https://127.0.0.1:<port> of the proxy
    gateway_url: str  # http://127.0.0.1:<port> of the gateway behind it
    ca: ssl.SSLContext  # trusts the proxy's certificate


@pytest.fixture(scope="module")
def token_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    """`lading serve` in token mode (its gateway trusts X-Forwarded-* from 127.0.0.1, the default)."""
    root = tmp_path_factory.mktemp("proxied")
    key = write(root / "signing.pem", generate_signing_key_pem())
    env = {
        "LADING_AUTH__MODE": "token",
        "LADING_AUTH__SIGNING_KEY_FILE": str(key),
        "LADING_AUTH__BOOTSTRAP_ADMIN": ADMIN[0],
        "LADING_AUTH__BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1],
        "LADING_AUTH__BCRYPT_ROUNDS": "4",
    }
    with AuthStack(root / "data", env=env) as stack:
        # The supervisor itself must take the gateway's anonymous 401 as "up" (it used to wait for
        # a 200 and stop the whole registry after a minute when auth was on).
        assert stack.process.wait_for_output("Lading is serving on http://"), stack.log()
        yield stack


@pytest.fixture(scope="module")
def proxy_pki(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return Pki(tmp_path_factory.mktemp("proxy-pki")).self_signed("registry")


def _start_proxy(process: LadingProcess, url: str) -> None:
    """Starts `process` and waits until GET `url` (through it) answers at all."""
    process.start()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            last = f"HTTP {httpx.get(url, verify=False, timeout=2).status_code}"
            if last == "HTTP 401":
                return
        except httpx.HTTPError as error:
            last = repr(error)
        time.sleep(0.1)
    process.stop()
    pytest.fail(process.describe_failure(f"did not answer {url} with 401 (last: {last})"))


def _run_nginx(tmp_path: Path, pair: KeyPair, gateway_port: int) -> tuple[LadingProcess, int]:
    nginx = _binary("nginx")
    http_port, https_port = free_port(), free_port()
    text = (
        NGINX_CONF.read_text()
        .replace("worker_processes auto;", "worker_processes 1;")
        .replace("listen 80;", f"listen 127.0.0.1:{http_port};")
        .replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
        # Temporary files under the test folder, not the compiled-in /var/lib/nginx.
        .replace("http {", "http {\n" + "".join(
            f"    {kind}_temp_path {tmp_path}/{kind}-temp;\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ), 1)
    )
    text = re.sub(r"server 127\.0\.0\.1:500[0-9]", f"server 127.0.0.1:{gateway_port}", text)
    config = _nginx_copy(tmp_path, (pair.cert, pair.key), text)
    assert _nginx_test(nginx, config).returncode == 0
    command = [nginx, "-p", f"{tmp_path}/", "-e", str(tmp_path / "startup.log"), "-c", str(config),
               "-g", "daemon off;"]
    return LadingProcess("nginx", command, log_dir=tmp_path), https_port


def _run_haproxy(tmp_path: Path, pair: KeyPair, gateway_port: int) -> tuple[LadingProcess, int]:
    haproxy = _binary("haproxy")
    http_port, https_port = free_port(), free_port()
    text = (
        HAPROXY_CFG.read_text()
        .replace("bind :80\n", f"bind 127.0.0.1:{http_port}\n")
        .replace("bind :443 ssl", f"bind 127.0.0.1:{https_port} ssl")
        # 10000 connections need ~20000 file descriptors, more than a test shell may open.
        .replace("maxconn 10000", "maxconn 1000")
    )
    text = re.sub(r"127\.0\.0\.1:500[0-9]\b", f"127.0.0.1:{gateway_port}", text)
    config = _haproxy_copy(tmp_path, (pair.cert, pair.key), text)
    result = _check([haproxy, "-c", "-f", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr
    return LadingProcess("haproxy", [haproxy, "-db", "-f", str(config)], log_dir=tmp_path), https_port


@pytest.fixture(params=["nginx", "haproxy"])
def proxied(request: pytest.FixtureRequest, tmp_path: Path, token_gateway: AuthStack,
            proxy_pki: KeyPair) -> Iterator[Proxied]:
    run = _run_nginx if request.param == "nginx" else _run_haproxy
    process, https_port = run(tmp_path, proxy_pki, token_gateway.port)
    base_url = f"https://127.0.0.1:{https_port}"
    _start_proxy(process, f"{base_url}/v2/")
    try:
        yield Proxied(base_url, token_gateway.base_url, ssl.create_default_context(cafile=str(proxy_pki.cert)))
    finally:
        process.stop()


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class BearerFromRealm(httpx.Auth):
    """The Docker token flow as clients run it: on a 401, GET a token from the challenge's realm
    (with Basic credentials) for its scope, and retry. Records every realm it was sent to."""

    def __init__(self, creds: tuple[str, str], verify: ssl.SSLContext) -> None:
        self.creds, self.verify = creds, verify
        self.realms: set[str] = set()

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        response = yield request
        header = response.headers.get("www-authenticate", "")
        if response.status_code != 401 or not header.startswith("Bearer "):
            return
        params = dict(_CHALLENGE_PARAM.findall(header))
        self.realms.add(params["realm"])
        query = {"service": params["service"], **({"scope": params["scope"]} if "scope" in params else {})}
        got = httpx.get(params["realm"], params=query, auth=self.creds, verify=self.verify, timeout=10)
        assert got.status_code == 200, f"token from {params['realm']}: {got.status_code} {got.text}"
        request.headers["Authorization"] = f"Bearer {got.json()['token']}"
        yield request


def test_the_token_realm_behind_the_proxy_is_the_proxys_and_works(proxied: Proxied) -> None:
    challenge = httpx.get(f"{proxied.base_url}/v2/", verify=proxied.ca, timeout=10)
    assert challenge.status_code == 401
    params = dict(_CHALLENGE_PARAM.findall(challenge.headers["www-authenticate"]))
    assert params["realm"] == f"{proxied.base_url}/token", "the realm must name the proxy, over https"
    # Asked directly, the same gateway names itself: the forwarded headers made the difference.
    direct = httpx.get(f"{proxied.gateway_url}/v2/", timeout=10)
    assert dict(_CHALLENGE_PARAM.findall(direct.headers["www-authenticate"]))["realm"] == (
        f"{proxied.gateway_url}/token"
    )

    # OAuth2 POST form through the proxy too (docker login with an identity token uses it).
    posted = httpx.post(params["realm"], verify=proxied.ca, timeout=10, data={
        "grant_type": "password", "username": ADMIN[0], "password": ADMIN[1], "service": params["service"],
        "scope": "repository:proxied/app:pull,push", "client_id": "tests",
    })
    assert posted.status_code == 200, posted.text
    assert posted.json()["access_token"]

    auth = BearerFromRealm(ADMIN, proxied.ca)
    with httpx.Client(base_url=proxied.base_url, auth=auth, verify=proxied.ca, timeout=30) as client:
        started = client.post("/v2/proxied/app/blobs/uploads/")
        assert started.status_code == 202, started.text
        assert started.headers["Location"].startswith(f"{proxied.base_url}/v2/proxied/app/blobs/uploads/")
        client.delete(started.headers["Location"])
        manifest = oci.image(layers=1, layer_size=64 * 1024)
        oci.push(client, "proxied/app", manifest, tag="v1")
        oci.assert_pulls_back(client, "proxied/app", "v1", manifest)
    assert auth.realms == {f"{proxied.base_url}/token"}


def test_the_gateways_internal_endpoints_stay_behind_the_proxy(proxied: Proxied) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/tokens", "/token/x"):
        response = httpx.get(f"{proxied.base_url}{path}", verify=proxied.ca, timeout=10)
        assert response.status_code == 404, f"{path}: {response.status_code}"
    # ...while the gateway itself does answer them.
    assert httpx.get(f"{proxied.gateway_url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("proxy", ["nginx", "haproxy"])
def test_a_zstd_chunked_range_header_reaches_the_gateway(proxy: str, tmp_path: Path, token_gateway: AuthStack,
                                                         proxy_pki: KeyPair) -> None:
    """A partial pull asks for up to 1024 ranges in one Range header (gateway.max_ranges), about
    20 KiB with 9-digit offsets: the proxy passes it to the gateway (its challenge, 401) instead of
    refusing it with 400 (NGINX's default allows 8 KiB per header line, HAProxy's default buffer
    ~15 KiB of request head)."""
    run = _run_nginx if proxy == "nginx" else _run_haproxy
    process, https_port = run(tmp_path, proxy_pki, token_gateway.port)
    base_url = f"https://127.0.0.1:{https_port}"
    _start_proxy(process, f"{base_url}/v2/")
    try:
        header = "bytes=" + ",".join(f"{offset:09d}-{offset + 9:09d}" for offset in range(0, 1024 * 100_000, 100_000))
        assert len(header) > 20_000
        response = httpx.get(f"{base_url}/v2/public/x/blobs/sha256:{'0' * 64}", headers={"Range": header},
                             verify=ssl.create_default_context(cafile=str(proxy_pki.cert)), timeout=10)
        assert response.status_code == 401, (response.status_code, response.text[:200])
    finally:
        process.stop()
