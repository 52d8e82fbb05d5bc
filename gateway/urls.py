"""Location URLs the gateway hands out.

Relative paths by default (the spec allows them and they survive any proxy that keeps paths);
absolute `scheme://host/path` when a trusted proxy supplied X-Forwarded-Proto/-Host
(`gateway.middleware.ForwardedHeadersMiddleware` records that base in the scope).
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.types import Scope

from gateway.middleware import BASE_URL_SCOPE_KEY


def absolute(scope: Scope, path: str) -> str:
    """`path` (already URL-safe) made absolute when the request came through a trusted proxy."""
    base = scope.get(BASE_URL_SCOPE_KEY)
    return f"{base}{path}" if base else path


def blob_path(repository: str, digest: str) -> str:
    return f"/v2/{repository}/blobs/{digest}"


def upload_path(repository: str, upload_id: str) -> str:
    return f"/v2/{repository}/blobs/uploads/{quote(upload_id, safe='')}"


def manifest_path(repository: str, reference: str) -> str:
    return f"/v2/{repository}/manifests/{reference}"
