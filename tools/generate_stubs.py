"""Regenerate the committed protobuf/gRPC stubs from proto/.

Usage: python tools/generate_stubs.py [OUT_DIR]

Stubs land next to the package (``milepost/v1/*_pb2.py``,
``milepost/inference/*_pb2.py``) so they import with no path rewriting.
tests/test_stubs.py regenerates into a temporary directory and fails when the
committed files differ.

The Open Inference Protocol's messages are package ``inference``, as on the wire, and so
are tritonclient's: both in protobuf's default pool is a "duplicate symbol" error at the
second import. Ours are built in a pool of their own (``OWN_POOL``), so that
``milepost.Client`` and ``tritonclient.grpc`` work in one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OWN_POOL = ("milepost/inference",)  # generated modules whose descriptors stay out of the default pool
DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for folder in OWN_POOL:
        for module in sorted((out_dir / folder).glob("*_pb2.py")):
            text = module.read_text()
            if DEFAULT_POOL not in text:
                raise SystemExit(f"{module}: protoc no longer writes {DEFAULT_POOL!r}; update OWN_POOL's rewrite")
            module.write_text(text.replace(
                DEFAULT_POOL, "POOL = _descriptor_pool.DescriptorPool()  # see tools/generate_stubs.py\n"
                "DESCRIPTOR = POOL.AddSerializedFile("))


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
