"""Target: MVDS payloads through ``Engine.receive_payload`` (``sync/_wire.py``, ``_engine.py``).

One engine on an in-memory store, in a group with two peers, holding one message of its own (so
ACK, OFFER and REQUEST records can name something it has). The fuzzer picks the delivery mode,
each peer's mode, and a sequence of payloads from either peer with clock steps between them;
after each payload the engine's output is drained as the node does. The engine documents that
it never raises on remote input (it reports ``PayloadRejected``), so no exception may come out
(``LocalProtocolError`` included: a record and an input without a transition in ``_state.py``);
and what it delivers must be delivered once (per input), be the message its ID names, and come
from a member.
"""

from __future__ import annotations

from mvds_node.sync import (
    DeliveryMode,
    Engine,
    MemoryStore,
    MessageDelivered,
    Mode,
    SyncConfig,
    message_id,
)
from tests.fuzz._support import GROUP_ID, Input, seed_bytes

MAX_LEN = 8192
PEERS = (seed_bytes("peer-a"), seed_bytes("peer-b"))
STRANGER = seed_bytes("stranger")
OWN_BODY = b"own message"
OWN_TIMESTAMP = 1_700_000_000
_CONFIGS = {mode: SyncConfig(delivery=mode) for mode in DeliveryMode}


def _check(event: MessageDelivered, delivered: set[bytes]) -> None:
    if event.message_id in delivered:
        raise AssertionError(f"message {event.message_id.hex()[:16]} delivered twice")
    delivered.add(event.message_id)
    if message_id(event.group_id, event.timestamp, event.body) != event.message_id:
        raise AssertionError("a delivered message does not match its ID")
    if event.sender not in PEERS:
        raise AssertionError("a message from a stranger was delivered")


def TestOneInput(data: bytes) -> None:
    fdp = Input(data)
    delivery = DeliveryMode.CONSISTENT if fdp.ConsumeBool() else DeliveryMode.EVENTUAL
    modes = [Mode.INTERACTIVE if fdp.ConsumeBool() else Mode.BATCH for _ in PEERS]
    now = 0.0
    engine = Engine(MemoryStore(), config=_CONFIGS[delivery], now=now)
    engine.add_group(GROUP_ID)
    for peer, mode in zip(PEERS, modes, strict=True):
        engine.add_peer(GROUP_ID, peer, mode=mode)
    engine.send(GROUP_ID, OWN_BODY, now=now, timestamp=OWN_TIMESTAMP)
    delivered: set[bytes] = set()
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        if fdp.remaining_bytes() == 0:
            break
        pick = fdp.ConsumeIntInRange(0, 4)
        peer = STRANGER if pick == 4 else PEERS[pick % 2]
        now += fdp.ConsumeIntInRange(0, 120) / 4
        engine.receive_payload(peer, fdp.ConsumeBlob(8192), now=now)
        while (event := engine.next_event()) is not None:
            if isinstance(event, MessageDelivered):
                _check(event, delivered)
        engine.payloads_to_send(now=now)
        deadline = engine.next_deadline()
        if deadline is not None and deadline <= now + 60:
            engine.handle_timer(now=max(now, deadline))
            engine.payloads_to_send(now=max(now, deadline))
