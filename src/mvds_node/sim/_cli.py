"""``mvds-node sim``: run a scenario (a preset or a TOML file), or sweep one setting.

::

    mvds-node sim --preset notes-batch                 # a table
    mvds-node sim scenario.toml --set nodes=10 --seed 3 --json
    mvds-node sim --preset notes-batch --preset notes-log \\
        --sweep availability=0.05,0.1,0.2,0.5,1 --json > sweep.json
    mvds-node sim --preset go-default --plot figures/
    mvds-node sim --list                               # the presets

The click command lives here so that the node's CLI only registers it. Errors are
:class:`~mvds_node.errors.MvdsError` (one line, exit status 1, printed by the CLI's ``main``).
A long run draws its progress (virtual time) on stderr when stderr is a terminal, or with
``--progress``; never on stdout.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from mvds_node.sim._metrics import SWEEP_SCHEMA
from mvds_node.sim._plot import plot_result, plot_sweep
from mvds_node.sim._run import run, sweep
from mvds_node.sim._scenario import (
    PRESETS,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_value,
    preset,
    with_overrides,
)

__all__ = ["JSON_META", "sim"]

JSON_META = "mvds-node.json"
"""The key of ``click.Context.meta`` that the node's CLI sets for a ``--json`` given before
the command (``mvds-node --json sim ...``)."""


@click.command(
    help=(
        "Simulate nodes on a virtual clock: delivery, latency, bandwidth multiplier.\n\n"
        "Run real engines (and the remote log) on a virtual clock with a seeded model of "
        "availability and loss. Prints a table, or JSON with --json; progress on stderr."
    ),
    short_help="Simulate nodes on a virtual clock: delivery, latency, bandwidth multiplier.",
)
@click.argument("scenario", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--preset",
    "presets",
    multiple=True,
    metavar="NAME",
    shell_complete=lambda ctx, param, incomplete: [n for n in PRESETS if n.startswith(incomplete)],
    help="A named scenario (repeatable with --sweep; see --list).",
)
@click.option(
    "--set",
    "changes",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change one setting (repeatable), e.g. --set nodes=10.",
)
@click.option("--seed", type=int, help="Seed (overrides the scenario's).")
@click.option(
    "--sweep", "sweep_text", metavar="KEY=V1,V2,...", help="Run once per value of one setting."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--plot", metavar="DIR", help="Also write PNG plots into DIR (matplotlib).")
@click.option(
    "--progress", "forced", is_flag=True, help="Draw progress on stderr even when not a terminal."
)
@click.option("--list", "listing", is_flag=True, help="List the presets and exit.")
@click.pass_context
def sim(
    ctx: click.Context,
    scenario: str | None,
    presets: tuple[str, ...],
    changes: tuple[str, ...],
    seed: int | None,
    sweep_text: str | None,
    as_json: bool,
    plot: str | None,
    forced: bool,
    listing: bool,
) -> None:
    cmd_sim(
        scenario=scenario,
        presets=list(presets),
        changes=list(changes),
        seed=seed,
        sweep_text=sweep_text,
        as_json=as_json or bool(ctx.meta.get(JSON_META)),
        plot=plot,
        progress=forced or sys.stderr.isatty(),
        listing=listing,
    )  # fmt: skip


def _split(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"{option} {text!r}: expected KEY=VALUE")
    return key.strip(), value.strip()


def _scenarios(
    scenario: str | None, presets: list[str], changes: list[str], seed: int | None
) -> list[Scenario]:
    bases: list[Scenario] = []
    if scenario:
        bases.append(load_scenario(scenario))
    bases.extend(preset(name) for name in presets)
    if not bases:
        raise ScenarioError("give a scenario file or --preset NAME (see --list)")
    overrides: dict[str, Any] = {}
    for item in changes:
        key, value = _split(item, "--set")
        overrides[key] = parse_value(key, value)
    if seed is not None:
        overrides["seed"] = seed
    return [with_overrides(b, overrides) for b in bases]


@contextlib.contextmanager
def _progress(enabled: bool, label: str, total: float) -> Iterator[Any]:
    """A ``(done, total)`` callback drawing a bar on stderr (a no-op when not ``enabled``)."""
    if not enabled:
        yield lambda done, total: None
        return
    console = Console(file=sys.stderr, force_terminal=True if not sys.stderr.isatty() else None)
    # No auto_refresh (it draws from a thread of its own): redrawn here, at most ten times a
    # second however often the simulator reports.
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        console=console,
        auto_refresh=False,
    ) as bar:
        task: TaskID = bar.add_task(label, total=total)
        drawn = 0.0

        def tell(done: float, total: float) -> None:
            nonlocal drawn
            now = time.monotonic()
            redraw = now - drawn >= 0.1 or done >= total
            if redraw:
                drawn = now
            bar.update(task, completed=done, total=total, refresh=redraw)

        yield tell


def _plot(document: dict[str, Any], directory: str) -> list[Path]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    draw = plot_sweep if document["schema"] == SWEEP_SCHEMA else plot_result
    return draw(document, out)


def cmd_sim(
    *,
    scenario: str | None,
    presets: list[str],
    changes: list[str],
    seed: int | None,
    sweep_text: str | None,
    as_json: bool,
    plot: str | None,
    progress: bool,
    listing: bool,
) -> None:
    """Run ``mvds-node sim`` with its parsed options (see :func:`sim`).

    Raises:
        ScenarioError: a scenario, setting or value is refused.
    """
    if listing:
        width = max(len(n) for n in PRESETS)
        for name, s in PRESETS.items():
            print(f"{name.ljust(width)}  {s.description}")
        return
    scenarios = _scenarios(scenario, presets, changes, seed)
    document: dict[str, Any]
    if sweep_text:
        key, text = _split(sweep_text, "--sweep")
        values = [parse_value(key, v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise ScenarioError(f"--sweep {sweep_text!r}: no values")
        runs = len(scenarios) * len(values)
        with _progress(progress, f"sweep {key}", runs) as tell:
            done = 0

            def step(_scenario: Scenario, _value: Any) -> None:
                nonlocal done
                tell(done, runs)
                done += 1

            document = sweep(scenarios, key, values, progress=step)
            tell(runs, runs)
        if as_json:
            print(json.dumps(document))
        else:
            _print_sweep(document)
    else:
        if len(scenarios) > 1:
            raise ScenarioError("give one scenario (several only with --sweep)")
        chosen = scenarios[0]
        with _progress(progress, chosen.name or "sim", chosen.duration) as tell:
            result = run(chosen, progress=tell)
        document = result.to_dict()
        print(result.to_json() if as_json else result.table())
    if plot:
        for path in _plot(document, plot):
            if not as_json:
                print(f"wrote {path}")


def _print_sweep(document: dict[str, Any]) -> None:
    key = document["key"]
    header = (key, "scenario", "delivered", "p50 s", "p95 s", "max s", "x bytes", "x msgs")
    rows = [header]
    for r in document["runs"]:
        res = r["result"]
        lat = res["latency"]
        mult = res["multiplier"]

        def f(x: float | None, digits: int = 1) -> str:
            return "-" if x is None else f"{x:.{digits}f}"

        rows.append(
            (
                str(r["value"]),
                r["scenario"],
                f"{res['deliveries']['ratio'] * 100:.1f} %",
                f(lat["p50"]),
                f(lat["p95"]),
                f(lat["max"]),
                f(mult["bytes"], 2),
                f(mult["messages"], 2),
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
