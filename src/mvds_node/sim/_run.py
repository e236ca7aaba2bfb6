"""The discrete-event simulator: real engines and a real remote log on a virtual clock.

Theory of operation
-------------------
One heap holds ``(time, seq, kind, node, arg)`` events; ``seq`` breaks ties in the order events
were scheduled, so a run is a pure function of its :class:`Scenario` and seed. The kinds are:

* ``SEND``: a sender's application sends a message (then the sender's next one is scheduled);
* ``WAKE``: a node's engine deadline (``next_deadline``) has come: drain it;
* ``DELIVER``: a payload reaches a node, ``delay`` seconds after it was sent;
* ``CONNECT``: a node comes online (only with ``hello``): it says hello to its peers, and it
  reads its peers' remote logs at once;
* ``LOG``: a node's periodic read of its peers' remote logs (``log_poll`` seconds after its
  last read, which may have been on coming online; a node offline then reads when it is back).

No event visits every node: a node is only touched when something happens to it, and each node
has at most one live ``WAKE`` (a later one that was overtaken is skipped when it comes up).
Availability is evaluated lazily at the moment it matters: in the "epoch" model a node's state in
period ``k`` is a keyed hash of (seed, node, k), in the "sessions" model each node has its own
seeded generator of session lengths, consumed in time order. Either way the answer does not
depend on the order of questions, which keeps runs reproducible.

Every engine is a real :class:`~mvds_node.sync.Engine` over a :class:`~mvds_node.sync.MemoryStore`
and sees only virtual ``now`` values. Engine deadlines are epoch starts; a node wakes a
nanosecond after one, so that rounding in ``now / epoch_seconds`` can never put it in the epoch
before (latencies are reported to the microsecond).

The remote log is the real :class:`~mvds_node.remotelog.LogWriter` and
:class:`~mvds_node.remotelog.LogReader` (and the real signed acknowledgement records) over an
in-memory CAS/NS, :class:`SimBackend`. Its calls are ``async`` but never wait: the backend
answers at once, and ``cas_get_many`` keeps the reader off its concurrent fetch path. So each
call is driven to completion by sending into its coroutine once (:func:`drive`), inside the
virtual clock, with no event loop and no wall-clock time; a coroutine that would really suspend
is a bug and raises. This is both faster and more deterministic than running the simulation
inside ``trio.run`` with a mock clock. The node's upload task is modelled by an upload queue
that is flushed whenever the node and the helper are both online (at a send, a log read or on
coming online); the acknowledgement records are those of ``mvds_node.node``'s remote-log service,
from the same sans-IO core (:class:`~mvds_node.remotelog.AckRecords`).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.remotelog import (
    AckRecords,
    BackendError,
    LogReader,
    LogSettings,
    LogWriter,
    MemoryBackend,
    MemoryLedger,
    ack_payloads,
    public_key,
)
from mvds_node.sim._metrics import RECORD_TYPES, SWEEP_SCHEMA, NodeFigures, SimResult
from mvds_node.sim._scenario import Scenario, with_overrides
from mvds_node.sync import (
    Backoff,
    Engine,
    ExponentialBackoff,
    GaveUp,
    GiveUpPolicy,
    MemoryStore,
    MessageDelivered,
    Mode,
    ReferenceBackoff,
    RelayPolicy,
    SyncConfig,
    encode_payload,
    payload_overhead,
)
from mvds_node.transports import HEADER_SIZE, Hello, encode_frame

__all__ = ["ConstantBackoff", "SimBackend", "drive", "run", "sweep"]

T = TypeVar("T")

_EPS: Final = 1e-9
HELLO_BYTES: Final = len(encode_frame(Hello())) - HEADER_SIZE
"""The body of a CONTROL/HELLO frame (18 bytes, docs/wire.md). Like sync payloads, which are
counted without their frame, it is counted without the 8-byte framing header."""
_FEED_CHUNK: Final = 500
_MAX_DRAINS: Final = 64

_SEND, _WAKE, _DELIVER, _CONNECT, _LOG = range(5)
_M64: Final = (1 << 64) - 1


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to completion and return its value.

    Raises:
        RuntimeError: the coroutine suspended (it waits for something the simulator does not
            provide).
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a remote-log call suspended inside the simulator")


LOG_PARTS: Final = ("head", "page", "body", "ack")
"""What remote-log bytes carry: signed head records, frozen pages, message bodies stored by
address, acknowledgement records."""


def _cas_part(data: bytes) -> str:
    """A CAS object is a page (a ``RemoteLog``: field 1 or 2, or empty) or a message body (an
    MVDS ``Message``, whose first field is 6001). The simulator never seals."""
    return "page" if data[:1] in (b"", b"\x0a", b"\x12") else "body"


def _ns_part(name: str) -> str:
    """An NS record is an acknowledgement record or a log head."""
    return "ack" if name.endswith("/acks") else "head"


class SimBackend(MemoryBackend):
    """The in-memory CAS/NS, answering at once, counting bytes per node and per kind of object
    (:data:`LOG_PARTS`), with an on/off switch.

    ``meter`` is the node index to charge; ``down`` makes every call fail (helper offline).
    """

    def __init__(self, count: int) -> None:
        super().__init__()
        self.meter = 0
        self.up = [0] * count
        self.down_bytes = [0] * count
        self.up_parts = dict.fromkeys(LOG_PARTS, 0)
        self.down_parts = dict.fromkeys(LOG_PARTS, 0)

    async def _call(self, name: str) -> None:
        self._count(name)
        if self.down:
            raise BackendError("helper offline")

    def _up(self, part: str, data: bytes) -> None:
        self.up[self.meter] += len(data)
        self.up_parts[part] += len(data)

    def _down(self, part: str, data: bytes) -> None:
        self.down_bytes[self.meter] += len(data)
        self.down_parts[part] += len(data)

    async def cas_add(self, data: bytes) -> bytes:
        address = await super().cas_add(data)
        self._up(_cas_part(data), data)
        return address

    async def cas_get(self, address: bytes) -> bytes | None:
        data = await super().cas_get(address)
        if data is not None:
            self._down(_cas_part(data), data)
        return data

    async def cas_get_many(self, addresses: list[bytes]) -> list[bytes | None]:
        await self._call("cas_get")
        found = [self.cas.get(a) for a in addresses]
        for data in found:
            if data is not None:
                self._down(_cas_part(data), data)
        return found

    async def ns_update(self, name: str, record: bytes) -> None:
        await super().ns_update(name, record)
        self._up(_ns_part(name), record)

    async def ns_fetch(self, name: str) -> bytes | None:
        record = await super().ns_fetch(name)
        if record is not None:
            self._down(_ns_part(name), record)
        return record


@dataclass(frozen=True, slots=True)
class ConstantBackoff:
    """Retransmit every ``gap`` epochs, however often the record went out (the design notes'
    back-of-the-envelope figures assume this)."""

    gap: int = 1

    def next_epoch(self, *, epoch: int, send_count: int, key: bytes) -> int:
        return epoch + max(1, self.gap)


def _mix(a: int, b: int, c: int) -> int:
    """A 64-bit keyed hash (splitmix64 finaliser) of three integers."""
    x = (a * 0x9E3779B97F4A7C15 + b * 0xBF58476D1CE4E5B9 + c * 0x94D049BB133111EB) & _M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class _Sessions:
    """One party's on/off switch times in the sessions model, drawn lazily and in order."""

    __slots__ = ("_rng", "first", "mean_off", "mean_on", "pos", "switches")

    def __init__(self, seed: str, p: float, mean_on: float, mean_off: float) -> None:
        self._rng = random.Random(seed)
        self.mean_on = mean_on
        self.mean_off = mean_off
        self.first = self._rng.random() < p
        """Online before the first switch."""
        self.switches = [self._rng.expovariate(1.0 / (mean_on if self.first else mean_off))]
        self.pos = 0
        """The index of the next switch after the last time asked about."""

    def extend(self, t: float) -> list[float]:
        """The switch times, drawn at least past ``t``."""
        sw = self.switches
        while sw[-1] <= t:
            on_after = self.first ^ (len(sw) % 2 == 1)
            sw.append(
                sw[-1] + self._rng.expovariate(1.0 / (self.mean_on if on_after else self.mean_off))
            )
        return sw

    def state(self, t: float) -> tuple[bool, int]:
        """Online at ``t``, and the index of the next switch after ``t``."""
        sw = self.extend(t)
        pos = self.pos
        while sw[pos] <= t:
            pos += 1
        self.pos = pos
        return self.first ^ (pos % 2 == 1), pos


