"""The pull-through cache's pieces without a network: settings checks, local → upstream names,
allowed repositories, refusals of writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.errors import ErrorKind, RegistryError
from services.common.settings import ProxySettings, ProxyUpstreamSettings
from services.common.upstream import Upstreams


def _upstream(**fields: object) -> dict[str, object]:
    return {"name": "hub", "url": "https://registry-1.docker.io", "prefix": "docker.io/", **fields}


def test_upstreams_need_distinct_names_and_prefixes_that_do_not_nest() -> None:
    with pytest.raises(ValidationError, match="distinct"):
        ProxySettings(upstreams=[_upstream(), _upstream(prefix="other/")])
    with pytest.raises(ValidationError, match="inside prefix"):
        ProxySettings(upstreams=[_upstream(), _upstream(name="nested", prefix="docker.io/library/")])
    for bad in ({"prefix": "no-slash"}, {"url": "ftp://x"}, {"url": "https://host/path"}, {"name": "Bad Name"}):
        with pytest.raises(ValidationError):
            ProxyUpstreamSettings(**_upstream(**bad))


async def test_local_names_map_to_upstream_names() -> None:
    upstreams = Upstreams(ProxySettings(upstreams=[
        _upstream(docker_hub_library=True),
        _upstream(name="ghcr", url="https://ghcr.io", prefix="ghcr.io/", allowed_repositories=["myorg/*"]),
    ]))
    try:
        hub, remote = upstreams.for_repository("docker.io/alpine")
        assert (hub.name, remote) == ("hub", "library/alpine")  # Docker Hub's rule
        assert upstreams.for_repository("docker.io/bitnami/redis")[1] == "bitnami/redis"
        ghcr, remote = upstreams.for_repository("ghcr.io/myorg/tool")
        assert (ghcr.name, remote) == ("ghcr", "myorg/tool")  # no library/ rule here
        ghcr.check_allowed("ghcr.io/myorg/tool", remote)
        with pytest.raises(RegistryError) as caught:
            ghcr.check_allowed("ghcr.io/else/tool", "else/tool")
        assert caught.value.kind is ErrorKind.DENIED and "ghcr" in caught.value.message
        assert upstreams.for_repository("local/app") is None
        upstreams.refuse_writes("local/app")
        with pytest.raises(RegistryError) as caught:
            upstreams.refuse_writes("docker.io/alpine")
        assert caught.value.kind is ErrorKind.UNSUPPORTED and caught.value.kind.http_status == 405
        assert "hub" in caught.value.message and "https://registry-1.docker.io" in caught.value.message
    finally:
        await upstreams.aclose()


async def test_the_password_file_wins_and_secrets_are_not_printed(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-the-file\n")
    settings = ProxyUpstreamSettings(**_upstream(username="u", password="inline", password_file=secret))
    assert settings.secret() == "from-the-file"
    assert "inline" not in repr(settings) and "from-the-file" not in repr(settings)


async def test_offline_makes_no_request() -> None:
    upstreams = Upstreams(ProxySettings(offline=True, upstreams=[_upstream(url="http://127.0.0.1:9")]))
    try:
        upstream, remote = upstreams.for_repository("docker.io/x/y")
        with pytest.raises(RegistryError) as caught:
            await upstream.head_manifest(remote, "latest")
        assert caught.value.kind is ErrorKind.UPSTREAM_FAILED and "offline" in caught.value.message
    finally:
        await upstreams.aclose()
