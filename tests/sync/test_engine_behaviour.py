"""The engine's behaviour as a driver sees it: deadlines, payloads, retransmission, give-up,
parents and delivery modes, ephemeral messages, relay, expiry and restart."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from mvds_node.sim import Net
from mvds_node.sync import (
    DeliveryMode,
    Engine,
    ExponentialBackoff,
    GaveUp,
    GiveUpPolicy,
    Limits,
    MemoryStore,
    MessageAcked,
    MessageDelivered,
    MessageExpired,
    Mode,
    PayloadRejected,
    RecordType,
    ReferenceBackoff,
    RelayPolicy,
    SQLiteStore,
    Store,
    StoredMessage,
    SyncConfig,
    decode_payload,
    encode_message,
    encode_payload,
    message_id,
)
from mvds_node.sync._wire import decode_stored

G = b"G" * 32
A, B, C = b"A" * 32, b"B" * 32, b"C" * 32
LIMITS = SyncConfig().limits


def engine(store: Store | None = None, **kw: Any) -> Engine:
    config = SyncConfig(epoch_seconds=1.0, **kw)
    return Engine(store if store is not None else MemoryStore(), config=config, now=0.0)


def pair(
    mode: Mode = Mode.BATCH, store: Store | None = None, **kw: Any
) -> tuple[Net, Engine, Engine]:
    """Engines A (on ``store``, if given) and B in group G, joined by a ``Net``."""
    net = Net()
    a = net.add(A, engine(store, **kw))
    b = net.add(B, engine(**kw))
    for me, other in ((a, B), (b, A)):
        me.add_group(G)
        me.add_peer(G, other, mode=mode)
    return net, a, b


def delivered(net: Net, name: bytes) -> list[bytes]:
    return [e.body for e in net.events[name] if isinstance(e, MessageDelivered)]


def records(payload: bytes) -> tuple[int, int, int, int]:
    d = decode_payload(payload, LIMITS)
    return len(d.acks), len(d.offers), len(d.requests), len(d.messages)


# --------------------------------------------------------------------------- deadlines


def test_idle_engine_has_no_deadline() -> None:
    _, a, _ = pair()
    assert a.next_deadline() is None


def test_send_is_due_in_the_current_epoch_then_next_epoch_after_a_payload() -> None:
    a = engine()
    a.add_group(G)
    a.add_peer(G, B)
    a.send(G, b"one", now=0.3, timestamp=1)
    assert a.next_deadline() == 0.0  # due now: epoch 0 began at 0.0
    (out,) = a.payloads_to_send(now=0.3)
    assert records(out[1]) == (0, 0, 0, 1)
    a.send(G, b"two", now=0.6, timestamp=2)
    # One payload per peer per epoch: the second message waits for epoch 1.
    assert a.payloads_to_send(now=0.6) == []
    assert a.next_deadline() == 1.0
    (out,) = a.payloads_to_send(now=1.0)
    assert records(out[1]) == (0, 0, 0, 1)


def test_all_records_for_a_peer_go_in_one_payload_with_acks_piggybacked() -> None:
    net, a, b = pair()
    b.send(G, b"from b", now=0.0, timestamp=1)
    net.step()  # b's message reaches a; a owes b an ack
    for i in range(5):
        a.send(G, f"m{i}".encode(), now=net.now, timestamp=10 + i)
    out = a.payloads_to_send(now=net.now)
    assert len(out) == 1
    assert records(out[0][1]) == (1, 0, 0, 5)


def test_interactive_offers_then_sends_on_request() -> None:
    net, a, _b = pair(Mode.INTERACTIVE)
    net.record = True
    a.send(G, b"hi", now=0.0, timestamp=1)
    net.run_until(lambda: delivered(net, B) == [b"hi"], max_rounds=10)
    kinds = [(t.sender, records(t.payload)) for t in net.log]
    assert kinds[:3] == [(A, (0, 1, 0, 0)), (B, (0, 0, 1, 0)), (A, (0, 0, 0, 1))]


# --------------------------------------------------------------------------- retransmission


def test_reference_backoff_schedule_matches_the_go_code() -> None:
    net, a, _ = pair(backoff=ReferenceBackoff(), give_up=GiveUpPolicy(None, None))
    net.drop = lambda round_, sender, receiver: sender == A  # a black hole towards B
    net.record = True
    a.send(G, b"lost", now=0.0, timestamp=1)
    net.run(32)
    sent = [t.round for t in net.log if t.sender == A and records(t.payload)[3]]
    # The Go reference sends at epochs 1, 3, 7, 13, 21, 31 when the record is appended at 0
    # (it goes out one epoch later than ours, which sends at once): the same gaps.
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert gaps[:5] == [2, 4, 6, 8, 10]


def test_exponential_backoff_is_capped_and_seeded() -> None:
    def schedule(seed: int) -> list[int]:
        backoff = ExponentialBackoff(base_epochs=1, cap_epochs=16, jitter=0.25, seed=seed)
        epoch, out = 0, []
        for count in range(1, 12):
            epoch = backoff.next_epoch(epoch=epoch, send_count=count, key=b"k" * 64)
            out.append(epoch)
        return out

    one, again, other = schedule(1), schedule(1), schedule(2)
    assert one == again  # deterministic per seed
    assert one != other  # jitter differs across seeds
    gaps = [b - a for a, b in itertools.pairwise(one)]
    assert max(gaps) <= 16 * 1.25 + 1  # the cap (with its jitter) holds
    assert gaps[0] < gaps[-1]  # and it did grow


def test_retransmission_stops_once_acked() -> None:
    net, a, _b = pair()
    a.send(G, b"once", now=0.0, timestamp=1)
    net.run_until(net.quiet, max_rounds=50)
    assert delivered(net, B) == [b"once"]
    assert any(isinstance(e, MessageAcked) for e in net.events[A])
    net.record = True
    net.run(30)
    assert net.log == []


def test_give_up_after_max_attempts_then_reset_re_arms() -> None:
    net, a, _b = pair(
        backoff=ExponentialBackoff(base_epochs=1, cap_epochs=2), give_up=GiveUpPolicy(3, None)
    )
    net.offline.add(B)
    mid = a.send(G, b"persistent", now=0.0, timestamp=1)
    net.run(30)
    (gave_up,) = [e for e in net.events[A] if isinstance(e, GaveUp)]
    assert (gave_up.message_id, gave_up.peer, gave_up.send_count) == (mid, B, 3)
    assert a.next_deadline() is None  # parked: nothing more to do
    # The app learns that B is back.
    net.offline.discard(B)
    assert a.reset_peer(B, now=net.now) == 1
    net.run_until(lambda: delivered(net, B) == [b"persistent"], max_rounds=5)


def test_peer_latency_stretches_retransmission() -> None:
    a = engine(backoff=ExponentialBackoff(base_epochs=1, cap_epochs=4))
    a.add_group(G)
    a.add_peer(G, B)
    a.set_peer_latency(B, 3 * 24 * 3600)  # a file carried by hand: days
    a.send(G, b"by sneakernet", now=0.0, timestamp=1)
    assert len(a.payloads_to_send(now=0.0)) == 1
    deadline = a.next_deadline()
    assert deadline is not None and deadline >= 2 * 3 * 24 * 3600


# --------------------------------------------------------------------------- parents and delivery


def test_new_messages_name_the_frontier_and_ephemerals_are_never_parents() -> None:
    net, a, b = pair()
    m1 = b.send(G, b"b1", now=0.0, timestamp=1)
    m2 = a.send(G, b"a1", now=0.0, timestamp=2)  # concurrent with b1
    net.run_until(lambda: len(delivered(net, A)) == 1 and len(delivered(net, B)) == 1, max_rounds=9)
    a.send(G, b"eph", now=net.now, timestamp=3, ephemeral=True)
    m3 = a.send(G, b"merge", now=net.now, timestamp=4)
    stored = a.store_view.get_message(m3)
    assert stored is not None and set(stored.parents) == {m1, m2}
    m4 = a.send(G, b"next", now=net.now, timestamp=5)
    stored = a.store_view.get_message(m4)
    assert stored is not None and stored.parents == (m3,)


def chain(n: int) -> list[bytes]:
    """Wire encodings of a causal chain m0 <- m1 <- ... (each names the previous)."""
    wires: list[bytes] = []
    parent: tuple[bytes, ...] = ()
    for i in range(n):
        wire = encode_message(G, i + 1, f"c{i}".encode(), parents=parent)
        parent = (message_id(G, i + 1, f"c{i}".encode()),)
        wires.append(wire)
    return wires


@pytest.mark.parametrize("delivery", list(DeliveryMode))
def test_missing_parents_are_fetched_at_any_depth(delivery: DeliveryMode) -> None:
    wires = chain(4)
    store = MemoryStore()
    for w in wires:  # A has the whole chain; it offers nothing, B only learns of the tip
        m = decode_stored(w)
        store.add_message(
            StoredMessage(m.id, m.group_id, m.timestamp, w, m.parents, m.expires_at, True)
        )
    net, _, b = pair(delivery=delivery, store=store)
    b.receive_payload(A, encode_payload([], [], [], [wires[-1]]), now=0.0)
    net.run_until(lambda: len(delivered(net, B)) == 4, max_rounds=40)
    order = delivered(net, B)
    if delivery is DeliveryMode.CONSISTENT:
        assert order == [b"c0", b"c1", b"c2", b"c3"]  # parents first
    else:
        assert order[0] == b"c3" and sorted(order) == [b"c0", b"c1", b"c2", b"c3"]


def test_consistent_mode_holds_a_child_until_its_parent() -> None:
    _, _, b = pair(delivery=DeliveryMode.CONSISTENT)
    wires = chain(2)
    b.receive_payload(A, encode_payload([], [], [], [wires[1]]), now=0.0)
    assert [e for e in b.events() if isinstance(e, MessageDelivered)] == []
    b.receive_payload(A, encode_payload([], [], [], [wires[0]]), now=1.0)
    assert [e.body for e in b.events() if isinstance(e, MessageDelivered)] == [b"c0", b"c1"]


# --------------------------------------------------------------------------- ephemeral


def test_ephemeral_is_sent_once_never_stored_acked_or_retransmitted() -> None:
    net, a, b = pair()
    net.record = True
    mid = a.send(G, b"typing", now=0.0, timestamp=1, ephemeral=True)
    net.run(20)
    assert delivered(net, B) == [b"typing"]
    assert a.store_view.get_message(mid) is None and b.store_view.get_message(mid) is None
    carrying = [t for t in net.log if t.sender == A and records(t.payload)[3]]
    assert len(carrying) == 1
    assert all(records(t.payload)[0] == 0 for t in net.log if t.sender == B)


# --------------------------------------------------------------------------- relay


@pytest.mark.parametrize("relay", list(RelayPolicy))
def test_relay_policies(relay: RelayPolicy) -> None:
    # A - B - C in a line: C hears A's messages only through B.
    net = Net()
    a, b, c = (net.add(n, engine(relay=relay)) for n in (A, B, C))
    for e in (a, b, c):
        e.add_group(G)
    a.add_peer(G, B)
    c.add_peer(G, B)
    b.add_peer(G, A)
    b.add_peer(G, C, mode=Mode.BATCH)
    a.send(G, b"pass it on", now=0.0, timestamp=1)
    net.record = True
    net.run(10)
    to_c = [records(t.payload) for t in net.log if t.receiver == C]
    if relay is RelayPolicy.NONE:
        assert delivered(net, C) == []
    else:
        assert delivered(net, C) == [b"pass it on"]
        first = next(r for r in to_c if r != (0, 0, 0, 0))
        assert first == ((0, 0, 0, 1) if relay is RelayPolicy.MODE else (0, 1, 0, 0))


# --------------------------------------------------------------------------- expiry


def test_expired_messages_leave_store_and_queues_and_never_go_out() -> None:
    net, a, _b = pair()
    net.offline.add(B)
    mid = a.send(G, b"self-destruct", now=0.0, timestamp=1, expires_at=5_000)
    keep = a.send(G, b"keep", now=0.0, timestamp=2)
    net.run(3)
    assert a.expire(wall=5_000) == 1
    assert any(isinstance(e, MessageExpired) and e.message_id == mid for e in a.events())
    assert a.store_view.get_message(mid) is None and a.store_view.get_message(keep) is not None
    net.offline.discard(B)
    a.reset_peer(B, now=net.now)
    net.run_until(lambda: b"keep" in delivered(net, B), max_rounds=10)
    net.run(5)
    assert delivered(net, B) == [b"keep"]


# --------------------------------------------------------------------------- restart


def test_restart_resumes_retransmission_without_duplicates(tmp_path: Path) -> None:
    net = Net()
    store = SQLiteStore(tmp_path / "a.db")
    a = net.add(A, engine(store))
    b = net.add(B, engine())
    a.add_group(G)
    a.add_peer(G, B)
    b.add_group(G)
    b.add_peer(G, A)
    net.offline.add(B)
    a.send(G, b"before the crash", now=0.0, timestamp=1)
    net.run(3)
    store.close()  # the process dies; a new one opens the same file
    store = SQLiteStore(tmp_path / "a.db")
    try:
        a = net.add(A, Engine(store, config=SyncConfig(epoch_seconds=1.0), now=net.now))
        assert a.groups() == {G: {B: Mode.BATCH}}
        net.offline.discard(B)
        a.reset_peer(B, now=net.now)
        net.run_until(lambda: delivered(net, B) == [b"before the crash"], max_rounds=20)
        net.run_until(net.quiet, max_rounds=50)
        assert delivered(net, B) == [b"before the crash"]
        assert store.record_count() == 0
    finally:
        store.close()


def test_parent_later_in_the_same_payload_is_not_requested() -> None:
    _, _, b = pair()
    wires = chain(5)
    b.receive_payload(A, encode_payload([], [], [], list(reversed(wires))), now=0.0)
    assert sorted(e.body for e in b.events() if isinstance(e, MessageDelivered)) == [
        f"c{i}".encode() for i in range(5)
    ]
    # Nothing is asked for: every parent arrived in the payload, after its child.
    assert b.store_view.records_for_peer(A) == []


def test_offers_of_unknown_ids_are_bounded() -> None:
    b = engine(limits=Limits(max_pending_requests=10))
    b.add_group(G)
    b.add_peer(G, A, mode=Mode.INTERACTIVE)
    fake = [bytes([i]) * 32 for i in range(50)]  # a hostile member offers IDs that do not exist
    b.receive_payload(A, encode_payload([], fake, [], []), now=0.0)
    requested = [r for r in b.store_view.records_for_peer(A) if r.type is RecordType.REQUEST]
    assert len(requested) == 10
    rejected = [e for e in b.events() if isinstance(e, PayloadRejected)]
    assert sum(e.dropped for e in rejected) == 40
    assert any("max_pending_requests" in e.reason for e in rejected)