class _Availability:
    """When each of ``count`` parties is online (indexes beyond ``count`` always are)."""

    def __init__(self, s: Scenario, p: float, count: int, salt: str) -> None:
        self.p = p
        self.count = count
        self.always = p >= 1.0
        self.never = p <= 0.0
        self.period = s.period
        self.last_period = math.ceil(s.duration / self.period) + 1
        self.epoch_model = s.availability_model == "epoch"
        self.key = int.from_bytes(hashlib.sha256(f"{s.seed}/{salt}".encode()).digest()[:8], "big")
        self.threshold = int(p * 2.0**64)
        self.mean_on = s.session_seconds
        self.mean_off = s.session_seconds * (1.0 - p) / p if p > 0 else math.inf
        self._sessions: dict[int, _Sessions] = {}
        self._salt = f"{s.seed}/{salt}"

    # -- the epoch model
    def _on(self, i: int, k: int) -> bool:
        return _mix(self.key, i, k) < self.threshold

    # -- the sessions model
    def _party(self, i: int) -> _Sessions:
        party = self._sessions.get(i)
        if party is None:
            party = self._sessions[i] = _Sessions(
                f"{self._salt}/{i}", self.p, self.mean_on, self.mean_off
            )
        return party

    def online(self, i: int, t: float) -> bool:
        if self.always or i >= self.count:
            return True
        if self.never:
            return False
        if self.epoch_model:
            return self._on(i, int(t / self.period))
        return self._party(i).state(t)[0]

    def next_online(self, i: int, t: float) -> float | None:
        """The first moment at or after ``t`` at which ``i`` is online (None: not in the run)."""
        if self.always or i >= self.count:
            return t
        if self.never:
            return None
        if self.epoch_model:
            first = int(t / self.period)
            if self._on(i, first):
                return t
            for k in range(first + 1, self.last_period):
                if self._on(i, k):
                    return k * self.period
            return None
        party = self._party(i)
        on, pos = party.state(t)
        return t if on else party.switches[pos]

    def next_connect(self, i: int, t: float) -> float | None:
        """The next moment after ``t`` at which ``i`` goes from offline to online."""
        if self.always or self.never or i >= self.count:
            return None
        if self.epoch_model:
            first = int(t / self.period) + 1
            before = self._on(i, first - 1)
            for k in range(first, self.last_period):
                now = self._on(i, k)
                if now and not before:
                    return k * self.period
                before = now
            return None
        party = self._party(i)
        on, pos = party.state(t)
        # The switch at index j leaves the party online iff first ^ ((j + 1) odd).
        # Extending past switch ``pos`` makes switch ``pos + 1`` exist.
        sw = party.extend(party.switches[pos])
        return sw[pos + 1] if on else sw[pos]


