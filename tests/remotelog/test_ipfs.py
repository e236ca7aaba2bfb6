"""The IPFS backend against real Kubo daemons on 127.0.0.1: one node, two nodes joined by
bitswap and IPNS over pubsub, API authorizations and a TLS proxy in front of the API."""

from __future__ import annotations

import json
import re
import secrets
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.errors import ConfigError
from mvds_node.node import AnyEvent, Identity, LogUploaded, open_node
from mvds_node.node._remotelog import backend_for
from mvds_node.remotelog import (
    BackendError,
    Credentials,
    LogReader,
    LogSettings,
    LogWriter,
    Secret,
    SecretError,
)
from mvds_node.remotelog._format import address_of, public_key
from mvds_node.remotelog._ipfs import IpfsBackend, authorization_header, cid_of
from mvds_node.sync import encode_message, message_id
from tests.node.helpers import config_for

from . import services
from .certs import make_pki
from .services import kubo_node, tls_proxy
from .test_node_log import with_log

G = b"G" * 32
KEY = Ed25519PrivateKey.generate()
WRITER = public_key(KEY)
TOKEN = "tk-" + secrets.token_hex(12)
PASSWORD = "pw-" + secrets.token_hex(12)
AUTHORIZATIONS = {
    "app": {"AuthSecret": f"bearer:{TOKEN}", "AllowedPaths": ["/api/v0"]},
    "bob": {"AuthSecret": f"basic:bob:{PASSWORD}", "AllowedPaths": ["/api/v0"]},
    "gateway": {"AuthSecret": "bearer:only-reads", "AllowedPaths": ["/api/v0/block/get"]},
}


def messages(n: int) -> list[tuple[bytes, bytes]]:
    return [
        (message_id(G, i + 1, b"i%d" % i), encode_message(G, i + 1, b"i%d" % i)) for i in range(n)
    ]


async def test_one_node_writer_restarts_and_reader_catches_up(tmp_path: Path) -> None:
    settings = LogSettings(page_size=8, inline=3)
    with trio.fail_after(120):
        async with kubo_node(tmp_path / "a") as kubo:
            backend = IpfsBackend(kubo.url)
            assert await backend.cas_get(address_of(b"nothing stored")) is None
            address = await backend.cas_add(b"block")
            assert cid_of(address).startswith("bafkrei")
            assert await backend.cas_get(address) == b"block"
            await LogWriter(backend, KEY, G, settings=settings).append(messages(20))
            # A new writer process reads its own log back from IPNS and goes on.
            again = IpfsBackend(kubo.url)
            writer = LogWriter(again, KEY, G, settings=settings)
            await writer.append(messages(25)[20:])
            assert writer.seq == 2
            own_id = await again.own_ipns_id(WRITER.hex())
            assert own_id == await backend.own_ipns_id(WRITER.hex())  # one key per writer
            reader_backend = IpfsBackend(kubo.url, ipns_ids={WRITER.hex(): own_id})
            reader = LogReader(reader_backend, WRITER, G, settings=settings)
            result = await reader.poll(lambda m: False)
            assert result.messages == [w for _, w in messages(25)]
            for b in (backend, again, reader_backend):
                await b.aclose_connection()


async def _poll_until(reader: LogReader, count: int) -> list[bytes]:
    """Poll until ``count`` messages came. The first resolve of a name a Kubo node never saw
    subscribes it to the name's pubsub topic and finds nothing; the record comes from the
    writer's node a moment later. The caller bounds the whole."""
    while True:
        result = await reader.poll(lambda m: False)
        if len(result.messages) >= count:
            return result.messages
        await trio.sleep(0.2)  # the next poll, not a readiness wait: the name is resolved anew


