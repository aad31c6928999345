"""The gRPC contract (proto/), compiled by grpcio-tools' protoc when a test needs it: the method
paths of its descriptor set, and Python stubs generated into a directory of the caller's (the
session's temporary directory: nothing generated is committed)."""

from __future__ import annotations

import importlib
import sys
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

from outside_tools import REPO_ROOT

PROTO_ROOT = REPO_ROOT / "proto"
PROTOS = ("recommendations/v1/recommendations.proto",)


def _protoc(args: list[str], proto_root: Path, protos: tuple[str, ...]) -> None:
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        pytest.fail("grpcio-tools is missing: pip install -r tests/deploy/requirements.txt "
                    "-r tests/mesh/requirements.txt (cargo xtask test installs both)", pytrace=False)
    include = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    code = protoc.main(["protoc", f"-I{proto_root}", f"-I{include}", *args, *protos])
    if code != 0:
        raise RuntimeError(f"protoc could not compile {protos} (exit {code})")


@cache
def grpc_methods(proto_root: Path = PROTO_ROOT, protos: tuple[str, ...] = PROTOS) -> frozenset[str]:
    """Every gRPC method path (/package.Service/Method) of the protos, read from the
    FileDescriptorSet that protoc compiles from them."""
    from google.protobuf import descriptor_pb2

    with tempfile.TemporaryDirectory(prefix="descriptor-") as tmp:
        out = Path(tmp) / "set.binpb"
        _protoc(["--include_imports", f"--descriptor_set_out={out}"], proto_root, protos)
        descriptors = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return frozenset(f"/{f.package}.{s.name}/{m.name}" if f.package else f"/{s.name}/{m.name}"
                     for f in descriptors.file for s in f.service for m in s.method)


def generate_stubs(out: Path, proto: str = PROTOS[0]) -> tuple[ModuleType, ModuleType]:
    """The messages (`*_pb2`) and the gRPC stubs (`*_pb2_grpc`) of one proto of the contract,
    generated into `out` and imported from there (`out` goes on sys.path: the generated modules
    import each other by package)."""
    out.mkdir(parents=True, exist_ok=True)
    _protoc([f"--python_out={out}", f"--grpc_python_out={out}"], PROTO_ROOT, (proto,))
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    module = proto.removesuffix(".proto").replace("/", ".")
    return importlib.import_module(f"{module}_pb2"), importlib.import_module(f"{module}_pb2_grpc")
