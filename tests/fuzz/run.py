"""Run one fuzz target in a subprocess: replay its seed corpus, then fuzz; print one JSON line.

Theory of operation
-------------------
Usage (from the repository root)::

    python -m tests.fuzz.run TARGET [--runs N] [--seconds S] [--max-findings K]
    python -m tests.fuzz.run --list

The parent (this module's :func:`main`) never imports atheris. It starts a worker, ``python -m
tests.fuzz.run --worker TARGET <libFuzzer flags>``, which imports ``tests/fuzz/fuzz_TARGET.py``
under atheris' instrumentation of ``mvds_node`` and hands its ``TestOneInput`` to libFuzzer.
libFuzzer first runs every file of ``tests/fuzz/corpus/TARGET/`` (the committed seeds), then
mutates: ``--runs`` bounds the inputs after the seeds, ``--seconds`` the wall time, whichever
comes first. New interesting inputs go to a scratch directory, never into the committed corpus.

An exception that escapes ``TestOneInput`` (one the decoder does not document), an input that
runs over :data:`INPUT_TIMEOUT` seconds, or one that takes over the memory limit is a
*finding*: libFuzzer writes the input to a scratch artifact directory and stops. The parent
records it (the input as hex, the last lines of the traceback) and, while time and
``--max-findings`` allow, starts the worker again so one finding does not end a long run. A
finding already known (:data:`KNOWN`, and ``--tolerate``: the start of its ``Type: message``
line) is counted instead, so that a reported bug does not stop the search for the next one;
``--strict`` stops on the known ones too.

The JSON line: ``{"target", "inputs", "seeds", "seconds", "findings": [...]}`` (and
``"tolerated": {line: count}`` with ``--tolerate``), where ``inputs`` counts every input run,
seeds included. The exit status is 1 if there was a finding.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]
HERE: Final = Path(__file__).resolve().parent
CORPUS: Final = HERE / "corpus"
INPUT_TIMEOUT: Final = 25
"""Seconds one input may take before libFuzzer calls it a hang (a finding)."""
RSS_LIMIT_MB: Final = 2048
"""Memory a worker may use before libFuzzer calls the input a memory blow-up (a finding)."""
KNOWN: Final[dict[str, tuple[str, ...]]] = {
    # Exceptions known to escape a decoder whose fix has not landed yet (docs/security.md,
    # "Findings"): "target": ("Type: message prefix", ...). They are counted under "tolerated",
    # not stopped on, unless --strict; the entry goes once the fix lands. None is open.
}
_TAIL_LINES: Final = 12
_HEX_BYTES: Final = 2048


def targets() -> list[str]:
    """Every target: the ``fuzz_<name>.py`` modules beside this file."""
    return sorted(p.stem.removeprefix("fuzz_") for p in HERE.glob("fuzz_*.py"))


def _tolerating(
    test: Callable[[bytes], None], known: tuple[str, ...], counts_path: Path
) -> Callable[[bytes], None]:
    """``test``, but an exception whose ``Type: message`` starts with one of ``known`` is counted
    (in ``counts_path``, rewritten at most once a second) instead of being a finding."""
    counts: dict[str, int] = {}
    written = [0.0]

    def one_input(data: bytes) -> None:
        try:
            test(data)
        except Exception as exc:
            line = f"{type(exc).__name__}: {exc}"
            prefix = next((k for k in known if line.startswith(k)), None)
            if prefix is None:
                raise
            counts[prefix] = counts.get(prefix, 0) + 1
            if time.monotonic() - written[0] >= 1.0 or counts[prefix] == 1:
                counts_path.write_text(json.dumps(counts))
                written[0] = time.monotonic()

    return one_input


def _worker(target: str, flags: list[str]) -> None:
    import importlib

    import atheris

    known = tuple(f.removeprefix("--tolerate=") for f in flags if f.startswith("--tolerate="))
    counts = [f.removeprefix("--counts=") for f in flags if f.startswith("--counts=")]
    flags = [f for f in flags if not f.startswith(("--tolerate=", "--counts="))]
    # Instrument the project only: coverage of the standard library and of the dependencies
    # would dilute the feedback and slow every input.
    with atheris.instrument_imports(include=["mvds_node"]):
        module = importlib.import_module(f"tests.fuzz.fuzz_{target}")
    test = module.TestOneInput
    if known and counts:
        test = _tolerating(test, known, Path(counts[0]))
    max_len = int(getattr(module, "MAX_LEN", 4096))
    atheris.Setup([sys.argv[0], f"-max_len={max_len}", *flags], test)
    atheris.Fuzz()


_DONE: Final = re.compile(rb"stat::number_of_executed_units:\s*(\d+)")
_STATUS: Final = re.compile(rb"^#(\d+)\s", re.MULTILINE)


def _executed(log: bytes) -> int:
    done = _DONE.findall(log)
    if done:
        return int(done[-1])
    status = _STATUS.findall(log)
    return int(status[-1]) if status else 0


def _finding(artifacts: Path, log: bytes, returncode: int) -> dict[str, Any]:
    files = sorted(artifacts.iterdir())
    kind = files[0].name.split("-", 1)[0] if files else f"exit-{returncode}"
    data = files[0].read_bytes() if files else b""
    text = log.decode(errors="replace")
    start = text.rfind("=== Uncaught Python exception: ===")
    tail = (text[start:] if start >= 0 else text).strip().splitlines()
    tail = [line for line in tail if not line.startswith(("MS:", "artifact_prefix", "Base64"))]
    return {
        "kind": kind,
        "input_hex": data[:_HEX_BYTES].hex(),
        "input_bytes": len(data),
        "traceback_tail": tail[:_TAIL_LINES] if start >= 0 else tail[-_TAIL_LINES:],
    }


def run_target(
    target: str,
    *,
    runs: int | None,
    seconds: float,
    max_findings: int = 1,
    tolerate: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Fuzz ``target`` in worker subprocesses; return the JSON-able summary.

    Args:
        runs: new inputs after the seeds (None: no bound but ``seconds``).
        seconds: wall-time bound of the whole run, worker start-up included.
        max_findings: stop after this many findings (the worker restarts after each one).
        tolerate: known findings, as the start of their ``Type: message`` line: counted under
            ``"tolerated"`` (at least that many) instead of ending the run, so a finding
            already reported does not hide what lies past it.
    """
    if target not in targets():
        raise SystemExit(f"run.py: no fuzz target {target!r} (have: {', '.join(targets())})")
    seeds_dir = CORPUS / target
    seeds = len(list(seeds_dir.iterdir())) if seeds_dir.is_dir() else 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    start = time.monotonic()
    deadline = start + seconds
    inputs = 0
    findings: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=f"mvds-fuzz-{target}-") as scratch:
        new_corpus = Path(scratch) / "new"
        new_corpus.mkdir()
        tolerated: dict[str, int] = {}
        attempt = 0
        while True:
            attempt += 1
            artifacts = Path(scratch) / f"artifacts-{attempt}"
            artifacts.mkdir()
            left = max(1, int(deadline - time.monotonic()))
            flags = [
                f"-max_total_time={left}",
                f"-timeout={INPUT_TIMEOUT}",
                f"-rss_limit_mb={RSS_LIMIT_MB}",
                f"-artifact_prefix={artifacts}/",
                "-print_final_stats=1",
                str(new_corpus),
            ]
            if seeds:
                flags.append(str(seeds_dir))
            if runs is not None:
                # libFuzzer counts the seeds (and one empty input) among its runs.
                flags.insert(0, f"-runs={max(1, runs - inputs) + seeds + 1}")
            counts = Path(scratch) / f"tolerated-{attempt}.json"
            if tolerate:
                flags += [f"--tolerate={k}" for k in tolerate] + [f"--counts={counts}"]
            argv = [sys.executable, "-m", "tests.fuzz.run", "--worker", target, "--", *flags]
            result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, check=False)
            log = result.stdout + result.stderr
            inputs += _executed(log)
            if counts.exists():
                for k, n in json.loads(counts.read_text()).items():
                    tolerated[k] = tolerated.get(k, 0) + n
            crashed = result.returncode != 0 or any(artifacts.iterdir())
            if crashed:
                findings.append(_finding(artifacts, log, result.returncode))
            out_of_time = time.monotonic() >= deadline - 1
            if (
                not crashed
                or len(findings) >= max_findings
                or out_of_time
                or (runs is not None and inputs >= runs + seeds)
            ):
                break
    return {
        "target": target,
        "inputs": inputs,
        "seeds": seeds,
        "seconds": round(time.monotonic() - start, 1),
        "findings": findings,
        **({"tolerated": tolerated} if tolerate else {}),
    }


def main(argv: list[str]) -> int:
    """The command line; see the module docstring."""
    if argv[:1] == ["--worker"]:
        _worker(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    parser.add_argument("target", nargs="?")
    parser.add_argument("--list", action="store_true", help="print the target names")
    parser.add_argument("--runs", type=int, default=None, help="new inputs after the seeds")
    parser.add_argument("--seconds", type=float, default=60.0, help="wall-time bound")
    parser.add_argument("--max-findings", type=int, default=1, help="stop after this many")
    parser.add_argument(
        "--tolerate",
        action="append",
        default=[],
        metavar="LINE",
        help="a known finding (start of its 'Type: message' line) to count, not stop on",
    )
    parser.add_argument("--strict", action="store_true", help="stop on the KNOWN findings too")
    args = parser.parse_args(argv)
    if args.list or args.target is None:
        print("\n".join(targets()))
        return 0
    summary = run_target(
        args.target,
        runs=args.runs,
        seconds=args.seconds,
        max_findings=args.max_findings,
        tolerate=tuple(args.tolerate) + (() if args.strict else KNOWN.get(args.target, ())),
    )
    print(json.dumps(summary), flush=True)
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
