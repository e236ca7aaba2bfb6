"""A trusted but hostile member: what it can make us ask for, and for how long.

Any group member can offer IDs that do not exist or name parents nobody has. The bounds on what we
ask for are per peer and per group (a member filling its own costs the others nothing), every
REQUEST ends at its age, and a REQUEST answered in any form (even by an ephemeral message) ends.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from mvds_node.sim import Net
from mvds_node.sync import (
    DeliveryMode,
    Engine,
    Limits,
    MemoryStore,
    MessageDelivered,
    MissingParents,
    Mode,
    PayloadRejected,
    RecordType,
    SQLiteStore,
    SyncConfig,
    decode_payload,
    encode_message,
    encode_payload,
    message_id,
)

G = b"G" * 32
G2 = b"H" * 32
HOSTILE, HONEST, OTHER = b"X" * 32, b"Y" * 32, b"Z" * 32
LIMITS = SyncConfig().limits


def engine(**kw: Any) -> Engine:
    return Engine(MemoryStore(), config=SyncConfig(epoch_seconds=1.0, **kw), now=0.0)


def member_of(e: Engine, *peers: bytes, group: bytes = G, mode: Mode = Mode.BATCH) -> Engine:
    e.add_group(group)
    for p in peers:
        e.add_peer(group, p, mode=mode)
    return e


def requests_to(e: Engine, peer: bytes) -> set[bytes]:
    return {
        r.message_id for r in e.store_view.records_for_peer(peer) if r.type is RecordType.REQUEST
    }


def random_ids(rng: random.Random, n: int) -> list[bytes]:
    return [rng.randbytes(32) for _ in range(n)]


def run(e: Engine, until: float) -> list[tuple[float, bytes, bytes]]:
    """Drive ``e`` from deadline to deadline up to ``until`` (nobody answers); return what it
    sent, as (time, peer, payload)."""
    sent: list[tuple[float, bytes, bytes]] = []
    now = 0.0
    for _ in range(10_000):  # bounded: one step per deadline
        deadline = e.next_deadline()
        if deadline is None or deadline > until:
            break
        now = max(now, deadline)
        e.handle_timer(now=now)
        sent.extend((now, peer, data) for peer, data in e.payloads_to_send(now=now))
        if deadline < now:  # drained at a time already reached: step on to the next epoch
            now += 1.0
    return sent


def rejections(e: Engine) -> list[PayloadRejected]:
    return [ev for ev in e.events() if isinstance(ev, PayloadRejected)]


# ------------------------------------------------------------------ offers of IDs that do not exist


def test_one_member_offering_100k_ids_holds_at_most_its_cap_and_others_are_still_asked() -> None:
    e = member_of(engine(), HOSTILE, HONEST, mode=Mode.INTERACTIVE)
    cap = LIMITS.max_requests_per_peer
    rng = random.Random(1)
    flood = random_ids(rng, 100_000)
    e.receive_payload(HOSTILE, encode_payload([], flood, [], []), now=0.0)
    assert len(requests_to(e, HOSTILE)) == cap
    (refusal,) = rejections(e)
    assert refusal.peer == HOSTILE and refusal.dropped == 100_000 - cap
    assert "max_requests_per_peer" in refusal.reason
    # The same member again: ignored, and not reported again in the same episode.
    e.receive_payload(HOSTILE, encode_payload([], random_ids(rng, 1000), [], []), now=0.0)
    assert rejections(e) == [] and len(requests_to(e, HOSTILE)) == cap
    assert e.statistics().requests_refused == 100_000 - cap + 1000
    # Another member's offers are asked for, in its next payload.
    honest = random_ids(rng, 5)
    e.receive_payload(HONEST, encode_payload([], honest, [], []), now=0.0)
    assert requests_to(e, HONEST) == set(honest) and rejections(e) == []
    out = dict(e.payloads_to_send(now=0.0))
    assert set(decode_payload(out[HONEST], LIMITS).requests) == set(honest)
    assert len(decode_payload(out[HOSTILE], LIMITS).requests) == cap


def test_a_refusal_is_reported_again_once_half_the_requests_are_answered() -> None:
    e = member_of(engine(limits=Limits(max_requests_per_peer=10)), HOSTILE, mode=Mode.INTERACTIVE)
    rng = random.Random(2)
    bodies = [f"real {i}".encode() for i in range(10)]
    wires = [encode_message(G, i, body) for i, body in enumerate(bodies)]
    real = [message_id(G, i, body) for i, body in enumerate(bodies)]

    def refused() -> list[int]:
        return [r.dropped for r in rejections(e) if "max_requests_per_peer" in r.reason]

    e.receive_payload(HOSTILE, encode_payload([], [*real, *random_ids(rng, 5)], [], []), now=0.0)
    assert refused() == [5] and requests_to(e, HOSTILE) == set(real)
    # Four answered: six held, more than half the cap, so this episode goes on unreported.
    e.receive_payload(HOSTILE, encode_payload([], [], [], wires[:4]), now=0.0)
    e.receive_payload(HOSTILE, encode_payload([], random_ids(rng, 10), [], []), now=0.0)
    assert refused() == [] and len(requests_to(e, HOSTILE)) == 10
    # The other six answered: four held, at most half; a new refusal is news again.
    e.receive_payload(HOSTILE, encode_payload([], [], [], wires[4:]), now=0.0)
    assert len(requests_to(e, HOSTILE)) == 4
    e.receive_payload(HOSTILE, encode_payload([], random_ids(rng, 10), [], []), now=0.0)
    assert refused() == [4] and len(requests_to(e, HOSTILE)) == 10
    assert e.statistics().requests_refused == 5 + 6 + 4


def test_missing_parents_of_one_group_are_bounded_per_group() -> None:
    limits = Limits(max_requests_per_group=100)
    e = member_of(engine(limits=limits), HOSTILE, HONEST)
    member_of(e, HONEST, group=G2)
    rng = random.Random(3)
    for i in range(3):  # two members of G name 64 parents each, three times
        for peer in (HOSTILE, HONEST):
            wire = encode_message(G, i, f"{peer[:1]!r}{i}".encode(), parents=random_ids(rng, 64))
            e.receive_payload(peer, encode_payload([], [], [], [wire]), now=0.0)
    assert len(requests_to(e, HOSTILE)) + len(requests_to(e, HONEST)) == 100
    reasons = {r.reason for r in rejections(e)}
    assert any("max_requests_per_group" in r for r in reasons)
    # Another group is not affected.
    wire = encode_message(G2, 1, b"elsewhere", parents=random_ids(rng, 3))
    e.receive_payload(HONEST, encode_payload([], [], [], [wire]), now=0.0)
    assert e.outstanding().requests_per_group[G2] == 3


def test_unanswered_offers_end_at_request_timeout_and_a_reconnect_does_not_renew_them() -> None:
    e = member_of(engine(request_timeout=30.0), HOSTILE, mode=Mode.INTERACTIVE)
    fake = random_ids(random.Random(4), 50)
    e.receive_payload(HOSTILE, encode_payload([], fake, [], []), now=0.0)
    sent = run(e, until=20.0)
    asked = [set(decode_payload(p, LIMITS).requests) for _, _, p in sent]
    assert set(fake) == set().union(*asked) and asked[0] == set(fake)
    e.reset_peer(HOSTILE, now=20.0)  # the member reconnects: asked again, but no younger
    sent = run(e, until=1000.0)
    times = [t for t, _, p in sent if decode_payload(p, LIMITS).requests]
    assert times and max(times) < 30.0
    assert requests_to(e, HOSTILE) == set() and e.next_deadline() is None
    (report,) = rejections(e)
    assert report.peer == HOSTILE and report.dropped == 50 and "request_timeout" in report.reason
    # Offered again, they are asked for again: an honest offerer that was away is served.
    e.receive_payload(HOSTILE, encode_payload([], fake[:3], [], []), now=1000.0)
    assert requests_to(e, HOSTILE) == set(fake[:3])


# ------------------------------------------------------------------------------ phantom parents


def hostile_child(parents: list[bytes], n: int = 0) -> tuple[bytes, bytes]:
    body = f"child {n}".encode()
    return message_id(G, 100 + n, body), encode_message(G, 100 + n, body, parents=parents)


def phantom_setup(**kw: Any) -> tuple[Engine, list[bytes], bytes]:
    config: dict[str, Any] = {"delivery": DeliveryMode.CONSISTENT, "missing_parent_timeout": 60.0}
    config.update(kw)
    e = member_of(engine(**config), HOSTILE, OTHER)
    phantoms = random_ids(random.Random(5), 64)
    child, wire = hostile_child(phantoms)
    e.receive_payload(HOSTILE, encode_payload([], [], [], [wire]), now=0.0)
    assert requests_to(e, HOSTILE) == set(phantoms)
    return e, phantoms, child


def test_phantom_parents_are_given_up_and_the_child_delivered_marked() -> None:
    e, phantoms, child = phantom_setup(missing_parents=MissingParents.DELIVER)
    assert not [ev for ev in e.events() if isinstance(ev, MessageDelivered)]  # held
    sent = run(e, until=500.0)
    # Asked only of the member that named them, never past the timeout; the child is relayed
    # to the other member, but no REQUEST for the phantoms goes to it.
    asked = [(t, peer) for t, peer, p in sent if set(decode_payload(p, LIMITS).requests)]
    assert asked and {peer for _, peer in asked} == {HOSTILE} and max(t for t, _ in asked) < 60.0
    to_other = [decode_payload(p, LIMITS) for _, peer, p in sent if peer == OTHER]
    assert {m.id for d in to_other for m in d.messages} == {child}
    assert not any(d.requests for d in to_other)
    assert requests_to(e, HOSTILE) == set() and e.outstanding().requests == 0
    events = e.events()
    (delivered,) = [ev for ev in events if isinstance(ev, MessageDelivered)]
    assert delivered.message_id == child and set(delivered.parents_missing) == set(phantoms)
    (report,) = [ev for ev in events if isinstance(ev, PayloadRejected)]
    assert report.peer == HOSTILE and report.dropped == 64
    assert "missing_parent_timeout" in report.reason
    # Naming them again renews nothing: the next child is delivered at once, marked.
    child2, wire = hostile_child(phantoms, 1)
    e.receive_payload(HOSTILE, encode_payload([], [], [], [wire]), now=500.0)
    (delivered,) = [ev for ev in e.events() if isinstance(ev, MessageDelivered)]
    assert delivered.message_id == child2 and set(delivered.parents_missing) == set(phantoms)
    assert requests_to(e, HOSTILE) == set()


def test_withheld_parents_are_given_up_and_the_child_held_if_so_configured() -> None:
    config = SyncConfig(
        epoch_seconds=1.0,
        delivery=DeliveryMode.CONSISTENT,
        missing_parent_timeout=60.0,
        missing_parents=MissingParents.HOLD,
    )
    e = member_of(Engine(MemoryStore(), config=config, now=0.0), HOSTILE, OTHER)
    # Real parents this time, which the member that names them never sends.
    parents = [encode_message(G, i, f"parent {i}".encode()) for i in range(64)]
    ids = [message_id(G, i, f"parent {i}".encode()) for i in range(64)]
    child, wire = hostile_child(ids)
    e.receive_payload(HOSTILE, encode_payload([], [], [], [wire]), now=0.0)
    sent = run(e, until=500.0)
    assert requests_to(e, HOSTILE) == set()
    assert not [t for t, _, p in sent if t >= 60.0 and decode_payload(p, LIMITS).requests]
    events = e.events()
    assert not [ev for ev in events if isinstance(ev, MessageDelivered)]
    assert [ev.dropped for ev in events if isinstance(ev, PayloadRejected)] == [64]
    # Held, not lost: when another member sends the parents, the child follows them.
    e.receive_payload(OTHER, encode_payload([], [], [], parents), now=500.0)
    delivered = [ev for ev in e.events() if isinstance(ev, MessageDelivered)]
    assert [ev.message_id for ev in delivered] == [*ids, child]
    assert all(ev.parents_missing == () for ev in delivered)


def test_in_eventual_delivery_phantom_parents_end_at_the_timeout_too() -> None:
    e = member_of(engine(missing_parent_timeout=60.0), HOSTILE, OTHER)
    phantoms = random_ids(random.Random(6), 64)
    child, wire = hostile_child(phantoms)
    e.receive_payload(HOSTILE, encode_payload([], [], [], [wire]), now=0.0)
    (delivered,) = [ev for ev in e.events() if isinstance(ev, MessageDelivered)]
    assert delivered.message_id == child and delivered.parents_missing == ()
    sent = run(e, until=500.0)
    assert requests_to(e, HOSTILE) == set()
    assert not [t for t, _, p in sent if t >= 60.0 and decode_payload(p, LIMITS).requests]


def test_a_relayed_child_with_phantom_parents_costs_the_next_member_its_timeout_only() -> None:
    # HOSTILE -> a -> b: b asks a for the phantoms (a cannot answer), and stops at its timeout.
    a = member_of(engine(missing_parent_timeout=60.0), HOSTILE, OTHER)
    b = member_of(engine(missing_parent_timeout=60.0), HONEST)
    phantoms = random_ids(random.Random(7), 64)
    _, wire = hostile_child(phantoms)
    a.receive_payload(HOSTILE, encode_payload([], [], [], [wire]), now=0.0)
    relayed = [p for peer, p in a.payloads_to_send(now=0.0) if peer == OTHER]
    for p in relayed:
        b.receive_payload(HONEST, p, now=0.0)
    assert requests_to(b, HONEST) == set(phantoms)
    run(b, until=500.0)
    assert requests_to(b, HONEST) == set() and b.next_deadline() is None


# ------------------------------------------------------------------------ an ephemeral answer


def test_a_request_answered_by_an_ephemeral_message_ends() -> None:
    e = member_of(engine(delivery=DeliveryMode.CONSISTENT), HONEST)
    parent_wire = encode_message(G, 1, b"ephemeral parent", ephemeral=True)
    parent = message_id(G, 1, b"ephemeral parent")
    child_body = b"child of an ephemeral"
    child_wire = encode_message(G, 2, child_body, parents=[parent])
    e.receive_payload(HONEST, encode_payload([], [], [], [child_wire]), now=0.0)
    ((peer, out),) = e.payloads_to_send(now=0.0)
    assert peer == HONEST and decode_payload(out, LIMITS).requests == [parent]
    e.receive_payload(HONEST, encode_payload([], [], [], [parent_wire]), now=0.5)
    assert requests_to(e, HONEST) == set()
    delivered = [ev.message_id for ev in e.events() if isinstance(ev, MessageDelivered)]
    assert delivered == [parent, message_id(G, 2, child_body)]  # the held child is released
    sent = run(e, until=1000.0)
    assert not any(decode_payload(p, LIMITS).requests for _, _, p in sent)


# ------------------------------------------------------------------------- honest peers, restarts


def test_an_honest_backlog_larger_than_the_bound_arrives_in_rounds() -> None:
    net = Net()
    limits = Limits(max_requests_per_peer=50)
    a = net.add(HONEST, member_of(engine(limits=limits), OTHER, mode=Mode.INTERACTIVE))
    b = net.add(OTHER, member_of(engine(limits=limits), HONEST, mode=Mode.INTERACTIVE))
    ids = a.send_many(G, [f"backlog {i}".encode() for i in range(400)], now=0.0, timestamp=1)

    def all_there() -> bool:
        return all(b.has_message(m) for m in ids)

    net.run_until(all_there, max_rounds=2000)
    got = [e.message_id for e in net.events[OTHER] if isinstance(e, MessageDelivered)]
    assert sorted(got) == sorted(ids)
    assert b.statistics().requests_refused > 0  # it did take rounds
    net.run_until(net.quiet, max_rounds=2000)
    assert b.outstanding().requests == 0


def test_the_counts_and_ages_of_requests_survive_a_restart(tmp_path: Path) -> None:
    config = SyncConfig(
        epoch_seconds=1.0, limits=Limits(max_requests_per_peer=10), request_timeout=30.0
    )
    fake = random_ids(random.Random(9), 15)
    store = SQLiteStore(tmp_path / "store.db")
    e = member_of(Engine(store, config=config, now=0.0), HOSTILE, mode=Mode.INTERACTIVE)
    e.receive_payload(HOSTILE, encode_payload([], fake, [], []), now=0.0)
    run(e, until=20.0)
    store.close()
    store = SQLiteStore(tmp_path / "store.db")
    e = Engine(store, config=config, now=100.0)  # the clock of a new process
    assert e.outstanding().requests_per_peer == {HOSTILE: 10}
    e.receive_payload(HOSTILE, encode_payload([], fake[10:], [], []), now=100.0)
    # Still full, so refused; episodes live in memory, so this one is reported afresh.
    assert len(requests_to(e, HOSTILE)) == 10
    assert [r.dropped for r in rejections(e)] == [5]
    e.reset_peer(HOSTILE, now=100.0)
    now = 100.0
    for _ in range(100):  # bounded: deadline to deadline
        deadline = e.next_deadline()
        if deadline is None:
            break
        now = max(now + 1.0, deadline)
        e.payloads_to_send(now=now)
    # Part of their 30 s went by before the restart (up to the last drain, whose epoch is
    # stored): they end sooner than 30 s after it.
    assert requests_to(e, HOSTILE) == set() and now <= 100.0 + 20.0
    store.close()


def test_ten_thousand_unanswered_requests_end_in_one_report() -> None:
    e = member_of(engine(request_timeout=30.0), HOSTILE, mode=Mode.INTERACTIVE)
    fake = random_ids(random.Random(10), LIMITS.max_requests_per_peer)
    e.receive_payload(HOSTILE, encode_payload([], fake, [], []), now=0.0)
    run(e, until=100.0)
    assert requests_to(e, HOSTILE) == set()
    assert [r.dropped for r in rejections(e)] == [len(fake)]
    assert e.statistics().requests_timed_out == len(fake)