def _backoff(s: Scenario) -> Backoff:
    if s.backoff == "reference":
        return ReferenceBackoff()
    if s.backoff == "constant":
        return ConstantBackoff(s.backoff_base)
    return ExponentialBackoff(
        base_epochs=s.backoff_base,
        factor=s.backoff_factor,
        cap_epochs=s.backoff_cap,
        jitter=s.backoff_jitter,
        seed=s.seed,
    )


def _groups(s: Scenario) -> list[list[int]]:
    n = s.nodes
    size = s.group_size if s.group_size and s.group_size < n else n
    groups = [list(range(start, min(n, start + size))) for start in range(0, n, size)]
    if len(groups) > 1 and len(groups[-1]) < 2:
        groups[-2].extend(groups.pop())
    return groups


def _key(i: int) -> bytes:
    return b"sim-node" + i.to_bytes(24, "big")


@dataclass(slots=True)
class _Node:
    index: int
    group: int
    gid: bytes
    key: bytes
    engine: Engine
    store: MemoryStore
    peers: list[int]
    mode: str
    cache: bool
    writer: LogWriter | None = None
    readers: tuple[tuple[LogReader, int], ...] = ()
    upload: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(ID, stored wire) of the messages sent and not yet appended to its log."""
    signing: Ed25519PrivateKey | None = None
    log_pub: bytes = b""
    acks: AckRecords | None = None
    """Its acknowledgement record and its peers' (with ``log_acks``)."""
    last_read: float = -math.inf
    """When it last read its peers' logs."""


