"""A skopeo round trip the region tests share: an image and a multi-arch index copied into one
address and back out of another, byte-identical, digests preserved."""

from __future__ import annotations

from pathlib import Path

from tests.ha.test_replicas import skopeo
from tests.support.clients import require_binary
from tests.support.oci import Layout, Manifest, image, multi_arch_index, write_layout


def skopeo_round_trip(tmp_path: Path, repo: str, push_to: str, pull_from: str) -> None:
    """Pushes both images with skopeo to `push_to` (host:port), pulls them from `pull_from`, and
    checks every descriptor and blob."""
    binary = require_binary("skopeo", install_hint="apt-get install skopeo")
    images: dict[str, Manifest] = {
        "one": image(2, layer_size=64 * 1024),
        "multi": multi_arch_index((("amd64", "linux"), ("arm64", "linux")), layers=1),
    }
    work = tmp_path / repo.replace("/", "-")
    source = write_layout(work / "src", images)
    home = work / "home"
    home.mkdir(parents=True)
    for tag, manifest in images.items():
        extra = ["--all"] if manifest.children else []
        skopeo(binary, home, "copy", "--dest-tls-verify=false", "--preserve-digests", *extra,
               f"oci:{source}:{tag}", f"docker://{push_to}/{repo}:{tag}")
        destination = work / f"dst-{tag}"
        skopeo(binary, home, "copy", "--src-tls-verify=false", "--preserve-digests", *extra,
               f"docker://{pull_from}/{repo}:{tag}", f"oci:{destination}:{tag}")
        pulled = Layout(destination)
        assert pulled.descriptor_for(tag)["digest"] == manifest.digest
        for blob in manifest.all_blobs():
            assert pulled.blob(blob.digest) == blob.data, f"{tag}: blob {blob.digest} differs"
