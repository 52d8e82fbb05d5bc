"""Regenerates the committed gRPC code next to the proto sources.

`python -m services.common.protogen` writes `*_pb2.py`, `*_pb2_grpc.py` and `*.pyi` beside each
`protos/lading/**/v1/*.proto`. `generate(out_dir)` is also used by the freshness test, which
generates into a scratch folder and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2] / "protos"


def proto_sources() -> list[Path]:
    return sorted(PROTO_ROOT.glob("lading/**/*.proto"))


def generate(out_dir: Path) -> None:
    """Runs protoc (from grpcio-tools) over every proto source into `out_dir`."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(PROTO_ROOT)) for p in proto_sources()],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see the messages above")


def main() -> int:
    generate(PROTO_ROOT)
    for package in {p.parent for p in proto_sources()}:
        for parent in [package, *package.parents]:
            if parent == PROTO_ROOT:
                break
            (parent / "__init__.py").touch()
    print(f"regenerated {len(proto_sources())} proto files under {PROTO_ROOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
