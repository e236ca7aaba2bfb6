"""The Redis backend against redis-server set up as deployments are: a ``requirepass``, an ACL
user, TLS only (``port 0``, ``tls-port``) with client certificates, a database number."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.errors import ConfigError
from mvds_node.node import AnyEvent, Identity, LogUploaded, NodeConfig, open_node
from mvds_node.node._config import RemoteLogConfig
from mvds_node.node._remotelog import backend_for, credentials_from
from mvds_node.remotelog import BackendError, Credentials, Secret, log_name
from mvds_node.remotelog._format import public_key, sign_head
from mvds_node.remotelog._redis import RedisBackend
from tests.node.helpers import config_for

from .certs import Pki, make_pki
from .services import redis_deployment

ADMIN = "admin-pass-4d1c"
"""The ``default`` user's password (``requirepass``)."""
ALICE = "alice-pass-93bf2e"
"""The ACL user alice's password."""
WRONG = "not-the-pass-7a1e"
SECRETS = (ADMIN, ALICE, WRONG)
KEY = Ed25519PrivateKey.generate()
G = b"G" * 32


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a password is shown: {text!r}"


@dataclass
class Tls:
    port: int
    pki: Pki


@asynccontextmanager
async def tls_redis(tmp: Path, *, auth_clients: str = "optional") -> AsyncIterator[Tls]:
    pki = make_pki(tmp / "pki", name="redis")
    tls = (pki.ca, pki.server_cert, pki.server_key)
    async with redis_deployment(
        tmp / "redis", requirepass=ADMIN, users={"alice": ALICE}, tls=tls, auth_clients=auth_clients
    ) as port:
        yield Tls(port, pki)


async def _round_trip(backend: RedisBackend, seq: int = 1) -> None:
    name = log_name(public_key(KEY), G)
    record = sign_head(KEY, name, seq, b"", False)
    address = await backend.cas_add(b"an object")
    assert await backend.cas_get(address) == b"an object"
    await backend.ns_update(name, record)
    assert await backend.ns_fetch(name) == record


