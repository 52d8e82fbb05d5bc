"""An upstream registry seen from the pull-through cache: names, access and the HTTP calls.

Both the metadata plane (manifests: `head_manifest`, `get_manifest`) and the blob plane (blob
bytes: `open_blob`) talk to upstreams through `Upstream`; the gateway never does. httpx (and
urllib3, which reads blob bodies: services/common/upstream_bodies.py) is imported only when an
`Upstream` is built, i.e. only when `[[proxy.upstreams]]` is configured.

Authentication follows the upstream's `WWW-Authenticate` challenge: `Basic` gets the configured
username and password; `Bearer realm=...,service=...` sends them (or nothing, anonymously) to the
realm for a pull token of the repository, kept until shortly before it expires. Credentials and
tokens never appear in errors or logs: messages name the upstream and its URL only.

Failures leave as RegistryError: the upstream answering 404 → MANIFEST_UNKNOWN / BLOB_UNKNOWN
naming it; unreachable, timing out, 5xx or anything unexpected → UPSTREAM_FAILED (502).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from services.common.errors import ErrorKind, RegistryError
from services.common.settings import ProxySettings, RegistryAccessSettings
from services.common.thread_chunks import ThreadChunks
from services.common.upstream_bodies import BodyError, UpstreamBodies

log = logging.getLogger("lading.proxy")

# What the cache accepts for manifests: every type Lading stores.
MANIFEST_ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.artifact.manifest.v1+json",
))
# A manifest larger than this from an upstream is refused (the registry's own limit is 4 MiB).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


@dataclass(frozen=True, slots=True)
class UpstreamManifest:
    digest: str  # the upstream's Docker-Content-Digest ("" when it sent none)
    media_type: str
    payload: bytes  # b"" for a HEAD


class ProxyObserver:
    """Metrics and spans of the pull-through cache, for the plane that has them on.

    Metrics (each labelled with `upstream`): `lading_proxy_requests_total{outcome}` (metadata
    plane: hit, miss, revalidation, stale), `lading_proxy_upstream_seconds{method,status}` (upstream
    latency, both planes) and `lading_proxy_upstream_bytes_total` (blob bytes fetched, blob plane).
    Spans: `proxy.upstream <METHOD>` around every upstream request when tracing is on."""

    def __init__(self, metrics: Any = None, tracer: Any = None) -> None:
        self._tracer = tracer
        self._outcomes = self._latency = self._bytes = None
        if metrics is not None:
            self._outcomes = metrics.counter("lading_proxy_requests_total",
                                             "pull-through cache answers by outcome", ("upstream", "outcome"))
            self._latency = metrics.histogram("lading_proxy_upstream_seconds",
                                              "upstream request latency (to the response head)",
                                              ("upstream", "method", "status"))
            self._bytes = metrics.counter("lading_proxy_upstream_bytes_total",
                                          "blob bytes fetched from the upstream", ("upstream",))

    def outcome(self, upstream: str, outcome: str) -> None:
        if self._outcomes is not None:
            self._outcomes.labels(upstream, outcome).inc()

    def fetched_bytes(self, upstream: str, count: int) -> None:
        if self._bytes is not None:
            self._bytes.labels(upstream).inc(count)

    def span(self, upstream: str, method: str, path: str) -> Any:
        if self._tracer is None:
            return contextlib.nullcontext()
        return self._tracer.start_as_current_span(
            f"proxy.upstream {method}", attributes={"lading.upstream": upstream, "url.path": path})

    def latency(self, upstream: str, method: str, status: str, seconds: float) -> None:
        if self._latency is not None:
            self._latency.labels(upstream, method, status).observe(seconds)


class Upstream:
    """One configured upstream: maps local names to its names and makes its HTTP calls."""

    def __init__(self, settings: RegistryAccessSettings, *, offline: bool = False,
                 observer: ProxyObserver | None = None, actions: str = "pull") -> None:
        import httpx  # optional: only a plane with upstreams configured loads it

        self._httpx = httpx
        self.settings = settings
        self.name = settings.name
        self.prefix = getattr(settings, "prefix", "")
        self.url = settings.url.rstrip("/")
        # The token scope's actions: "pull" for a cache, "pull,push" for a replication target.
        self._actions = actions
        self.offline = offline
        self.observer = observer or ProxyObserver()
        verify: Any = True
        if settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        timeout = httpx.Timeout(settings.timeout_seconds)
        # Redirects (a CDN for blobs) are followed; httpx drops Authorization on another origin.
        self._client = httpx.AsyncClient(verify=verify, timeout=timeout, follow_redirects=True,
                                         headers={"user-agent": "lading-proxy"})
        self._limit = asyncio.Semaphore(settings.max_concurrent_requests)
        self._bodies = UpstreamBodies(ca_file=settings.ca_file, timeout_seconds=settings.timeout_seconds,
                                      concurrency=settings.max_concurrent_requests, user_agent="lading-proxy")
        # Read once, at start-up (the composition root), never on the event loop.
        self._secret = settings.secret() if settings.username else ""
        self._tokens: dict[str, tuple[str, float]] = {}
        self._basic = False

    def describe(self) -> str:
        return f"upstream {self.name!r} ({self.url})"

    # -- names ------------------------------------------------------------------------------------

    def remote_name(self, repository: str) -> str | None:
        """The upstream's name for local `repository`, or None when it is not under this prefix."""
        if not repository.startswith(self.prefix):
            return None
        remote = repository[len(self.prefix):]
        if getattr(self.settings, "docker_hub_library", False) and "/" not in remote:
            remote = f"library/{remote}"
        return remote

    def check_allowed(self, repository: str, remote: str) -> None:
        """Raises DENIED when `remote` matches none of the allowed repository patterns."""
        patterns = getattr(self.settings, "allowed_repositories", [])
        if patterns and not any(fnmatch.fnmatchcase(remote, p.replace("**", "*")) for p in patterns):
            raise RegistryError(
                ErrorKind.DENIED,
                f"repository {repository!r} is not among those {self.describe()} may serve "
                f"(allowed: {', '.join(patterns)})",
                {"upstream": self.name, "name": repository},
            )

    # -- calls ------------------------------------------------------------------------------------

    async def head_manifest(self, remote: str, reference: str) -> UpstreamManifest:
        response = await self._send("HEAD", remote, f"/v2/{remote}/manifests/{reference}",
                                    {"accept": MANIFEST_ACCEPT})
        self._raise_for(response, remote, reference, manifest=True)
        return UpstreamManifest(response.headers.get("docker-content-digest", ""),
                                _media_type(response.headers), b"")

    async def get_manifest(self, remote: str, reference: str) -> UpstreamManifest:
        response = await self._send("GET", remote, f"/v2/{remote}/manifests/{reference}",
                                    {"accept": MANIFEST_ACCEPT})
        self._raise_for(response, remote, reference, manifest=True)
        if len(response.content) > MAX_MANIFEST_BYTES:
            raise self._failed(f"manifest {reference} of {remote} is {len(response.content)} bytes, over the "
                               f"{MAX_MANIFEST_BYTES}-byte limit")
        return UpstreamManifest(response.headers.get("docker-content-digest", ""),
                                _media_type(response.headers), response.content)

    async def list_tags(self, remote: str) -> list[str]:
        """Every tag of `remote` upstream (following `Link` pages)."""
        tags: list[str] = []
        path = f"/v2/{remote}/tags/list?n=1000"
        for _ in range(1000):
            response = await self._send("GET", remote, path, {})
            self._raise_for(response, remote, "tags/list", manifest=True)
            try:
                tags.extend(response.json().get("tags") or [])
            except ValueError:
                raise self._failed(f"its tag list of {remote} is not JSON") from None
            link = response.headers.get("link", "")
            if not link.startswith("<"):
                return tags
            path = link[1:link.index(">")]
        return tags

    async def head_blob(self, remote: str, digest: str) -> int:
        """The blob's size on the upstream (-1 if it did not say). BLOB_UNKNOWN naming the
        upstream when it has no such blob there; UPSTREAM_FAILED when it failed."""
        response = await self._send("HEAD", remote, f"/v2/{remote}/blobs/{digest}", {})
        self._raise_for(response, remote, digest, manifest=False)
        return int(response.headers.get("content-length", "-1"))

    @asynccontextmanager
    async def open_blob(self, remote: str, digest: str) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """(size or -1, the body's chunks) of the upstream's blob; holds a concurrency slot while
        open. Errors while streaming leave as UPSTREAM_FAILED. The body is read in threads
        (services/common/upstream_bodies.py), and the chunks can be fed to a consumer there
        (services/common/thread_chunks.py); the auth challenge is answered as for other calls."""
        async with self._limit:
            path = f"/v2/{remote}/blobs/{digest}"
            response = await self._open_body(remote, path)
            complete = False
            try:
                if response.status != 200:
                    self._raise_for_status(response.status, remote, digest, manifest=False)
                length = int(response.headers.get("content-length", "-1"))

                def read() -> bytes:  # in one of the bodies' threads
                    nonlocal complete
                    try:
                        chunk = self._bodies.read_blocking(response)
                    except BodyError as error:
                        raise self._failed(f"the body of blob {digest} of {remote} broke off: {error}") from None
                    if chunk:
                        self.observer.fetched_bytes(self.name, len(chunk))
                    else:
                        complete = True
                    return chunk

                yield length, ThreadChunks(read, self._bodies.run)
            finally:
                self._bodies.close(response, complete=complete)

    async def _open_body(self, remote: str, path: str) -> Any:
        """The upstream's response to GET `path` (its body unread), after answering a 401's
        challenge once, as `_send_authorized` does."""
        if self.offline:
            raise self._failed("the cache is offline (proxy.offline), no upstream request is made")
        for attempt in range(2):
            headers = {}
            authorization = self._authorization(remote)
            if authorization:
                headers["authorization"] = authorization
            started = time.monotonic()
            with self.observer.span(self.name, "GET", path):
                try:
                    response = await self._bodies.open(self.url + path, headers)
                except BodyError as error:
                    self.observer.latency(self.name, "GET", "error", time.monotonic() - started)
                    raise self._failed(f"GET {path}: {error}") from None
            self.observer.latency(self.name, "GET", str(response.status), time.monotonic() - started)
            if response.status != 401 or attempt:
                return response
            challenge = response.headers.get("www-authenticate", "")
            self._bodies.close(response, complete=False)
            if not await self._answer(challenge, remote):
                return response
        raise AssertionError("unreachable")

    async def send(self, method: str, remote: str, path_or_url: str, *, headers: dict[str, str] | None = None,
                   content: Any = None) -> Any:
        """One request to this registry (a path under its URL, or an absolute URL it handed out,
        such as an upload Location), answering its auth challenge as for pulls. The response is
        returned whatever its status; UPSTREAM_FAILED when it could not be sent. A streamed
        `content` cannot be sent twice: make a request that gets the challenge first."""
        async with self._limit:
            return await self._send_authorized(method, remote, path_or_url, dict(headers or {}), False,
                                               content=content)

    async def aclose(self) -> None:
        await self._client.aclose()
        self._bodies.shutdown()

    # -- plumbing ---------------------------------------------------------------------------------

    def _failed(self, what: str) -> RegistryError:
        return RegistryError(ErrorKind.UPSTREAM_FAILED, f"{self.describe()} failed: {what}",
                             {"upstream": self.name})

    def _raise_for(self, response: Any, remote: str, reference: str, *, manifest: bool) -> None:
        self._raise_for_status(response.status_code, remote, reference, manifest=manifest)

    def _raise_for_status(self, status: int, remote: str, reference: str, *, manifest: bool) -> None:
        if status == 200:
            return
        if status == 404:
            kind = ErrorKind.MANIFEST_UNKNOWN if manifest else ErrorKind.BLOB_UNKNOWN
            what = "manifest" if manifest else "blob"
            raise RegistryError(kind, f"{self.describe()} has no {what} {reference} in {remote}",
                                {"upstream": self.name, "name": remote, "reference": reference})
        if status in (401, 403):
            raise self._failed(f"it refused access to {remote} (HTTP {status}); check the upstream's "
                               "credentials in [[proxy.upstreams]]")
        if status == 429:
            raise self._failed(f"it is rate-limiting this registry (HTTP 429) for {remote}")
        raise self._failed(f"HTTP {status} for {reference} of {remote}")

    async def _send(self, method: str, remote: str, path: str, headers: dict[str, str], *,
                    stream: bool = False, limited: bool = True) -> Any:
        if self.offline:
            raise self._failed("the cache is offline (proxy.offline), no upstream request is made")
        if limited:
            async with self._limit:
                return await self._send_authorized(method, remote, path, headers, stream)
        return await self._send_authorized(method, remote, path, headers, stream)

    async def _send_authorized(self, method: str, remote: str, path: str, headers: dict[str, str],
                               stream: bool, content: Any = None) -> Any:
        url = path if path.startswith(("http://", "https://")) else self.url + path
        for attempt in range(2):
            request_headers = dict(headers)
            authorization = self._authorization(remote)
            if authorization:
                request_headers["authorization"] = authorization
            started = time.monotonic()
            try:
                with self.observer.span(self.name, method, path):
                    request = self._client.build_request(method, url, headers=request_headers, content=content)
                    response = await self._client.send(request, stream=stream)
            except self._httpx.HTTPError as error:
                self.observer.latency(self.name, method, "error", time.monotonic() - started)
                raise self._failed(f"{method} {path}: {type(error).__name__}: {_plain(error)}") from None
            self.observer.latency(self.name, method, str(response.status_code), time.monotonic() - started)
            if response.status_code != 401 or attempt:
                return response
            challenge = response.headers.get("www-authenticate", "")
            if stream:
                await response.aclose()
            if not await self._answer(challenge, remote):
                return response
        raise AssertionError("unreachable")

    def _authorization(self, remote: str) -> str:
        token = self._tokens.get(remote)
        if token is not None and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        if self._basic:
            pair = f"{self.settings.username}:{self._secret}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        return ""

    async def _answer(self, challenge: str, remote: str) -> bool:
        """Prepares credentials for `challenge`; False when there is nothing to answer it with."""
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not self.settings.username or self._basic:
                return False
            self._basic = True
            return True
        if scheme != "bearer":
            return False
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.get("realm")
        if not realm:
            return False
        query = {"scope": f"repository:{remote}:{self._actions}"}
        if params.get("service"):
            query["service"] = params["service"]
        auth = None
        if self.settings.username:
            auth = self._httpx.BasicAuth(self.settings.username, self._secret)
        try:
            answer = await self._client.get(realm, params=query, auth=auth)
        except self._httpx.HTTPError as error:
            raise self._failed(f"its token endpoint did not answer: {type(error).__name__}") from None
        if answer.status_code != 200:
            raise self._failed(f"its token endpoint refused a pull token for {remote} (HTTP {answer.status_code}); "
                               "check the upstream's credentials in [[proxy.upstreams]]")
        try:
            body = answer.json()
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError):
            token, lifetime = None, 0.0
        if not token:
            raise self._failed("its token endpoint answered without a token")
        self._tokens[remote] = (token, time.monotonic() + max(lifetime - 10, 1))
        return True