async def test_reader_node_fetches_name_and_content_from_the_writers_node(
    tmp_path: Path,
) -> None:
    settings = LogSettings(page_size=8, inline=2)
    with trio.fail_after(120):
        async with kubo_node(tmp_path / "a") as kubo_a, kubo_node(tmp_path / "b") as kubo_b:
            writer_backend = IpfsBackend(kubo_a.url)
            await LogWriter(writer_backend, KEY, G, settings=settings).append(messages(12))
            ipns_id = await writer_backend.own_ipns_id(WRITER.hex())
            await writer_backend.aclose_connection()  # the writer is gone; its Kubo node stays
            reader_backend = IpfsBackend(kubo_b.url, ipns_ids={WRITER.hex(): ipns_id})
            await reader_backend._json("swarm/connect", arg=kubo_a.swarm)
            reader = LogReader(reader_backend, WRITER, G, settings=settings)
            assert await _poll_until(reader, 12) == [w for _, w in messages(12)]
            # Node B had none of it: every block came from A over bitswap.
            stat = await reader_backend._json("bitswap/stat")
            assert stat["BlocksReceived"] >= 3  # the directory, the head, the pages
            await reader_backend.aclose_connection()


async def test_nodes_on_two_kubo_nodes_catch_up_with_the_writer_stopped(tmp_path: Path) -> None:
    """End to end: alice's node writes through Kubo A and stops; bob's node, on Kubo B, which
    never met her, reads her log through IPNS and bitswap."""
    alice, bob = Identity.generate(), Identity.generate()
    keys = {alice.public_key: alice.signing_public_key, bob.public_key: bob.signing_public_key}
    with trio.fail_after(150):
        async with kubo_node(tmp_path / "ka") as kubo_a, kubo_node(tmp_path / "kb") as kubo_b:
            ipns: dict[bytes, str] = {}
            for who, kubo in ((alice, kubo_a), (bob, kubo_b)):
                backend = IpfsBackend(kubo.url)
                ipns[who.public_key] = await backend.own_ipns_id(who.signing_public_key.hex())
                await backend.aclose_connection()
            a_cfg = with_log(config_for(tmp_path, "alice", alice, {"bob": bob}), kubo_a.url, keys)
            b_cfg = with_log(config_for(tmp_path, "bob", bob, {"alice": alice}), kubo_b.url, keys)
            a_cfg = replace(a_cfg, peers=tuple(replace(p, ipns=ipns[p.key]) for p in a_cfg.peers))
            b_cfg = replace(b_cfg, peers=tuple(replace(p, ipns=ipns[p.key]) for p in b_cfg.peers))
            sent = [f"note {i}".encode() for i in range(20)]
            async with open_node(a_cfg, identity=alice) as a, a.events() as events:
                await a.send_many("chat", sent)
                uploaded = 0
                while uploaded < len(sent):
                    event = await events.receive()
                    if isinstance(event, LogUploaded):
                        uploaded += event.messages
            # Alice's node is stopped; Kubo A stays up with her blocks and her name.
            link = IpfsBackend(kubo_b.url)
            await link._json("swarm/connect", arg=kubo_a.swarm)
            async with open_node(b_cfg, identity=bob) as b, b.messages() as inbox:
                got: list[bytes] = []
                while len(got) < len(sent):
                    await b.poll_remote_logs()
                    with trio.move_on_after(0.5):  # then poll again (see _poll_until)
                        while len(got) < len(sent):
                            got.append((await inbox.receive()).body)
                assert sorted(got) == sorted(sent)
                (theirs,) = [log for log in b.status().logs if not log.mine]
                assert (theirs.fetched, theirs.error) == (len(sent), "")
            assert (await link._json("bitswap/stat"))["BlocksReceived"] >= 3
            await link.aclose_connection()


# --- API.Authorizations -------------------------------------------------------------------


async def _round_trip(backend: IpfsBackend) -> None:
    data = secrets.token_bytes(40)
    address = await backend.cas_add(data)
    assert await backend.cas_get(address) == data
    await backend.aclose_connection()


