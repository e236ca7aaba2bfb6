"""The engine as its driver and its application see it, one behaviour per test.

Each test drives real engines by hand (no Trio, no sockets): ``now`` is stepped explicitly, payloads
are handed from one engine to the other (or through :class:`~mvds_node.sim.Net`), and what a user
would notice is asserted exactly: the deadline returned, the epochs in which payloads go out, what
each payload carries, the events. Tests that touch the store run over both stores.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from mvds_node.sim import Net
from mvds_node.sync import (
    DeliveryMode,
    Engine,
    Event,
    ExponentialBackoff,
    GaveUp,
    GiveUpPolicy,
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
    StoreReader,
    SyncConfig,
    decode_payload,
    encode_message,
    encode_payload,
    message_id,
)

G = b"G" * 32
A, B, C = b"A" * 32, b"B" * 32, b"C" * 32
LIMITS = SyncConfig().limits
NO_GIVE_UP = GiveUpPolicy(max_attempts=None, max_age_epochs=None)

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of fresh stores of one kind; SQLite ones are files under ``tmp_path``."""
    opened: list[Store] = []
    counter = itertools.count()

    def make() -> Store:
        store: Store
        if request.param == "memory":
            store = MemoryStore()
        else:
            store = SQLiteStore(tmp_path / f"node{next(counter)}.db")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def config(**kw: Any) -> SyncConfig:
    kw.setdefault("epoch_seconds", 1.0)
    kw.setdefault("backoff", ReferenceBackoff())
    kw.setdefault("give_up", NO_GIVE_UP)
    return SyncConfig(**kw)


def node(
    store: Store | None = None,
    peers: dict[bytes, Mode] | None = None,
    *,
    now: float = 0.0,
    **kw: Any,
) -> Engine:
    """An engine in group ``G`` with the given peers (default: B in batch mode)."""
    engine = Engine(store if store is not None else MemoryStore(), config=config(**kw), now=now)
    engine.add_group(G)
    for peer, mode in (peers if peers is not None else {B: Mode.BATCH}).items():
        engine.add_peer(G, peer, mode=mode)
    return engine


@dataclass(frozen=True)
class Sent:
    """What one payload carried, by record kind (message records as IDs)."""

    acks: tuple[bytes, ...] = ()
    offers: tuple[bytes, ...] = ()
    requests: tuple[bytes, ...] = ()
    messages: tuple[bytes, ...] = ()


def sent(payload: bytes) -> Sent:
    d = decode_payload(payload, LIMITS)
    assert not d.dropped, d.dropped
    return Sent(tuple(d.acks), tuple(d.offers), tuple(d.requests), tuple(m.id for m in d.messages))


def drain(engine: Engine, now: float) -> dict[bytes, Sent]:
    """Drain an engine; each peer must get at most one payload."""
    out = engine.payloads_to_send(now=now)
    peers = [peer for peer, _ in out]
    assert len(peers) == len(set(peers)), "more than one payload for a peer in one drain"
    return {peer: sent(data) for peer, data in out}


def delivered(events: list[Event]) -> list[bytes]:
    return [e.body for e in events if isinstance(e, MessageDelivered)]


def wire(timestamp: int, body: bytes, *, parents: tuple[bytes, ...] = (), **kw: Any) -> bytes:
    return encode_message(G, timestamp, body, parents=parents, **kw)


def mid_of(timestamp: int, body: bytes) -> bytes:
    return message_id(G, timestamp, body)


def send_epochs(engine: Engine, epochs: range, *, epoch_seconds: float = 1.0) -> list[int]:
    """Drain at the start of each epoch (nothing is ever delivered); the epochs with output."""
    out = []
    for e in epochs:
        if engine.payloads_to_send(now=e * epoch_seconds):
            out.append(e)
    return out


# --------------------------------------------------------------------------- deadlines


def test_batch_deadlines_are_exact_epoch_starts() -> None:
    # The clock does not start at 0 and epochs are half a second: deadlines are epoch starts
    # on the driver's clock.
    a = node(now=10.0, epoch_seconds=0.5)
    assert a.next_deadline() is None  # idle: nothing to wait for
    mid = a.send(G, b"m", now=10.3, timestamp=1)
    assert a.next_deadline() == 10.0  # due in the current epoch, which began at 10.0
    assert drain(a, 10.3) == {B: Sent(messages=(mid,))}
    # Sent once in epoch 0: the next transmission is epoch 0 + 2 * 1 = 2, at 11.0.
    assert a.next_deadline() == 11.0
    a.handle_timer(now=10.9)
    assert drain(a, 10.9) == {}  # an early wake-up sends nothing and keeps the deadline
    assert a.next_deadline() == 11.0
    a.handle_timer(now=11.0)
    assert drain(a, 11.0) == {B: Sent(messages=(mid,))}
    assert a.next_deadline() == 13.0  # epoch 2 + 2 * 2 = 6, which begins at 13.0
    a.receive_payload(B, encode_payload(acks=[mid]), now=11.2)
    assert a.events() == [MessageAcked(mid, B)]
    assert a.next_deadline() is None


