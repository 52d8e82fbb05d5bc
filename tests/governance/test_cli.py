"""The governance commands as an operator runs them (`lading immutable ...`, `lading tag
history|restore`, `lading audit`, `lading quota`, `lading retention`, `lading signature`, `lading vuln`), once, on the SQLite
stack: the behaviour behind them is tested on both stores
over gRPC (test_immutable_tags.py, test_tag_history.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.governance.conftest import Lading
from tests.support import oci


def test_governance_commands(store: str, client: httpx.Client, lading: Lading, tmp_path: Path) -> None:
    if store != "sqlite":
        pytest.skip("the CLI only translates; its store-specific behaviour is tested over gRPC on both stores")
    first, second = oci.image(1, layer_size=512), oci.image(1, layer_size=512)
    lading("immutable", "add", "cli-rule", "--repository", "cli/*", "--tag", "v*")
    assert "cli-rule\trepositories=cli/*\ttags=v*\tby lading-admin" in lading("immutable", "list").stdout
    oci.push(client, "cli/app", first, "v1")
    oci.push(client, "cli/app", second)

    refused = lading("tag", "delete", "cli/app", "v1", ok=False)
    assert refused.returncode == 1 and "rule 'cli-rule'" in refused.stderr and "immutable" in refused.stderr
    granted = lading("immutable", "override", "cli/app", "v1", "--reason", "rebuild").stdout
    assert "may override rule cli-rule once" in granted

    restored = lading("tag", "restore", "cli/app", "v1", "--to", second.digest).stdout
    assert restored.strip() == f"cli/app:v1 restored {second.digest}"
    shown = lading("tag", "history", "cli/app", "v1").stdout.splitlines()
    assert shown[0].split() == ["TIME", "ACTION", "ACTOR", "OLD", "->", "NEW"]
    assert shown[1].split()[1:] == ["restore+override", "lading-admin", first.digest, "->", second.digest]
    assert shown[2].split()[1:] == ["push", "anonymous", "-", "->", first.digest]
    assert lading("immutable", "remove", "cli-rule").stdout.strip() == "removed immutable rule cli-rule"
    missing = lading("quota", "remove", "no-such-quota", ok=False)
    assert (missing.returncode, missing.stdout.strip()) == (1, "no quota no-such-quota")

    quota = lading("quota", "set", "cli-q", "--namespace", "cli", "--limit", "1MiB").stdout
    assert quota.startswith("quota cli-q: repositories 'cli/*', used ") and quota.strip().endswith("of 1.0 MiB")
    lading("retention", "set", "cli-ret", "--repository", "cli/*", "--keep-last", "1", "--untagged-after", "7d")
    plan = lading("retention", "plan").stdout.splitlines()
    assert plan[-1] == "would delete: 0 tag(s), 0 manifest(s), 0 B (GC frees the bytes)"  # one tag, kept

    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "cosign.pub").write_bytes(key)
    said = lading("signature", "require", "cli-sig", "--repository", "cli-signed/*", "--type", "cosign",
                  "--key", str(tmp_path / "cosign.pub")).stdout
    assert said.strip() == "signature policy cli-sig: repositories 'cli-signed/*' need a cosign signature, verified " \
                           "with 1 key(s)"
    lading("vuln", "require", "cli-vuln", "--repository", "cli-scanned/*", "--severity", "high", "--max-age", "7d",
           "--allow", "CVE-2024-3094")
    assert "cli-vuln\trepositories=cli-scanned/*\tseverity=high\tmax-age=604800s\tallow=CVE-2024-3094" in lading(
        "vuln", "list").stdout

    audit = lading("audit", "--repository", "cli/app", "--actor", "lading-admin").stdout.splitlines()
    assert audit[0].split() == ["TIME", "ACTOR", "ACTION", "OUTCOME", "TARGET"]
    rows = [line.split()[1:4] for line in audit[1:]]
    assert rows == [["lading-admin", "tag.restore", "ok"], ["lading-admin", "tag.override-used", "ok"],
                    ["lading-admin", "tag.override-grant", "ok"], ["lading-admin", "tag.delete", "denied"]]
    assert "reason=rebuild" in audit[3]