async def _refused(backend: IpfsBackend, *needles: str) -> str:
    with pytest.raises(BackendError) as caught:
        await backend.cas_add(b"x")
    await backend.aclose_connection()
    text = str(caught.value)
    assert "\n" not in text and TOKEN not in text and PASSWORD not in text, text
    for needle in needles:
        assert needle in text, text
    return text


async def test_kubo_api_authorizations_admit_the_right_credentials_only(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with kubo_node(tmp_path / "k", authorizations=AUTHORIZATIONS) as kubo:
            url, port = kubo.url, kubo.api_port
            right = [
                IpfsBackend(url, credentials=Credentials(secret=Secret(f"bearer:{TOKEN}"))),
                IpfsBackend(url, credentials=Credentials(secret=Secret(TOKEN))),  # bare: bearer
                IpfsBackend(f"ipfs://bob:{PASSWORD}@127.0.0.1:{port}"),
                IpfsBackend(
                    f"ipfs://bob@127.0.0.1:{port}", credentials=Credentials(secret=Secret(PASSWORD))
                ),
                IpfsBackend(url, credentials=Credentials(secret=Secret(f"basic:bob:{PASSWORD}"))),
            ]
            for backend in right:
                await _round_trip(backend)
            wrong = Credentials(secret=Secret(f"bearer:{TOKEN}x"))
            await _refused(
                IpfsBackend(url, credentials=wrong),
                f"ipfs 127.0.0.1:{port} block/put: access denied (403)",
                "check remote_log.secret",
            )
            await _refused(
                IpfsBackend(f"ipfs://bob:{PASSWORD}x@127.0.0.1:{port}"),
                f"ipfs bob:***@127.0.0.1:{port} block/put: access denied (403)",
            )
            await _refused(IpfsBackend(url), "access denied (403)", "asks for credentials")
            # Right, but Kubo's AllowedPaths admit only reads for this one.
            reads = Credentials(secret=Secret("bearer:only-reads"))
            await _refused(IpfsBackend(url, credentials=reads), "AllowedPaths")
            reader = IpfsBackend(url, credentials=reads)
            assert await reader.cas_get(address_of(b"x")) is None
            await reader.aclose_connection()


async def test_a_node_with_a_wrong_secret_keeps_running_and_loses_nothing(
    tmp_path: Path,
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    keys = {bob.public_key: bob.signing_public_key}
    seen: list[AnyEvent] = []
    with trio.fail_after(90):
        async with kubo_node(tmp_path / "k", authorizations=AUTHORIZATIONS) as kubo:
            cfg = with_log(config_for(tmp_path, "alice", alice, {"bob": bob}), kubo.url, keys)
            bad = replace(cfg, remote_log=replace(cfg.remote_log, secret=f"bearer:{TOKEN}-old"))
            async with open_node(bad, identity=alice) as a, a.events() as events:
                await a.send_many("chat", [b"one", b"two", b"three"])
                (mine,) = [log for log in a.status().logs if log.mine]
                while not mine.error:  # the first upload attempt is refused
                    with trio.move_on_after(0.05):
                        seen.append(await events.receive())
                    (mine,) = [log for log in a.status().logs if log.mine]
                assert "access denied (403)" in mine.error and "remote_log.secret" in mine.error
                assert mine.queued == 3 and "\n" not in mine.error
                await a.send("chat", b"four")  # the node goes on taking messages
                status = a.status()
                assert status.messages_stored == 4
            for shown in (repr(status), *map(repr, seen)):
                assert TOKEN not in shown
            # With the right secret, what was queued goes up.
            good = replace(cfg, remote_log=replace(cfg.remote_log, secret="env:MVDS_KUBO_TOKEN"))
            with pytest.MonkeyPatch.context() as env:
                env.setenv("MVDS_KUBO_TOKEN", f"bearer:{TOKEN}")
                async with open_node(good, identity=alice) as a, a.events() as events:
                    uploaded = 0
                    while uploaded < 4:
                        event = await events.receive()
                        if isinstance(event, LogUploaded):
                            uploaded += event.messages
                    (mine,) = [log for log in a.status().logs if log.mine]
                    assert (mine.queued, mine.error) == (0, "")


# --- HTTPS: a TLS proxy in front of Kubo's API ----------------------------------------------


async def test_ipfs_https_through_a_tls_proxy_with_a_configured_ca(tmp_path: Path) -> None:
    certs = make_pki(tmp_path / "certs")
    settings = LogSettings(page_size=4, inline=2)
    with trio.fail_after(90):
        async with (
            kubo_node(tmp_path / "k", authorizations=AUTHORIZATIONS) as kubo,
            trio.open_nursery() as nursery,
        ):
            port = await tls_proxy(nursery, certs.server_context(), kubo.api_port)
            url = f"ipfs+https://127.0.0.1:{port}"
            secret = Secret(f"bearer:{TOKEN}")
            backend = backend_for(url, credentials=Credentials(secret=secret, ca_file=certs.ca))
            assert isinstance(backend, IpfsBackend)
            await LogWriter(backend, KEY, G, settings=settings).append(messages(9))
            ipns_id = await backend.own_ipns_id(WRITER.hex())
            reader = IpfsBackend(
                url,
                ipns_ids={WRITER.hex(): ipns_id},
                credentials=Credentials(secret=secret, ca_file=certs.ca),
            )
            result = await LogReader(reader, WRITER, G, settings=settings).poll(lambda m: False)
            assert result.messages == [w for _, w in messages(9)]
            for b in (backend, reader):
                await b.aclose_connection()
            # The system's CAs do not know the test CA: refused, and said so in one line.
            untrusted = IpfsBackend(url, credentials=Credentials(secret=secret))
            text = await _refused(
                untrusted, f"ipfs ipfs+https://127.0.0.1:{port} /api/v0/block/put"
            )
            assert "certificate is not trusted" in text and "remote_log.ca_file" in text
            # Over TLS a wrong token is refused by Kubo as over plain HTTP.
            wrong = Credentials(secret=Secret("bearer:nope"), ca_file=certs.ca)
            await _refused(IpfsBackend(url, credentials=wrong), "access denied (403)")
            nursery.cancel_scope.cancel()


# --- without Kubo -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "header"),
    [
        ("bearer:abc", "Bearer abc"),
        ("abc", "Bearer abc"),
        ("basic:alice:pw", "Basic YWxpY2U6cHc="),
        ("basic:YWxpY2U6cHc=", "Basic YWxpY2U6cHc="),
    ],
)
def test_authorization_headers_are_the_ones_kubo_expects(secret: str, header: str) -> None:
    assert authorization_header(secret) == header


@pytest.mark.parametrize("secret", ["digest:hidden-value", "bearer:", "bearer:two words"])
def test_secrets_kubo_cannot_admit_are_refused_without_being_shown(secret: str) -> None:
    with pytest.raises(SecretError) as caught:
        authorization_header(secret)
    assert "hidden-value" not in str(caught.value) and "words" not in str(caught.value)


def test_backend_for_hands_the_credentials_to_the_ipfs_backend(tmp_path: Path) -> None:
    backend = backend_for(
        "ipfs://127.0.0.1:5001", credentials=Credentials(secret=Secret(f"bearer:{TOKEN}"))
    )
    assert isinstance(backend, IpfsBackend)
    assert backend.server == "127.0.0.1:5001"
    shown = backend_for(f"ipfs://bob:{PASSWORD}@127.0.0.1:5001")
    assert isinstance(shown, IpfsBackend) and shown.server == "bob:***@127.0.0.1:5001"
    refused = [
        ("ipfs://127.0.0.1:5001", Credentials(ca_file=tmp_path / "ca.pem"), "need an ipfs"),
        ("ipfs://127.0.0.1:5001", Credentials(creds_file=tmp_path / "x.creds"), "NATS"),
        (f"ipfs://{TOKEN}@127.0.0.1:5001", Credentials(), "needs a password"),
        ("ipfs://127.0.0.1:5001", Credentials(secret=Secret(f"x:{PASSWORD}")), "AuthSecret"),
        ("ipfs+https://127.0.0.1:5001", Credentials(ca_file=tmp_path / "none.pem"), "CA file"),
    ]
    for url, credentials, needle in refused:
        with pytest.raises(ConfigError, match=needle) as caught:
            backend_for(url, credentials=credentials)
        assert PASSWORD not in str(caught.value) and TOKEN not in str(caught.value)


def test_without_go_the_kubo_tests_skip_and_with_go_but_no_build_they_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dev

    monkeypatch.setattr(dev, "kubo_path", lambda: tmp_path / "ipfs")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("MVDS_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.skip.Exception, match="Go is not installed"):
        services.kubo_binary()
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/go")
    with pytest.raises(pytest.fail.Exception, match="not built"):
        services.kubo_binary()
    monkeypatch.delenv("MVDS_REQUIRE_SERVICES")
    with pytest.raises(pytest.skip.Exception, match="not built"):
        services.kubo_binary()
    (tmp_path / "ipfs").write_bytes(b"")
    assert services.kubo_binary() == str(tmp_path / "ipfs")


async def test_status_shows_a_refused_password_as_stars(tmp_path: Path) -> None:
    """``mvds-node status`` (text and --json) of a running node whose Kubo refuses its password:
    the reason, the URL with ``***``, never the password."""
    from tests.node.cliutil import acli, cli, init, start

    home = tmp_path / "alice"
    init(home, "alice")
    with trio.fail_after(90):
        async with (
            kubo_node(tmp_path / "k", authorizations=AUTHORIZATIONS) as kubo,
            trio.open_nursery() as nursery,
        ):
            url = f"ipfs://bob:{PASSWORD}-old@127.0.0.1:{kubo.api_port}"
            echoed = cli("--dir", home, "config", "set", "remote_log.url", url)
            assert echoed == f'remote_log.url = "ipfs://bob:***@127.0.0.1:{kubo.api_port}"\n'
            node = await start(nursery, home)
            await acli("--dir", home, "send", "chat", "hello")
            errors: list[str] = []
            while not errors:  # the first upload is refused at once; status is read anew
                document = await acli("--dir", home, "--json", "status")
                errors = [log["error"] for log in json.loads(document)["logs"] if log["error"]]
                if not errors:
                    await trio.sleep(0.1)
            text = await acli("--dir", home, "status")
            for shown in (document, text, *(str(line) for line in node.lines)):
                assert PASSWORD not in shown
            (error,) = errors  # the call that met the refusal first (key/list, block/put)
            prefix, _, rest = error.partition(": ")
            assert re.fullmatch(rf"ipfs bob:\*\*\*@127\.0\.0\.1:{kubo.api_port} [a-z/]+", prefix)
            assert rest == (
                "access denied (403): check remote_log.secret against the node's "
                "API.Authorizations (AuthSecret, and AllowedPaths holding /api/v0)"
            )
            assert "access denied (403)" in text
            assert json.loads(document)["running"]
            assert await node.stop() == 0
            # With the password right, `key --ipns` asks this Kubo node for our IPNS id.
            right = f"ipfs://bob:{PASSWORD}@127.0.0.1:{kubo.api_port}"
            cli("--dir", home, "config", "set", "remote_log.url", right)
            shown = json.loads(await acli("--dir", home, "--json", "key", "--ipns"))
            backend = IpfsBackend(right)
            assert shown["ipns"] == await backend.own_ipns_id(shown["log_key"])
            await backend.aclose_connection()
