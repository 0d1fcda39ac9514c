"""Regenerate the committed protobuf modules from ``proto/mt5fleet/v1/*.proto``.

protoc names generated modules after the .proto path (``mt5fleet.v1.common_pb2``), but the
code is installed as ``mt5fleet.proto.v1``; the import lines are rewritten to match, the way
tools such as protoletariat do. Run ``python -m mt5fleet.proto.codegen`` after editing a
.proto file; ``tests/test_proto_codegen.py`` fails when the committed output drifts.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
SOURCE_DIR = PROTO_ROOT / "mt5fleet" / "v1"
OUTPUT_DIR = PROTO_ROOT / "v1"
_IMPORT_LINE = re.compile(r"^from mt5fleet\.v1 import ", re.MULTILINE)
_PACKAGE_DOC = '"""Generated protobuf modules of package mt5fleet.v1. Do not edit."""\n'


def proto_sources() -> list[Path]:
    return sorted(SOURCE_DIR.glob("*.proto"))


def generate(output_dir: Path = OUTPUT_DIR) -> list[Path]:
    """Run protoc on every source and write the rewritten modules into ``output_dir``."""
    import grpc_tools
    from grpc_tools import protoc  # dev-only dependency

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as raw:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={raw}",
            f"--pyi_out={raw}",
            *(str(p.relative_to(PROTO_ROOT)) for p in proto_sources()),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        generated = sorted((Path(raw) / "mt5fleet" / "v1").iterdir())
        output_dir.mkdir(parents=True, exist_ok=True)
        for stale in output_dir.glob("*_pb2.py*"):
            stale.unlink()
        written = []
        for path in generated:
            target = output_dir / path.name
            target.write_text(_IMPORT_LINE.sub("from mt5fleet.proto.v1 import ", path.read_text()))
            written.append(target)
    (output_dir / "__init__.py").write_text(_PACKAGE_DOC)
    return written


def main() -> int:
    for path in generate():
        print(path.relative_to(PROTO_ROOT.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
