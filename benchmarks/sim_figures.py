"""The figures of docs/simulation.md: every experiment, with fixed seeds, into docs/simulation/.

Runs the simulator (``mvds_node.sim.run``) on the design notes' scenario without a helper, with
an always-on cache and with the remote log; sweeps availability from 5 % to 100 %; and sweeps the
size of a fully meshed group from 2 to 1,000 members. Each experiment runs on several seeds
where results vary from seed to seed and is reported as the mean and the range. Writes
``summary.json`` (the figures, no raw latencies) and the PNG charts into the output folder and
prints the summary, with the wall-clock time, as JSON on stdout.

Each experiment names the ``mvds-node sim`` command that reproduces one of its runs exactly
(``--seed`` picks the run); ``--only NAME`` reruns one part of this script.

    python3 dev.py bench sim_figures [--only notes,helpers,availability,groups]
        [--out docs/simulation] [--raw DIR] [--jobs N]

Runs in about a minute and a half on 2 cores (``--jobs 2``, the default is every core).
``summary.json`` keeps the experiments of the parts not rerun. Each run's figures include
``x_parts``: where its bytes went, each part (``sync MESSAGE``, ``hello``, ``log_up page``,
``log_down head`` ...) over the minimum bytes, so that they add up to ``x_bytes``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvds_node.sim import Scenario, preset, run, with_overrides

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2, 3, 4)
"""Seeds of the notes' scenarios: one run of 30 minutes varies by a factor of two."""
AVAILABILITY = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
SWEEP_SEEDS = (0, 1, 2)
GROUP_SIZES = (2, 5, 10, 50, 100, 1000)
RELAY_SIZES = (2, 5, 10, 20, 50)
PARTS = ("notes", "helpers", "availability", "groups")


@dataclass(frozen=True)
class Experiment:
    """One setup: a preset with some settings changed, run on each seed."""

    part: str
    name: str
    preset: str
    changes: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = SEEDS
    sweep: tuple[str, tuple[Any, ...]] | None = None
    """A setting and its values: one run per value and seed."""

    def scenario(self, seed: int, value: Any = None) -> Scenario:
        changes = {**self.changes, "name": self.name, "seed": seed}
        if self.sweep is not None:
            changes[self.sweep[0]] = value
        return with_overrides(preset(self.preset), changes)

    def command(self) -> str:
        parts = ["mvds-node sim", f"--preset {self.preset}"]
        parts += [f"--set {k}={_text(v)}" for k, v in self.changes.items()]
        if self.sweep is not None:
            key, values = self.sweep
            parts.append(f"--sweep {key}={','.join(_text(v) for v in values)}")
        parts.append(f"--seed {self.seeds[0]}")
        return " ".join(parts)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


GO_LOSS = {"availability": 1.0, "loss": 0.9}
"""The Go simulation's reading of "90 % offline": each payload dropped with probability 0.9."""

EXPERIMENTS: tuple[Experiment, ...] = (
    # 1. The notes' scenario without a helper.
    Experiment("notes", "go-default", "go-default"),
    Experiment("notes", "interactive", "notes-interactive"),
    Experiment("notes", "batch", "notes-batch"),
    Experiment("notes", "interactive, Go loss model", "notes-interactive", GO_LOSS),
    Experiment("notes", "batch, Go loss model", "notes-batch", GO_LOSS),
    Experiment(
        "notes",
        "batch, Go loss model, constant backoff",
        "notes-batch",
        {**GO_LOSS, "backoff": "constant"},
    ),
    Experiment(
        "notes", "interactive, offline sends lost", "notes-interactive", {"offline_sends": "lost"}
    ),
    Experiment("notes", "batch, offline sends lost", "notes-batch", {"offline_sends": "lost"}),
    # 2. Helpers: an always-on cache, the remote log, its acks, and the lowest the design gets.
    Experiment("helpers", "batch (no helper)", "notes-batch", {"backoff": "exponential"}),
    Experiment(
        "helpers", "batch + hello", "notes-batch", {"backoff": "exponential", "hello": True}
    ),
    Experiment("helpers", "cache", "notes-cache"),
    Experiment("helpers", "log", "notes-log"),
    Experiment("helpers", "log + acks", "notes-log-acks"),
    Experiment(
        "helpers",
        "log + acks + hello, head of 64 entries",
        "notes-best",
        {"log_head_size": 64},
    ),
    Experiment(
        "helpers",
        "log + acks + hello, head of 8, no inline bodies",
        "notes-best",
        {"log_head_size": 8, "log_page_size": 8, "log_inline": 0},
    ),
    Experiment("helpers", "log + acks + hello, small head (notes-best)", "notes-best"),
    Experiment("helpers", "notes-best, no acks through the log", "notes-best", {"log_acks": False}),
    Experiment("helpers", "notes-best, interactive", "notes-best", {"mode": "interactive"}),
    Experiment("helpers", "lowest bytes (notes-lowest)", "notes-lowest"),
    Experiment(
        "helpers", "notes-lowest, no acks through the log", "notes-lowest", {"log_acks": False}
    ),
    Experiment(
        "helpers",
        "log only (sync never delivers)",
        "notes-lowest",
        {"loss": 0.999999},
    ),
    # 3. Availability from 5 % to 100 %.
    *(
        Experiment(
            "availability",
            name,
            name,
            seeds=SWEEP_SEEDS,
            sweep=("availability", AVAILABILITY),
        )
        for name in (
            "notes-interactive",
            "notes-batch",
            "notes-cache",
            "notes-best",
            "notes-lowest",
        )
    ),
    # 4. Group size: bytes per member, batch and interactive, no relaying.
    Experiment("groups", "group, batch", "group", seeds=(0,), sweep=("nodes", GROUP_SIZES)),
    Experiment(
        "groups",
        "group, interactive",
        "group",
        {"mode": "interactive"},
        seeds=(0,),
        sweep=("nodes", GROUP_SIZES),
    ),
    Experiment(
        "groups",
        "group, batch, 50 % online",
        "group",
        {
            "availability": 0.5,
            "availability_model": "sessions",
            "session_seconds": 600.0,
            "hello": True,
            "duration": 3600.0,
        },
        seeds=(0,),
        sweep=("nodes", GROUP_SIZES),
    ),
    *(
        Experiment(
            "groups",
            f"group, batch, relay {relay}",
            "group",
            {"relay": relay},
            seeds=(0,),
            sweep=("nodes", RELAY_SIZES),
        )
        for relay in ("mode", "offer", "none")
    ),
)


