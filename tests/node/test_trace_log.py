"""``node.trace`` with a remote log (file backend): the head sequence a message went out in, and
an acknowledgement that came as a remote-log acknowledgement record."""

from __future__ import annotations

from pathlib import Path

import trio

from mvds_node.node import Identity, LogUploaded, MessageAcked, open_node
from tests.node.helpers import config_for, next_event
from tests.remotelog.test_node_log import with_log


async def test_trace_names_the_log_head_and_an_ack_by_log_record(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    keys = {alice.public_key: alice.signing_public_key, bob.public_key: bob.signing_public_key}
    url = f"file://{tmp_path / 'store'}"
    a_cfg = with_log(config_for(tmp_path, "alice", alice, {"bob": bob}), url, keys)
    b_cfg = with_log(config_for(tmp_path, "bob", bob, {"alice": alice}), url, keys)
    with trio.fail_after(60):
        async with open_node(a_cfg, identity=alice) as a, a.events() as events:
            mid = await a.send("chat", b"by the log")
            uploaded = await next_event(events, LogUploaded)
            t = a.trace(mid)
            assert (t.log_seq, t.log_queued) == (uploaded.seq, False)
            assert t.log_seq >= 1
            (peer,) = t.peers
            assert peer.state == "sending"
        async with open_node(b_cfg, identity=bob) as b, b.messages() as inbox:
            await b.poll_remote_logs()
            assert (await inbox.receive()).message_id == mid
        async with open_node(a_cfg, identity=alice) as a, a.events() as events:
            await a.poll_remote_logs()  # bob's acknowledgement record
            acked = await next_event(events, MessageAcked)
            assert (acked.message_id, acked.via) == (mid, "remote-log")
            (peer,) = a.trace(mid).peers
            assert (peer.state, peer.acked_via) == ("acked", "remote-log")
