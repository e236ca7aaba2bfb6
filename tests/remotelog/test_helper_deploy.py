"""The HTTP helper as deployments run it: HTTPS with its own certificate, bearer tokens for
writes and reads, quotas per token; its client with a CA file and a token."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.node import AnyEvent, Identity, LogUploaded, NodeConfig, open_node
from mvds_node.node._config import RemoteLogConfig
from mvds_node.remotelog import (
    BackendError,
    Credentials,
    HelperLimits,
    HelperTokens,
    HttpBackend,
    Secret,
    SecretError,
    helper_tls_context,
    log_name,
    serve_helper,
)
from mvds_node.remotelog._format import public_key, sign_head
from tests.node.helpers import config_for

from .certs import Pki, make_pki

KEY = Ed25519PrivateKey.generate()
WRITER = "w-token-0123456789abcdef"
READER = "r-token-0123456789abcdef"
OTHER_WRITER = "w-token-fedcba9876543210"
WRONG = "x-token-not-known-here-42"
SECRETS = (WRITER, READER, OTHER_WRITER, WRONG)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a token is shown: {text!r}"


def tokens_file(tmp: Path) -> Path:
    path = tmp / "tokens"
    path.write_text(f"# who may do what\nwrite {WRITER}\n\nread {READER}\nwrite {OTHER_WRITER}\n")
    return path


async def start(
    nursery: trio.Nursery,
    tmp: Path,
    *,
    pki: Pki | None,
    tokens: HelperTokens | None,
    limits: HelperLimits | None = None,
) -> int:
    tls = helper_tls_context(pki.server_cert, pki.server_key) if pki else None
    listeners = await nursery.start(
        functools.partial(
            serve_helper,
            str(tmp / "store"),
            "127.0.0.1",
            0,
            limits=limits,
            tokens=tokens,
            tls=tls,
        )
    )
    port: int = listeners[0].socket.getsockname()[1]
    return port


def name_of(group: int) -> str:
    return log_name(public_key(KEY), bytes([group]) * 32)


async def _write_and_read(writer: HttpBackend, reader: HttpBackend, group: int = 1) -> None:
    name = name_of(group)
    address = await writer.cas_add(b"an object %d" % group)
    await writer.ns_update(name, sign_head(KEY, name, 1, b"", False))
    assert await reader.cas_get(address) == b"an object %d" % group
    assert await reader.ns_fetch(name) == sign_head(KEY, name, 1, b"", False)


async def _refusal(call: object) -> str:
    with pytest.raises(BackendError) as caught:
        await call  # type: ignore[misc]
    text = str(caught.value)
    assert "\n" not in text and text.startswith("helper ")
    assert_no_secret(text)
    return text


async def test_https_with_write_and_read_tokens(tmp_path: Path, nursery: trio.Nursery) -> None:
    pki = make_pki(tmp_path / "pki", name="helper")
    tokens = HelperTokens.from_file(tokens_file(tmp_path))
    port = await start(nursery, tmp_path, pki=pki, tokens=tokens)
    url = f"https://127.0.0.1:{port}"
    with trio.fail_after(30):
        writer = HttpBackend(url, credentials=Credentials(secret=Secret(WRITER), ca_file=pki.ca))
        # The token may also ride in the URL; the user part is not sent.
        reader = HttpBackend(
            f"https://reader:{READER}@127.0.0.1:{port}", credentials=Credentials(ca_file=pki.ca)
        )
        assert reader.url == url
        await _write_and_read(writer, reader)
        # A read token may not write: 403, saying so.
        text = await _refusal(reader.cas_add(b"not allowed"))
        assert "403 permission_denied" in text and "only read" in text
        # No token, or one the helper does not know: 401 and what to set.
        anonymous = HttpBackend(url, credentials=Credentials(ca_file=pki.ca))
        text = await _refusal(anonymous.ns_fetch(name_of(1)))
        assert "401 unauthenticated" in text and "set remote_log.secret" in text
        stranger = HttpBackend(url, credentials=Credentials(secret=Secret(WRONG), ca_file=pki.ca))
        text = await _refusal(stranger.cas_add(b"x"))
        assert "401 unauthenticated" in text and "check remote_log.secret" in text
        # A refusal keeps the connection usable: the same client goes on with a right request.
        assert await writer.cas_get(b"\x00" * 32) is None
        # A server whose certificate we cannot check, and plain HTTP to the TLS port.
        untrusting = HttpBackend(url, credentials=Credentials(secret=Secret(WRITER)))
        text = await _refusal(untrusting.cas_get(b"\x00" * 32))
        assert "certificate is not trusted" in text and "remote_log.ca_file" in text
        other_ca = make_pki(tmp_path / "other", name="other").ca
        untrusting = HttpBackend(
            url, credentials=Credentials(secret=Secret(WRITER), ca_file=other_ca)
        )
        assert "certificate is not trusted" in await _refusal(untrusting.cas_get(b"\x00" * 32))
        plain = HttpBackend(f"http://127.0.0.1:{port}", credentials=Credentials(Secret(WRITER)))
        await _refusal(plain.cas_get(b"\x00" * 32))
        for backend in (writer, reader, anonymous, stranger, untrusting, plain):
            await backend.aclose()


async def test_public_reads_still_need_a_token_to_write(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    tokens = HelperTokens([("write", Secret(WRITER))], public_reads=True)
    port = await start(nursery, tmp_path, pki=None, tokens=tokens)
    url = f"http://127.0.0.1:{port}"
    with trio.fail_after(30):
        writer = HttpBackend(url, credentials=Credentials(secret=Secret(WRITER)))
        anyone = HttpBackend(url)
        await _write_and_read(writer, anyone)
        head = sign_head(KEY, name_of(2), 1, b"", False)
        text = await _refusal(anyone.ns_update(name_of(2), head))
        assert "401 unauthenticated" in text and "writes only with a bearer token" in text
        await writer.aclose()
        await anyone.aclose()


async def test_each_token_has_quotas_beside_its_address(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    tokens = HelperTokens.from_file(tokens_file(tmp_path))
    limits = HelperLimits(max_names_per_token=1, max_bytes_per_token=2000)
    port = await start(nursery, tmp_path, pki=None, tokens=tokens, limits=limits)
    url = f"http://127.0.0.1:{port}"
    with trio.fail_after(30):
        first = HttpBackend(url, credentials=Credentials(secret=Secret(WRITER)))
        second = HttpBackend(url, credentials=Credentials(secret=Secret(OTHER_WRITER)))
        await first.ns_update(name_of(1), sign_head(KEY, name_of(1), 1, b"", False))
        text = await _refusal(
            first.ns_update(name_of(2), sign_head(KEY, name_of(2), 1, b"", False))
        )
        assert "429 resource_exhausted" in text and "this token has created its 1 names" in text
        # Updating a name it created costs no name; the other token, same address, has its own.
        await first.ns_update(name_of(1), sign_head(KEY, name_of(1), 2, b"", False))
        await second.ns_update(name_of(2), sign_head(KEY, name_of(2), 1, b"", False))
        await first.cas_add(b"a" * 1000)
        text = await _refusal(first.cas_add(b"b" * 1000))
        assert "this token has stored its 2000 bytes" in text
        assert await second.cas_add(b"b" * 1000)  # the refused bytes were not counted
        for backend in (first, second):
            await backend.aclose()


def test_a_tokens_file_is_checked_and_its_errors_show_no_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    for text, expected in [
        (f"admin {WRITER}\n", "line 1"),
        (f"write {WRITER} extra\n", "line 1"),
        ("# nothing\n\n", "no token"),
        ("write short\n", "16 to"),
        (f"read {READER}\nwrite {READER}\n", "twice"),
    ]:
        path.write_text(text)
        with pytest.raises(SecretError, match=expected) as caught:
            HelperTokens.from_file(path)
        assert_no_secret(str(caught.value))
    path.write_text(f"write {WRITER}\nread {READER}\n")
    tokens = HelperTokens.from_file(path)
    assert tokens.find(WRITER.encode()) == (0, "write")
    assert tokens.find(READER.encode()) == (1, "read")
    assert tokens.find(WRONG.encode()) is None and tokens.find(b"") is None
    assert_no_secret(repr(tokens))


def _log_config(
    cfg: NodeConfig, url: str, keys: dict[bytes, bytes], *, secret: str, ca_file: Path
) -> NodeConfig:
    peers = tuple(replace(p, log_key=keys.get(p.key)) for p in cfg.peers)
    remote = RemoteLogConfig(
        url=url, page_size=8, inline=3, poll_seconds=3600, secret=secret, ca_file=str(ca_file)
    )
    return replace(cfg, listen=None, peers=peers, remote_log=remote)


async def test_nodes_sync_through_an_https_helper_and_a_wrong_token_loses_nothing(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    pki = make_pki(tmp_path / "pki", name="helper")
    port = await start(
        nursery, tmp_path, pki=pki, tokens=HelperTokens.from_file(tokens_file(tmp_path))
    )
    url = f"https://127.0.0.1:{port}"
    alice, bob = Identity.generate(), Identity.generate()
    keys = {alice.public_key: alice.signing_public_key, bob.public_key: bob.signing_public_key}
    token_file = tmp_path / "token"
    token_file.write_text(WRONG + "\n")
    a_cfg = _log_config(
        config_for(tmp_path, "alice", alice, {"bob": bob}),
        url,
        keys,
        secret=f"file:{token_file}",
        ca_file=pki.ca,
    )
    # A reading node publishes its acknowledgements beside its log: it writes too.
    b_cfg = _log_config(
        config_for(tmp_path, "bob", bob, {"alice": alice}),
        url,
        keys,
        secret=OTHER_WRITER,
        ca_file=pki.ca,
    )
    seen: list[AnyEvent] = []
    with trio.fail_after(60):
        async with open_node(a_cfg, identity=alice) as a, a.events() as events:
            await a.send("chat", b"kept while the token is wrong")
            while not [log for log in a.status().logs if log.mine and log.error]:
                with trio.move_on_after(0.05):
                    seen.append(await events.receive())
            (mine,) = [log for log in a.status().logs if log.mine]
            assert mine.queued == 1 and "401" in mine.error and "remote_log.secret" in mine.error
            assert_no_secret(json.dumps(a.status().to_json()))
        assert_no_secret(repr(seen))
        token_file.write_text(WRITER + "\n")
        async with open_node(a_cfg, identity=alice) as a, a.events() as events:
            while not isinstance(event := await events.receive(), LogUploaded):
                pass
            assert event.messages == 1 and event.queued == 0
        async with open_node(b_cfg, identity=bob) as b, b.messages() as inbox:
            await b.poll_remote_logs()
            message = await inbox.receive()
            assert (message.body, message.via) == (
                b"kept while the token is wrong",
                alice.public_key,
            )
            (theirs,) = [log for log in b.status().logs if not log.mine]
            assert theirs.error == ""


async def test_helper_serve_with_cert_key_and_tokens(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", name="helper")
    argv = [sys.executable, "-m", "mvds_node.node.cli", "helper", "serve", str(tmp_path / "s")]
    argv += ["--listen", "127.0.0.1:0", "--cert", str(pki.server_cert), "--key"]
    argv += [str(pki.server_key), "--tokens", str(tokens_file(tmp_path)), "--public-reads"]
    argv += ["--max-names-per-token", "1"]
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    assert process.stdout is not None
    try:
        with trio.fail_after(30):
            line = b""
            while b"\n" not in line:
                chunk = await process.stdout.receive_some(1000)
                assert chunk, "the helper exited"
                line += chunk
            text = line.decode()
            assert "3 tokens (reads public)" in text
            assert_no_secret(text)
            url = text.split(" on ")[1].split(",")[0].strip()
            assert url.startswith("https://127.0.0.1:")
            writer = HttpBackend(url, credentials=Credentials(Secret(WRITER), ca_file=pki.ca))
            anyone = HttpBackend(url, credentials=Credentials(ca_file=pki.ca))
            await _write_and_read(writer, anyone)
            assert "429" in await _refusal(
                writer.ns_update(name_of(2), sign_head(KEY, name_of(2), 1, b"", False))
            )
            await writer.aclose()
            await anyone.aclose()
    finally:
        process.terminate()
        await process.wait()
        await process.stdout.aclose()


async def test_a_tls_helper_outlasts_clients_that_do_not_speak_tls(
    tmp_path: Path, nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_pki(tmp_path / "pki", name="helper")
    limits = HelperLimits(idle_timeout=0.5, max_connections_per_address=2)
    port = await start(nursery, tmp_path, pki=pki, tokens=None, limits=limits)
    with trio.fail_after(30):
        # Plain HTTP to the TLS port: the connection is closed, nothing is answered in clear.
        plain = await trio.open_tcp_stream("127.0.0.1", port)
        await plain.send_all(b"POST /twirp/vac.cas.CAS/Get HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        received = b""
        while chunk := await plain.receive_some(65536):
            received += chunk
        assert b"HTTP/1.1" not in received
        await plain.aclose()
        # Clients that connect and never start a handshake hold their slot for the idle
        # timeout only: then the address may connect again.
        stalled = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        for stream in stalled:
            assert await stream.receive_some(65536) == b""  # closed by the helper
            await stream.aclose()
        client = HttpBackend(f"https://127.0.0.1:{port}", credentials=Credentials(ca_file=pki.ca))
        assert await client.cas_get(b"\x00" * 32) is None
        await client.aclose()
    assert "internal error" not in capsys.readouterr().err


def test_helper_serve_refuses_unusable_tls_and_token_options(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mvds_node.node.cli import root

    pki = make_pki(tmp_path / "pki", name="helper")
    bad = tmp_path / "bad-tokens"
    bad.write_text(f"write {WRITER}\nadmin {READER}\n")
    store = str(tmp_path / "s")
    for args, expected in [
        (["--cert", str(pki.server_cert)], "--cert and --key go together"),
        (["--public-reads"], "--public-reads goes with --tokens"),
        (["--cert", str(pki.ca), "--key", str(pki.server_key)], "--cert"),
        (["--tokens", str(bad)], "line 2"),
    ]:
        result = CliRunner().invoke(
            root, ["helper", "serve", store, "--listen", "127.0.0.1:0", *args]
        )
        assert result.exit_code == 1, result.output
        assert expected in result.stderr
        assert_no_secret(result.output + result.stderr)


async def test_guessing_tokens_costs_the_address_its_request_rate(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    tokens = HelperTokens([("write", Secret(WRITER))])
    limits = HelperLimits(requests_per_second=0.001, burst=3)
    port = await start(nursery, tmp_path, pki=None, tokens=tokens, limits=limits)
    url = f"http://127.0.0.1:{port}"
    with trio.fail_after(30):
        guesser = HttpBackend(url, credentials=Credentials(secret=Secret(WRONG)))
        for _ in range(3):
            assert "401" in await _refusal(guesser.cas_get(b"\x00" * 32))
        assert "429" in await _refusal(guesser.cas_get(b"\x00" * 32))
        await guesser.aclose()