def _run(scenario: Scenario) -> dict[str, Any]:
    return run(scenario).to_dict()


def _figures(doc: dict[str, Any]) -> dict[str, Any]:
    """The compact figures of one run (no latencies, no per-node rows)."""
    nodes = doc["nodes"]
    return {
        "seed": doc["scenario"]["seed"],
        "messages": doc["deliveries"]["messages"],
        "delivered": doc["deliveries"]["ratio"],
        "p50": doc["latency"]["p50"],
        "p95": doc["latency"]["p95"],
        "max": doc["latency"]["max"],
        "x_bytes": doc["multiplier"]["bytes"],
        "x_records": doc["multiplier"]["records"],
        "x_messages": doc["multiplier"]["messages"],
        "bytes_per_member": round(
            nodes["bytes_sent"]["mean"]
            + nodes["bytes_received"]["mean"]
            + nodes["log_bytes"]["mean"]
        ),
        "records": {k: v for k, v in doc["records"].items() if v},
        "bytes": doc["bytes"],
        "x_parts": _parts(doc),
    }


def _parts(doc: dict[str, Any]) -> dict[str, float]:
    """Where the bytes went, each part over the minimum bytes (so the parts add up to
    ``x_bytes``): ``sync ACK``, ``hello``, ``log_up page``, ``log_down head`` ..."""
    least = doc["minimum"]["bytes"]
    if not least:
        return {}
    out: dict[str, float] = {}
    for part, value in doc["breakdown"].items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        for kind, n in items:
            if n:
                out[f"{part} {kind}".strip()] = round(n / least, 4)
    return out


_STATS = ("delivered", "p50", "p95", "x_bytes", "x_records", "x_messages", "bytes_per_member")


