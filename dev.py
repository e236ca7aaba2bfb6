#!/usr/bin/env python3
"""Developer entry point: one command each for the demo, the test suite and the chores.

    python3 dev.py demo     run nodes syncing on the embedded defaults
    python3 dev.py test     lint, type-check, check the gencode, run every test
    python3 dev.py lint     only ruff, ruff format --check, mypy and the gencode check
    python3 dev.py fmt      format the tree with ruff
    python3 dev.py bench    run every benchmark under benchmarks/ (JSON on stdout);
                            `bench NAME [args]` runs benchmarks/NAME.py alone
    python3 dev.py regen    regenerate the protobuf gencode
    python3 dev.py fuzz     run every fuzz target under tests/fuzz for a while (JSON per target):
                            `fuzz [--seconds S | --total-seconds S] [--runs N] [--target T ...]`

Needs only Python >= 3.11: the first run creates ``.venv`` beside this file and installs the exact
versions of ``requirements/lock.txt`` into it (and the package itself, editable). It is rebuilt
when the lock file or ``pyproject.toml`` change. Extra arguments after ``test`` go to pytest.
``test`` ends with the time each of its phases took (also when one fails).
"""

from __future__ import annotations

import contextlib
import filecmp
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Iterator
from contextlib import contextmanager
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


_PHASES: list[tuple[str, float, str]] = []
"""(phase, seconds, outcome) of this run, in order, for the summary."""


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time one phase of the command for :func:`print_phases`."""
    start = time.monotonic()
    outcome = "failed"
    try:
        yield
        outcome = "ok"
    finally:
        _PHASES.append((name, time.monotonic() - start, outcome))


def print_phases() -> None:
    """The phases run so far and their times, on stderr (a short table)."""
    if not _PHASES:
        return
    total = sum(seconds for _, seconds, _ in _PHASES)
    width = max(len(name) for name, _, _ in _PHASES)
    lines = [f"  {name:<{width}}  {secs:7.1f} s  {outcome}" for name, secs, outcome in _PHASES]
    lines.append(f"  {'total':<{width}}  {total:7.1f} s")
    print("dev.py: time per phase\n" + "\n".join(lines), file=sys.stderr, flush=True)


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
    with phase("ruff check"):
        _run(_bin("ruff"), "check", ".", env=env)
    _say("ruff format --check")
    with phase("ruff format --check"):
        _run(_bin("ruff"), "format", "--check", ".", env=env)
    _say("mypy --strict")
    with phase("mypy --strict"):
        _run(_bin("mypy"), env=env)
    _say("gencode check")
    with phase("gencode check"):
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


KUBO_VERSION = "v0.43.1"
"""The Kubo release the IPFS backend tests run."""
KUBO_LIBP2P = "v0.50.0"
"""The go-libp2p release Kubo is built with (see :func:`ensure_kubo`)."""


class KuboBuildFailed(Exception):
    """Go is here but Kubo could not be built; the Kubo tests then fail (they would skip
    without Go)."""


def kubo_path() -> Path:
    """Where the Kubo binary is cached, one per version, outside the repository."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "mvds-node" / f"kubo-{KUBO_VERSION}" / "ipfs"


def ensure_kubo() -> None:
    """Build Kubo (the IPFS node of the IPFS backend tests) with Go, once per machine.

    ``go install github.com/ipfs/kubo/cmd/ipfs@v0.43.1`` refuses that module: its go.mod
    replaces go-libp2p by a fork that the Go module proxy does not serve (``go install`` never
    applies a replace). So this fetches Kubo's module source through the proxy, drops that one
    replace for go-libp2p v0.50.0 (the release with the quic-go and webtransport-go versions
    the fork was made for) and builds ``cmd/ipfs`` from it, into a scratch folder first and
    then into the cache by an atomic rename, so a build cut short leaves nothing behind.

    Raises:
        KuboBuildFailed: Go is installed but the build failed (its output is shown).
    """
    target = kubo_path()
    if target.exists():
        return
    go = shutil.which("go")
    if go is None:
        _say(f"Go is missing: the Kubo tests skip (Kubo {KUBO_VERSION} is built from source)")
        return
    _say(f"building Kubo {KUBO_VERSION} with Go into {target} (first run only; minutes)")
    module = f"github.com/ipfs/kubo@{KUBO_VERSION}"
    with tempfile.TemporaryDirectory(prefix="mvds-kubo-") as scratch:
        source = Path(scratch) / "kubo"
        nice = ["nice"] if shutil.which("nice") else []  # two shared cores: others go first
        steps: list[tuple[list[str], Path]] = [
            ([go, "mod", "download", "-json", module], Path(scratch)),
            ([go, "mod", "edit", "-dropreplace=github.com/libp2p/go-libp2p",
              f"-require=github.com/libp2p/go-libp2p@{KUBO_LIBP2P}"], source),
            ([*nice, go, "build", "-mod=mod", "-trimpath", "-o", str(Path(scratch) / "ipfs"),
              "./cmd/ipfs"], source),
        ]  # fmt: skip
        for argv, cwd in steps:
            result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                tail = (result.stderr or result.stdout).strip().splitlines()[-20:]
                step = " ".join(argv[argv.index(go) + 1 :][:2])
                _say(f"Kubo build failed at `go {step}`:\n" + "\n".join(tail))
                raise KuboBuildFailed(step)
            if "download" in argv:
                shutil.copytree(json.loads(result.stdout)["Dir"], source)
                for folder, _, files in os.walk(source):  # the module cache is read-only
                    for name in (folder, *(os.path.join(folder, f) for f in files)):
                        os.chmod(name, os.stat(name).st_mode | 0o200)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".ipfs-{os.getpid()}")
        shutil.copy2(Path(scratch) / "ipfs", partial)
        os.replace(partial, target)


