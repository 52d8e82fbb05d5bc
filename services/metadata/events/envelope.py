"""Events in CNCF Distribution's notification format (docs: shared/reference/docker-notifications.md).

Pure functions: build one event (a dict) and wrap events in an envelope. Targets follow
Distribution: push/pull/mount carry the descriptor (mediaType, digest, size, length), repository,
url (when the request's host is known) and tag; a manifest delete carries digest + repository
only; a tag delete carries repository + tag; a repository delete carries repository only.

Changes the registry makes on its own behalf carry an internal request (`internal_request`): the
collector's deletes name the actor `lading-gc`, the admin CLI's `lading-admin`, the pull-through
cache's evictions `lading-proxy-evict` (in `actor.name` and `request.useragent`), with an empty
address and host.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
# The envelope's Content-Type by `EventEndpointSettings.envelope_version` (the bodies are the same).
MEDIA_TYPES = {"v1": MEDIA_TYPE, "v2": "application/vnd.docker.distribution.events.v2+json"}
# Distribution reports blob pushes/mounts with this media type (it does not know the layer's).
BLOB_MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The HTTP request behind a change, as the gateway reported it (every field may be empty)."""

    request_id: str = ""
    addr: str = ""
    host: str = ""
    method: str = ""
    user_agent: str = ""
    actor: str = ""
    scheme: str = "http"
    # "scheme://host" the client addressed through a trusted proxy; "" = scheme://host.
    base_url: str = ""


# `actor.name` of events for changes the registry makes itself, not an HTTP client.
GC_ACTOR = "lading-gc"
ADMIN_ACTOR = "lading-admin"
# Evictions of the pull-through cache: they free local space and are never replicated as deletes.
PROXY_EVICT_ACTOR = "lading-proxy-evict"


def internal_request(actor: str, request_id: str = "") -> RequestInfo:
    """The request behind a change made by `lading gc` / the collector (GC_ACTOR), an admin
    command (ADMIN_ACTOR) or the pull-through cache's eviction (PROXY_EVICT_ACTOR): method DELETE, the actor as user agent, a fresh id unless given."""
    return RequestInfo(request_id=request_id or str(uuid.uuid4()), method="DELETE", user_agent=actor, actor=actor)


@dataclass(frozen=True, slots=True)
class Source:
    """This registry node: `addr` (host name) and an id drawn at process start."""

    addr: str
    instance_id: str


def target_url(request: RequestInfo, repository: str, kind: str, digest: str) -> str | None:
    """`<base>/v2/<repo>/<manifests|blobs>/<digest>`, the base being the one a trusted proxy
    named (as Distribution builds it from X-Forwarded-Proto/-Host), else `<scheme>://<host>`;
    None without either."""
    if not digest or not (request.base_url or request.host):
        return None
    base = request.base_url or f"{request.scheme or 'http'}://{request.host}"
    return f"{base}/v2/{repository}/{kind}/{digest}"


def build_event(
    action: str,
    target: dict[str, Any],
    request: RequestInfo,
    source: Source,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One event. `target` already holds the fields its action carries (see the module doc)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    actor: dict[str, str] = {"name": request.actor} if request.actor else {}
    return {
        "id": str(uuid.uuid4()),
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "action": action,
        "target": target,
        "request": {
            "id": request.request_id,
            "addr": request.addr,
            "host": request.host,
            "method": request.method,
            "useragent": request.user_agent,
        },
        "actor": actor,
        "source": {"addr": source.addr, "instanceID": source.instance_id},
    }


def descriptor_target(
    *, media_type: str, digest: str, size: int, repository: str, url: str | None, tag: str | None = None,
    from_repository: str | None = None,
) -> dict[str, Any]:
    """The target of push, pull and mount events (`length` duplicates `size`, as Distribution does)."""
    target: dict[str, Any] = {
        "mediaType": media_type, "digest": digest, "size": size, "length": size, "repository": repository,
    }
    if from_repository:
        target["fromRepository"] = from_repository
    if url:
        target["url"] = url
    if tag:
        target["tag"] = tag
    return target


def envelope(bodies: list[str]) -> bytes:
    """`{"events": [...]}` from events already serialised as JSON (as stored in the outbox)."""
    return b'{"events":[' + b",".join(body.encode() for body in bodies) + b"]}"


def dumps(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode()
