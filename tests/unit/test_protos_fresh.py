"""The committed generated gRPC code must match what `make protos` would write today."""

from __future__ import annotations

from pathlib import Path

from services.common.protogen import PROTO_ROOT, generate, proto_sources


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "protoc produced nothing"
    assert len(generated) == 3 * len(proto_sources())
    stale = [str(rel) for rel in generated if (PROTO_ROOT / rel).read_bytes() != (tmp_path / rel).read_bytes()]
    assert not stale, f"generated code is stale, run `make protos`: {stale}"
