"""Vulnerability report policies (issue 16, item 5) on SQLite and PostgreSQL: SARIF and CycloneDX
reports attached with oras (oras-py) as referrers; pulls refused at or above a severity (the
message names the policy and the worst finding), allowed for allow-listed ids, refused without a
report younger than the maximum age; the newest report counts; platform images follow their index."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import oras.oci
import oras.provider
import pytest

from tests.governance.conftest import Policies
from tests.support import oci
from tests.support.stack import Stack

SARIF = "application/sarif+json"
CYCLONEDX = "application/vnd.cyclonedx+json"


def sarif(rule: str, score: str) -> dict:
    return {"version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "Trivy", "rules": [{"id": rule, "properties": {"security-severity": score}}]}},
        "results": [{"ruleId": rule, "level": "error", "message": {"text": "vulnerable package"}}]}]}


def cyclonedx(*findings: tuple[str, str]) -> dict:
    return {"bomFormat": "CycloneDX", "specVersion": "1.5", "vulnerabilities": [
        {"id": ident, "ratings": [{"severity": severity}]} for ident, severity in findings]}


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """oras-py only pushes files under the working directory, so chdir there."""
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(previous)


def attach(registry: oras.provider.Registry, stack: Stack, repo: str, subject: oci.Manifest, media_type: str,
           document: dict, workdir: Path, name: str) -> None:
    """`oras attach`: the report as the one layer of an artifact whose subject is the image."""
    (workdir / name).write_text(json.dumps(document))
    (workdir / "config.json").write_text("{}")
    response = registry.push(
        target=f"{stack.hostport}/{repo}:report-{name.split('.')[0]}", files=[f"{name}:{media_type}"],
        manifest_config=f"config.json:{media_type}",
        subject=oras.oci.Subject(mediaType=subject.media_type, digest=subject.digest, size=subject.size), quiet=True)
    assert response.status_code == 201, response.text
    # The report is reached through its subject; its own tag goes (oras-py needs one to push).
    registry_tag = f"report-{name.split('.')[0]}"
    with httpx.Client(base_url=stack.base_url) as http:
        assert http.delete(f"/v2/{repo}/manifests/{registry_tag}").status_code == 202


def require(policies: Policies, name: str, **fields: object) -> None:
    pb = policies.pb
    policies.stub.SetVulnerabilityPolicy(pb.SetVulnerabilityPolicyRequest(
        policy=pb.VulnerabilityPolicy(name=name, repository_pattern="vuln/*", **fields), context=policies.context()),
        timeout=30)


def refusal(client: httpx.Client, repo: str, reference: str) -> str:
    response = oci.get_manifest(client, repo, reference)
    oci.assert_error(response, 403, "DENIED")
    return response.json()["errors"][0]["message"]


def test_vulnerability_policies(stack: Stack, client: httpx.Client, policies: Policies, workdir: Path) -> None:
    repo = "vuln/app"
    registry = oras.provider.Registry(hostname=stack.hostport, insecure=True)
    clean, critical, unscanned = (oci.image(1, layer_size=256) for _ in range(3))
    children = [oci.image(1, layer_size=256) for _ in range(2)]
    index = oci.index(children)
    for image, tag in ((clean, "clean"), (critical, "critical"), (unscanned, "unscanned"), (index, "multi")):
        oci.push(client, repo, image, tag)
    attach(registry, stack, repo, clean, CYCLONEDX, cyclonedx(("CVE-2023-0001", "low")), workdir, "clean.json")
    attach(registry, stack, repo, critical, SARIF, sarif("CVE-2024-3094", "10.0"), workdir, "critical.sarif")
    attach(registry, stack, repo, index, CYCLONEDX, cyclonedx(), workdir, "multi.json")

    require(policies, "scanned", severity="high", max_age_seconds=3600)
    for reference in ("clean", "multi", children[0].digest):
        assert oci.get_manifest(client, repo, reference).status_code == 200, reference
    message = refusal(client, repo, "critical")
    assert "vulnerability policy 'scanned'" in message and "CVE-2024-3094 (critical)" in message, message
    assert "has no vulnerability report" in refusal(client, repo, "unscanned")
    assert oci.get_manifest(client, repo, critical.digest, method="HEAD").status_code == 403
    assert oci.get_manifest(client, "novuln/app", "x").status_code == 404   # not covered

    # The allow-list; then a newer report of the clean image with a high finding counts.
    require(policies, "scanned", severity="high", max_age_seconds=3600, allow=["CVE-2024-3094"])
    assert oci.get_manifest(client, repo, "critical").status_code == 200
    attach(registry, stack, repo, clean, SARIF, sarif("CVE-2024-9999", "7.5"), workdir, "clean2.sarif")
    assert "CVE-2024-9999 (high)" in refusal(client, repo, "clean")
    require(policies, "scanned", severity="critical", max_age_seconds=3600)
    assert oci.get_manifest(client, repo, "clean").status_code == 200

    # Only the age: once every report is older than a second.
    time.sleep(1.1)
    require(policies, "scanned", max_age_seconds=1)
    assert "is older than 1 s" in refusal(client, repo, "clean")

    pb = policies.pb
    with pytest.raises(Exception, match="would refuse nothing"):
        policies.stub.SetVulnerabilityPolicy(pb.SetVulnerabilityPolicyRequest(
            policy=pb.VulnerabilityPolicy(name="x", repository_pattern="vuln/*"), context=policies.context()))
    assert policies.stub.DeleteVulnerabilityPolicy(pb.DeleteVulnerabilityPolicyRequest(
        name="scanned", context=policies.context())).deleted
    assert oci.get_manifest(client, repo, "unscanned").status_code == 200
