"""Writes predict_pb2.py and predict_pb2_grpc.py from predict.proto (grpcio-tools, a dev dependency).

Run `python -m {{ cookiecutter.package }}.serving.grpc.codegen` after editing the proto;
tests/test_grpc.py fails while the committed files differ from what this writes.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

HERE = Path(__file__).parent
PROTO = HERE / "predict.proto"
# protoc writes a top-level import into the stubs; inside a package it must be relative.
STUB_IMPORT = "import predict_pb2 as predict__pb2"


def generate(out_dir: Path) -> list[Path]:
    """The two modules, written into `out_dir`."""
    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"
    arguments = [
        "protoc",
        f"-I{HERE}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO),
    ]
    if protoc.main(arguments) != 0:
        raise RuntimeError(f"protoc could not compile {PROTO}")
    stub = out_dir / "predict_pb2_grpc.py"
    stub.write_text(stub.read_text().replace(STUB_IMPORT, f"from . {STUB_IMPORT}"))
    return [out_dir / "predict_pb2.py", stub]


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(f"wrote {path}")
