"""The NATS backend against nats-server configured as deployments are: TLS, users with
passwords, a token, NKey users, and an operator with account and user JWTs (``.creds``).

For each: the right credentials work end to end; wrong or missing ones give a one-line error
that names the backend and the setting to fix, and never the secret."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.remotelog import BackendError, Credentials, Secret, SecretError, log_name
from mvds_node.remotelog._format import public_key, sign_head, signed_seq
from mvds_node.remotelog._nats import NatsBackend

from .certs_nats import Certs, make_certs
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


def tls_block(certs: Certs, *, verify: bool = False) -> str:
    extra = f'  ca_file: "{certs.ca}"\n  verify: true\n' if verify else ""
    return (
        f'tls {{\n  cert_file: "{certs.server_cert}"\n  key_file: "{certs.server_key}"\n{extra}}}\n'
    )


USERS = f'authorization {{ users = [ {{ user: "alice", password: "{PASSWORD}" }} ] }}\n'


async def test_tls_and_a_user_with_a_password(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
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
        other = make_certs(tmp_path / "other", ca_name="another CA")
        untrusted = NatsBackend(
            f"tls://alice:{PASSWORD}@127.0.0.1:{port}", credentials=Credentials(ca_file=other.ca)
        )
        assert "not trusted; check remote_log.ca_file" in await refused(untrusted)
        system = NatsBackend(f"tls://alice:{PASSWORD}@127.0.0.1:{port}")
        assert "not trusted; check remote_log.ca_file" in await refused(system)


async def test_a_server_that_asks_for_a_client_certificate(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
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
