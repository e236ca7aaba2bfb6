"""A node deletes an expiring message on the engine's one timer.

The engine's ``next_deadline()`` includes the next expiry once the node passes it the wall
clock at each wake-up, so the node waits on that one value. The wall clock here follows Trio's
(mock) clock from a fixed Unix time, so the expiry falls at an exact virtual time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from mvds_node.node import (
    GroupConfig,
    Identity,
    NodeConfig,
    PeerConfig,
    _driver,
    _node,
    group_id_for,
    open_node,
)
from mvds_node.sync import MessageExpired

BASE_MS = 1_700_000_000_000


async def test_an_expiring_message_goes_at_its_time_on_the_one_timer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    def wall() -> int:
        return BASE_MS + round(trio.current_time() * 1000)

    # The driver's loop reads the wall clock; the node stamps what it sends with it.
    monkeypatch.setattr(_driver, "wall_ms", wall)
    monkeypatch.setattr(_node, "wall_ms", wall)
    me, other = Identity.generate(), Identity.generate()
    peer = PeerConfig(key=other.public_key, name="other")
    config = NodeConfig(
        data_dir=tmp_path / "me",
        name="me",
        listen=("127.0.0.1", 0),
        peers=(peer,),
        groups=(GroupConfig(name="chat", id=group_id_for("chat"), members=(peer.key,)),),
        epoch_seconds=0.5,
    )
    with trio.fail_after(60):
        async with open_node(config, identity=me) as node, node.events() as events:
            start = trio.current_time()
            mid = await node.send("chat", b"burn after reading", expires_at=wall() + 5_000)
            expired = None
            async for event in events:
                if isinstance(event, MessageExpired):
                    expired = event
                    break
            assert expired is not None and expired.message_id == mid
            assert 5.0 <= trio.current_time() - start < 5.01
            assert node.status().messages_stored == 0
