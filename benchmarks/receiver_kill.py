"""A receiver killed with SIGKILL 100 times while a sender streams about 300 messages a second:
how many of the messages the sender's ``send()`` accepted never reached the receiving
application (lost), and how many reached it twice (duplicates, allowed: at least once).

    python3 dev.py bench receiver_kill [--kills N] [--rate MSG_PER_S] [--seed N]

Prints one JSON object: lost, duplicates, kills, messages, seconds. The scenario is
``tests/node/receiver_kill.py`` (the suite runs it with 20 kills).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from functools import partial
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.node.receiver_kill import run_kills


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="10 kills")
    args = parser.parse_args()
    kills = 10 if args.quick else args.kills
    with tempfile.TemporaryDirectory(prefix="receiver-kill-") as tmp:
        result = trio.run(partial(run_kills, Path(tmp), kills, rate=args.rate, seed=args.seed))
    print(json.dumps({"benchmark": "receiver_kill", **result}))


if __name__ == "__main__":
    main()
