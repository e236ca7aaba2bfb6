"""Run benchmarks side by side on two checkouts, in alternating pairs, and compare medians.

The machine is shared and noisy, so each pair runs the old checkout's benchmark and then the new
one's (the order swaps every pair), and the medians of each numeric figure are compared. Each
checkout runs its own ``benchmarks/`` scripts against its own ``src/`` (``PYTHONPATH``), in this
checkout's ``.venv``. Prints one JSON object: for each benchmark and figure, the old and new
medians and new/old.

    .venv/bin/python scripts/bench_compare.py --old /tmp/bench55 --new . --pairs 5
    .venv/bin/python scripts/bench_compare.py --old /tmp/bench55 --new . --only node_tcp
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Each benchmark at a size that runs in seconds; the figures are rates or CPU times, so they
# compare across sizes, not with the full runs in docs/performance.md.
CASES: dict[str, list[str]] = {
    "engine_throughput": ["--quick"],
    "node_tcp": ["--quick"],
    "store_ops": ["--ops", "2000"],
    "store_memory": ["--messages", "100000"],
    "bundle": ["--messages", "10000"],
    "multicast": ["--packets", "5000"],
    "remote_log": ["--messages", "500", *("--only", "file", "--only", "http", "--only", "redis")],
    "sim_scale": ["--messages", "2000"],
}


def _leaves(value: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a JSON value, keyed by its path."""
    out: dict[str, float] = {}
    if isinstance(value, bool):
        return out
    if isinstance(value, int | float):
        out[prefix] = float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.update(_leaves(item, f"{prefix}[{index}]"))
    return out


def _run(checkout: Path, name: str, args: list[str], timeout: float) -> dict[str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(checkout / "src")
    env.setdefault("PYTHONHASHSEED", "0")
    script = checkout / "benchmarks" / f"{name}.py"
    done = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} in {checkout} exited {done.returncode}: {done.stderr[-2000:]}")
    # One JSON object or several, on one line each or indented: decode them one after another.
    figures: dict[str, float] = {}
    decoder = json.JSONDecoder()
    text, at = done.stdout, 0
    while (at := text.find("{", at)) != -1:
        value, at = decoder.raw_decode(text, at)
        figures.update(_leaves(value))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, default=Path("."))
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    options = parser.parse_args()
    names = options.only.split(",") if options.only else list(CASES)
    result: dict[str, Any] = {
        "pairs": options.pairs,
        "old": str(options.old),
        "new": str(options.new),
    }
    for name in names:
        runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        started = time.monotonic()
        for pair in range(options.pairs):
            order = ("old", "new") if pair % 2 == 0 else ("new", "old")
            for side in order:
                checkout = options.old if side == "old" else options.new
                runs[side].append(_run(checkout.resolve(), name, CASES[name], options.timeout))
        figures: dict[str, dict[str, float]] = {}
        keys = set.intersection(*(set(r) for r in runs["old"] + runs["new"]))
        for key in sorted(keys):
            old = statistics.median(r[key] for r in runs["old"])
            new = statistics.median(r[key] for r in runs["new"])
            figures[key] = {
                "old": round(old, 6),
                "new": round(new, 6),
                "new/old": round(new / old, 3) if old else float("nan"),
            }
        result[name] = {"seconds": round(time.monotonic() - started, 1), "figures": figures}
        print(json.dumps({name: result[name]}), file=sys.stderr, flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
