"""Correctness at scale: N engines on a seeded lossy, duplicating, reordering network.

For any seed and loss up to 90 %: every durable message reaches every group peer exactly once;
in consistent mode always after its parents; and once everything is acknowledged, the network
goes quiet (no record is sent again).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mvds_node.sim import Net
from mvds_node.sync import (
    DeliveryMode,
    Engine,
    ExponentialBackoff,
    GiveUpPolicy,
    MemoryStore,
    MessageDelivered,
    Mode,
    SyncConfig,
    decode_payload,
)

G = b"G" * 32


@dataclass(frozen=True)
class Scenario:
    seed: int
    nodes: int
    loss: float
    modes: tuple[Mode, ...]
    sends: tuple[tuple[int, int, bool], ...]
    """(round, sender index, ephemeral) for each message."""
    delivery: DeliveryMode


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    nodes = draw(st.integers(min_value=2, max_value=5))
    sends = draw(
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=5),
                st.integers(min_value=0, max_value=nodes - 1),
                st.booleans(),
            ),
            min_size=1,
            max_size=12,
        )
    )
    return Scenario(
        seed=draw(st.integers(min_value=0, max_value=2**32)),
        nodes=nodes,
        loss=draw(st.sampled_from([0.0, 0.2, 0.5, 0.75, 0.9])),
        modes=tuple(draw(st.sampled_from(list(Mode))) for _ in range(nodes)),
        sends=tuple(sorted(sends)),
        delivery=draw(st.sampled_from(list(DeliveryMode))),
    )


def build(s: Scenario) -> tuple[Net, list[bytes]]:
    config = SyncConfig(
        epoch_seconds=1.0,
        # A short cap keeps heavy-loss runs short; the schedule itself is tested elsewhere.
        backoff=ExponentialBackoff(base_epochs=1, cap_epochs=4, seed=s.seed),
        give_up=GiveUpPolicy(max_attempts=None, max_age_epochs=None),
        delivery=s.delivery,
    )
    net = Net(seed=s.seed, loss=s.loss, duplicate=0.2, delay=0.2, reorder=True)
    names = [bytes([i + 1]) * 32 for i in range(s.nodes)]
    for i, name in enumerate(names):
        engine = net.add(name, Engine(MemoryStore(), config=config, now=0.0))
        engine.add_group(G)
        # A ring plus chords: not everyone talks to everyone, so relaying is exercised.
        for j, other in enumerate(names):
            if other != name and (abs(i - j) in (1, s.nodes - 1) or s.nodes <= 3):
                engine.add_peer(G, other, mode=s.modes[i])
    return net, names


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(s=scenarios())
@example(  # the worst case spelled out: five nodes, 90 % loss, consistent delivery
    Scenario(
        seed=1,
        nodes=5,
        loss=0.9,
        modes=(Mode.BATCH, Mode.INTERACTIVE, Mode.BATCH, Mode.INTERACTIVE, Mode.BATCH),
        sends=tuple((r, r % 5, r % 4 == 3) for r in range(6)) * 2,
        delivery=DeliveryMode.CONSISTENT,
    )
)
def test_exactly_once_causal_and_quiet(s: Scenario) -> None:
    net, names = build(s)
    durable: dict[bytes, bytes] = {}  # id -> sender
    parents: dict[bytes, tuple[bytes, ...]] = {}
    pending = list(s.sends)
    for round_ in range(6):
        for _when, who, ephemeral in [x for x in pending if x[0] == round_]:
            engine = net.engines[names[who]]
            mid = engine.send(
                G, f"m{len(durable)}-{round_}-{who}".encode(), now=net.now,
                timestamp=len(parents) + 1, ephemeral=ephemeral,
            )  # fmt: skip
            if not ephemeral:
                durable[mid] = names[who]
                stored = engine.store_view.get_message(mid)
                assert stored is not None
                parents[mid] = stored.parents
            parents.setdefault(mid, ())
        net.step()

    def everyone_has_everything() -> bool:
        for name in names:
            got = {
                e.message_id
                for e in net.events[name]
                if isinstance(e, MessageDelivered) and not e.ephemeral
            }
            want = {m for m, sender in durable.items() if sender != name}
            if not want <= got:
                return False
        return True

    net.run_until(everyone_has_everything, max_rounds=3000)
    net.run_until(net.quiet, max_rounds=3000)

    for name in names:
        order = [
            e.message_id
            for e in net.events[name]
            if isinstance(e, MessageDelivered) and not e.ephemeral
        ]
        # Exactly once: every durable message from someone else, no duplicates, nothing else.
        assert sorted(order) == sorted(m for m, sender in durable.items() if sender != name)
        if s.delivery is DeliveryMode.CONSISTENT:
            position = {m: i for i, m in enumerate(order)}
            for m in order:
                for p in parents[m]:
                    if p in position:
                        assert position[p] < position[m], "a parent came after its child"
                    else:
                        assert durable.get(p) == name, "a parent was never delivered"

    # Quiescence: with everything acknowledged, further rounds carry no records at all.
    net.record = True
    net.log.clear()
    net.run(20)
    for transfer in net.log:
        decoded = decode_payload(transfer.payload, SyncConfig().limits)
        assert not (decoded.offers or decoded.requests or decoded.messages), transfer
        assert not decoded.acks, "acks keep flowing after quiescence"
    assert not net.log, "payloads sent after quiescence"
