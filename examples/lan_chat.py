"""Set up a LAN chat between two or three terminals, then print what to type in each.

    python examples/lan_chat.py [DIR] [--nodes 3]

Creates one data directory per person under DIR (default ``./lan-chat``) with ``mvds-node
init``, adds everyone's keys (``key``, and ``key --log``, which signs what it writes) to
everyone else's configuration with ``mvds-node peers add`` (all on 127.0.0.1 with fixed ports,
so it works on one machine; on a real LAN, use each machine's address), and prints one
``mvds-node run --chat`` command per terminal. Type a line in any terminal: it reaches the
others, and whoever starts late catches up.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

NAMES = ("alice", "bob", "carol")


def cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mvds_node", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.exit(result.stderr.strip())
    return result.stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", nargs="?", default="lan-chat")
    parser.add_argument("--nodes", type=int, choices=(2, 3), default=3)
    parser.add_argument("--base-port", type=int, default=7710)
    args = parser.parse_args(argv)
    root = Path(args.dir)
    names = NAMES[: args.nodes]
    ports = {n: args.base_port + i for i, n in enumerate(names)}
    keys, log_keys = {}, {}
    for name in names:
        d = str(root / name)
        cli("--dir", d, "init", "--name", name, "--listen", f"127.0.0.1:{ports[name]}",
            "--group", "chat")  # fmt: skip
        keys[name] = cli("--dir", d, "key")
        log_keys[name] = cli("--dir", d, "key", "--log")  # signs what it writes
    for name in names:
        for other in names:
            if other != name:
                cli("--dir", str(root / name), "peers", "add", keys[other], "--name", other,
                    "--address", f"127.0.0.1:{ports[other]}", "--group", "chat",
                    "--log-key", log_keys[other])  # fmt: skip
    print(f"Nodes created in {root}/. Open {len(names)} terminals and run one line in each:\n")
    for name in names:
        print(f"  {sys.executable} -m mvds_node --dir {root / name} run --chat chat")
    print("\nType a line and press Enter to send it. Stop a node with Ctrl-C, send from the")
    print("others, start it again: it catches up. `mvds-node --dir DIR status` shows the state.")


if __name__ == "__main__":
    main()