def test_interactive_deadlines_through_offer_request_message_ack() -> None:
    a = node(peers={B: Mode.INTERACTIVE})
    b = node(peers={A: Mode.INTERACTIVE})
    mid = a.send(G, b"m", now=0.0, timestamp=1)
    assert a.next_deadline() == 0.0
    (offer,) = a.payloads_to_send(now=0.0)
    assert sent(offer[1]) == Sent(offers=(mid,))
    assert a.next_deadline() == 2.0  # the OFFER is repeated at epoch 2 unless answered

    b.receive_payload(A, offer[1], now=0.2)
    assert b.next_deadline() == 0.0  # the REQUEST can go in this epoch's payload
    (request,) = b.payloads_to_send(now=0.2)
    assert sent(request[1]) == Sent(requests=(mid,))
    assert b.next_deadline() == 2.0

    a.receive_payload(B, request[1], now=0.4)
    # B already had its payload this epoch: the MESSAGE waits for epoch 1.
    assert a.next_deadline() == 1.0
    assert drain(a, 0.4) == {}
    (message,) = a.payloads_to_send(now=1.0)
    assert sent(message[1]) == Sent(messages=(mid,))
    # The REQUEST turned the OFFER record into a MESSAGE record, which keeps counting: this is
    # its second transmission, so the next is at epoch 1 + 2 * 2 = 5.
    assert a.next_deadline() == 5.0

    b.receive_payload(A, message[1], now=1.5)
    assert delivered(b.events()) == [b"m"]
    assert b.next_deadline() == 1.0  # the ACK is due in the current epoch (began at 1.0)
    assert drain(b, 1.5) == {A: Sent(acks=(mid,))}
    assert b.next_deadline() is None  # the REQUEST was answered: B has nothing left to do

    a.receive_payload(B, encode_payload(acks=[mid]), now=1.7)
    assert a.events() == [MessageAcked(mid, B)]
    assert a.next_deadline() is None


def test_ack_owed_to_a_peer_that_had_its_payload_waits_for_the_next_epoch() -> None:
    a = node()
    m1 = a.send(G, b"ours", now=0.0, timestamp=1)
    assert drain(a, 0.0) == {B: Sent(messages=(m1,))}
    theirs = mid_of(2, b"theirs")
    a.receive_payload(B, encode_payload(messages=[wire(2, b"theirs")]), now=0.5)
    assert a.next_deadline() == 1.0
    assert drain(a, 0.5) == {}
    assert drain(a, 1.0) == {B: Sent(acks=(theirs,))}
    assert a.next_deadline() == 2.0  # only m1's retransmission is left


# --------------------------------------------------------------------------- retransmission


def test_reference_backoff_retransmits_at_epoch_plus_twice_the_count(
    new_store: StoreFactory,
) -> None:
    a = node(new_store())
    a.send(G, b"into the void", now=0.0, timestamp=1)
    epochs = []
    deadlines = []
    for e in range(45):
        if a.payloads_to_send(now=float(e)):
            epochs.append(e)
            deadlines.append(a.next_deadline())
    # count 1 at epoch 0 -> 0 + 2; count 2 at 2 -> 2 + 4; then 6 + 6, 12 + 8, 20 + 10, 30 + 12.
    assert epochs == [0, 2, 6, 12, 20, 30, 42]
    assert deadlines == [2.0, 6.0, 12.0, 20.0, 30.0, 42.0, 56.0]


def exponential_schedule(seed: int, peers: tuple[bytes, ...] = (B,)) -> dict[bytes, list[int]]:
    backoff = ExponentialBackoff(base_epochs=1, factor=2.0, cap_epochs=16, jitter=1.0, seed=seed)
    a = node(peers=dict.fromkeys(peers, Mode.BATCH), backoff=backoff)
    a.send(G, b"m", now=0.0, timestamp=1)
    out: dict[bytes, list[int]] = {p: [] for p in peers}
    for e in range(400):
        for peer, _ in a.payloads_to_send(now=float(e)):
            out[peer].append(e)
    return out


def test_exponential_backoff_grows_to_its_cap_with_bounded_jitter() -> None:
    epochs = exponential_schedule(seed=7)[B]
    gaps = [y - x for x, y in itertools.pairwise(epochs)]
    assert len(gaps) > 15
    for n, gap in enumerate(gaps, start=1):
        base = min(16, 2 ** (n - 1))  # 1, 2, 4, 8, 16, 16, ...
        assert base <= gap < 2 * base, (n, gap)  # jitter adds at most jitter * base (here 100 %)
    assert max(gaps) < 32  # the cap holds however long we retry


def test_exponential_backoff_without_jitter_is_exactly_doubling() -> None:
    backoff = ExponentialBackoff(base_epochs=2, factor=2.0, cap_epochs=8, jitter=0.0)
    a = node(backoff=backoff)
    a.send(G, b"m", now=0.0, timestamp=1)
    assert send_epochs(a, range(40)) == [0, 2, 6, 14, 22, 30, 38]


