"""Generate Python stubs from ``.proto`` contracts, or check they are current.

``python -m cellwork.rpc.protogen PROTO_ROOT OUT_ROOT [--check]`` compiles every
``.proto`` under PROTO_ROOT with grpcio-tools (messages, gRPC stubs and mypy
stubs) and writes a typed cellwork client module per proto with services
(``x_client.py``, see ``cellwork.rpc.clientgen``) into OUT_ROOT, mirroring the
package path (``proto/a/v1/x.proto`` becomes
``OUT_ROOT/a/v1/x_pb2.py``). With ``--check`` it compiles into a temporary
directory and exits 1 if any generated file differs from what is committed.
Needs the ``dev`` extra (grpcio-tools, mypy-protobuf).
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path
from typing import Any

from cellwork.rpc.clientgen import CLIENT_SUFFIX, client_module_path, render_client_module

GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi", CLIENT_SUFFIX)


def generate(proto_root: Path, out_root: Path) -> list[Path]:
    """Compile every proto under ``proto_root`` into ``out_root``; return the files written."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    if not protos:
        return []
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    bindir = Path(sys.executable).parent
    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{proto_root}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {protos}")
    _write_clients(protoc, proto_root, include, out_root, protos)
    written = []
    for proto in protos:
        relative_dir = Path(proto).parent
        package_dir = out_root / relative_dir
        for parent in [relative_dir, *relative_dir.parents]:
            init = out_root / parent / "__init__.py"
            if parent != Path(".") and not init.exists():
                init.touch()
        stem = Path(proto).stem
        written += [package_dir / f"{stem}{suffix}" for suffix in GENERATED_SUFFIXES]
    return [p for p in written if p.exists()]


def _write_clients(
    protoc: Any, proto_root: Path, include: str, out_root: Path, protos: list[str]
) -> None:
    from google.protobuf import descriptor_pb2

    with tempfile.TemporaryDirectory() as tmp:
        descriptors = Path(tmp) / "set.pb"
        args = [
            "protoc",
            f"-I{proto_root}",
            f"-I{include}",
            f"--descriptor_set_out={descriptors}",
            "--include_imports",
            "--include_source_info",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc could not describe {protos}")
        files = list(descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes()).file)
    for file in files:
        if file.name not in protos:
            continue
        source = render_client_module(file, files)
        if source is not None:
            (out_root / client_module_path(file.name)).write_text(source)


def check(proto_root: Path, out_root: Path) -> list[str]:
    """Return the generated files that are missing or differ from a fresh build."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(proto_root, Path(tmp))
        stale = []
        for path in fresh:
            committed = out_root / path.relative_to(Path(tmp))
            if not committed.exists() or not filecmp.cmp(path, committed, shallow=False):
                stale.append(str(committed))
        return stale


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    proto_root, out_root = Path(args[0]), Path(args[1])
    if "--check" in argv:
        stale = check(proto_root, out_root)
        if stale:
            print("generated stubs are out of date; run `make proto`:", file=sys.stderr)
            for name in stale:
                print(f"  {name}", file=sys.stderr)
            return 1
        print("generated stubs are up to date")
        return 0
    for path in generate(proto_root, out_root):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