def _spread(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean, min and max over seeds of each figure (None where a run had no value)."""
    out: dict[str, Any] = {}
    for key in _STATS:
        values = [r[key] for r in runs if r[key] is not None]
        if not values:
            out[key] = None
            continue
        out[key] = {
            "mean": round(sum(values) / len(values), 4),
            "min": min(values),
            "max": max(values),
        }
    parts = sorted({k for r in runs for k in r["x_parts"]})
    out["x_parts"] = {
        k: round(sum(r["x_parts"].get(k, 0.0) for r in runs) / len(runs), 4) for k in parts
    }
    return out


def _cdf(out: Path, name: str, title: str, docs: dict[str, dict[str, Any]], *, unit: str) -> Path:
    from mvds_node.sim._plot import latency_cdf

    return latency_cdf(
        {label: d["latencies"] for label, d in docs.items()},
        out / f"{name}.png",
        title=title,
        unit=unit,
        totals={label: d["deliveries"]["expected"] for label, d in docs.items()},
        logx=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated parts: {', '.join(PARTS)}")
    parser.add_argument("--out", default=str(ROOT / "docs" / "simulation"))
    parser.add_argument("--raw", help="also write every run's full result JSON into this folder")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    parts = PARTS if not args.only else tuple(p.strip() for p in args.only.split(","))
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))} (parts: {', '.join(PARTS)})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [e for e in EXPERIMENTS if e.part in parts]
    jobs: list[tuple[Experiment, Any, Scenario]] = []
    for e in chosen:
        values = e.sweep[1] if e.sweep is not None else (None,)
        for value in values:
            for seed in e.seeds:
                jobs.append((e, value, e.scenario(seed, value)))
    start = time.perf_counter()
    # Largest first, so that the 1,000-member runs do not end up alone at the end.
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][2].nodes)
    docs: list[dict[str, Any]] = [{}] * len(jobs)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {i: pool.submit(_run, jobs[i][2]) for i in order}
        for i, future in futures.items():
            docs[i] = future.result()
    wall = time.perf_counter() - start
    if args.raw:
        raw = Path(args.raw)
        raw.mkdir(parents=True, exist_ok=True)
        for (e, value, s), doc in zip(jobs, docs, strict=True):
            tag = "" if value is None else f"-{e.sweep[0] if e.sweep else ''}{value}"
            slug = "".join(c if c.isalnum() else "-" for c in e.name)
            (raw / f"{e.part}-{slug}{tag}-seed{s.seed}.json").write_text(json.dumps(doc))
    summary: dict[str, Any] = {"schema": "mvds-node/sim-figures/1", "experiments": []}
    by_experiment: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for (e, value, _), doc in zip(jobs, docs, strict=True):
        by_experiment.setdefault(e.name, []).append((value, doc))
    for e in chosen:
        entry: dict[str, Any] = {"part": e.part, "name": e.name, "command": e.command()}
        entry["seeds"] = list(e.seeds)
        results = by_experiment[e.name]
        if e.sweep is None:
            runs = [_figures(d) for _, d in results]
            entry["runs"] = runs
            entry["figures"] = _spread(runs)
        else:
            entry["key"] = e.sweep[0]
            points = []
            for value in e.sweep[1]:
                runs = [_figures(d) for v, d in results if v == value]
                points.append({"value": value, "runs": runs, "figures": _spread(runs)})
            entry["points"] = points
        summary["experiments"].append(entry)
    written = _plots(out, chosen, by_experiment)
    summary["experiments"] = _merged(out / "summary.json", summary["experiments"], parts)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    report = {
        "benchmark": "sim_figures",
        "parts": list(parts),
        "runs": len(jobs),
        "jobs": args.jobs,
        "wall_seconds": round(wall, 1),
        "written": [str(p.relative_to(out)) for p in [out / "summary.json", *written]],
        **summary,
    }
    json.dump(report, sys.stdout)
    print()


def _merged(path: Path, fresh: list[dict[str, Any]], parts: Sequence[str]) -> list[dict[str, Any]]:
    """The experiments of ``fresh`` and, for the parts not rerun, those already in ``path``,
    in the order of :data:`EXPERIMENTS` (an experiment no longer listed is dropped)."""
    kept: list[dict[str, Any]] = []
    if path.exists():
        try:
            old = json.loads(path.read_text())["experiments"]
        except (ValueError, KeyError):
            old = []
        kept = [e for e in old if e.get("part") not in parts]
    order = {e.name: i for i, e in enumerate(EXPERIMENTS)}
    both = [e for e in kept + fresh if e["name"] in order]
    return sorted(both, key=lambda e: order[e["name"]])


def _plots(
    out: Path,
    chosen: Sequence[Experiment],
    by_experiment: dict[str, list[tuple[Any, dict[str, Any]]]],
) -> list[Path]:
    from mvds_node.sim._plot import plot_sweep

    written: list[Path] = []
    seed0 = {
        e.name: d
        for e in chosen
        if e.sweep is None
        for _, d in by_experiment[e.name]
        if d["scenario"]["seed"] == e.seeds[0]
    }

    def pick(part: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {
            n: seed0[n]
            for n in names
            if n in seed0 and any(e.part == part and e.name == n for e in chosen)
        }

    notes = pick(
        "notes",
        (
            "interactive",
            "batch",
            "interactive, Go loss model",
            "batch, Go loss model",
            "batch, offline sends lost",
        ),
    )
    if notes:
        written.append(
            _cdf(out, "notes-latency", "The notes' scenario, no helper (seed 0)", notes, unit="min")
        )
    helpers = pick(
        "helpers",
        (
            "batch (no helper)",
            "cache",
            "log",
            "log + acks + hello, small head (notes-best)",
            "lowest bytes (notes-lowest)",
            "log only (sync never delivers)",
        ),
    )
    if helpers:
        written.append(
            _cdf(
                out,
                "helpers-latency",
                "The notes' scenario with helpers (seed 0)",
                helpers,
                unit="s",
            )
        )
    sweeps: dict[str, list[Experiment]] = {}
    for e in chosen:
        if e.sweep is not None:
            group = e.part if not e.name.startswith("group, batch, relay") else "relay"
            sweeps.setdefault(group, []).append(e)
    for group, experiments in sweeps.items():
        key = experiments[0].sweep[0] if experiments[0].sweep else ""
        doc = {
            "schema": "mvds-node/sim-sweep/1",
            "key": key,
            "values": list(experiments[0].sweep[1]) if experiments[0].sweep else [],
            "runs": [
                {"scenario": e.name, "value": value, "result": d}
                for e in experiments
                for value, d in by_experiment[e.name]
            ],
        }
        written += plot_sweep(doc, out, name=group)
    return written


if __name__ == "__main__":
    main()