class _Sim:
    def __init__(self, s: Scenario) -> None:
        self.s = s
        rng = random.Random(f"mvds-sim/{s.seed}/topology")
        self.loss_rng = random.Random(f"mvds-sim/{s.seed}/loss")
        groups = _groups(s)
        n = s.nodes
        total = n + s.caches * len(groups)
        self.avail = _Availability(s, s.availability, n, "nodes")
        self.helper = _Availability(s, s.log_availability, 1, "helper")
        config = SyncConfig(
            epoch_seconds=s.epoch_seconds,
            backoff=_backoff(s),
            give_up=GiveUpPolicy(max_attempts=s.max_attempts or None, max_age_epochs=None),
            relay=RelayPolicy(s.relay),
        )
        peers: list[set[int]] = [set() for _ in range(total)]
        group_of = [0] * total
        members: list[list[int]] = []
        for g, regular in enumerate(groups):
            caches = [n + g * s.caches + j for j in range(s.caches)]
            members.append(regular)
            for i in regular + caches:
                group_of[i] = g
            for i in regular:
                others = [q for q in regular if q != i]
                picks = others if not s.sharing else rng.sample(others, min(s.sharing, len(others)))
                for q in picks:
                    peers[i].add(q)
                    peers[q].add(i)
            for c in caches:
                for i in regular:
                    peers[c].add(i)
                    peers[i].add(c)
        self.members = members
        self.index = {_key(i): i for i in range(total)}
        self.backend = SimBackend(total) if s.log else None
        settings = LogSettings(
            page_size=s.log_page_size,
            head_size=min(s.log_head_size, s.log_page_size),
            inline=s.log_inline,
        )
        self.nodes: list[_Node] = []
        for i in range(total):
            g = group_of[i]
            gid = hashlib.sha256(b"mvds-sim group" + g.to_bytes(8, "big")).digest()
            cache = i >= n
            local = members[g].index(i) if not cache else 0
            if cache or s.mode == "batch":
                mode = "batch"
            elif s.mode == "interactive" or local < s.interactive_nodes:
                mode = "interactive"
            else:
                mode = "batch"
            store = MemoryStore(inbox=False)  # the simulator counts deliveries itself
            engine = Engine(store, config=config, now=0.0)
            engine.add_group(gid)
            for q in sorted(peers[i]):
                engine.add_peer(gid, _key(q), mode=Mode(mode))
            node = _Node(i, g, gid, _key(i), engine, store, sorted(peers[i]), mode, cache)
            if self.backend is not None and not cache:
                seed = hashlib.sha256(f"mvds-sim log key {i}".encode()).digest()
                node.signing = Ed25519PrivateKey.from_private_bytes(seed)
                node.log_pub = public_key(node.signing)
                node.writer = LogWriter(self.backend, node.signing, gid, settings=settings)
            self.nodes.append(node)
        if self.backend is not None:
            for node in self.nodes:
                if node.cache:
                    continue
                sources = node.peers if s.log_readers == "peers" else members[node.group]
                node.readers = tuple(
                    (
                        LogReader(
                            self.backend,
                            self.nodes[q].log_pub,
                            node.gid,
                            settings=settings,
                        ),
                        q,
                    )
                    for q in sources
                    if q != node.index and not self.nodes[q].cache
                )
                if s.log_acks and node.signing is not None:
                    node.acks = AckRecords(
                        signing=node.signing,
                        group_id=node.gid,
                        readers={self.nodes[q].key: r.writer for r, q in node.readers},
                        ledger=MemoryLedger(),
                        seq=0,  # a fresh log: no record yet
                    )
        # Event queue and counters.
        self.heap: list[tuple[float, int, int, int, Any]] = []
        self.seq = 0
        self.wake_at = [-1.0] * total
        self.lost = 0
        self.bytes_received = [0] * total
        self.hello_bytes = 0
        self.hellos = 0
        self.log_put = 0
        self.log_get = 0
        self.log_ack = 0
        self.gave_up = 0
        # Messages.
        self.msg_index: dict[bytes, int] = {}
        self.msg_time: list[float] = []
        self.msg_min: list[int] = []
        self.msg_expected: list[int] = []
        self.msg_got: list[int] = []
        self.sent_by = [0] * total
        self.delivered_to = [0] * total
        self.latencies: list[float] = []
        self.min_bytes = 0
        self.remaining = s.messages or -1
        self.counters = [0] * total
        # Schedule senders, connections and log reads.
        for regular in members:
            senders = regular if not s.senders else regular[: s.senders]
            for i in senders:
                self._push(rng.uniform(0.0, s.interval), _SEND, i, None)
        if s.hello:
            for node in self.nodes:
                t = self.avail.next_connect(node.index, 0.0)
                if t is not None:
                    self._push(t + _EPS, _CONNECT, node.index, None)
        if self.backend is not None:
            for node in self.nodes:
                if node.readers:
                    self._push(rng.uniform(0.0, s.log_poll), _LOG, node.index, None)

    def _push(self, t: float, kind: int, node: int, arg: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, node, arg))

    # ------------------------------------------------------------------ engines

    def _schedule(self, i: int, deadline: float | None, t: float) -> None:
        if deadline is None:
            return
        when = deadline + _EPS if deadline > t else t + _EPS
        current = self.wake_at[i]
        if current > t and current <= when:
            return  # a wake at or before this one is already queued
        self.wake_at[i] = when
        self._push(when, _WAKE, i, None)

    def _poke(self, i: int, t: float) -> None:
        """Something changed at node ``i``: drain it now, or when it is next online."""
        if self.s.offline_sends == "deferred" and not self.avail.online(i, t):
            back = self.avail.next_online(i, t)
            if back is not None:
                self._schedule(i, back, t)
            return
        deadline = self.nodes[i].engine.next_deadline()
        if deadline is not None and deadline <= t:
            self._drain(i, t)
        else:
            self._events(self.nodes[i], t)
            self._schedule(i, deadline, t)

    def _drain(self, i: int, t: float) -> None:
        node = self.nodes[i]
        engine = node.engine
        deadline: float | None = None
        for _ in range(_MAX_DRAINS):
            out = engine.payloads_to_send(now=t)
            for peer, data in out:
                self._transmit(i, self.index[peer], data, t)
            deadline = engine.next_deadline()
            if not out or deadline is None or deadline > t:
                break
        self._events(node, t)
        if deadline is not None and deadline <= t:
            # Nothing more can go out in this epoch: look again at the next one.
            es = self.s.epoch_seconds
            deadline = (math.floor(t / es) + 1) * es
        self._schedule(i, deadline, t)

    def _transmit(self, src: int, dst: int, data: bytes, t: float) -> None:
        s = self.s
        if (s.offline_sends == "lost" and not self.avail.online(src, t)) or (
            s.loss and self.loss_rng.random() < s.loss
        ):
            self.lost += 1
            return
        self._push(t + s.delay, _DELIVER, dst, (src, data))

    def _deliver(self, dst: int, src: int, data: bytes, t: float) -> None:
        if not self.avail.online(dst, t):
            self.lost += 1
            return
        self.bytes_received[dst] += len(data)
        node = self.nodes[dst]
        node.engine.receive_payload(self.nodes[src].key, data, now=t)
        self._poke(dst, t)

    def _events(self, node: _Node, t: float) -> None:
        events = node.engine.events()
        if not events:
            return
        index = self.msg_index
        for ev in events:
            if type(ev) is MessageDelivered:
                m = index.get(ev.message_id)
                if m is None or node.cache:
                    continue
                self.latencies.append(t - self.msg_time[m])
                self.msg_got[m] += 1
                self.delivered_to[node.index] += 1
                self.min_bytes += self.msg_min[m]
            elif type(ev) is GaveUp:
                self.gave_up += 1

    # ------------------------------------------------------------------- inputs

    def _send(self, i: int, t: float) -> None:
        s = self.s
        if self.remaining == 0:
            return
        self.remaining -= 1
        node = self.nodes[i]
        count = self.counters[i]
        self.counters[i] = count + 1
        tag = i.to_bytes(4, "big") + count.to_bytes(4, "big")
        body = tag + b"." * (s.body_bytes - len(tag))
        mid = node.engine.send(node.gid, body, now=t, timestamp=int(t * 1000))
        stored = node.store.get_message(mid)
        if stored is None:  # the same message again (cannot happen: the tag is unique)
            raise RuntimeError("a sent message is not in the sender's store")
        self.msg_index[mid] = len(self.msg_time)
        self.msg_time.append(t)
        self.msg_min.append(payload_overhead(len(stored.wire)))
        self.msg_expected.append(len(self.members[node.group]) - 1)
        self.msg_got.append(0)
        self.sent_by[i] += 1
        if node.writer is not None:
            node.upload.append((mid, stored.wire))
            if self.avail.online(i, t):
                self._log_round(node, t, poll=False)
        self._poke(i, t)
        after = t + s.interval
        if after < s.send_until and self.remaining != 0:
            self._push(after, _SEND, i, None)

    def _connect(self, i: int, t: float) -> None:
        """``i`` came online: hello to its peers; each online peer answers, both re-arm."""
        s = self.s
        node = self.nodes[i]
        answered = []
        for q in node.peers:
            self.hellos += 1
            self.hello_bytes += HELLO_BYTES
            if s.loss and self.loss_rng.random() < s.loss:
                continue
            if not self.avail.online(q, t):
                continue
            self.hellos += 1
            self.hello_bytes += HELLO_BYTES
            if s.loss and self.loss_rng.random() < s.loss:
                continue
            answered.append(q)
        for q in answered:
            peer = self.nodes[q]
            peer.engine.reset_peer(node.key, now=t)
            node.engine.reset_peer(peer.key, now=t)
            self._drain(q, t)
        if node.readers and node.last_read < t:
            self._log_round(node, t, poll=True)
        self._poke(i, t)
        nxt = self.avail.next_connect(i, t)
        if nxt is not None:
            self._push(nxt + _EPS, _CONNECT, i, None)

    def _log_tick(self, i: int, t: float) -> None:
        s = self.s
        node = self.nodes[i]
        if not self.avail.online(i, t):
            if s.offline_sends == "deferred":
                back = self.avail.next_online(i, t)
                if back is not None:
                    self._push(back + _EPS, _LOG, i, None)
                return
            self._push(t + s.log_poll, _LOG, i, None)
            return
        if t < node.last_read + s.log_poll:
            # Read lately (on coming online): the period counts from that read, as in the node.
            self._push(node.last_read + s.log_poll, _LOG, i, None)
            return
        self._log_round(node, t, poll=True)
        self._poke(i, t)
        self._push(t + s.log_poll, _LOG, i, None)

    # -------------------------------------------------------------- remote log

    def _log_round(self, node: _Node, t: float, *, poll: bool) -> None:
        """Upload what is queued and, with ``poll``, read the peers' logs (and their acks)."""
        backend = self.backend
        if backend is None:
            return
        backend.down = not self.helper.online(0, t)
        if backend.down:
            return
        backend.meter = node.index
        if node.upload and node.writer is not None:
            drive(node.writer.append(node.upload))
            self.log_put += len(node.upload)
            if node.acks is not None:
                node.acks.uploaded(node.writer.seq, [mid for mid, _ in node.upload])
            node.upload.clear()
        if not poll:
            return
        node.last_read = t
        engine = node.engine
        moved = False
        for reader, q in node.readers:
            result = drive(reader.poll(node.store.has_message))
            if result.messages:
                self.log_get += len(result.messages)
                for start in range(0, len(result.messages), _FEED_CHUNK):
                    chunk = result.messages[start : start + _FEED_CHUNK]
                    engine.receive_payload(self.nodes[q].key, encode_payload(messages=chunk), now=t)
            moved = reader.commit(result, node.store.has_message) or moved
        if node.acks is not None:
            if moved:
                self._publish_acks(node, node.acks)
            for _, q in node.readers:
                self._read_acks(node, node.acks, self.nodes[q].key, t)
        self._events(node, t)

    def _publish_acks(self, node: _Node, acks: AckRecords) -> None:
        assert self.backend is not None
        positions = {r.writer: r.cursor.seq for r, _ in node.readers if r.cursor is not None}
        pending = acks.record_for(positions)
        if pending is None:
            return
        drive(self.backend.ns_update(acks.name, pending.record))
        acks.published(pending)
        self.log_ack += len(positions)

    def _read_acks(self, node: _Node, acks: AckRecords, peer: bytes, t: float) -> None:
        """``peer``'s record: what ``node`` published in the heads ``peer`` has read since the
        last record becomes ACKs from ``peer``."""
        assert self.backend is not None
        if not acks.wants_record(peer):
            return  # nothing of ours awaits its acknowledgement: no need to read its record
        record = drive(self.backend.ns_fetch(acks.record_name(peer)))
        if record is None:
            return
        for payload in ack_payloads(acks.read_record(peer, record)):
            node.engine.receive_payload(peer, payload, now=t)

    # --------------------------------------------------------------------- loop

    def run(self, progress: Callable[[float, float], None] | None = None) -> SimResult:
        s = self.s
        heap = self.heap
        pop = heapq.heappop
        end = s.duration
        wake_at = self.wake_at
        # Progress is told every few thousand events (virtual time, duration): one counter per
        # event, so a run without a callback costs nothing measurable.
        every = _PROGRESS_EVERY if progress is not None else -1
        countdown = every
        while heap:
            t, _, kind, i, arg = pop(heap)
            if t > end:
                break
            countdown -= 1
            if countdown == 0:
                countdown = every
                assert progress is not None
                progress(t, end)
            if kind == _DELIVER:
                self._deliver(i, arg[0], arg[1], t)
            elif kind == _WAKE:
                if wake_at[i] != t:
                    continue  # overtaken by an earlier wake
                wake_at[i] = -1.0
                self._poke(i, t)
            elif kind == _SEND:
                self._send(i, t)
            elif kind == _CONNECT:
                self._connect(i, t)
            else:
                self._log_tick(i, t)
        if progress is not None:
            progress(end, end)
        return self._result()

    def _result(self) -> SimResult:
        records = dict.fromkeys(RECORD_TYPES, 0)
        figures = []
        sync_bytes = 0
        payloads = 0
        backend = self.backend
        for node in self.nodes:
            st = node.engine.statistics()
            per = {
                "ACK": st.acks_sent,
                "OFFER": st.offers_sent,
                "REQUEST": st.requests_sent,
                "MESSAGE": st.messages_sent,
            }
            for k, v in per.items():
                records[k] += v
            sync_bytes += st.bytes_sent
            payloads += st.payloads_sent
            i = node.index
            figures.append(
                NodeFigures(
                    node=i,
                    group=node.group,
                    role="cache" if node.cache else "member",
                    mode=node.mode,
                    sent=self.sent_by[i],
                    delivered=self.delivered_to[i],
                    bytes_sent=st.bytes_sent,
                    bytes_received=self.bytes_received[i],
                    log_bytes=(backend.up[i] + backend.down_bytes[i]) if backend else 0,
                    records=per,
                )
            )
        records["HELLO"] = self.hellos
        records["LOG_PUT"] = self.log_put
        records["LOG_GET"] = self.log_get
        records["LOG_ACK"] = self.log_ack
        expected = sum(self.msg_expected)
        complete = sum(
            1 for got, want in zip(self.msg_got, self.msg_expected, strict=True) if got >= want
        )
        return SimResult(
            scenario=self.s,
            messages=len(self.msg_time),
            expected=expected,
            delivered=len(self.latencies),
            complete=complete,
            latencies=self.latencies,
            records=records,
            sync_bytes=sync_bytes,
            hello_bytes=self.hello_bytes,
            log_up=sum(backend.up) if backend else 0,
            log_down=sum(backend.down_bytes) if backend else 0,
            log_up_parts=dict(backend.up_parts) if backend else dict.fromkeys(LOG_PARTS, 0),
            log_down_parts=dict(backend.down_parts) if backend else dict.fromkeys(LOG_PARTS, 0),
            payloads_sent=payloads,
            payloads_lost=self.lost,
            min_bytes=self.min_bytes,
            gave_up=self.gave_up,
            nodes=figures,
        )


