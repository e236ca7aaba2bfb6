"""The NATS backend against nats-server configured as deployments are: TLS, users with
passwords, a token, NKey users, and an operator with account and user JWTs (``.creds``).

For each: the right credentials work end to end; wrong or missing ones give a one-line error
that names the backend and the setting to fix, and never the secret."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.node import Identity, NodeConfig
from mvds_node.remotelog import BackendError, Credentials, Secret, SecretError, log_name
from mvds_node.remotelog._format import public_key, sign_head, signed_seq
from mvds_node.remotelog._nats import NatsBackend
from tests.node.cliutil import acli, init, start
from tests.node.helpers import config_for
from tests.remotelog.test_node_log import _catch_up_and_ack, with_log

from .certs import Pki, make_pki
from .nats_accounts import new_operator, new_pair
from .services import nats_server_with

KEY = Ed25519PrivateKey.generate()
NAME = log_name(public_key(KEY), b"G" * 32)
PASSWORD = "pw-Zq8rTtY3"
TOKEN = "tok-Xv93LmQ2"


async def round_trip(backend: NatsBackend) -> None:
    """A write and a read of each half of the remote log (NS and CAS)."""
    with trio.fail_after(20):
        try:
            address = await backend.cas_add(b"content")
            assert await backend.cas_get(address) == b"content"
            record = await backend.ns_fetch(NAME)
            seq = 1 if record is None else (signed_seq(record) or 0) + 1
            await backend.ns_update(NAME, sign_head(KEY, NAME, seq, b"", False))
            assert await backend.ns_fetch(NAME) == sign_head(KEY, NAME, seq, b"", False)
        finally:
            await backend.aclose_connection()


async def refused(backend: NatsBackend, *secrets: str) -> str:
    """The error a request meets; checks it is one line and shows none of ``secrets``."""
    with trio.fail_after(20), pytest.raises(BackendError) as raised:
        await backend.ns_fetch(NAME)
    text = str(raised.value)
    assert "\n" not in text and text.startswith("nats ")
    for secret in (PASSWORD, TOKEN, *secrets):
        assert secret not in text and secret not in repr(raised.value)
    return text


@asynccontextmanager
async def server(tmp: Path, config: Callable[[int], str]) -> AsyncIterator[int]:
    with trio.fail_after(30):
        async with nats_server_with(tmp, config) as port:
            yield port


def tls_block(certs: Pki, *, verify: bool = False) -> str:
    extra = f'  ca_file: "{certs.ca}"\n  verify: true\n' if verify else ""
    return (
        f'tls {{\n  cert_file: "{certs.server_cert}"\n  key_file: "{certs.server_key}"\n{extra}}}\n'
    )


USERS = f'authorization {{ users = [ {{ user: "alice", password: "{PASSWORD}" }} ] }}\n'


async def test_tls_and_a_user_with_a_password(tmp_path: Path) -> None:
    certs = make_pki(tmp_path / "certs")
    trusted = Credentials(ca_file=certs.ca)
    async with server(tmp_path / "nats", lambda port: tls_block(certs) + USERS) as port:
        # In the URL, or as remote_log.secret (which wins over the URL's).
        await round_trip(
            NatsBackend(f"tls://alice:{PASSWORD}@127.0.0.1:{port}", credentials=trusted)
        )
        with_secret = Credentials(secret=Secret(PASSWORD), ca_file=certs.ca)
        await round_trip(NatsBackend(f"tls://alice@127.0.0.1:{port}", credentials=with_secret))
        await round_trip(
            NatsBackend(f"tls://alice:wrong@127.0.0.1:{port}", credentials=with_secret)
        )
        # nats:// to a server that requires TLS: upgraded, as the server's INFO asks.
        await round_trip(
            NatsBackend(f"nats://alice:{PASSWORD}@127.0.0.1:{port}", credentials=trusted)
        )

        wrong = NatsBackend(f"tls://alice:not-{PASSWORD}@127.0.0.1:{port}", credentials=trusted)
        text = await refused(wrong, f"not-{PASSWORD}")
        assert f"nats tls://alice:***@127.0.0.1:{port}: authorization violation" in text
        assert "check the user in remote_log.url and its password" in text
        missing = await refused(NatsBackend(f"tls://127.0.0.1:{port}", credentials=trusted))
        assert "the server wants credentials" in missing
        # The system's CAs (or another CA) do not vouch for the server: remote_log.ca_file.
        other = make_pki(tmp_path / "other", name="another")
        untrusted = NatsBackend(
            f"tls://alice:{PASSWORD}@127.0.0.1:{port}", credentials=Credentials(ca_file=other.ca)
        )
        assert "not trusted; check remote_log.ca_file" in await refused(untrusted)
        system = NatsBackend(f"tls://alice:{PASSWORD}@127.0.0.1:{port}")
        assert "not trusted; check remote_log.ca_file" in await refused(system)


async def test_a_server_that_asks_for_a_client_certificate(tmp_path: Path) -> None:
    certs = make_pki(tmp_path / "certs")
    async with server(tmp_path / "nats", lambda port: tls_block(certs, verify=True)) as port:
        mine = Credentials(ca_file=certs.ca, cert_file=certs.client_cert, key_file=certs.client_key)
        await round_trip(NatsBackend(f"tls://127.0.0.1:{port}", credentials=mine))
        without = NatsBackend(f"tls://127.0.0.1:{port}", credentials=Credentials(ca_file=certs.ca))
        assert "remote_log.cert_file" in await refused(without)


async def test_tls_to_a_server_without_it_is_refused_with_a_hint(tmp_path: Path) -> None:
    async with server(tmp_path / "nats", lambda port: "") as port:
        text = await refused(NatsBackend(f"tls://127.0.0.1:{port}"))
        assert "does not offer TLS: use nats://" in text


async def test_a_token(tmp_path: Path) -> None:
    async with server(
        tmp_path / "nats", lambda p: f'authorization {{ token: "{TOKEN}" }}\n'
    ) as port:
        await round_trip(NatsBackend(f"nats://{TOKEN}@127.0.0.1:{port}"))
        await round_trip(
            NatsBackend(f"nats://127.0.0.1:{port}", credentials=Credentials(secret=Secret(TOKEN)))
        )
        wrong = NatsBackend(f"nats://not-{TOKEN}@127.0.0.1:{port}")
        text = await refused(wrong, f"not-{TOKEN}")
        assert f"nats nats://***@127.0.0.1:{port}: authorization violation" in text
        assert "check the token (remote_log.secret, or nats://TOKEN@host)" in text


async def test_an_nkey_user(tmp_path: Path) -> None:
    user, stranger = new_pair("user"), new_pair("user")
    (tmp_path / "user.nk").write_text(user.seed + "\n")
    (tmp_path / "stranger.nk").write_text(stranger.seed + "\n")
    config = f'authorization {{ users = [ {{ nkey: "{user.public}" }} ] }}\n'
    async with server(tmp_path / "nats", lambda port: config) as port:
        url = f"nats://127.0.0.1:{port}"
        await round_trip(NatsBackend(url, credentials=Credentials(nkey_file=tmp_path / "user.nk")))
        backend = NatsBackend(url, credentials=Credentials(nkey_file=tmp_path / "stranger.nk"))
        text = await refused(backend, stranger.seed)
        assert "authorization violation" in text and "check remote_log.nkey_file" in text
        assert "the server wants credentials" in await refused(NatsBackend(url))


def test_a_file_that_holds_no_seed_is_refused_at_once(tmp_path: Path) -> None:
    account = new_pair("account")
    (tmp_path / "account.nk").write_text(account.seed)
    with pytest.raises(SecretError, match="not a user's NKey seed") as raised:
        NatsBackend("nats://h", credentials=Credentials(nkey_file=tmp_path / "account.nk"))
    assert account.seed not in str(raised.value)
    user = new_pair("user").seed
    broken = user[:10] + ("A" if user[10] != "A" else "B") + user[11:]
    (tmp_path / "broken.nk").write_text(broken)
    with pytest.raises(SecretError, match="checksum") as raised:
        NatsBackend("nats://h", credentials=Credentials(nkey_file=tmp_path / "broken.nk"))
    assert broken not in str(raised.value)
    (tmp_path / "empty.creds").write_text("nothing here\n")
    with pytest.raises(SecretError, match=r"not a \.creds file"):
        NatsBackend("nats://h", credentials=Credentials(creds_file=tmp_path / "empty.creds"))


async def test_creds_of_an_operator_deployment(tmp_path: Path) -> None:
    operator = new_operator()
    good = operator.creds(tmp_path / "good.creds")
    # A user JWT signed by an account the server does not know.
    bad = operator.creds(tmp_path / "bad.creds", signer=new_pair("account"))
    async with server(tmp_path / "nats", lambda port: operator.server_config()) as port:
        url = f"nats://127.0.0.1:{port}"
        await round_trip(NatsBackend(url, credentials=Credentials(creds_file=good)))
        backend = NatsBackend(url, credentials=Credentials(creds_file=bad))
        seed = bad.read_text().split("-----BEGIN USER NKEY SEED-----\n")[1][:58]
        text = await refused(backend, seed)
        assert "check remote_log.creds_file" in text


async def test_a_node_with_a_wrong_password_keeps_running_loses_nothing_and_shows_no_secret(
    tmp_path: Path,
) -> None:
    """Through the CLI: ``run`` with a password file holding the wrong password, then the right
    one. The message sent meanwhile waits in the queue and goes up once the password is fixed;
    neither ``status`` (text and JSON) nor the node's events show the password."""
    certs = make_pki(tmp_path / "certs")
    directory = tmp_path / "alice"
    init(directory, "alice")
    secret_file = tmp_path / "nats-password"
    secret_file.write_text(f"not-{PASSWORD}\n")
    async with server(tmp_path / "nats", lambda port: tls_block(certs) + USERS) as port:
        url = f"tls://alice@127.0.0.1:{port}"
        for name, value in (
            ("remote_log.url", url),
            ("remote_log.secret", f"file:{secret_file}"),
            ("remote_log.ca_file", str(certs.ca)),
        ):
            await acli("--dir", directory, "config", "set", name, value)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                node = await start(nursery, directory)
                await acli("--dir", directory, "send", "chat", "kept while the password is wrong")
                while True:  # each look is a `status` command: bounded by fail_after
                    doc = json.loads(await acli("--dir", directory, "--json", "status"))
                    (mine,) = [log for log in doc["logs"] if log["mine"]]
                    if mine["error"]:
                        break
                assert doc["running"] and mine["queued"] == 1
                assert (
                    f"nats tls://alice@127.0.0.1:{port}: authorization violation" in mine["error"]
                )
                assert "remote_log.secret" in mine["error"]
                text = await acli("--dir", directory, "status")
                assert "authorization violation" in text
                printed = json.dumps(node.lines)
                for shown in (json.dumps(doc), text, printed):
                    assert PASSWORD not in shown  # neither the wrong one nor the right one
                assert await node.stop() == 0

                secret_file.write_text(f"{PASSWORD}\n")
                node = await start(nursery, directory)
                await node.wait_for(
                    lambda r: any(line["type"] == "log-uploaded" for line in r.lines),
                    "the queued message uploaded",
                )
                doc = json.loads(await acli("--dir", directory, "--json", "status"))
                (mine,) = [log for log in doc["logs"] if log["mine"]]
                assert (mine["queued"], mine["error"]) == (0, "") and mine["seq"] >= 1
                assert PASSWORD not in json.dumps(doc) + json.dumps(node.lines)
                assert await node.stop() == 0
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize("deployment", ["tls+user", "token", "nkey", "creds"])
async def test_nodes_catch_up_through_an_authenticated_server(
    tmp_path: Path, deployment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two nodes that never meet, through ``open_node``: one writes its log, goes away; the
    other reads it and acknowledges; the first reads the acknowledgements."""
    certs = make_pki(tmp_path / "certs")
    user, operator = new_pair("user"), new_operator()
    (tmp_path / "user.nk").write_text(user.seed)
    creds = operator.creds(tmp_path / "user.creds")
    monkeypatch.setenv("MVDS_TEST_NATS_TOKEN", TOKEN)
    configs: dict[str, tuple[Callable[[int], str], str, dict[str, Any]]] = {
        "tls+user": (
            lambda port: tls_block(certs) + USERS,
            "tls://alice@127.0.0.1:{port}",
            {"secret": f"file:{tmp_path / 'pw'}", "ca_file": str(certs.ca)},
        ),
        "token": (
            lambda port: f'authorization {{ token: "{TOKEN}" }}\n',
            "nats://127.0.0.1:{port}",
            {"secret": "env:MVDS_TEST_NATS_TOKEN"},
        ),
        "nkey": (
            lambda port: f'authorization {{ users = [ {{ nkey: "{user.public}" }} ] }}\n',
            "nats://127.0.0.1:{port}",
            {"nkey_file": str(tmp_path / "user.nk")},
        ),
        "creds": (
            lambda port: operator.server_config(),
            "nats://127.0.0.1:{port}",
            {"creds_file": str(creds)},
        ),
    }
    (tmp_path / "pw").write_text(PASSWORD)
    config, url, settings = configs[deployment]
    alice, bob = Identity.generate(), Identity.generate()
    keys = {alice.public_key: alice.signing_public_key, bob.public_key: bob.signing_public_key}
    async with server(tmp_path / "nats", config) as port:

        def configured(cfg: NodeConfig) -> NodeConfig:
            cfg = with_log(cfg, url.format(port=port), keys)
            return replace(cfg, remote_log=replace(cfg.remote_log, **settings))

        a_cfg = configured(config_for(tmp_path, "alice", alice, {"bob": bob}))
        b_cfg = configured(config_for(tmp_path, "bob", bob, {"alice": alice}))
        await _catch_up_and_ack(a_cfg, b_cfg, alice, bob)
