"""The cache in front of an upstream that wants the Docker token flow: a second Lading in token
mode. The cache answers its `WWW-Authenticate: Bearer` challenge with a pull token fetched with
the configured account (password from a file); the cache itself runs in token mode too, so
pulling through it needs `pull` on the local repository. The upstream's password never shows in
the cache's answers or logs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.auth.keys import generate_signing_key_pem
from tests.auth.support import AuthStack, DockerAuth, write
from tests.proxy.helpers import PREFIX, UPSTREAM
from tests.support import oci

pytestmark = pytest.mark.clients

ADMIN = ("admin", "admin-secret-1")
MIRROR = ("mirror", "mirror-password-7f3a9c")  # the cache's account on the upstream
READER = ("reader", "reader-secret-1")
OUTSIDER = ("outsider", "outsider-secret-1")


def token_env(keys: Path, name: str, **extra: str) -> dict[str, str]:
    write(keys / f"{name}.pem", generate_signing_key_pem())
    return {
        "LADING_AUTH__MODE": "token",
        "LADING_AUTH__SIGNING_KEY_FILE": str(keys / f"{name}.pem"),
        "LADING_AUTH__SERVICE": name,
        "LADING_AUTH__ISSUER": name,
        "LADING_AUTH__BOOTSTRAP_ADMIN": ADMIN[0],
        "LADING_AUTH__BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1],
        "LADING_AUTH__BCRYPT_ROUNDS": "4",
        **extra,
    }


@dataclass
class Pair:
    upstream: AuthStack
    cache: AuthStack


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("token-upstream")
    keys = root / "keys"
    keys.mkdir()
    with AuthStack(root / "upstream", env=token_env(keys, "upstream")) as upstream:
        upstream.add_user(*MIRROR, ("mirrored/*", "pull"), ("replicated/*", "pull,push"))
        secret = root / "upstream-password"
        secret.write_text(MIRROR[1] + "\n")
        config = root / "cache.toml"
        config.write_text(
            "[[proxy.upstreams]]\n"
            f'name = "{UPSTREAM}"\nurl = "{upstream.base_url}"\nprefix = "{PREFIX}"\n'
            f'username = "{MIRROR[0]}"\npassword_file = "{secret}"\n'
            'allowed_repositories = ["mirrored/*"]\n'
            # The other direction: what is pushed into own/* here is replicated to the upstream.
            "[events]\ndelivery_interval_seconds = 0.2\n"
            "[[replication.rules]]\n"
            f'name = "back"\nurl = "{upstream.base_url}"\nrepositories = ["own/*"]\n'
            f'target_prefix = "replicated/"\nusername = "{MIRROR[0]}"\npassword_file = "{secret}"\n'
            "backoff_base_seconds = 0.2\nbackoff_cap_seconds = 1\n"
        )
        with AuthStack(root / "cache", env=token_env(keys, "cache", LADING_CONFIG_FILE=str(config))) as cache:
            cache.add_user(*READER, (f"{PREFIX}*", "pull"))
            cache.add_user(*OUTSIDER)
            yield Pair(upstream, cache)


def test_pulls_through_an_upstream_in_token_mode_with_local_access_control(pair: Pair) -> None:
    image = oci.image(2)
    with httpx.Client(base_url=pair.upstream.base_url, auth=DockerAuth(ADMIN), timeout=30) as admin:
        oci.push(admin, "mirrored/app", image, "v1")
        oci.push(admin, "private/app", image, "v1")
    repo = f"{PREFIX}mirrored/app"
    with httpx.Client(base_url=pair.cache.base_url, auth=DockerAuth(READER), timeout=30,
                      follow_redirects=True) as reader:
        oci.assert_pulls_back(reader, repo, "v1", image)
        # Outside the allowed repositories: refused, naming the upstream, nothing asked upstream.
        refused = oci.get_manifest(reader, f"{PREFIX}private/app", "v1")
        oci.assert_error(refused, 403, "DENIED")
        assert UPSTREAM in refused.json()["errors"][0]["message"]
        answers = [oci.get_manifest(reader, repo, "v1"), reader.get(f"/v2/{repo}/blobs/{image.blobs[0].digest}")]
    # Pull through the cache needs pull on the local repository: a user without it, or anonymous, is refused.
    with httpx.Client(base_url=pair.cache.base_url, auth=DockerAuth(OUTSIDER), timeout=30) as outsider:
        assert oci.get_manifest(outsider, repo, "v1").status_code in (401, 403)
    assert httpx.get(f"{pair.cache.base_url}/v2/{repo}/manifests/v1").status_code == 401
    # The upstream password never reaches a client or a log.
    for response in answers:
        assert MIRROR[1] not in str(response.headers) and MIRROR[1].encode() not in response.content
    assert MIRROR[1] not in pair.cache.log()
    assert MIRROR[1] not in pair.cache.process.log(tail=10_000_000)


def test_replicates_to_a_lading_in_token_mode(pair: Pair) -> None:
    index = oci.multi_arch_index(layers=1)
    with httpx.Client(base_url=pair.cache.base_url, auth=DockerAuth(ADMIN), timeout=30,
                      follow_redirects=True) as admin:
        oci.push(admin, "own/app", index, "v1")
    with httpx.Client(base_url=pair.upstream.base_url, auth=DockerAuth(ADMIN), timeout=30,
                      follow_redirects=True) as upstream:
        deadline = time.monotonic() + 30
        while oci.get_manifest(upstream, "replicated/own/app", "v1").status_code != 200:
            assert time.monotonic() < deadline, "not replicated within 30 s"
            time.sleep(0.2)
        oci.assert_pulls_back(upstream, "replicated/own/app", "v1", index)
        for child in index.children:
            oci.assert_pulls_back(upstream, "replicated/own/app", child.digest, child)
    assert MIRROR[1] not in pair.cache.process.log(tail=10_000_000)
