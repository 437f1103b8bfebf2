"""Regenerate the Python protobuf modules in ``teamtalk_py/pb/IM/`` from ``proto/IM.*.proto``.

Run from anywhere with the project's interpreter::

    .venv/bin/python scripts/genproto.py

``protoc`` (from ``grpc_tools``) names the output after the ``.proto`` file, so
``IM.Login.proto`` becomes ``IM/Login_pb2.py`` and its import of ``IM.BaseDefine.proto``
becomes ``from IM import BaseDefine_pb2``. That top-level ``IM`` package does not exist
here, so the cross imports are rewritten to ``from teamtalk_py.pb.IM import ...``, and the
module name protoc hands to the message builder (``'IM.Login_pb2'``, which becomes each
class's ``__module__``) is rewritten to ``'teamtalk_py.pb.IM.Login_pb2'`` so that pickling
and reprs name the real module.

Each module gets a type stub beside it (``Login_pb2.pyi``, from mypy-protobuf's
``protoc-gen-mypy`` plugin, a test dependency), with the same cross-import rewrite, so
mypy knows every message's fields and every enum value.

:func:`generate` writes into any directory; ``tests/wire/test_proto.py`` uses it to prove the
committed modules and stubs match the ``.proto`` files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = REPO_ROOT / "proto"
PB_IM_DIR = REPO_ROOT / "teamtalk_py" / "pb" / "IM"
TARGET_PACKAGE = "teamtalk_py.pb.IM"

_CROSS_IMPORT = re.compile(r"^from IM import (\w+_pb2) as ", re.MULTILINE)
_BUILDER_MODULE = re.compile(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, )'IM\.(\w+_pb2)'")


def proto_files(proto_dir: Path = PROTO_DIR) -> list[Path]:
    """The ``IM.*.proto`` files of ``proto_dir``, sorted by name."""
    return sorted(proto_dir.glob("IM.*.proto"))


def rewrite_module_paths(source: str) -> str:
    """Move protoc's ``IM.X_pb2`` module paths (imports, builder name) under the package."""
    source = _CROSS_IMPORT.sub(rf"from {TARGET_PACKAGE} import \1 as ", source)
    source, found = _BUILDER_MODULE.subn(rf"\1'{TARGET_PACKAGE}.\2'", source)
    if found != 1:
        raise RuntimeError("protoc output changed: module name for the builder not found")
    return source


def rewrite_stub_imports(source: str) -> str:
    """Move a stub's ``from IM import X_pb2`` cross imports under the package."""
    return _CROSS_IMPORT.sub(rf"from {TARGET_PACKAGE} import \1 as ", source)


def mypy_plugin() -> Path:
    """mypy-protobuf's ``protoc-gen-mypy``, installed beside this interpreter."""
    found = Path(sys.executable).with_name("protoc-gen-mypy")
    if found.is_file():
        return found
    on_path = shutil.which("protoc-gen-mypy")
    if on_path is None:
        raise FileNotFoundError("protoc-gen-mypy not found: pip install -e '.[test]'")
    return Path(on_path)


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Generate every ``<Name>_pb2.py`` and its ``<Name>_pb2.pyi`` stub directly into
    ``out_dir``; return the paths written.

    ``out_dir`` must exist. Only ``*_pb2.py`` and ``*_pb2.pyi`` files are written;
    ``__init__.py`` files are maintained by hand.
    """
    protos = proto_files(proto_dir)
    if not protos:
        raise FileNotFoundError(f"no IM.*.proto files in {proto_dir}")
    with tempfile.TemporaryDirectory(prefix="genproto-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"--plugin=protoc-gen-mypy={mypy_plugin()}",
            f"--python_out={tmp}",
            f"--mypy_out={tmp}",
            *(p.name for p in protos),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"protoc failed ({result.returncode}):\n{result.stderr}")
        written: list[Path] = []
        for generated in sorted((Path(tmp) / "IM").glob("*_pb2.py*")):
            if generated.suffix == ".py":
                text = rewrite_module_paths(generated.read_text(encoding="utf-8"))
            elif generated.suffix == ".pyi":
                text = rewrite_stub_imports(generated.read_text(encoding="utf-8"))
            else:
                continue
            target = out_dir / generated.name
            target.write_text(text, encoding="utf-8", newline="\n")
            written.append(target)
    return written


def main() -> int:
    """Regenerate the committed modules and stubs; drop those with no ``.proto``."""
    PB_IM_DIR.mkdir(parents=True, exist_ok=True)
    written = generate(PB_IM_DIR)
    keep = {p.name for p in written}
    for stale in PB_IM_DIR.glob("*_pb2.py*"):
        if stale.name not in keep:
            stale.unlink()
            print(f"removed {stale.relative_to(REPO_ROOT)}")
    for path in written:
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
