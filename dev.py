#!/usr/bin/env python3
"""Developer entry point: one command each for the demo, the test suite and the chores.

    python3 dev.py demo     run nodes syncing on the embedded defaults
    python3 dev.py test     lint, type-check, check the gencode, run every test
    python3 dev.py lint     only ruff, ruff format --check, mypy and the gencode check
    python3 dev.py fmt      format the tree with ruff
    python3 dev.py bench    run every benchmark under benchmarks/ (JSON on stdout);
                            `bench NAME [args]` runs benchmarks/NAME.py alone
    python3 dev.py regen    regenerate the protobuf gencode

Needs only Python >= 3.11: the first run creates ``.venv`` beside this file and installs the exact
versions of ``requirements/lock.txt`` into it (and the package itself, editable). It is rebuilt
when the lock file or ``pyproject.toml`` change. Extra arguments after ``test`` go to pytest.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
LOCK = ROOT / "requirements" / "lock.txt"
STAMP = VENV / ".mvds-lock-stamp"
PROTOS = [
    "src/mvds_node/sync/proto/mvds.proto",
    "src/mvds_node/remotelog/proto/remotelog.proto",
    "src/mvds_node/remotelog/proto/cas.proto",
    "src/mvds_node/remotelog/proto/ns.proto",
]


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def _say(message: str) -> None:
    print(f"dev.py: {message}", file=sys.stderr, flush=True)


def _run(*argv: str | Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run([str(a) for a in argv], cwd=ROOT, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"dev.py: failed ({result.returncode}): {' '.join(map(str, argv))}")


def _wanted_stamp() -> str:
    digest = hashlib.sha256()
    for path in (LOCK, ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Create or refresh ``.venv`` so it holds exactly the locked versions."""
    wanted = _wanted_stamp()
    if STAMP.exists() and STAMP.read_text() == wanted and _bin("python").exists():
        return
    if VENV.exists():
        _say("dependencies changed; rebuilding .venv")
        shutil.rmtree(VENV)
    _say("creating .venv and installing requirements/lock.txt (first run only)")
    venv.EnvBuilder(with_pip=True).create(VENV)
    pip: list[str | Path] = [_bin("python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    _run(*pip, "install", "-r", LOCK)
    _run(*pip, "install", "--no-deps", "--no-build-isolation", "-e", ".")
    STAMP.write_text(wanted)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{_bin('python').parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def regen(out: Path) -> None:
    _run(
        _bin("python"),
        "-m",
        "grpc_tools.protoc",
        "-Isrc",
        f"--python_out={out}",
        f"--mypy_out={out}",
        *PROTOS,
        env=_env(),
    )


def check_gencode() -> None:
    """Regenerate the protobuf code into a scratch folder; fail if it differs from the commit."""
    with tempfile.TemporaryDirectory() as scratch:
        regen(Path(scratch))
        stale = []
        for proto in PROTOS:
            stem = proto.removeprefix("src/").removesuffix(".proto")
            for suffix in ("_pb2.py", "_pb2.pyi"):
                fresh = Path(scratch) / f"{stem}{suffix}"
                committed = ROOT / "src" / f"{stem}{suffix}"
                if not committed.exists() or not filecmp.cmp(fresh, committed, shallow=False):
                    stale.append(str(committed.relative_to(ROOT)))
        if stale:
            raise SystemExit(
                f"dev.py: gencode out of date: {', '.join(stale)} (run: python3 dev.py regen)"
            )


def lint() -> None:
    env = _env()
    _say("ruff check")
    _run(_bin("ruff"), "check", ".", env=env)
    _say("ruff format --check")
    _run(_bin("ruff"), "format", "--check", ".", env=env)
    _say("mypy --strict")
    _run(_bin("mypy"), env=env)
    _say("gencode check")
    check_gencode()


SERVICES = {"redis-server": "redis-server", "nats-server": "nats-server"}
"""Servers the backend tests run for real: binary -> Debian package."""


def ensure_services() -> None:
    """Install the servers the backend tests start (Debian packages), if missing and we can."""
    missing = [
        pkg
        for binary, pkg in SERVICES.items()
        if not shutil.which(binary) and not Path(f"/usr/sbin/{binary}").exists()
    ]
    if not missing:
        return
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        _say(f"missing {', '.join(missing)}: install them to run the backend tests")
        return
    _say(f"installing {', '.join(missing)} (Debian packages)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, capture_output=True)
        _run(*install, env=env)


JSIPFS = ROOT / "services" / "jsipfs"


def ensure_jsipfs() -> bool:
    """Install js-ipfs (the IPFS node of the IPFS backend tests) from the committed lock file."""
    if (JSIPFS / "node_modules" / ".bin" / "jsipfs").exists():
        return True
    if not shutil.which("npm"):
        _say("npm is missing: the IPFS backend tests need Node.js and npm")
        return False
    _say("installing js-ipfs (npm ci, about 30 s)")
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=JSIPFS,
        check=False,
    )
    return result.returncode == 0


def test(pytest_args: list[str]) -> None:
    lint()
    ensure_services()
    have_ipfs = ensure_jsipfs()
    _say("pytest")
    env = _env()
    if have_ipfs and all(shutil.which(b) or Path(f"/usr/sbin/{b}").exists() for b in SERVICES):
        env["MVDS_REQUIRE_SERVICES"] = "1"  # installed: a backend test may not skip
    _run(_bin("python"), "-m", "pytest", *pytest_args, env=env)


def main(argv: list[str]) -> None:
    command = argv[0] if argv else "help"
    rest = argv[1:]
    if command in ("help", "-h", "--help"):
        print(__doc__)
        return
    if command not in ("demo", "test", "lint", "fmt", "bench", "regen"):
        raise SystemExit(f"dev.py: unknown command {command!r} (try: python3 dev.py help)")
    ensure_venv()
    env = _env()
    if command == "demo":
        _run(_bin("python"), "-m", "mvds_node.demo", *rest, env=env)
    elif command == "test":
        test(rest)
    elif command == "lint":
        lint()
    elif command == "fmt":
        _run(_bin("ruff"), "check", "--fix", ".", env=env)
        _run(_bin("ruff"), "format", ".", env=env)
    elif command == "bench":
        scripts = sorted((ROOT / "benchmarks").glob("*.py"))
        if rest and not rest[0].startswith("-"):  # `bench NAME [args]`: only that one
            scripts = [s for s in scripts if s.stem == rest[0]]
            if not scripts:
                raise SystemExit(f"dev.py: no benchmark named {rest[0]!r} in benchmarks/")
            rest = rest[1:]
        for script in scripts:
            _say(f"benchmark {script.name}")
            _run(_bin("python"), script, *rest, env=env)
    elif command == "regen":
        regen(ROOT / "src")


if __name__ == "__main__":
    main(sys.argv[1:])