def build_go_interop() -> None:
    """Build the Go MVDS drivers of tests/interop (cached under ~/.cache/mvds-node, keyed by
    their sources and go.sum: only the first run on a machine builds them; no Go, no build)."""
    _run(sys.executable, "tests/interop/gobuild.py")


FUZZ_TESTS = "tests/fuzz"
"""The fuzz targets' bounded run (tests/fuzz/test_fuzz.py): its own phase, so its time shows."""


def test(pytest_args: list[str]) -> None:
    lint()
    with phase("services install"):
        ensure_services()
    with phase("go-interop"):
        build_go_interop()
    with contextlib.suppress(KuboBuildFailed), phase("kubo build"):
        ensure_kubo()
    env = _env()
    if all(shutil.which(b) or Path(f"/usr/sbin/{b}").exists() for b in SERVICES):
        env["MVDS_REQUIRE_SERVICES"] = "1"  # installed: a backend test may not skip
    pytest: list[str | Path] = [_bin("python"), "-m", "pytest"]
    if pytest_args:  # the caller chose what to run: one phase
        _say("pytest")
        with phase("pytest"):
            _run(*pytest, *pytest_args, env=env)
        return
    _say("pytest (all but the fuzz targets)")
    with phase("pytest"):
        _run(*pytest, f"--ignore={FUZZ_TESTS}", env=env)
    _say("pytest tests/fuzz (every fuzz target, bounded)")
    with phase("pytest tests/fuzz"):
        _run(*pytest, FUZZ_TESTS, env=env)


def fuzz(args: list[str]) -> None:
    """Run fuzz targets as long as asked; one JSON line per target; exit 1 on a finding."""
    import argparse

    parser = argparse.ArgumentParser(prog="python3 dev.py fuzz")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, help="wall time per target (default 60)")
    budget.add_argument("--total-seconds", type=float, help="wall time for all, split evenly")
    parser.add_argument("--runs", type=int, help="new inputs per target (default: no bound)")
    parser.add_argument("--target", action="append", help="only this target (repeatable)")
    parser.add_argument("--max-findings", type=int, default=5, help="per target, then stop")
    parser.add_argument("--strict", action="store_true", help="stop on known findings too")
    options = parser.parse_args(args)
    env = _env()
    listed = subprocess.run(
        [_bin("python"), "-m", "tests.fuzz.run", "--list"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    targets = options.target or listed
    unknown = sorted(set(targets) - set(listed))
    if unknown:
        raise SystemExit(f"dev.py: no fuzz target {', '.join(unknown)} (have: {', '.join(listed)})")
    if options.total_seconds is not None:
        seconds = options.total_seconds / len(targets)
    else:
        seconds = options.seconds if options.seconds is not None else 60.0
    failed = []
    for target in targets:
        _say(f"fuzz {target} ({seconds:.0f} s)")
        argv: list[str | Path] = [_bin("python"), "-m", "tests.fuzz.run", target]
        argv += ["--seconds", str(seconds), "--max-findings", str(options.max_findings)]
        if options.runs is not None:
            argv += ["--runs", str(options.runs)]
        if options.strict:
            argv.append("--strict")
        if subprocess.run([str(a) for a in argv], cwd=ROOT, env=env, check=False).returncode:
            failed.append(target)
    if failed:
        raise SystemExit(f"dev.py: findings in {', '.join(failed)}")


def main(argv: list[str]) -> None:
    command = argv[0] if argv else "help"
    rest = argv[1:]
    if command in ("help", "-h", "--help"):
        print(__doc__)
        return
    if command not in ("demo", "test", "lint", "fmt", "bench", "regen", "fuzz"):
        raise SystemExit(f"dev.py: unknown command {command!r} (try: python3 dev.py help)")
    if command == "test":
        try:
            with phase("venv and install"):
                ensure_venv()
            test(rest)
        finally:
            print_phases()
        return
    ensure_venv()
    env = _env()
    if command == "demo":
        _run(_bin("python"), "-m", "mvds_node.demo", *rest, env=env)
    elif command == "fuzz":
        fuzz(rest)
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
