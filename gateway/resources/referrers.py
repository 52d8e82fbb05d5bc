"""`/v2/<name>/referrers/<digest>?artifactType=` (end-12a/12b): an OCI image index of the manifests
whose subject is <digest>.

The spec forbids 404 here: an unknown repository or subject is an empty index. An invalid digest
is a 400.
"""

from __future__ import annotations

from typing import Any

from lading.common.v1 import common_pb2
from starlette.requests import Request
from starlette.responses import Response

from gateway import params
from gateway.context import Gateway
from gateway.pagination import next_link, parse_page, wants_link
from gateway.responses import json_response
from services.common.errors import ErrorKind, RegistryError

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"

_NOTHING_THERE = (ErrorKind.NAME_UNKNOWN, ErrorKind.MANIFEST_UNKNOWN)


def descriptor_json(descriptor: common_pb2.Descriptor) -> dict[str, Any]:
    """A descriptor as the index lists it; `artifactType` and `annotations` omitted when empty."""
    item: dict[str, Any] = {
        "mediaType": descriptor.media_type,
        "digest": descriptor.digest,
        "size": descriptor.size,
    }
    if descriptor.artifact_type:
        item["artifactType"] = descriptor.artifact_type
    if descriptor.annotations:
        item["annotations"] = dict(descriptor.annotations)
    return item


async def list_referrers(request: Request, gateway: Gateway) -> Response:
    repository = params.repository(request)
    subject = params.digest(request.path_params["digest"])
    artifact_type = request.query_params.get("artifactType", "")
    settings = gateway.settings
    page = parse_page(
        request.query_params, default_size=settings.default_page_size, max_size=settings.max_page_size
    )
    manifests: list[dict[str, Any]] = []
    has_more = False
    try:
        result = await gateway.metadata.list_referrers(repository, subject, artifact_type, page.to_proto())
        manifests = [descriptor_json(d) for d in result.referrers]
        has_more = result.page.has_more
    except RegistryError as error:
        if error.kind not in _NOTHING_THERE:
            raise
    headers = {}
    if artifact_type:
        headers["oci-filters-applied"] = "artifactType"
    if wants_link(page, has_more, len(manifests)):
        headers["link"] = next_link(
            f"/v2/{repository}/referrers/{subject}",
            page,
            manifests[-1]["digest"],
            {"artifactType": artifact_type},
        )
    body = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests}
    return json_response(body, headers=headers, media_type=INDEX_MEDIA_TYPE)
