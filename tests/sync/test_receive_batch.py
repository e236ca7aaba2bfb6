"""A payload of new messages is stored with one ``add_messages`` call (eventual delivery), and
anything that rules the batch out falls back to storing them one by one, with the same result.

What must hold either way: every new message is stored and delivered in payload order, a
duplicate is counted and not delivered again, and every message is acknowledged.
"""

from __future__ import annotations

from typing import Any

import pytest

from mvds_node.sync import (
    DeliveryMode,
    Engine,
    MemoryStore,
    MessageDelivered,
    SyncConfig,
    decode_payload,
    encode_message,
    encode_payload,
    message_id,
)

G = b"G" * 32
A, B = b"A" * 32, b"B" * 32


class SpyStore(MemoryStore):  # type: ignore[misc]
    """Counts the calls that store received messages."""

    def __init__(self) -> None:
        super().__init__()
        self.one_by_one = 0
        self.batches: list[int] = []
        self._in_batch = False

    def add_message(self, message: Any) -> bool:
        self.one_by_one += not self._in_batch
        return bool(super().add_message(message))

    def add_messages(self, messages: Any) -> bool:
        self.batches.append(len(messages))
        self._in_batch = True
        try:
            return bool(super().add_messages(messages))
        finally:
            self._in_batch = False


def receiver(delivery: DeliveryMode = DeliveryMode.EVENTUAL) -> tuple[Engine, SpyStore]:
    store = SpyStore()
    e = Engine(store, config=SyncConfig(epoch_seconds=1.0, delivery=delivery), now=0.0)
    e.add_group(G)
    e.add_peer(G, A)
    return e, store


def delivered(e: Engine) -> list[bytes]:
    out = []
    while (event := e.next_event()) is not None:
        if isinstance(event, MessageDelivered):
            out.append(event.body)
    return out


def acked(e: Engine) -> set[bytes]:
    (payload,) = [p for peer, p in e.payloads_to_send(now=1.5) if peer == A]
    return set(decode_payload(payload, SyncConfig().limits).acks)


def wire(n: int, parents: tuple[bytes, ...] = ()) -> tuple[bytes, bytes]:
    body = b"m%d" % n
    return message_id(G, n, body), encode_message(G, n, body, parents=parents)


def test_new_messages_are_stored_in_one_batch_and_delivered_in_order() -> None:
    e, store = receiver()
    first = wire(1)
    chain = [first, wire(2, (first[0],)), wire(3)]
    e.receive_payload(A, encode_payload(messages=[w for _, w in chain]), now=0.1)
    assert store.batches == [3] and store.one_by_one == 0
    assert delivered(e) == [b"m1", b"m2", b"m3"]
    assert acked(e) == {i for i, _ in chain}
    assert all(store.get_message(i) is not None for i, _ in chain)


@pytest.mark.parametrize("delivery", list(DeliveryMode))
def test_a_duplicate_among_new_messages_falls_back_to_one_by_one(
    delivery: DeliveryMode,
) -> None:
    e, store = receiver(delivery)
    old, new1, new2 = wire(1), wire(2), wire(3)
    e.receive_payload(A, encode_payload(messages=[old[1]]), now=0.1)
    assert delivered(e) == [b"m1"]
    store.batches.clear()
    store.one_by_one = 0
    e.receive_payload(A, encode_payload(messages=[new1[1], old[1], new2[1]]), now=0.2)
    assert delivered(e) == [b"m2", b"m3"], "the duplicate is not delivered again"
    assert e.statistics.duplicates_received == 1
    assert store.one_by_one == 3
    assert store.batches == ([3] if delivery is DeliveryMode.EVENTUAL else [])
    assert acked(e) == {old[0], new1[0], new2[0]}