def _media_type(headers: Any) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip()


def _plain(error: BaseException) -> str:
    # httpx error texts carry the URL at most (never our headers); keep them short.
    return str(error)[:200]


class Upstreams:
    """Every configured upstream, looked up by local repository name or by upstream name."""

    def __init__(self, settings: ProxySettings, observer: ProxyObserver | None = None) -> None:
        self.settings = settings
        self.observer = observer or ProxyObserver()
        self._by_name = {u.name: Upstream(u, offline=settings.offline, observer=self.observer)
                         for u in settings.upstreams}

    @classmethod
    def build(cls, settings: ProxySettings, *, metrics: Any = None, tracer: Any = None) -> Upstreams | None:
        """None when no upstream is configured (nothing is imported then). `metrics` (a
        services.common.metrics.Metrics) and `tracer`: see ProxyObserver."""
        return cls(settings, ProxyObserver(metrics, tracer)) if settings.upstreams else None

    @property
    def all(self) -> Sequence[Upstream]:
        return list(self._by_name.values())

    def named(self, name: str) -> Upstream:
        upstream = self._by_name.get(name)
        if upstream is None:
            raise RegistryError(ErrorKind.INTERNAL, f"no upstream named {name!r} is configured on this plane; "
                                "every plane needs the same [[proxy.upstreams]]")
        return upstream

    def for_repository(self, repository: str) -> tuple[Upstream, str] | None:
        """(upstream, its name for `repository`) when a prefix covers it; None otherwise."""
        for upstream in self._by_name.values():
            remote = upstream.remote_name(repository)
            if remote is not None:
                return upstream, remote
        return None

    def refuse_writes(self, repository: str) -> None:
        """Raises UNSUPPORTED (405) for a repository an upstream serves: its content comes from there."""
        found = self.for_repository(repository)
        if found is not None:
            upstream, remote = found
            raise RegistryError(
                ErrorKind.UNSUPPORTED,
                f"repository {repository!r} is a pull-through cache of {upstream.describe()} "
                f"({remote}); push to the upstream instead",
                {"upstream": upstream.name, "name": repository},
            )

    async def aclose(self) -> None:
        for upstream in self._by_name.values():
            await upstream.aclose()
