"""Helpers for the access-control tests: a stack with auth on, tokens, a client that does the
Docker Bearer dance, and snapshots of registry state (to show refused requests changed nothing)."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from lading.metadata.v1 import accounts_pb2_grpc

from tests.support.stack import START_TIMEOUT_SECONDS, Stack, child_env, lading_command


class AuthStack(Stack):
    """`lading serve` with auth on: ready when /readyz says both planes serve (GET /v2/ is a 401)."""

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> AuthStack:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        deadline = time.monotonic() + timeout
        last = "no answer"
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(self.process.describe_failure("exited during start-up"))
                try:
                    ready = httpx.get(f"{self.base_url}/readyz", timeout=2.0)
                    version = httpx.get(f"{self.base_url}/v2/", timeout=2.0)
                    if ready.status_code == 200 and version.status_code == 401:
                        return self
                    last = f"/readyz {ready.status_code}, /v2/ {version.status_code}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                time.sleep(0.1)
            raise RuntimeError(self.process.describe_failure(f"not ready in {timeout:.0f}s (last: {last})"))
        except BaseException:
            self.process.stop()
            raise

    @property
    def metadata_target(self) -> str:
        return f"unix:{self.data_dir.resolve() / 'run' / 'metadata.sock'}"

    def add_user(self, name: str, password: str, *grants: tuple[str, str]) -> None:
        """`lading user add` and `lading grant add` (one per (pattern, "pull,push") of `grants`),
        over the same AccountService RPCs, in this process: for fixtures, where a command's Python
        start-up (half a second each) buys nothing; tests/auth/test_token_flow covers the commands."""
        from lading.metadata.v1 import accounts_pb2

        with grpc.insecure_channel(self.metadata_target) as channel:
            accounts = accounts_pb2_grpc.AccountServiceStub(channel)
            if password:
                accounts.CreateUser(accounts_pb2.CreateUserRequest(name=name, password=password), timeout=30)
            for pattern, actions in grants:
                accounts.Grant(accounts_pb2.GrantRequest(account=name, pattern=pattern, actions=actions.split(",")),
                               timeout=30)

    def grant(self, account: str, pattern: str, actions: str) -> None:
        """`lading grant add ACCOUNT PATTERN ACTIONS`, in this process (see add_user)."""
        self.add_user(account, "", (pattern, actions))

    def lading(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs a `lading` account command against this stack's metadata service."""
        command = lading_command(*args, "--metadata", self.metadata_target)
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60,
                                env=child_env())
        if check:
            assert result.returncode == 0, f"{' '.join(command)}: {result.returncode}\n{result.stdout}{result.stderr}"
        return result


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get_token(base_url: str, *scopes: str, creds: tuple[str, str] | None = None, **params: str) -> str:
    """A token from GET /token (asserts 200)."""
    headers = {"Authorization": basic(*creds)} if creds else {}
    query = [("service", "lading"), *[("scope", s) for s in scopes], *params.items()]
    response = httpx.get(f"{base_url}/token", params=query, headers=headers, timeout=10)
    assert response.status_code == 200, f"token: {response.status_code} {response.text}"
    return response.json()["token"]


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


_PARAM = re.compile(r'(\w+)="([^"]*)"')


def challenge_params(header: str) -> dict[str, str]:
    return dict(_PARAM.findall(header))


class DockerAuth(httpx.Auth):
    """What registry clients do: on a 401 Bearer challenge, get a token for its scope (with Basic
    credentials, or anonymously) and retry once. Tokens are cached per scope."""

    def __init__(self, creds: tuple[str, str] | None = None) -> None:
        self.creds = creds
        self.tokens: dict[str, str] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        header = response.headers.get("www-authenticate", "")
        if response.status_code != 401 or not header.startswith("Bearer "):
            return
        params = challenge_params(header)
        scope = params.get("scope", "")
        token = self.tokens.get(scope)
        if token is None:
            query = [("service", params["service"])] + ([("scope", scope)] if scope else [])
            headers = {"Authorization": basic(*self.creds)} if self.creds else {}
            got = httpx.get(params["realm"], params=query, headers=headers, timeout=10)
            if got.status_code != 200:
                return
            token = self.tokens[scope] = got.json()["token"]
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


def client(stack: Stack, creds: tuple[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, auth=DockerAuth(creds), timeout=30)


@dataclass(frozen=True)
class Snapshot:
    catalog: tuple[str, ...]
    tags: Mapping[str, tuple[str, ...]]
    blob_files: frozenset[str]


def snapshot(stack: AuthStack, admin: tuple[str, str]) -> Snapshot:
    """Everything a refused request must leave alone: catalog, every tag list, every stored blob."""
    with client(stack, admin) as c:
        catalog = tuple(c.get("/v2/_catalog", params={"n": 10000}).json()["repositories"])
        tags = {}
        for repo in catalog:
            listed = c.get(f"/v2/{repo}/tags/list")
            tags[repo] = tuple(listed.json().get("tags") or ()) if listed.status_code == 200 else ()
    root = stack.data_dir / "blobs" / "blobs"
    files = frozenset(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else frozenset()
    return Snapshot(catalog, tags, files)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def signing_keys(root: Path) -> Path:
    """A new `keys` folder under `root` holding a fresh ES256 `signing.pem` (auth_env's key folder)."""
    from gateway.auth.keys import generate_signing_key_pem

    keys = root / "keys"
    keys.mkdir()
    write(keys / "signing.pem", generate_signing_key_pem())
    return keys


@contextlib.contextmanager
def account_service(target: str) -> Iterator[accounts_pb2_grpc.AccountServiceStub]:
    """AccountService of the metadata plane at `target`, called directly (so a test knows the
    moment a change committed: when the call returns)."""
    with grpc.insecure_channel(target) as channel:
        yield accounts_pb2_grpc.AccountServiceStub(channel)


def refused_within(seconds: float, attempt: Callable[[], httpx.Response], refused: Callable[[httpx.Response], bool],
                   ) -> tuple[bool, float, httpx.Response]:
    """Runs `attempt` until `refused(response)` or `seconds` have passed since the call; returns
    (refused in time, seconds it took, last response). The issue's bound is the deadline."""
    started = time.monotonic()
    while True:
        response = attempt()
        elapsed = time.monotonic() - started
        if refused(response):
            return True, elapsed, response
        if elapsed > seconds:
            return False, elapsed, response
        time.sleep(0.05)


def oauth_login(base_url: str, creds: tuple[str, str], scope: str = "", *,
                headers: Mapping[str, str] | None = None) -> httpx.Response:
    """POST /token with the password grant, asking for a refresh token."""
    return httpx.post(f"{base_url}/token", headers=headers or {}, data={
        "grant_type": "password", "username": creds[0], "password": creds[1], "service": "lading",
        "client_id": "tests", "access_type": "offline", "scope": scope}, timeout=30)


def oauth_refresh(base_url: str, refresh_token: str, scope: str = "") -> httpx.Response:
    return httpx.post(f"{base_url}/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh_token, "service": "lading", "client_id": "tests",
        "scope": scope}, timeout=30)