def test_exponential_backoff_jitter_is_deterministic_per_seed_and_per_record() -> None:
    one = exponential_schedule(seed=1, peers=(B, C))
    assert one == exponential_schedule(seed=1, peers=(B, C))  # reproducible run to run
    others = [exponential_schedule(seed=s, peers=(B, C))[B] for s in range(2, 6)]
    assert any(o != one[B] for o in others)  # the seed changes the jitter
    # Records queued together do not stay in lock step: the jitter is keyed by the record.
    assert one[B] != one[C]


def test_all_records_for_a_peer_go_in_one_payload_per_epoch() -> None:
    a = node(peers={B: Mode.BATCH, C: Mode.INTERACTIVE})
    theirs, unknown = mid_of(1, b"from B"), mid_of(2, b"offered by B")
    # B sends a message (A owes it an ACK, and relays it to C) and offers one A lacks.
    a.receive_payload(B, encode_payload(offers=[unknown], messages=[wire(1, b"from B")]), now=0.0)
    ours = [a.send(G, b"m%d" % i, now=0.0, timestamp=10 + i) for i in range(3)]
    assert drain(a, 0.0) == {
        B: Sent(acks=(theirs,), requests=(unknown,), messages=tuple(ours)),
        C: Sent(offers=(theirs, *ours)),
    }
    # One payload per peer per epoch: anything new in this epoch waits for the next.
    late = a.send(G, b"late", now=0.5, timestamp=20)
    assert drain(a, 0.5) == {}
    assert a.next_deadline() == 1.0
    assert drain(a, 1.0) == {B: Sent(messages=(late,)), C: Sent(offers=(late,))}


def test_acks_ride_on_the_payload_that_carries_our_own_messages() -> None:
    net = Net(record=True)
    a = net.add(A, node(peers={B: Mode.BATCH}))
    b = net.add(B, node(peers={A: Mode.BATCH}))
    question = a.send(G, b"question", now=0.0, timestamp=1)
    net.step()  # round 0: the question reaches B, which owes A an ACK
    answer = b.send(G, b"answer", now=net.now, timestamp=2)
    net.run_until(net.quiet, max_rounds=10)
    carried = [(t.round, t.sender, sent(t.payload)) for t in net.log]
    assert carried == [
        (0, A, Sent(messages=(question,))),
        (1, B, Sent(acks=(question,), messages=(answer,))),  # one payload, not two
        (2, A, Sent(acks=(answer,))),  # an ACK goes alone only when nothing else is due
    ]
    assert net.quiet() and a.next_deadline() is None and b.next_deadline() is None


# --------------------------------------------------------------------------- giving up


def test_give_up_after_max_attempts_then_reset_peer_re_arms(new_store: StoreFactory) -> None:
    a = node(new_store(), give_up=GiveUpPolicy(max_attempts=3, max_age_epochs=None))
    mid = a.send(G, b"m", now=0.0, timestamp=1)
    events: list[tuple[int, Event]] = []
    epochs = []
    for e in range(40):
        if a.payloads_to_send(now=float(e)):
            epochs.append(e)
        events.extend((e, event) for event in a.events())
    assert epochs == [0, 2, 6]  # three attempts; when the fourth is due (12), it gives up
    assert events == [(12, GaveUp(mid, B, RecordType.MESSAGE, 3))]
    assert a.next_deadline() is None  # parked: the engine stops asking to be woken
    assert a.statistics().gave_up == 1

    assert a.reset_peer(B, now=40.5) == 1
    assert a.next_deadline() == 40.0  # everything goes out in B's next payload
    assert drain(a, 40.5) == {B: Sent(messages=(mid,))}
    # The send count restarted: three attempts again (40, 42, 46), then a second GaveUp.
    assert send_epochs(a, range(41, 60)) == [42, 46]
    assert a.events() == [GaveUp(mid, B, RecordType.MESSAGE, 3)]


def test_give_up_after_max_age_only_stops_that_peer(new_store: StoreFactory) -> None:
    a = node(
        new_store(),
        peers={B: Mode.BATCH, C: Mode.BATCH},
        give_up=GiveUpPolicy(max_attempts=None, max_age_epochs=5),
    )
    mid = a.send(G, b"m", now=0.0, timestamp=1)
    a.payloads_to_send(now=0.0)
    a.receive_payload(C, encode_payload(acks=[mid]), now=0.5)  # C has it; B never answers
    assert a.events() == [MessageAcked(mid, C)]
    assert send_epochs(a, range(1, 30)) == [2]  # at 6, five epochs after the first: give up
    assert a.events() == [GaveUp(mid, B, RecordType.MESSAGE, 2)]
    assert a.next_deadline() is None
    # A new message to B is not affected by the old record having given up.
    m2 = a.send(G, b"m2", now=30.0, timestamp=2)
    assert drain(a, 30.0) == {B: Sent(messages=(m2,)), C: Sent(messages=(m2,))}


def test_reset_peer_answers_a_request_that_gave_up() -> None:
    # REQUEST records give up and re-arm like the others (here: an offer we could not fetch).
    b = node(peers={A: Mode.INTERACTIVE}, give_up=GiveUpPolicy(max_attempts=2, max_age_epochs=None))
    wanted = mid_of(1, b"m")
    b.receive_payload(A, encode_payload(offers=[wanted]), now=0.0)
    assert send_epochs(b, range(10)) == [0, 2]
    assert b.events() == [GaveUp(wanted, A, RecordType.REQUEST, 2)]
    assert b.reset_peer(A, now=10.0) == 1
    assert drain(b, 10.0) == {A: Sent(requests=(wanted,))}


