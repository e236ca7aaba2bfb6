"""Drive the sans-IO MVDS engine over a carrier of your own.

The engine does no I/O: you feed it what arrived and the current time, and you drain what it wants
sent. Here the "carrier" is a Python list that loses every other payload, and the clock is a
number we advance by hand; a real program would use sockets and ``trio.current_time()``.

    python examples/engine_bring_your_own_transport.py
"""

from __future__ import annotations

from mvds_node.sync import Engine, MemoryStore, MessageDelivered, Mode, SyncConfig

GROUP = b"g" * 32
ALICE, BOB = b"a" * 32, b"b" * 32


def main() -> None:
    config = SyncConfig(epoch_seconds=1.0)
    engines = {name: Engine(MemoryStore(), config=config, now=0.0) for name in (ALICE, BOB)}
    for me, other in ((ALICE, BOB), (BOB, ALICE)):
        engines[me].add_group(GROUP)
        engines[me].add_peer(GROUP, other, mode=Mode.BATCH)

    for i in range(3):
        engines[ALICE].send(GROUP, f"hello {i}".encode(), now=0.0, timestamp=1_700_000_000 + i)

    now, carried = 0.0, 0
    delivered: list[bytes] = []
    while len(delivered) < 3 and now < 60:
        for me, engine in engines.items():
            engine.handle_timer(now=now)
            for peer, payload in engine.payloads_to_send(now=now):
                carried += 1
                if carried % 2:  # a lossy carrier: every other payload vanishes
                    continue
                engines[peer].receive_payload(me, payload, now=now)
        for event in engines[BOB].events():
            if isinstance(event, MessageDelivered):
                delivered.append(event.body)
        # Sleep until the earliest deadline any engine asked for (here: jump the clock there).
        deadlines = [d for e in engines.values() if (d := e.next_deadline()) is not None]
        now = max(now + 0.001, min(deadlines, default=now + 1.0))

    print(f"bob got {[body.decode() for body in delivered]} by t={now:.1f}s")
    print(f"{carried} payloads were handed to the lossy carrier")


if __name__ == "__main__":
    main()
