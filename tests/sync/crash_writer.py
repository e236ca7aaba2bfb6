"""Child process for ``test_crash.py``: sends messages forever and reports each one accepted.

Usage: ``python crash_writer.py DB RUN``. Prints ``<hex id>`` on its own line after each
``send`` returns (the message is then committed; every fourth has a body large enough for a
segment file), and drains the engine between sends so that
retransmission state is being written when the parent kills it.
"""

from __future__ import annotations

import sys

from mvds_node.sync import Engine, SyncConfig
from mvds_node.sync.store._sqlite import EXTERNAL_MIN, SQLiteStore

GROUP = bytes(range(1, 33))
PEER = b"P" * 32


def main() -> None:
    path, run = sys.argv[1], int(sys.argv[2])
    store = SQLiteStore(path)
    engine = Engine(store, config=SyncConfig(epoch_seconds=1.0), now=0.0)
    engine.add_group(GROUP)
    engine.add_peer(GROUP, PEER)
    now = 0.0
    i = 0
    while True:
        body = b"run %d message %d" % (run, i)
        if i % 4 == 1:  # a large body: kept in a segment file, not in the database
            body = body.ljust(EXTERNAL_MIN + 100, b".")
        mid = engine.send(GROUP, body, now=now, timestamp=run * 10**6 + i)
        sys.stdout.write(mid.hex() + "\n")
        sys.stdout.flush()
        if i % 3 == 0:
            now += 1.0
            engine.payloads_to_send(now=now)  # no network: the records just count as sent
        i += 1


if __name__ == "__main__":
    main()
