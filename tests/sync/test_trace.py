"""``Engine.trace`` and ``Engine.sync_status``: what the engine tells about one message and about
each peer and group. Real engines driven by hand (no Trio): ``now`` is stepped, payloads are
handed from one engine to the other, and the wall clock is passed with ``handle_timer``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mvds_node.sync import (
    DeliveryMode,
    Engine,
    GiveUpPolicy,
    MemoryStore,
    MessageAcked,
    MessageTrace,
    Mode,
    ReferenceBackoff,
    SQLiteStore,
    Store,
    SyncConfig,
    decode_payload,
    encode_message,
    encode_payload,
    message_id,
)

G = b"G" * 32
A, B, C = b"A" * 32, b"B" * 32, b"C" * 32
WALL0 = 1_800_000_000_000  # Unix ms at now=0
NO_GIVE_UP = GiveUpPolicy(max_attempts=None, max_age_epochs=None)


def config(**kw: object) -> SyncConfig:
    kw.setdefault("epoch_seconds", 1.0)
    kw.setdefault("backoff", ReferenceBackoff())
    kw.setdefault("give_up", NO_GIVE_UP)
    return SyncConfig(**kw)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "a.db")
    yield s
    s.close()


def engine(store: Store, me_peers: tuple[bytes, ...] = (B,), **kw: object) -> Engine:
    e = Engine(store, config=config(**kw), now=0.0)
    e.handle_timer(now=0.0, wall=WALL0)  # the wall clock: times in the trace are Unix ms
    e.add_group(G)
    for p in me_peers:
        e.add_peer(G, p, mode=Mode.BATCH)
    return e


def ack(mid: bytes) -> bytes:
    return encode_payload(acks=[mid])


def test_a_message_sent_then_acked_tells_each_step(store: Store) -> None:
    a = engine(store)
    mid = a.send(G, b"hi", now=0.0, timestamp=1)
    t = a.trace(mid)
    assert t.stored and t.known and t.group_id == G and t.stored_ms == WALL0
    assert not t.held and t.parents_missing == ()
    (peer,) = t.peers
    assert (peer.peer, peer.state, peer.transmissions, peer.given_up) == (B, "sending", 0, False)
    assert peer.next_retry_at == 0.0  # due now: never sent yet

    out = a.payloads_to_send(now=0.0, carrier_of=lambda p: "tcp")
    assert [p for p, _ in out] == [B]
    a.payload_sent(B, "tcp", now=0.0)
    peer = a.trace(mid).peers[0]
    assert (peer.transmissions, peer.carrier, peer.first_sent_ms) == (1, "tcp", WALL0)
    assert peer.next_retry_at is not None and peer.next_retry_at > 0.0
    assert peer.next_retry_ms == WALL0 + int(peer.next_retry_at * 1000)

    a.receive_payload(B, ack(mid), now=2.5, via="tcp")
    assert MessageAcked(mid, B) in a.events()
    (peer,) = a.trace(mid).peers
    assert (peer.state, peer.acked_ms, peer.acked_via) == ("acked", WALL0 + 2500, "tcp")
    assert peer.next_retry_at is None


def test_each_record_names_the_carrier_its_own_transmission_went_over(store: Store) -> None:
    a = engine(store, me_peers=(B, C))
    routes = {B: "multicast", C: "tcp"}
    asked: list[bytes] = []

    def carrier_of(peer: bytes) -> str:
        asked.append(peer)
        return routes[peer]

    first = a.send(G, b"one", now=0.0, timestamp=1)
    a.payloads_to_send(now=0.0, carrier_of=carrier_of)
    assert sorted(asked) == [B, C]  # once per peer, not per record
    routes[B] = "tcp"  # B is reached over TCP from now on
    a.handle_timer(now=1.0)
    second = a.send(G, b"two", now=1.0, timestamp=2)
    a.payloads_to_send(now=1.0, carrier_of=carrier_of)
    a.payload_sent(B, "tcp", now=1.0)
    third = a.send(G, b"three", now=1.0, timestamp=3)  # not drained yet

    by_peer = {p.peer: p for p in a.trace(first).peers}
    assert (by_peer[B].carrier, by_peer[C].carrier) == ("multicast", "tcp")
    assert {p.peer: p.carrier for p in a.trace(second).peers} == {B: "tcp", C: "tcp"}
    assert {p.peer: p.carrier for p in a.trace(third).peers} == {B: "", C: ""}  # never sent


def test_a_payload_the_carrier_refused_leaves_its_records_unsent(store: Store) -> None:
    a = engine(store)
    mid = a.send(G, b"hi", now=0.0, timestamp=1)
    ((peer, payload),) = a.payloads_to_send(now=0.0, carrier_of=lambda p: "multicast")
    a.payload_not_sent(peer, payload, now=0.0)
    (traced,) = a.trace(mid).peers
    assert (traced.transmissions, traced.carrier) == (0, "")


def test_a_record_keeps_its_carrier_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    store = SQLiteStore(path)
    a = engine(store)
    mid = a.send(G, b"hi", now=0.0, timestamp=1)
    a.payloads_to_send(now=0.0, carrier_of=lambda p: "multicast")
    store.close()
    store = SQLiteStore(path)
    b = Engine(store, config=config(), now=100.0)
    (peer,) = b.trace(mid).peers
    assert (peer.state, peer.transmissions, peer.carrier) == ("sending", 1, "multicast")
    store.close()


def test_a_first_transmission_from_memory_names_the_reliable_carrier(store: Store) -> None:
    a = engine(store)
    a.set_peer_reliable(B, True, now=0.0, carrier="tcp")
    mid = a.send(G, b"hi", now=0.0, timestamp=1)
    (peer,) = a.trace(mid).peers
    assert (peer.queued, peer.transmissions, peer.carrier) == (True, 1, "tcp")


def test_an_exported_record_names_the_bundle(store: Store) -> None:
    a = engine(store)
    mid = a.send(G, b"hi", now=0.0, timestamp=1)
    a.commit_export(a.export_snapshot([B], now=0.0), now=0.0, latency_seconds=60.0)
    assert a.trace(mid).peers[0].carrier == "bundle"


def test_every_ack_of_a_large_payload_is_kept_with_its_time_and_carrier(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    store = SQLiteStore(path)
    a = engine(store, me_peers=(B, C))
    ids = [a.send(G, b"m%d" % i, now=0.0, timestamp=i + 1) for i in range(70)]  # > one chunk
    a.payloads_to_send(now=0.0)
    a.receive_payload(B, encode_payload(acks=ids), now=1.5, via="tcp")
    a.receive_payload(C, encode_payload(acks=ids[:5]), now=2.0, via="multicast")
    store.close()
    store = SQLiteStore(path)
    b = Engine(store, config=config(), now=100.0)
    for i, mid in enumerate(ids):
        facts = {p.peer: (p.state, p.acked_ms, p.acked_via) for p in b.trace(mid).peers}
        assert facts[B] == ("acked", WALL0 + 1500, "tcp")
        if i < 5:
            assert facts[C] == ("acked", WALL0 + 2000, "multicast")
        else:
            assert facts[C][0] == "sending"
    store.close()


def test_an_ack_event_names_its_carrier(store: Store) -> None:
    a = engine(store)
    mid = a.send(G, b"hi", now=0.0, timestamp=1)
    a.payloads_to_send(now=0.0)
    a.receive_payloads(B, [ack(mid)], now=1.0, via="bundle")
    (event,) = [e for e in a.events() if isinstance(e, MessageAcked)]
    assert event.via == "bundle"
    assert a.trace(mid).peers[0].acked_via == "bundle"


def test_retransmissions_count_and_given_up_is_told(store: Store) -> None:
    a = engine(store, give_up=GiveUpPolicy(max_attempts=2, max_age_epochs=None))
    mid = a.send(G, b"hi", now=0.0, timestamp=1)
    now = 0.0
    while True:
        a.payloads_to_send(now=now)
        deadline = a.next_deadline()
        if deadline is None:
            break
        now = max(now + 1.0, deadline)
        a.handle_timer(now=now)
        if now > 100:
            pytest.fail("never gave up")
    (peer,) = a.trace(mid).peers
    assert (peer.transmissions, peer.given_up, peer.next_retry_at) == (2, True, None)
    a.reset_peer(B, now=now)  # it came back: re-armed
    (peer,) = a.trace(mid).peers
    assert not peer.given_up and peer.next_retry_at is not None


def test_a_missing_parent_tells_who_is_asked_and_who_waits(store: Store) -> None:
    a = engine(store, delivery=DeliveryMode.CONSISTENT)
    parent = message_id(G, 1, b"first")
    child_wire = encode_message(G, 2, b"second", parents=(parent,))
    child = message_id(G, 2, b"second")
    a.receive_payload(B, encode_payload(messages=[child_wire]), now=0.0, via="memory")

    t = a.trace(child)
    assert t.stored and t.held
    assert t.parents == (parent,)
    assert t.parents_missing == (parent,)
    assert t.asked == ((parent, (B,)),)

    p = a.trace(parent)
    assert not p.stored and p.known
    assert p.waiting_children == (child,)
    assert [(x.peer, x.state) for x in p.peers] == [(B, "requesting")]

    peers, groups = a.sync_status([B])
    assert peers[0].requested == 1
    (g,) = groups
    assert (g.lacking, g.lacking_ids) == (1, ((parent, (B,)),))
    assert (g.held, g.held_ids) == (1, ((child, (parent,)),))


def test_an_unknown_message_is_not_known(store: Store) -> None:
    a = engine(store)
    t = a.trace(b"\x01" * 32)
    assert t == MessageTrace(b"\x01" * 32, stored=False)
    assert not t.known


def test_trace_changes_nothing(store: Store) -> None:
    a = engine(store)
    mid = a.send(G, b"hi", now=0.0, timestamp=1)
    before = a.store_view.records_for_message(mid)
    deadline = a.next_deadline()
    for _ in range(3):
        a.trace(mid)
        a.sync_status([B])
    assert a.store_view.records_for_message(mid) == before
    assert a.next_deadline() == deadline
    assert a.events() == []


def test_sync_status_counts_what_is_pending_and_its_bytes(store: Store) -> None:
    a = engine(store, me_peers=(B, C))
    bodies = [bytes([i]) * (100 + i) for i in range(7)]
    ids = [a.send(G, body, now=0.0, timestamp=i) for i, body in enumerate(bodies)]
    wires = a.store_view.get_wires(ids)
    a.payloads_to_send(now=0.0)
    a.receive_payload(C, encode_payload(acks=ids[:3]), now=1.0, via="tcp")
    a.payload_sent(B, "tcp", now=0.0)
    peers = {p.peer: p for p in a.sync_status([B, C])[0]}
    assert (peers[B].pending, peers[B].pending_bytes) == (7, sum(map(len, wires.values())))
    assert (peers[C].pending, peers[C].pending_bytes) == (
        4,
        sum(len(wires[m]) for m in ids[3:]),
    )
    assert peers[B].pending_bytes_exact and peers[C].pending_bytes_exact
    assert peers[B].contacts == {"tcp": (WALL0, 0)}
    assert peers[C].contacts == {"tcp": (0, WALL0 + 1000)}
    # Past the sample, the oldest messages' mean size stands for the rest, and it says so.
    (b_only,) = a.sync_status([B], sample=3)[0]
    first = [len(wires[m]) for m in ids[:3]]
    assert (b_only.pending, b_only.pending_bytes, b_only.pending_bytes_exact) == (
        7,
        sum(first) * 7 // 3,
        False,
    )


def test_facts_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    store = SQLiteStore(path)
    a = engine(store)
    mid = a.send(G, b"hi", now=0.0, timestamp=1)
    a.payloads_to_send(now=0.0)
    a.payload_sent(B, "multicast", now=0.0)
    a.receive_payload(B, ack(mid), now=1.5, via="remote-log")
    a.handle_timer(now=2.0)
    a.payloads_to_send(now=2.0)  # the next epoch's drain writes the contacts
    store.close()

    store = SQLiteStore(path)
    b = Engine(store, config=config(), now=100.0)
    t = b.trace(mid)
    assert t.stored_ms == WALL0
    (peer,) = t.peers
    assert (peer.state, peer.acked_ms, peer.acked_via) == ("acked", WALL0 + 1500, "remote-log")
    (status,) = b.sync_status([B])[0]
    assert status.contacts == {
        "multicast": (WALL0, 0),
        "remote-log": (0, WALL0 + 1500),
    }
    store.close()


def test_trace_converts_times_with_the_clocks_it_is_given(store: Store) -> None:
    a = Engine(store, config=config(), now=0.0)  # no handle_timer with a wall clock yet
    a.add_group(G)
    a.add_peer(G, B)
    mid = a.send(G, b"hi", now=0.0, timestamp=1)
    a.payloads_to_send(now=0.0)
    assert a.trace(mid).peers[0].next_retry_ms == 0  # not known
    t = a.trace(mid, now=0.0, wall=WALL0)
    at = t.peers[0].next_retry_at
    assert at is not None and t.peers[0].next_retry_ms == WALL0 + int(at * 1000)


def test_an_expired_message_takes_its_acks_along(store: Store) -> None:
    a = engine(store)
    mid = a.send(G, b"hi", now=0.0, timestamp=1, expires_at=WALL0 + 5000)
    assert a.trace(mid).expires_ms == WALL0 + 5000
    a.payloads_to_send(now=0.0)
    a.receive_payload(B, ack(mid), now=1.0, via="tcp")
    assert a.trace(mid).peers[0].state == "acked"
    a.handle_timer(now=6.0, wall=WALL0 + 6000)
    assert not a.trace(mid).known


def _schema_2_store(path: Path) -> None:
    """A store as schema 2 wrote it: the current schema without the inbox (3) and the trace
    facts (4)."""
    from mvds_node.sync.store import _sqlite

    con = sqlite3.connect(path, isolation_level=None)
    for statement in _sqlite._SCHEMA:
        if statement in _sqlite._TRACE_SCHEMA or statement in _sqlite._INBOX_SCHEMA:
            continue
        if statement.startswith("PRAGMA user_version"):
            statement = "PRAGMA user_version = 2"
        con.execute(statement)
    wire = encode_message(G, 1, b"old")
    con.execute(
        "INSERT INTO messages (id, group_id, timestamp, wire, parents, expires_at, delivered) "
        "VALUES (?, ?, 1, ?, x'', 0, 1)",
        (message_id(G, 1, b"old"), G, wire),
    )
    con.execute("INSERT INTO groups VALUES (?)", (G,))
    con.execute("INSERT INTO members VALUES (?, ?, 'batch')", (G, B))
    con.execute(
        "INSERT INTO records (seq, message_id, peer, type, group_id, send_count, send_epoch, "
        "first_epoch, parked) VALUES (1, ?, ?, 2, ?, 3, 9, 1, 0)",
        (message_id(G, 1, b"old"), B, G),
    )
    con.close()


def test_a_schema_2_store_migrates_and_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _schema_2_store(path)
    store = SQLiteStore(path)
    a = Engine(store, config=config(), now=0.0)
    old = message_id(G, 1, b"old")
    t = a.trace(old)
    assert t.stored and t.stored_ms == 0  # stored before the time was recorded
    (peer,) = t.peers
    assert (peer.state, peer.transmissions) == ("sending", 3)
    assert decode_payload(a.payloads_to_send(now=9.0)[0][1], SyncConfig().limits).messages
    a.receive_payload(B, ack(old), now=9.5, via="tcp")
    assert a.trace(old).peers[0].acked_via == "tcp"
    store.close()
    (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == 4  # through the inbox (3) and the trace facts (4)


def test_an_engine_given_the_wall_clock_at_start_stamps_from_the_first_send(
    store: Store,
) -> None:
    a = Engine(store, config=config(), now=10.0, wall=WALL0)
    a.add_group(G)
    a.add_peer(G, B)
    mid = a.send(G, b"hi", now=12.0, timestamp=1)
    assert a.trace(mid).stored_ms == WALL0 + 2000


def test_what_status_reads_goes_through_indexes(tmp_path: Path) -> None:
    """``pending`` (every status call, per peer) and the prefix lookup never scan a table."""
    from mvds_node.sync.store import _sqlite

    path = tmp_path / "a.db"
    SQLiteStore(path).close()
    con = sqlite3.connect(path)
    for statement, args in (
        (_sqlite._PEER_PENDING, (B,)),
        (_sqlite._PEER_PENDING_BYTES, (B, 1000)),
        (_sqlite._IDS_FROM, (b"\x01", 2)),
        (_sqlite._MESSAGE_ACKS, (B,)),
    ):
        plan = [row[-1] for row in con.execute(f"EXPLAIN QUERY PLAN {statement}", args)]
        # A SCAN of a table reads all of it; one of "r", a subquery cut by its LIMIT, does not.
        scans = [step for step in plan if step.split()[:2][0] == "SCAN" and step.split()[1] != "r"]
        assert plan and not scans, plan
    con.close()


def test_an_offered_message_we_lack_counts_in_the_group_of_who_offered_it(store: Store) -> None:
    a = engine(store)
    missing = message_id(G, 5, b"offered")
    a.receive_payload(B, encode_payload(offers=[missing]), now=0.0, via="tcp")
    peers, groups = a.sync_status([B])
    assert peers[0].requested == 1
    assert (groups[0].lacking, groups[0].lacking_ids) == (1, ((missing, (B,)),))
    t = a.trace(missing)
    assert not t.stored and [(p.peer, p.state) for p in t.peers] == [(B, "requesting")]