# --------------------------------------------------------------------------- causal parents


def test_new_message_names_the_frontier_and_never_ephemeral_or_expiring_ones(
    new_store: StoreFactory,
) -> None:
    a = node(new_store())
    m1 = a.send(G, b"m1", now=0.0, timestamp=1)
    m2 = a.send(G, b"m2", now=0.0, timestamp=2)
    # B wrote x concurrently with m2, on top of m1: two messages without children now.
    x = mid_of(3, b"x")
    a.receive_payload(B, encode_payload(messages=[wire(3, b"x", parents=(m1,))]), now=0.0)
    a.send(G, b"typing", now=0.0, timestamp=4, ephemeral=True)
    a.send(G, b"secret", now=0.0, timestamp=5, expires_at=10**13)
    m3 = a.send(G, b"m3", now=0.0, timestamp=6)
    m4 = a.send(G, b"m4", now=0.0, timestamp=7)
    parents = {}
    for m in (m1, m2, m3, m4):
        stored = a.store_view.get_message(m)
        assert stored is not None
        parents[m] = stored.parents
    # The ephemeral and the expiring message are skipped, and they do not hide m2 and x: m3
    # still comes after both.
    assert parents == {m1: (), m2: (m1,), m3: tuple(sorted((m2, x))), m4: (m3,)}
    # What goes on the wire names them too.
    out = a.payloads_to_send(now=0.0)
    messages = decode_payload(out[0][1], LIMITS).messages
    assert {m.id: m.parents for m in messages if not m.ephemeral and not m.expires_at} == parents


def test_consistent_order_holds_across_an_exploding_message() -> None:
    # A writes m1, an exploding message, then m2. B must not see m2 before m1 in consistent
    # mode, even though the exploding message between them can never be named as a parent.
    a = node()
    b = node(peers={A: Mode.BATCH}, delivery=DeliveryMode.CONSISTENT)
    m1 = a.send(G, b"m1", now=0.0, timestamp=1)
    a.send(G, b"boom", now=0.0, timestamp=2, expires_at=10**13)
    m2 = a.send(G, b"m2", now=0.0, timestamp=3)
    stored = a.store_view.get_message(m2)
    assert stored is not None and stored.parents == (m1,)
    (out,) = a.payloads_to_send(now=0.0)
    messages = {m.id: m.wire for m in decode_payload(out[1], LIMITS).messages}
    b.receive_payload(A, encode_payload(messages=[messages[m2]]), now=0.0)  # m1 was lost
    assert delivered(b.events()) == []
    b.receive_payload(A, encode_payload(messages=[messages[m1]]), now=1.0)
    assert delivered(b.events()) == [b"m1", b"m2"]


def test_a_fetched_parent_does_not_rejoin_the_frontier() -> None:
    b = node(peers={A: Mode.BATCH})
    c0, c1 = mid_of(1, b"c0"), mid_of(2, b"c1")
    b.receive_payload(A, encode_payload(messages=[wire(2, b"c1", parents=(c0,))]), now=0.0)
    b.receive_payload(A, encode_payload(messages=[wire(1, b"c0")]), now=0.5)
    assert delivered(b.events()) == [b"c1", b"c0"]
    reply = b.send(G, b"reply", now=0.5, timestamp=3)
    stored = b.store_view.get_message(reply)
    assert stored is not None and stored.parents == (c1,)


# --------------------------------------------------------------------------- delivery modes


def chain_at_c(length: int) -> tuple[Engine, list[bytes], list[bytes]]:
    """C holds a causal chain c0 <- c1 <- ... and knows B; nothing has been sent yet."""
    c = node(peers={})
    ids = [c.send(G, b"c%d" % i, now=0.0, timestamp=i + 1) for i in range(length)]
    c.add_peer(G, B, mode=Mode.BATCH)
    wires = []
    for i in ids:
        stored = c.store_view.get_message(i)
        assert stored is not None
        wires.append(stored.wire)
    return c, ids, wires


def test_eventual_delivers_at_once_and_fetches_parents_from_the_referrer_at_depth() -> None:
    c, ids, wires = chain_at_c(4)
    # B syncs with A and C; only C ever had the chain, and B first hears of its tip.
    b = node(peers={A: Mode.BATCH, C: Mode.BATCH})
    b.receive_payload(C, encode_payload(messages=[wires[3]]), now=0.0)
    assert delivered(b.events()) == [b"c3"]  # at once, parents or not
    out = dict(b.payloads_to_send(now=0.0))
    # The missing parent is asked of the peer that named it; A only gets the relayed copy.
    assert sent(out[C]) == Sent(acks=(ids[3],), requests=(ids[2],))
    assert sent(out[A]) == Sent(messages=(ids[3],))
    c.receive_payload(B, out[C], now=0.0)

    net = Net(record=True)  # B and C only: A is away
    net.add(B, b)
    net.add(C, c)
    net.run_until(lambda: len(delivered(net.events[B])) == 3, max_rounds=20)
    assert delivered(net.events[B]) == [b"c2", b"c1", b"c0"]  # each at once, as it arrives
    requests = [(t.round, t.receiver, r) for t in net.log for r in sent(t.payload).requests]
    # One level at a time, each asked once, always of C: c2 named c1, and c1 named c0.
    assert requests == [(1, C, ids[1]), (3, C, ids[0])]
    assert all(t.receiver != A or not sent(t.payload).requests for t in net.log)


