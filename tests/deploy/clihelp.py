"""What a binary accepts, read from its clap `--help`: each `[env: NAME=…]` and its `[default: …]`."""

from __future__ import annotations

import re
from pathlib import Path

from outside_tools import run

BINARIES = ("recommendations", "marketplace")

# An option's block starts at its flag line ("  -p, --grpc-port <PORT>" or "      --grpc-port …").
_OPTION_START = re.compile(r"^\s{0,8}(?:-\w,\s+)?--[\w-]+", re.MULTILINE)
_ENV = re.compile(r"\[env:\s*([A-Za-z_][A-Za-z0-9_]*)=[^\]]*\]")
_DEFAULT = re.compile(r"\[default:\s*([^\]]*)\]")

# name -> default (None when the option has none)
Settings = dict[str, str | None]


def parse_help(text: str) -> Settings:
    """The environment variables an option reads, with the option's default."""
    starts = [m.start() for m in _OPTION_START.finditer(text)] + [len(text)]
    settings: Settings = {}
    for begin, end in zip(starts, starts[1:], strict=False):
        block = text[begin:end]
        env = _ENV.search(block)
        if env:
            default = _DEFAULT.search(block)
            settings[env.group(1)] = default.group(1).strip() if default else None
    return settings


def binary_help(bin_dir: Path, name: str) -> str:
    """`NAME --help`, run with an empty environment so clap shows no value taken from ours."""
    path = bin_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"no binary {path}: build it (cargo build -p {name}) or fix BOOKSHOP_BIN_DIR")
    result = run([str(path), "--help"], env={}, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{path} --help exited {result.returncode}:\n{result.stderr}")
    return result.stdout
