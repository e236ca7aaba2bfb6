"""``mvds-node sim``: run a scenario (a preset or a TOML file), or sweep one setting.

::

    mvds-node sim --preset notes-batch                 # a table
    mvds-node sim scenario.toml --set nodes=10 --seed 3 --json
    mvds-node sim --preset notes-batch --preset notes-log \\
        --sweep availability=0.05,0.1,0.2,0.5,1 --json > sweep.json
    mvds-node sim --preset go-default --plot figures/
    mvds-node sim --list                               # the presets

The argument parsing lives here so that the node's CLI only registers the command. Errors are
:class:`~mvds_node.errors.MvdsError` (one line, exit status 1, printed by the CLI's ``main``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

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

__all__ = ["add_parser", "cmd_sim"]


def add_parser(sub: Any) -> None:
    """Register ``sim`` on the node CLI's subcommand parsers."""
    p = sub.add_parser(
        "sim",
        help="simulate nodes on a virtual clock: delivery, latency, bandwidth multiplier",
        description=(
            "Run real engines (and the remote log) on a virtual clock with a seeded model of "
            "availability and loss. Prints a table, or JSON with --json."
        ),
    )
    p.add_argument("scenario", nargs="?", help="a scenario TOML file")
    p.add_argument(
        "--preset", action="append", default=[], help="a named scenario (repeatable with --sweep)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one setting (repeatable), e.g. --set nodes=10",
    )
    p.add_argument("--seed", type=int, help="seed (overrides the scenario's)")
    p.add_argument("--sweep", metavar="KEY=V1,V2,...", help="run once per value of one setting")
    p.add_argument("--json", dest="sim_json", action="store_true", help="print JSON")
    p.add_argument("--plot", metavar="DIR", help="also write PNG plots into DIR (matplotlib)")
    p.add_argument("--list", action="store_true", help="list the presets and exit")
    p.set_defaults(func=cmd_sim)


def _split(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"{option} {text!r}: expected KEY=VALUE")
    return key.strip(), value.strip()


def _scenarios(args: argparse.Namespace) -> list[Scenario]:
    bases: list[Scenario] = []
    if args.scenario:
        bases.append(load_scenario(args.scenario))
    bases.extend(preset(name) for name in args.preset)
    if not bases:
        raise ScenarioError("give a scenario file or --preset NAME (see --list)")
    changes: dict[str, Any] = {}
    for item in args.set:
        key, value = _split(item, "--set")
        changes[key] = parse_value(key, value)
    if args.seed is not None:
        changes["seed"] = args.seed
    return [with_overrides(b, changes) for b in bases]


def _plot(document: dict[str, Any], directory: str) -> list[Path]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    draw = plot_sweep if document["schema"] == SWEEP_SCHEMA else plot_result
    return draw(document, out)


def cmd_sim(args: argparse.Namespace) -> None:
    if args.list:
        width = max(len(n) for n in PRESETS)
        for name, s in PRESETS.items():
            print(f"{name.ljust(width)}  {s.description}")
        return
    scenarios = _scenarios(args)
    as_json = args.sim_json or getattr(args, "json", False)
    document: dict[str, Any]
    if args.sweep:
        key, text = _split(args.sweep, "--sweep")
        values = [parse_value(key, v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise ScenarioError(f"--sweep {args.sweep!r}: no values")
        document = sweep(scenarios, key, values)
        if as_json:
            print(json.dumps(document))
        else:
            _print_sweep(document)
    else:
        if len(scenarios) > 1:
            raise ScenarioError("give one scenario (several only with --sweep)")
        result = run(scenarios[0])
        document = result.to_dict()
        print(result.to_json() if as_json else result.table())
    if args.plot:
        for path in _plot(document, args.plot):
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
