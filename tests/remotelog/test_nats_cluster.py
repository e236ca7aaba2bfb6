"""The remote log on a NATS JetStream cluster: three nats-server processes on 127.0.0.1, routed
together, the log's streams at three replicas. A server killed (SIGKILL) in the middle of an
upload and another in the middle of a catch-up lose nothing and duplicate nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio

from mvds_node.node import Identity, LogUploaded, open_node
from mvds_node.remotelog import BackendError, LogReader, LogSettings
from mvds_node.remotelog._nats import KV_STREAM, OBJ_STREAM, NatsBackend
from tests.node.helpers import config_for
from tests.remotelog.services import NatsCluster, nats_cluster
from tests.remotelog.test_node_log import with_log

TOTAL = 120


async def _leader(cluster: NatsCluster, stream: str) -> int:
    """The index of the server leading ``stream`` now (creating the log's streams, with three
    replicas, if they are not there yet)."""
    backend = NatsBackend(cluster.url + "?replicas=3")
    try:
        await backend.ns_fetch("nothing")
        info = await backend._api(f"$JS.API.STREAM.INFO.{stream}")
    finally:
        await backend.aclose_connection()
    assert info["config"]["num_replicas"] == 3
    assert len(info["cluster"]["replicas"]) == 2  # the leader and two followers
    leader: str = info["cluster"]["leader"]
    return int(leader.removeprefix("n"))


class Killer:
    """Kills the server a backend's connection is on when a call of ``method`` is the
    ``nth``, then lets the call go on; counts the calls that failed."""

    def __init__(self, cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cluster = cluster
        self.monkeypatch = monkeypatch
        self.killed: list[int] = []
        self.failed = 0

    def arm(self, method: str, nth: int) -> None:
        real = getattr(NatsBackend, method)
        calls = 0

        async def call(backend: NatsBackend, *args: bytes) -> object:
            nonlocal calls
            calls += 1
            if calls == nth:
                _, port = backend._servers[backend._next % len(backend._servers)]
                index = [client for client, _, _ in self.cluster.ports].index(port)
                self.killed.append(index)
                self.cluster.kill(index)
            try:
                return await real(backend, *args)
            except BackendError:
                self.failed += 1
                raise

        self.monkeypatch.setattr(NatsBackend, method, call)


async def test_servers_killed_during_an_upload_and_a_catch_up_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    keys = {alice.public_key: alice.signing_public_key, bob.public_key: bob.signing_public_key}
    bodies = [f"note {i}".encode() for i in range(TOTAL)]
    with trio.fail_after(120):
        async with nats_cluster(tmp_path / "cluster") as cluster:
            # Alice's URL names the leader of the key-value stream first: her connection is
            # on it, and killing it also makes the cluster elect a new leader.
            leader = await _leader(cluster, KV_STREAM)
            a_url = cluster.url_from(leader) + "?replicas=3"
            a_cfg = with_log(config_for(tmp_path, "alice", alice, {"bob": bob}), a_url, keys)
            killer = Killer(cluster, monkeypatch)
            killer.arm("cas_add", 40)  # an upload of 120 messages makes about 130
            async with open_node(a_cfg, identity=alice) as a, a.events() as events:
                await a.send_many("chat", bodies)
                uploaded = 0
                while uploaded < TOTAL:
                    event = await events.receive()
                    if isinstance(event, LogUploaded):
                        uploaded += event.messages
                assert uploaded == TOTAL
                (mine,) = [log for log in a.status().logs if log.mine]
                assert mine.queued == 0 and mine.error == ""
            assert killer.killed == [leader] and killer.failed >= 1  # the upload was cut

            # The killed server comes back and catches up with the cluster.
            await cluster.start(leader)
            await cluster.healthy(leader)

            # Bob, who never met Alice, catches up from her log; his URL names another server
            # first, and that one is killed after 30 of the log's objects have come.
            b_url = cluster.url_from((leader + 1) % 3) + "?replicas=3"
            b_cfg = with_log(config_for(tmp_path, "bob", bob, {"alice": alice}), b_url, keys)
            b_cfg = replace(b_cfg, remote_log=replace(b_cfg.remote_log, poll_seconds=0.5))
            killer.failed = 0
            killer.arm("cas_get", 30)
            async with open_node(b_cfg, identity=bob) as b, b.messages() as inbox:
                await b.poll_remote_logs()
                got = [await inbox.receive() for _ in range(TOTAL)]
                assert killer.killed == [leader, (leader + 1) % 3] and killer.failed >= 1
                ids = [m.message_id for m in got]
                assert len(set(ids)) == TOTAL
                assert sorted(m.body for m in got) == sorted(bodies)
                await b.poll_remote_logs()
                assert b.status().messages_stored == TOTAL
                (theirs,) = [log for log in b.status().logs if not log.mine]
                assert theirs.error == "" and theirs.fetched == TOTAL
            monkeypatch.undo()

            # The log itself holds each message once: a fresh reader walks all of it.
            backend = NatsBackend(cluster.url)
            reader = LogReader(
                backend,
                alice.signing_public_key,
                a_cfg.groups[0].id,
                settings=LogSettings(page_size=8, inline=3),
            )
            result = await reader.poll(lambda m: False)
            assert len(result.ids) == TOTAL == len(set(result.ids))
            await backend.aclose_connection()


async def test_a_url_naming_one_server_learns_the_others_and_moves_to_them(
    tmp_path: Path,
) -> None:
    """The cluster announces its servers (INFO ``connect_urls``): a backend whose URL names
    one of them goes on through another when that one dies. Its streams, made with one
    replica by an older configuration, are raised to three by ``?replicas=3``."""
    with trio.fail_after(60):
        async with nats_cluster(tmp_path / "cluster") as cluster:
            first = cluster.url.split(",")[0]
            single = NatsBackend(first)
            address = await single.cas_add(b"before the move")
            info = await single._api(f"$JS.API.STREAM.INFO.{KV_STREAM}")
            assert info["config"]["num_replicas"] == 1
            await single.aclose_connection()

            backend = NatsBackend(first + "?replicas=3")
            assert await backend.cas_get(address) == b"before the move"
            for stream in (KV_STREAM, OBJ_STREAM):
                info = await backend._api(f"$JS.API.STREAM.INFO.{stream}")
                assert info["config"]["num_replicas"] == 3
            assert len(backend.servers) == 3  # the two others, announced
            # Wait until both new replicas hold the content, then kill the URL's server.
            for i in (1, 2):
                await cluster.healthy(i)
            while True:
                info = await backend._api(f"$JS.API.STREAM.INFO.{OBJ_STREAM}")
                replicas = info["cluster"].get("replicas", [])
                if len(replicas) == 2 and all(r.get("current") for r in replicas):
                    break
            cluster.kill(0)
            got = None
            failures: list[str] = []
            while got is None:  # requests fail until the cluster has elected new leaders
                try:
                    got = await backend.cas_get(address)
                except BackendError as e:
                    failures.append(str(e))
            assert got == b"before the move"
            assert all(text.startswith(f"nats {first}?replicas=3") for text in failures)
            await backend.aclose_connection()