def test_consistent_holds_children_until_the_parents_are_delivered(
    new_store: StoreFactory,
) -> None:
    _, ids, wires = chain_at_c(4)
    b = node(new_store(), peers={C: Mode.BATCH}, delivery=DeliveryMode.CONSISTENT)
    # The chain arrives backwards, one epoch at a time.
    for n, i in enumerate((3, 2, 1)):
        b.receive_payload(C, encode_payload(messages=[wires[i]]), now=float(n))
        assert delivered(b.events()) == []
        assert b.has_message(ids[i])  # held: stored...
        assert drain(b, float(n)) == {C: Sent(acks=(ids[i],), requests=(ids[i - 1],))}  # ...acked
    b.receive_payload(C, encode_payload(messages=[wires[0]]), now=3.0)
    events = [e for e in b.events() if isinstance(e, MessageDelivered)]
    assert [e.body for e in events] == [b"c0", b"c1", b"c2", b"c3"]  # parents first
    assert [e.parents for e in events] == [(), (ids[0],), (ids[1],), (ids[2],)]
    assert all(e.sender == C for e in events)


def test_consistent_waits_for_every_parent() -> None:
    b = node(peers={A: Mode.BATCH}, delivery=DeliveryMode.CONSISTENT)
    p1, p2 = mid_of(1, b"p1"), mid_of(2, b"p2")
    child = wire(3, b"child", parents=(p1, p2))
    b.receive_payload(A, encode_payload(messages=[wire(1, b"p1"), child]), now=0.0)
    assert delivered(b.events()) == [b"p1"]
    b.receive_payload(A, encode_payload(messages=[wire(2, b"p2")]), now=1.0)
    assert delivered(b.events()) == [b"p2", b"child"]


# --------------------------------------------------------------------------- ephemeral


def test_ephemeral_sent_once_never_stored_acked_or_retransmitted(new_store: StoreFactory) -> None:
    a = node(new_store())
    b = node(new_store(), peers={A: Mode.BATCH})
    mid = a.send(G, b"typing...", now=0.0, timestamp=1, ephemeral=True)
    assert a.next_deadline() == 0.0
    (out,) = a.payloads_to_send(now=0.0)
    assert sent(out[1]) == Sent(messages=(mid,))
    assert a.next_deadline() is None  # nothing to retransmit
    assert send_epochs(a, range(1, 50)) == []  # and, even unacknowledged, nothing is
    assert not a.has_message(mid)
    assert a.store_view.message_count() == 0 and a.store_view.record_count() == 0

    for now in (0.0, 0.1, 5.0):  # the network duplicated it
        b.receive_payload(A, out[1], now=now)
    (event,) = b.events()
    assert isinstance(event, MessageDelivered) and event.ephemeral and event.parents == ()
    assert not b.has_message(mid)
    assert b.next_deadline() is None and drain(b, 5.0) == {}  # no ACK for it


def test_ephemeral_queued_after_the_peers_payload_goes_in_the_next_epoch() -> None:
    a = node()
    m = a.send(G, b"m", now=0.0, timestamp=1)
    assert drain(a, 0.0) == {B: Sent(messages=(m,))}
    e = a.send(G, b"eph", now=0.5, timestamp=2, ephemeral=True)
    assert a.next_deadline() == 1.0
    assert drain(a, 1.0) == {B: Sent(messages=(e,))}
    assert drain(a, 2.0) == {B: Sent(messages=(m,))}  # only the durable one comes back


# --------------------------------------------------------------------------- relay


@pytest.mark.parametrize(
    ("relay", "mode", "expected"),
    [
        (RelayPolicy.MODE, Mode.BATCH, "messages"),
        (RelayPolicy.MODE, Mode.INTERACTIVE, "offers"),
        (RelayPolicy.OFFER, Mode.BATCH, "offers"),
        (RelayPolicy.OFFER, Mode.INTERACTIVE, "offers"),
        (RelayPolicy.NONE, Mode.BATCH, None),
        (RelayPolicy.NONE, Mode.INTERACTIVE, None),
    ],
)
def test_relay_to_the_other_group_peers(
    relay: RelayPolicy, mode: Mode, expected: str | None
) -> None:
    b = node(peers={A: Mode.BATCH, C: mode}, relay=relay)
    mid = mid_of(1, b"from A")
    b.receive_payload(A, encode_payload(messages=[wire(1, b"from A")]), now=0.0)
    out = drain(b, 0.0)
    assert out.pop(A) == Sent(acks=(mid,))  # never relayed back to its sender
    if expected is None:
        assert out == {}
        assert b.next_deadline() is None
    else:
        assert out == {C: Sent(**{expected: (mid,)})}


