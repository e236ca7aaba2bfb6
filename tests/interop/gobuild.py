"""Build the Go MVDS drivers of the interop tests into a cache outside the repository.

Each directory under ``tests/interop/go/`` is one Go module: a small driver of ours around one
version of the Go MVDS code, fetched from the Go module proxy and checked against the committed
``go.sum``. The binary goes to ``~/.cache/mvds-node/go-interop-<name>-<hash>/driver`` (or under
``$XDG_CACHE_HOME``), keyed by a hash of the driver's sources, ``go.mod``, ``go.sum`` and the Go
version, so only the first run on a machine builds it.

``python3 tests/interop/gobuild.py`` builds every driver (``dev.py test`` runs it as its
``go-interop`` phase); the tests call :func:`driver` and build what is missing themselves.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "go"
DRIVERS = ("vacp2p-v0.0.23", "vacp2p-v0.0.25")
"""One per Go module version tested against (see docs/interop.md)."""

BUILD_TIMEOUT = 600.0
"""Seconds one build may take (the first one downloads the module and its dependencies)."""


class GoMissing(Exception):
    """No ``go`` command on this machine."""


class BuildFailed(Exception):
    """``go build`` failed (its output is the message)."""


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mvds-node"


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise GoMissing("the Go toolchain (go) is not installed: the Go MVDS interop tests need it")
    return go


def _key(name: str, go: str) -> str:
    source = SOURCES / name
    digest = hashlib.sha256()
    for path in sorted(source.iterdir()):
        if path.is_file() and (path.suffix == ".go" or path.name in ("go.mod", "go.sum")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    version = subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    digest.update(version.encode())
    return digest.hexdigest()[:16]


def driver(name: str) -> Path:
    """The built driver ``name`` (one of :data:`DRIVERS`), building it first if needed.

    Raises:
        GoMissing: no Go toolchain.
        BuildFailed: the build failed (no module proxy, a go.sum mismatch, a compile error).
    """
    go = _go()
    target = _cache_root() / f"go-interop-{name}-{_key(name, go)}" / "driver"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # go.sum is committed: fail rather than change go.mod or go.sum, and never use a vendor tree.
    env["GOFLAGS"] = "-mod=readonly -buildvcs=false -trimpath"
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / "driver"
        try:
            result = subprocess.run(
                [go, "build", "-o", str(built), "."],
                cwd=SOURCES / name,
                env=env,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BuildFailed(f"go build of {name} took over {BUILD_TIMEOUT:.0f} s") from exc
        if result.returncode != 0:
            raise BuildFailed(f"go build of {name} failed:\n{result.stderr.strip()}")
        os.replace(built, target)  # atomic: a concurrent run sees the whole binary or none
    return target


def main() -> int:
    try:
        for name in DRIVERS:
            print(f"gobuild: {name}: {driver(name)}", file=sys.stderr, flush=True)
    except GoMissing as exc:
        print(f"gobuild: {exc}; the interop tests will skip", file=sys.stderr)
        return 0
    except BuildFailed as exc:
        print(f"gobuild: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