_PROGRESS_EVERY = 4096
"""Events between two calls of a run's ``progress`` callback."""


def run(
    scenario: Scenario,
    *,
    seed: int | None = None,
    progress: Callable[[float, float], None] | None = None,
) -> SimResult:
    """Simulate ``scenario`` (with ``seed`` instead of its own, if given) and return the result.

    The same scenario and seed always give the same result, byte for byte. ``progress``, if
    given, is called now and then with (virtual seconds done, the scenario's duration); it does
    not change the result.
    """
    if seed is not None:
        scenario = replace(scenario, seed=seed)
    return _Sim(scenario).run(progress)


def sweep(
    scenarios: Sequence[Scenario],
    key: str,
    values: Sequence[Any],
    *,
    progress: Callable[[Scenario, Any], None] | None = None,
) -> dict[str, Any]:
    """Run every scenario once per value of setting ``key``; return the sweep's JSON object
    (schema ``mvds-node/sim-sweep/1``, see :mod:`mvds_node.sim._metrics`).

    Raises:
        ScenarioError: ``key`` is not a setting, or a value does not fit it.
    """
    runs = []
    for base in scenarios:
        for value in values:
            scenario = with_overrides(base, {key: value})
            if progress is not None:
                progress(scenario, value)
            runs.append({"scenario": base.name, "value": value, "result": run(scenario).to_dict()})
    return {"schema": SWEEP_SCHEMA, "key": key, "values": list(values), "runs": runs}