def test_relay_through_a_middle_node_end_to_end() -> None:
    # A - B - C in a line, C interactive towards B: C hears A's message only through B.
    net = Net(record=True)
    a = net.add(A, node(peers={B: Mode.BATCH}))
    net.add(B, node(peers={A: Mode.BATCH, C: Mode.INTERACTIVE}))
    net.add(C, node(peers={B: Mode.INTERACTIVE}))
    mid = a.send(G, b"pass it on", now=0.0, timestamp=1)
    net.run_until(net.quiet, max_rounds=20)
    assert delivered(net.events[C]) == [b"pass it on"]
    b_to_c = [(t.round, sent(t.payload)) for t in net.log if t.sender == B and t.receiver == C]
    c_to_b = [(t.round, sent(t.payload)) for t in net.log if t.sender == C]
    assert b_to_c == [(1, Sent(offers=(mid,))), (3, Sent(messages=(mid,)))]
    assert c_to_b == [(2, Sent(requests=(mid,))), (4, Sent(acks=(mid,)))]


def test_no_relay_to_a_peer_that_offered_the_message() -> None:
    b = node(peers={A: Mode.BATCH, C: Mode.INTERACTIVE})
    mid = mid_of(1, b"m")
    b.receive_payload(C, encode_payload(offers=[mid]), now=0.0)  # C has it
    b.receive_payload(A, encode_payload(messages=[wire(1, b"m")]), now=0.0)  # A's copy lands first
    assert drain(b, 0.0) == {A: Sent(acks=(mid,))}  # no REQUEST, OFFER or MESSAGE to C
    assert b.next_deadline() is None


# --------------------------------------------------------------------------- expiry


def test_expired_message_is_deleted_everywhere_and_never_sent_again(
    new_store: StoreFactory,
) -> None:
    a = node(new_store(), peers={B: Mode.BATCH, C: Mode.INTERACTIVE})
    mid = a.send(G, b"burn after reading", now=0.0, timestamp=1, expires_at=5_000)
    keep = a.send(G, b"keep", now=0.0, timestamp=2)
    assert drain(a, 0.0) == {
        B: Sent(messages=(mid, keep)),
        C: Sent(offers=(mid, keep)),
    }
    a.handle_timer(now=0.5, wall=4_000)  # the wall clock: the expiry is 1 s away
    assert a.next_deadline() == 1.5
    a.handle_timer(now=1.499, wall=4_999)
    assert a.events() == []
    a.handle_timer(now=1.5, wall=5_000)
    assert a.events() == [MessageExpired(mid, G)]
    assert not a.has_message(mid)
    assert a.store_view.records_for_message(mid) == []  # no peer is owed it any more
    assert a.next_deadline() == 2.0  # the kept message's retransmission, as before
    # The remaining retransmissions (B at 2, 6, ...; C likewise) carry only the kept message,
    # and a REQUEST for the expired one is refused.
    a.receive_payload(C, encode_payload(requests=[mid]), now=1.0)
    assert [e for e in a.events() if isinstance(e, PayloadRejected)]
    seen: set[bytes] = set()
    for e in range(1, 30):
        for s in drain(a, float(e)).values():
            seen.update(s.messages + s.offers)
    assert seen == {keep}


def test_next_deadline_includes_expiry_and_follows_the_wall_clock() -> None:
    a = node()
    mid = a.send(G, b"m", now=0.0, timestamp=1, expires_at=10_000)
    drain(a, 0.0)
    a.receive_payload(B, encode_payload(acks=[mid]), now=0.5)
    assert a.events() == [MessageAcked(mid, B)]
    assert a.next_deadline() is None  # no wall clock yet: nothing to wake for
    a.handle_timer(now=1.0, wall=1_000)
    assert a.next_deadline() == 10.0  # one timer: the expiry, on the monotonic clock
    a.handle_timer(now=2.0, wall=7_000)  # the wall clock jumped 5 s ahead
    assert a.next_deadline() == 5.0
    a.handle_timer(now=3.0, wall=2_000)  # and 6 s back
    assert a.next_deadline() == 11.0
    with pytest.warns(DeprecationWarning, match="next_expiry"):
        assert a.next_expiry() == 10_000
    a.handle_timer(now=11.0, wall=10_000)
    assert a.events() == [MessageExpired(mid, G)]
    assert a.next_deadline() is None


def test_an_expiring_message_that_arrives_sets_the_next_deadline() -> None:
    a = node()
    a.handle_timer(now=0.0, wall=1_000)
    a.receive_payload(B, encode_payload(messages=[wire(1, b"m", expires_at=4_000)]), now=0.0)
    drain(a, 0.0)  # its ACK
    assert a.next_deadline() == 3.0
    a.handle_timer(now=3.0, wall=4_000)
    assert [type(e) for e in a.events()] == [MessageDelivered, MessageExpired]