async def test_an_acl_user_over_tls_with_a_client_certificate_reads_and_writes(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with tls_redis(tmp_path, auth_clients="yes") as server:
            pki = server.pki
            creds = Credentials(
                secret=Secret(ALICE),
                ca_file=pki.ca,
                cert_file=pki.client_cert,
                key_file=pki.client_key,
            )
            url = f"rediss://alice@127.0.0.1:{server.port}/2"
            backend = RedisBackend(url, credentials=creds)
            assert backend.server == f"redis rediss://alice@127.0.0.1:{server.port}/2"
            async with backend:  # the pooled connections
                await _round_trip(backend)
            await _round_trip(RedisBackend(url, credentials=creds), 2)  # a pool per call
            # The pub/sub connection authenticates and uses TLS too.
            name = log_name(public_key(KEY), G)
            heard: list[str] = []
            async with trio.open_nursery() as nursery:

                async def listen(task_status: trio.TaskStatus[None]) -> None:
                    async with RedisBackend(url, credentials=creds).watch() as updates:
                        task_status.started()
                        async for updated in updates:
                            heard.append(updated)
                            return

                await nursery.start(listen)
                await backend.ns_update(name, sign_head(KEY, name, 3, b"", False))
            assert heard == [name]
            # Database 2 was used: database 0 has none of it.
            other = RedisBackend(f"rediss://alice@127.0.0.1:{server.port}/0", credentials=creds)
            assert await other.ns_fetch(name) is None
            assert await RedisBackend(url, credentials=creds).ns_fetch(name) is not None


async def test_the_password_in_the_url_and_requirepass(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with redis_deployment(
            tmp_path / "redis",
            requirepass=ADMIN,
            users={"alice": ALICE},
            acl=(f"user carol on >{ALICE} ~other:* +@all",),
        ) as port:
            # A user whose ACL does not cover our keys: told which right is missing.
            text = await _refusal(RedisBackend(f"redis://carol:{ALICE}@127.0.0.1:{port}"))
            assert "user carol may not do this (NOPERM)" in text
            await _round_trip(RedisBackend(f"redis://:{ADMIN}@127.0.0.1:{port}"))
            await _round_trip(RedisBackend(f"redis://alice:{ALICE}@127.0.0.1:{port}/1"))  # db 1
            # remote_log.secret wins over the URL's password.
            url = f"redis://alice:{WRONG}@127.0.0.1:{port}"
            await _round_trip(RedisBackend(url, credentials=Credentials(secret=Secret(ALICE))), 2)


async def _refusal(backend: RedisBackend) -> str:
    with pytest.raises(BackendError) as caught:
        await backend.ns_fetch("mvds/x")
    text = str(caught.value)
    assert "\n" not in text and text.startswith("redis ")
    assert_no_secret(text)
    return text


async def test_wrong_or_missing_credentials_give_one_line_that_says_what_to_fix(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with tls_redis(tmp_path, auth_clients="optional") as server:
            pki, port = server.pki, server.port
            trusted = Credentials(ca_file=pki.ca)
            text = await _refusal(
                RedisBackend(f"rediss://alice:{WRONG}@127.0.0.1:{port}", credentials=trusted)
            )
            assert f"rediss://alice:***@127.0.0.1:{port}" in text
            assert "authentication failed (WRONGPASS): check remote_log.secret" in text
            text = await _refusal(RedisBackend(f"rediss://127.0.0.1:{port}", credentials=trusted))
            assert "NOAUTH" in text and "remote_log.secret" in text
            # A certificate from a CA we were not told to trust (the system's CAs do not know it).
            text = await _refusal(
                RedisBackend(f"rediss://alice:{ALICE}@127.0.0.1:{port}", credentials=Credentials())
            )
            assert "certificate is not trusted" in text and "remote_log.ca_file" in text
            stranger = make_pki(tmp_path / "other", name="other")
            text = await _refusal(
                RedisBackend(
                    f"rediss://alice:{ALICE}@127.0.0.1:{port}",
                    credentials=Credentials(ca_file=stranger.ca),
                )
            )
            assert "certificate is not trusted" in text
            # Plain Redis to a TLS-only port.
            backend = RedisBackend(f"redis://alice:{ALICE}@127.0.0.1:{port}", timeout=2)
            text = await _refusal(backend)
            assert "rediss://" in text
        async with tls_redis(tmp_path / "strict", auth_clients="yes") as server:
            text = await _refusal(
                RedisBackend(
                    f"rediss://alice:{ALICE}@127.0.0.1:{server.port}",
                    credentials=Credentials(ca_file=server.pki.ca),
                )
            )
            assert "TLS" in text and "remote_log.cert_file" in text


def test_unusable_settings_are_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a password") as caught:
        backend_for("redis://alice@127.0.0.1:1")
    with pytest.raises(ConfigError, match="rediss://"):
        backend_for("redis://127.0.0.1:1", credentials=Credentials(ca_file=tmp_path / "ca"))
    with pytest.raises(ConfigError, match="database") as caught:
        backend_for(f"redis://:{ADMIN}@127.0.0.1:1/two")
    assert_no_secret(str(caught.value))
    with pytest.raises(ConfigError, match="CA file") as caught:
        backend_for("rediss://127.0.0.1:1", credentials=Credentials(ca_file=tmp_path / "none"))
    backend = backend_for(
        f"redis://:{ADMIN}@127.0.0.1:1/3", credentials=Credentials(secret=Secret(ALICE))
    )
    assert isinstance(backend, RedisBackend) and backend.db == 3
    assert_no_secret(repr(vars(backend)) + backend.server)


def _log_config(
    cfg: NodeConfig, url: str, keys: dict[bytes, bytes], *, secret: str, ca_file: Path
) -> NodeConfig:
    peers = tuple(replace(p, log_key=keys.get(p.key)) for p in cfg.peers)
    remote = RemoteLogConfig(
        url=url, page_size=8, inline=3, poll_seconds=3600, secret=secret, ca_file=str(ca_file)
    )
    return replace(cfg, listen=None, peers=peers, remote_log=remote)


async def test_nodes_sync_through_an_authenticated_tls_redis_and_a_wrong_password_loses_nothing(
    tmp_path: Path,
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    keys = {alice.public_key: alice.signing_public_key, bob.public_key: bob.signing_public_key}
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(WRONG + "\n")
    with trio.fail_after(60):
        async with tls_redis(tmp_path) as server:
            url = f"rediss://alice@127.0.0.1:{server.port}/5"
            a_cfg = _log_config(
                config_for(tmp_path, "alice", alice, {"bob": bob}),
                url,
                keys,
                secret=f"file:{secret_file}",
                ca_file=server.pki.ca,
            )
            b_cfg = _log_config(
                config_for(tmp_path, "bob", bob, {"alice": alice}),
                url,
                keys,
                secret=ALICE,
                ca_file=server.pki.ca,
            )
            seen: list[AnyEvent] = []
            # A wrong password: the node runs, the message waits in the queue, the status says
            # what to fix and shows no password.
            async with open_node(a_cfg, identity=alice) as a, a.events() as events:
                await a.send("chat", b"kept while the password is wrong")
                while True:
                    (mine,) = [log for log in a.status().logs if log.mine]
                    if mine.error:
                        break
                    with trio.move_on_after(0.05):
                        seen.append(await events.receive())
                assert mine.queued == 1
                assert "WRONGPASS" in mine.error and "remote_log.secret" in mine.error
                assert_no_secret(str(a.status().to_json()))
                while True:  # anything the node reported meanwhile
                    with trio.move_on_after(0):
                        seen.append(await events.receive())
                        continue
                    break
            assert_no_secret(repr(seen))
            assert not any(isinstance(e, LogUploaded) for e in seen)
            # The password is fixed: the queued message goes up at the next start.
            secret_file.write_text(ALICE + "\n")
            async with open_node(a_cfg, identity=alice) as a, a.events() as events:
                while not isinstance(event := await events.receive(), LogUploaded):
                    pass
                assert event.messages == 1 and event.queued == 0
            async with open_node(b_cfg, identity=bob) as b, b.messages() as inbox:
                await b.poll_remote_logs()
                message = await inbox.receive()
                assert message.body == b"kept while the password is wrong"
                assert message.via == alice.public_key


def test_credentials_from_the_environment_reach_the_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MVDS_TEST_REDIS_PASSWORD", ALICE)
    creds = credentials_from(RemoteLogConfig(secret="env:MVDS_TEST_REDIS_PASSWORD"))
    backend = backend_for("redis://alice@127.0.0.1:1", credentials=creds)
    assert isinstance(backend, RedisBackend)
    assert backend.username == "alice" and ALICE not in backend.server
