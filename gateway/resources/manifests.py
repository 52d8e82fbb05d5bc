"""`/v2/<name>/manifests/<reference>`: pull and existence check (end-3), push (end-7), delete (end-9).

GET and HEAD are the hot path: one metadata call each (HEAD asks for no payload), no other work,
and none at all while the gateway's ManifestCache holds a fresh answer (except GETs while the
metadata plane records pull events: each must reach it; gateway.manifest_cache:
changes through any gateway drop the repository's entries as soon as the change feed brings them,
and without the feed entries live `ttl_seconds`, 1 s by default; PUT/DELETE through this gateway
drop the repository's entries first).
Content addressed means immutable, so the ETag is the digest and If-None-Match answers 304:
that GET is no pull (no pull event; the metadata plane is told what the client holds), and one
the cache can answer from what it keeps for a HEAD needs no metadata call at all.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway import params, urls
from gateway.bodies import read_capped
from gateway.context import Gateway
from gateway.responses import empty, held_digests, not_modified
from services.common.digests import client_holds
from services.common.errors import ErrorKind


async def _fetch(request: Request, gateway: Gateway, *, omit_payload: bool) -> Response:
    repository = params.repository(request)
    reference = params.stored_reference(request.path_params["reference"])
    # A conditional GET of a manifest the client holds is answered 304, and is no pull (as in
    # Distribution, whose ETag check comes before the read that sends its pull notification).
    held = held_digests(request)
    cache = gateway.manifests
    manifest = None
    if cache is not None:
        # What a 304 needs (the digest) may be cached without the payload a 200 needs.
        manifest = cache.get(repository, reference, need_payload=not omit_payload and not held)
        if manifest is not None and not omit_payload and manifest.payload is None \
                and not client_holds(held, manifest.digest):
            manifest = None
    warning = ""
    if manifest is None:
        ticket = None if cache is None else cache.ticket()
        manifest = await gateway.metadata.get_manifest(repository, reference, omit_payload=omit_payload,
                                                       held_digests=held)
        # A stale answer of the pull-through cache (its upstream failed) is not kept here.
        warning = getattr(manifest, "warning", "")
        if cache is not None and not warning:
            # With pull events on, GETs must reach the metadata plane (each is a pull to record):
            # only what a HEAD (or a 304) needs is kept. Nor is the payload of a 304: the
            # metadata plane leaves it out.
            keep_payload = (not omit_payload and not getattr(manifest, "pull_events", False)
                            and not client_holds(held, manifest.digest))
            cache.put(repository, reference, digest=manifest.digest, media_type=manifest.media_type,
                      size=manifest.size, payload=manifest.payload if keep_payload else None, ticket=ticket)
    etag = f'"{manifest.digest}"'
    if client_holds(held, manifest.digest):
        return not_modified({"docker-content-digest": manifest.digest, "etag": etag})
    headers = {
        "docker-content-digest": manifest.digest,
        "etag": etag,
        "content-length": str(manifest.size),
    }
    if manifest.media_type:
        headers["content-type"] = manifest.media_type
    if warning:
        headers["warning"] = warning
    return Response(b"" if omit_payload else manifest.payload, headers=headers)


def _forget(gateway: Gateway, repository: str) -> None:
    """After a write through this gateway (whatever its outcome), its reads see the new state."""
    if gateway.manifests is not None:
        gateway.manifests.invalidate_repository(repository)


async def get(request: Request, gateway: Gateway) -> Response:
    return await _fetch(request, gateway, omit_payload=False)


async def head(request: Request, gateway: Gateway) -> Response:
    return await _fetch(request, gateway, omit_payload=True)


async def put(request: Request, gateway: Gateway) -> Response:
    repository = params.repository(request)
    reference = params.reference(request.path_params["reference"])
    payload = await read_capped(request, gateway.settings.max_manifest_bytes, ErrorKind.MANIFEST_TOO_LARGE)
    # The spec: registries SHOULD ignore Content-Type parameters.
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip()
    try:
        stored = await gateway.metadata.put_manifest(repository, reference, media_type, payload)
    finally:
        _forget(gateway, repository)
    headers = {
        "location": urls.absolute(request.scope, urls.manifest_path(repository, stored.digest)),
        "docker-content-digest": stored.digest,
    }
    if stored.subject_digest:
        headers["oci-subject"] = stored.subject_digest
    return empty(201, headers)


async def delete(request: Request, gateway: Gateway) -> Response:
    repository = params.repository(request)
    reference = params.stored_reference(request.path_params["reference"])
    try:
        await gateway.metadata.delete_manifest(repository, reference)
    finally:
        _forget(gateway, repository)
    return empty(202, {})