def test_expiry_of_the_last_pending_message_leaves_nothing_to_wake_for() -> None:
    a = node()
    a.send(G, b"m", now=0.0, timestamp=1, expires_at=5_000)
    assert drain(a, 0.0) != {}
    assert a.next_deadline() == 2.0
    assert a.expire(wall=5_000) == 1
    assert a.next_deadline() is None
    assert send_epochs(a, range(1, 20)) == []


def test_message_arriving_already_expired_is_acked_not_stored_nor_delivered(
    new_store: StoreFactory,
) -> None:
    b = node(new_store(), peers={A: Mode.INTERACTIVE})
    mid = mid_of(1, b"late")
    b.receive_payload(A, encode_payload(offers=[mid]), now=0.0)
    assert drain(b, 0.0) == {A: Sent(requests=(mid,))}
    b.expire(wall=6_000)  # the wall clock is past the message's expiry
    late = wire(1, b"late", expires_at=5_000)
    b.receive_payload(A, encode_payload(messages=[late]), now=1.0)
    assert b.events() == []
    assert not b.has_message(mid)
    assert drain(b, 1.0) == {A: Sent(acks=(mid,))}  # the sender may stop, and we stop asking
    assert b.next_deadline() is None


# --------------------------------------------------------------------------- restart


def test_restart_resumes_the_retransmission_schedule(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    store = SQLiteStore(path)
    a = node(store)
    mid = a.send(G, b"m", now=0.0, timestamp=1)
    assert send_epochs(a, range(4)) == [0, 2]  # next due at epoch 6
    store.close()  # the process dies at epoch 3

    store = SQLiteStore(path)
    try:
        # A new process, a new monotonic clock: the epoch counter resumes from the store, so
        # the retransmission due at epoch 6 is three epochs of running time away.
        a = Engine(store, config=config(), now=1000.0)
        assert a.groups() == {G: {B: Mode.BATCH}}
        assert a.epoch == 3
        assert a.next_deadline() == 1003.0
        assert drain(a, 1002.9) == {}
        assert drain(a, 1003.0) == {B: Sent(messages=(mid,))}
        a.receive_payload(B, encode_payload(acks=[mid]), now=1003.5)
        assert a.events() == [MessageAcked(mid, B)]
        assert a.next_deadline() is None
        assert store.record_count() == 0
    finally:
        store.close()


def test_after_a_restart_the_next_message_names_the_same_parents(
    new_store: StoreFactory,
) -> None:
    # An expiring message is never a parent, in the engine's frontier and in the store's, which
    # a restarted engine rebuilds its frontier from.
    def history(store: Store) -> Engine:
        a = node(store)
        m1 = a.send(G, b"m1", now=0.0, timestamp=1)
        # From B: an expiring message on top of w, before w itself, then w.
        w = wire(2, b"w")
        z = wire(3, b"z", parents=(mid_of(2, b"w"),), expires_at=10**13)
        a.receive_payload(B, encode_payload(messages=[z]), now=0.0)
        a.receive_payload(B, encode_payload(messages=[w]), now=0.0)
        # Ours: an expiring message on top of m1 and w.
        e = a.send(G, b"secret", now=0.0, timestamp=4, expires_at=10**13)
        stored = a.store_view.get_message(e)
        assert stored is not None and stored.parents == tuple(sorted((m1, mid_of(2, b"w"))))
        return a

    def parents_of_next(a: Engine) -> tuple[bytes, ...]:
        m = a.send(G, b"next", now=0.0, timestamp=5)
        stored = a.store_view.get_message(m)
        assert stored is not None
        return stored.parents

    expected = tuple(sorted((mid_of(1, b"m1"), mid_of(2, b"w"))))
    assert parents_of_next(history(new_store())) == expected
    store = new_store()
    history(store)
    restarted = Engine(store, config=config(), now=0.0)
    assert parents_of_next(restarted) == expected


def test_restart_of_the_receiver_delivers_no_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    a = node()
    store = SQLiteStore(path)
    b = node(store, peers={A: Mode.BATCH})
    mid = a.send(G, b"once", now=0.0, timestamp=1)
    (out,) = a.payloads_to_send(now=0.0)
    b.receive_payload(A, out[1], now=0.0)
    assert delivered(b.events()) == [b"once"]
    store.close()  # dies before its ACK went out

    store = SQLiteStore(path)
    try:
        b = Engine(store, config=config(), now=0.0)
        (again,) = a.payloads_to_send(now=2.0)  # A retransmits: no ACK came
        b.receive_payload(A, again[1], now=0.0)
        assert b.events() == []  # not delivered a second time
        assert b.statistics().duplicates_received == 1
        (ack,) = b.payloads_to_send(now=0.0)
        a.receive_payload(B, ack[1], now=2.5)
        assert a.events() == [MessageAcked(mid, B)]
        assert a.next_deadline() is None and b.next_deadline() is None
    finally:
        store.close()


def test_restart_keeps_a_held_message_until_its_parent(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    p, c = mid_of(1, b"parent"), mid_of(2, b"child")
    store = SQLiteStore(path)
    b = node(store, peers={A: Mode.BATCH}, delivery=DeliveryMode.CONSISTENT)
    b.receive_payload(A, encode_payload(messages=[wire(2, b"child", parents=(p,))]), now=0.0)
    assert b.events() == []
    store.close()

    store = SQLiteStore(path)
    try:
        b = Engine(store, config=config(delivery=DeliveryMode.CONSISTENT), now=0.0)
        assert b.events() == []  # still held
        assert drain(b, 0.0) == {A: Sent(requests=(p,))}  # and its parent still asked for
        b.receive_payload(A, encode_payload(messages=[wire(1, b"parent")]), now=1.0)
        events = [e for e in b.events() if isinstance(e, MessageDelivered)]
        assert [e.message_id for e in events] == [p, c]
    finally:
        store.close()


# --------------------------------------------------------------------------- latency


def test_peer_latency_stretches_retransmission_to_that_peer_only(
    new_store: StoreFactory,
) -> None:
    a = node(new_store(), peers={B: Mode.BATCH, C: Mode.BATCH})
    a.set_peer_latency(B, 30.0)  # a slow carrier: wait at least 2 * 30 s = 60 epochs
    a.send(G, b"m", now=0.0, timestamp=1)
    per_peer: dict[bytes, list[int]] = {B: [], C: []}
    for e in range(130):
        for peer, _ in a.payloads_to_send(now=float(e)):
            per_peer[peer].append(e)
        if e == 0:
            assert a.next_deadline() == 2.0  # C's retransmission is the next thing due
    assert per_peer[C] == [0, 2, 6, 12, 20, 30, 42, 56, 72, 90, 110]
    assert per_peer[B] == [0, 60, 120]
    # Back to a fast carrier: the schedule is the backoff's alone again.
    a.set_peer_latency(B, 0)
    a.reset_peer(B, now=130.0)
    to_b = [e for e in range(130, 140) if B in dict(a.payloads_to_send(now=float(e)))]
    assert to_b == [130, 132, 136]


def test_a_peer_removed_and_added_again_starts_afresh() -> None:
    """Nothing of a peer's in-memory state outlives its removal from its last group: its
    carrier's latency and payload size, its live connection, its payload this epoch, its
    ACKs and ephemeral messages."""
    a = node(peers={B: Mode.BATCH, C: Mode.BATCH})
    a.set_peer_latency(B, 30.0)
    a.set_peer_max_payload(B, 200)
    a.set_peer_reliable(B, True, now=0.0)
    a.receive_payload(B, encode_payload([], [], [], [wire(1, b"from b")]), now=0.0)
    a.send(G, b"ephemeral", now=0.0, timestamp=2, ephemeral=True)
    assert set(drain(a, 0.0)) == {B, C}  # B had its payload in epoch 0
    a.receive_payload(B, encode_payload([], [], [], [wire(3, b"again")]), now=0.0)
    a.send(G, b"ephemeral 2", now=0.0, timestamp=4, ephemeral=True)
    a.remove_peer(G, B)
    a.add_peer(G, B, mode=Mode.BATCH)
    # Nothing queued for it survived: only C is owed the ephemeral message, next epoch.
    assert a.next_deadline() == 1.0
    assert set(drain(a, 1.0)) == {C}
    body = b"x" * 300
    a.send(G, body, now=1.5, timestamp=5)
    # Due in this epoch (no payload for it yet since it came back), whole (no 200-byte cut),
    # and its record is new, not written as sent for a live connection.
    out = [(peer, data) for peer, data in a.payloads_to_send(now=1.5) if peer == B]
    assert [sent(data).messages for _, data in out] == [(mid_of(5, body),)]
    # Retransmitted on the backoff's schedule, not the slow carrier's 60 epochs.
    to_b = [e for e in range(2, 12) if B in dict(a.payloads_to_send(now=float(e)))]
    assert to_b == [3, 7]


def test_the_store_view_reads_and_changes_nothing() -> None:
    a = node()
    mid = a.send(G, b"m", now=0.0, timestamp=1)
    view: StoreReader = a.store_view
    assert view.has_message(mid) and view.message_count() == 1
    (record,) = view.records_for_peer(B)
    assert (record.type, record.send_count) == (RecordType.MESSAGE, 0)
    assert not hasattr(view, "put_records") and not hasattr(view, "delete_message")
    # A record read through the view is a copy: changing it does not reach the store (the
    # memory store hands out its own objects).
    record.send_epoch = 99
    assert view.get_record(mid, B) == replace(record, send_epoch=0)
    assert a.next_deadline() == 0.0


def test_statistics_is_a_frozen_snapshot_and_the_old_attribute_warns(
    new_store: StoreFactory,
) -> None:
    a = node(new_store())
    before = a.statistics()
    a.send(G, b"m", now=0.0, timestamp=1)
    assert a.payloads_to_send(now=0.0)
    after = a.statistics()
    assert (before.payloads_sent, after.payloads_sent) == (0, 1)  # the snapshot stays as taken
    with pytest.raises(AttributeError):
        after.payloads_sent = 5  # type: ignore[misc]
    with pytest.warns(DeprecationWarning, match=r"statistics\(\)\.payloads_sent"):
        assert a.statistics.payloads_sent == 1
