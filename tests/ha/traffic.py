"""Pushing and pulling under failure, and telling a clean failure from a dirty one.

A registry replica dying may fail a request; what it must never do is fail it dirtily. Here a
failure is CLEAN when it is a connection error (the process died under the request) or an HTTP
error other than 500 with the OCI error envelope (`{"errors": [{"code": ...}]}`), the kind a client
retries; anything else (a 500, an error without that body, a 2xx with wrong bytes) is DIRTY and
fails the test at once. `Traffic` counts what happened, for the report.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

from tests.support.oci import ACCEPT_ALL, Blob, Manifest, sha256, with_digest

T = TypeVar("T")


class CleanFailure(Exception):
    """A failure a retry may fix: `reason` is the OCI code with the status, or the connection error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DirtyFailure(AssertionError):
    """A failure no client should ever see (a 500, a non-OCI error body, corrupted bytes)."""


def oci_codes(response: httpx.Response) -> list[str] | None:
    """The OCI error codes of `response`, or None when its body is not the OCI error envelope."""
    try:
        body = response.json()
    except ValueError:
        return None
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return None
    codes = [error.get("code") for error in errors if isinstance(error, dict)]
    return codes if codes and all(isinstance(code, str) and code.isupper() for code in codes) else None


def expect(response: httpx.Response, *statuses: int) -> httpx.Response:
    """Returns `response` when its status is one of `statuses`; else raises Clean/DirtyFailure."""
    if response.status_code in statuses:
        return response
    where = f"{response.request.method} {response.request.url.path}"
    codes = oci_codes(response)
    if response.status_code == 500 or codes is None or response.status_code < 400:
        raise DirtyFailure(f"{where}: {response.status_code} {response.text[:400]!r}")
    raise CleanFailure(f"{response.status_code} {'/'.join(codes)}")


def _call(send: Callable[[], httpx.Response], *statuses: int) -> httpx.Response:
    try:
        response = send()
    except httpx.TransportError as error:
        raise CleanFailure(type(error).__name__) from error
    return expect(response, *statuses)


def push_blob(client: httpx.Client, repo: str, blob: Blob) -> None:
    started = _call(lambda: client.post(f"/v2/{repo}/blobs/uploads/"), 202)
    location = started.headers["location"]
    _call(lambda: client.put(with_digest(location, blob.digest), content=blob.data,
                             headers={"content-type": "application/octet-stream"}), 201)


def push_image(client: httpx.Client, repo: str, manifest: Manifest, tag: str) -> None:
    """Pushes every blob (children first for an index), then the manifest by `tag`."""
    for child in manifest.children:
        push_image(client, repo, child, child.digest)
    for blob in manifest.blobs:
        push_blob(client, repo, blob)
    _call(lambda: client.put(f"/v2/{repo}/manifests/{tag}", content=manifest.payload,
                             headers={"content-type": manifest.media_type}), 201)


def pull_and_verify(client: httpx.Client, repo: str, reference: str, manifest: Manifest) -> None:
    """GETs the manifest and every blob; raises DirtyFailure on any byte that differs."""
    got = _call(lambda: client.get(f"/v2/{repo}/manifests/{reference}", headers={"accept": ACCEPT_ALL}), 200)
    if got.content != manifest.payload:
        raise DirtyFailure(f"manifest {repo}:{reference} came back different ({sha256(got.content)})")
    for child in manifest.children:
        pull_and_verify(client, repo, child.digest, child)
    for blob in manifest.blobs:
        data = _call(lambda blob=blob: client.get(f"/v2/{repo}/blobs/{blob.digest}"), 200).content
        if data != blob.data:
            raise DirtyFailure(f"blob {blob.digest} of {repo}:{reference} came back different ({sha256(data)})")


@dataclass
class Traffic:
    """Counters shared by client threads (thread-safe)."""

    pushes: int = 0
    pulls: int = 0
    retried_pushes: int = 0
    retried_pulls: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, attribute: str, reason: str | None = None) -> None:
        with self._lock:
            setattr(self, attribute, getattr(self, attribute) + 1)
            if reason is not None:
                self.failures[reason] += 1

    def figures(self) -> dict[str, object]:
        return {
            "pushes": self.pushes, "pulls": self.pulls, "retried_pushes": self.retried_pushes,
            "retried_pulls": self.retried_pulls, "clean_failures": dict(self.failures.most_common()),
        }


def with_retries(action: Callable[[], T], *, traffic: Traffic, retried: str, attempts: int = 40,
                 pause: float = 0.25) -> T:
    """Runs `action` until it succeeds; every CleanFailure counts one retry (DirtyFailure propagates).

    Raises the last CleanFailure after `attempts` tries."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except CleanFailure as failure:
            traffic.count(retried, failure.reason)
            if attempt == attempts:
                raise
            time.sleep(pause)
    raise AssertionError("unreachable")
