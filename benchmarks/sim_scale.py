"""How fast the simulator runs: 1,000 nodes and 100,000 messages.

Runs the ``scale`` preset (1,000 nodes in one-to-one chats, 100,000 messages, on/off sessions
with 50 % availability and 1 % loss; ``mvds-node sim --list`` describes it) once, or another
preset with ``--preset``, and prints the wall-clock seconds with what was simulated, as JSON.
The target is under 60 s for the ``scale`` preset. Group chats cost more per message: in a
fully meshed group every member relays every message to every other member, so compare
``payloads_per_second`` rather than seconds across presets.

    python3 dev.py bench sim_scale [--preset NAME] [--messages N]
"""

from __future__ import annotations

import argparse
import json
import time

from mvds_node.sim import preset, run, with_overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="scale")
    parser.add_argument("--messages", type=int, help="override the preset's message count")
    args = parser.parse_args(argv)
    scenario = preset(args.preset)
    if args.messages is not None:
        scenario = with_overrides(scenario, {"messages": args.messages})
    start = time.perf_counter()
    result = run(scenario)
    wall = time.perf_counter() - start
    d = result.to_dict()
    print(
        json.dumps(
            {
                "benchmark": "sim_scale",
                "preset": scenario.name,
                "nodes": scenario.nodes,
                "messages": d["deliveries"]["messages"],
                "simulated_seconds": scenario.duration,
                "wall_seconds": round(wall, 2),
                "payloads": d["payloads"]["sent"],
                "deliveries": d["deliveries"]["delivered"],
                "payloads_per_second": round(d["payloads"]["sent"] / wall),
                "delivery_ratio": d["deliveries"]["ratio"],
                "latency_p50": d["latency"]["p50"],
                "multiplier_bytes": d["multiplier"]["bytes"],
            }
        )
    )


if __name__ == "__main__":
    main()
