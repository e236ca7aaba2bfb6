"""The NATS backend against a hostile server: every malformed reply is a BackendError.

The fake server below speaks just enough of the NATS protocol (INFO, CONNECT/PING, SUB, PUB
and HPUB with a reply subject) to answer each request of the backend. Its first connection
answers the request under test with a bad reply; later connections answer properly, so each
test also shows that the backend works again afterwards, on a new connection.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.remotelog import BackendError, Credentials
from mvds_node.remotelog._format import sign_head
from mvds_node.remotelog._nats import MAX_SERVERS, NatsBackend

from .nats_accounts import new_pair

KEY = Ed25519PrivateKey.generate()
RECORD = sign_head(KEY, "n", 5, b"", False)

Answer = Callable[[str, str], bytes]
"""(subject asked, reply subject) -> the bytes the server sends back."""


def msg(reply: str, data: bytes) -> bytes:
    return b"MSG %s 1 %d\r\n%s\r\n" % (reply.encode(), len(data), data)


def hmsg(reply: str, headers: str, data: bytes) -> bytes:
    head = f"NATS/1.0{headers}\r\n\r\n".encode()
    return b"HMSG %s 1 %d %d\r\n%s%s\r\n" % (
        reply.encode(),
        len(head),
        len(head) + len(data),
        head,
        data,
    )


def proper(subject: str, reply: str) -> bytes:
    """What a JetStream server answers the backend's requests with (an empty bucket)."""
    if subject.startswith("$JS.API.STREAM.INFO."):
        return msg(reply, b'{"config": {}}')
    if subject.startswith("$JS.API.DIRECT.GET."):
        return hmsg(reply, " 404 Message Not Found", b"")
    return msg(reply, b'{"stream": "KV_mvds", "seq": 1}')  # a publish acknowledgement


async def _lines(stream: trio.SocketStream, buf: bytearray) -> AsyncIterator[bytes]:
    while True:
        while b"\r\n" not in buf:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            buf.extend(chunk)
        i = buf.index(b"\r\n")
        line = bytes(buf[:i])
        del buf[: i + 2]
        yield line


@asynccontextmanager
async def hostile_nats(
    target: str, bad: Answer, good: Answer = proper
) -> AsyncIterator[tuple[str, list[int]]]:
    """A fake server: on its first connection a request whose subject starts with ``target``
    gets ``bad``; everything else gets ``good``. Yields its URL and the connection count."""
    connections = [0]

    async def serve(stream: trio.SocketStream) -> None:
        connections[0] += 1
        hostile = connections[0] == 1
        buf = bytearray()
        async with stream:
            await stream.send_all(b'INFO {"server_id": "fake", "headers": true}\r\n')
            lines = _lines(stream, buf)
            async for line in lines:
                op, *args = line.decode().split(" ")
                if op == "PING":
                    await stream.send_all(b"PONG\r\n")
                elif op in ("PUB", "HPUB"):
                    subject, reply, size = args[0], args[1], int(args[-1])
                    while len(buf) < size + 2:
                        buf.extend(await stream.receive_some(65536))
                    del buf[: size + 2]
                    answer = bad if hostile and subject.startswith(target) else good
                    await stream.send_all(answer(subject, reply))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"nats://127.0.0.1:{port}", connections
        nursery.cancel_scope.cancel()


DEEP = b"[" * 5000 + b"]" * 5000
BAD_DIRECT_GETS: dict[str, Answer] = {
    "a MSG line without a size": lambda s, r: b"MSG %s 1\r\n" % r.encode(),
    "a MSG size that is not a number": lambda s, r: b"MSG %s 1 x2\r\nab\r\n" % r.encode(),
    "a negative MSG size": lambda s, r: b"MSG %s 1 -2\r\nab\r\n" % r.encode(),
    "a MSG size over the limit": lambda s, r: b"MSG %s 1 99999999999\r\n" % r.encode(),
    "a MSG line of too many parts": lambda s, r: b"MSG %s 1 2 3 4 5\r\nab\r\n" % r.encode(),
    "headers longer than the message": lambda s, r: b"HMSG %s 1 40 2\r\nab\r\n" % r.encode(),
    "a header size that is not a number": lambda s, r: b"HMSG %s 1 a 2\r\nab\r\n" % r.encode(),
    "not a NATS header block": lambda s, r: b"HMSG %s 1 4 4\r\nabcd\r\n" % r.encode(),
    "an unknown operation": lambda s, r: b"WHAT %s\r\n" % r.encode(),
    "an -ERR": lambda s, r: b"-ERR 'Permissions Violation'\r\n",
    "an overlong line": lambda s, r: b"x" * 70_000 + b"\r\n",
}


@pytest.mark.parametrize("answer", BAD_DIRECT_GETS.values(), ids=BAD_DIRECT_GETS.keys())
async def test_a_malformed_message_is_a_backend_error(answer: Answer) -> None:
    with trio.fail_after(20):
        async with hostile_nats("$JS.API.DIRECT.GET.", answer) as (url, connections):
            backend = NatsBackend(url)
            with pytest.raises(BackendError, match=r"nats nats://127\.0\.0\.1:\d+"):
                await backend.ns_fetch("name")
            assert await backend.ns_fetch("name") is None  # again, on a new connection
            assert connections[0] == 2
            await backend.aclose_connection()


BAD_API_REPLIES: dict[str, bytes] = {
    "an empty array": b"[]",
    "a number": b"7",
    "nested 5000 deep": DEEP,
    "objects nested 5000 deep": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "not JSON": b"{nope",
}


@pytest.mark.parametrize("data", BAD_API_REPLIES.values(), ids=BAD_API_REPLIES.keys())
async def test_a_malformed_api_reply_is_a_backend_error(data: bytes) -> None:
    with trio.fail_after(20):
        async with hostile_nats("$JS.API.STREAM.INFO.", lambda s, r: msg(r, data)) as (url, _):
            backend = NatsBackend(url)
            with pytest.raises(BackendError, match=r"nats"):
                await backend.ns_fetch("name")
            assert await backend.ns_fetch("name") is None
            await backend.aclose_connection()


BAD_ACKS: dict[str, bytes] = {
    "an empty array": b"[]",
    "no sequence": b'{"stream": "KV_mvds"}',
    "a sequence that is text": b'{"seq": "12"}',
    "a negative sequence": b'{"seq": -1}',
    "a sequence of 2**63": json.dumps({"seq": 2**63}).encode(),
    "a sequence that is a float": b'{"seq": 1e30}',
    "nested 5000 deep": DEEP,
}


@pytest.mark.parametrize("data", BAD_ACKS.values(), ids=BAD_ACKS.keys())
async def test_a_malformed_publish_acknowledgement_is_a_backend_error(data: bytes) -> None:
    with trio.fail_after(20):
        async with hostile_nats("$KV.", lambda s, r: msg(r, data)) as (url, _):
            backend = NatsBackend(url)
            with pytest.raises(BackendError, match=r"nats"):
                await backend.ns_update("n", RECORD)
            await backend.ns_update("n", RECORD)
            await backend.aclose_connection()


BAD_SEQUENCES = ["", "abc", "-4", "1.5", str(2**63), "9" * 400, "١٢"]


@pytest.mark.parametrize("header", BAD_SEQUENCES)
async def test_a_nats_sequence_that_is_not_a_number_is_a_backend_error(header: str) -> None:
    """The current value's ``Nats-Sequence`` header is the revision a compare-and-set names."""

    def current(subject: str, reply: str) -> bytes:
        return hmsg(reply, f"\r\nNats-Sequence: {header}", RECORD[:-1] + b"\x00")

    with trio.fail_after(20):
        async with hostile_nats("$JS.API.DIRECT.GET.", current) as (url, _):
            backend = NatsBackend(url)
            with pytest.raises(BackendError, match="Nats-Sequence"):
                await backend.ns_update("n", RECORD)
            await backend.ns_update("n", RECORD)
            await backend.aclose_connection()


BAD_OBJECT_META: dict[str, bytes] = {
    "a size over the object limit": b'{"nuid": "ab", "size": 99999999999, "chunks": 1}',
    "a negative size": b'{"nuid": "ab", "size": -1, "chunks": 1}',
    "chunks that are text": b'{"nuid": "ab", "size": 3, "chunks": "1"}',
    "a nuid with a subject wildcard": b'{"nuid": ">", "size": 3, "chunks": 1}',
    "an array": b"[]",
    "nested 5000 deep": DEEP,
}


@pytest.mark.parametrize("data", BAD_OBJECT_META.values(), ids=BAD_OBJECT_META.keys())
async def test_malformed_object_metadata_is_a_backend_error(data: bytes) -> None:
    def meta(subject: str, reply: str) -> bytes:
        return hmsg(reply, "\r\nNats-Sequence: 3", data)

    with trio.fail_after(20):
        async with hostile_nats("$JS.API.DIRECT.GET.OBJ_mvds.$O.mvds.M.", meta) as (url, _):
            backend = NatsBackend(url)
            with pytest.raises(BackendError, match="nats"):
                await backend.cas_get(b"\x02" * 32)
            assert await backend.cas_get(b"\x02" * 32) is None
            await backend.aclose_connection()


async def test_chunks_longer_than_the_metadata_says_are_refused() -> None:
    chunk_subject = "$JS.API.DIRECT.GET.OBJ_mvds"

    def answer(subject: str, reply: str) -> bytes:
        if subject.startswith("$JS.API.DIRECT.GET.OBJ_mvds.$O.mvds.M."):
            meta = b'{"nuid": "ab", "size": 3, "chunks": 2}'
            return hmsg(reply, "\r\nNats-Sequence: 3", meta)
        if subject == chunk_subject:
            return hmsg(reply, "\r\nNats-Sequence: 4", b"abcd")  # 4 bytes of a 3-byte object
        return proper(subject, reply)

    with trio.fail_after(20):
        async with hostile_nats("", answer, answer) as (url, _):
            backend = NatsBackend(url)
            with pytest.raises(BackendError, match="over 3 bytes"):
                await backend.cas_get(b"\x03" * 32)
            await backend.aclose_connection()


async def test_a_watch_whose_server_sends_garbage_ends_with_a_backend_error() -> None:
    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(b"INFO {}\r\n")
            buf = bytearray()
            async for line in _lines(stream, buf):
                if line.startswith(b"PING"):
                    await stream.send_all(b"PONG\r\n")
                if line.startswith(b"SUB"):
                    await stream.send_all(b"MSG $KV.mvds.bmFtZQ 1 nope\r\n")

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]

            async def watch() -> None:
                async with NatsBackend(f"nats://127.0.0.1:{port}").watch() as updates:
                    async for _ in updates:
                        pass

            with pytest.raises(BackendError, match="not a number"):
                await watch()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def greeting(info: bytes) -> AsyncIterator[str]:
    """A fake server that greets with ``info`` and answers PING; yields its URL."""

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(info)
            async for line in _lines(stream, bytearray()):
                if line.startswith(b"PING"):
                    await stream.send_all(b"PONG\r\n")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        yield f"nats://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


BAD_GREETINGS = {
    "an INFO that is not JSON": (b"INFO {nope\r\n", "INFO is not JSON"),
    "an INFO nested too deep": (b"INFO " + DEEP + b"\r\n", "nested over"),
    "an INFO over the line limit": (b"INFO {" + b" " * 70_000 + b"}\r\n", "overlong line"),
    "no INFO": (b"HELLO\r\n", "not a NATS server"),
    "a nonce too long to sign": (
        b'INFO {"nonce": "' + b"n" * 300 + b'"}\r\n',
        "no usable nonce",
    ),
    "a nonce that is not text": (b'INFO {"nonce": 5}\r\n', "no usable nonce"),
}


@pytest.mark.parametrize(("info", "error"), BAD_GREETINGS.values(), ids=BAD_GREETINGS.keys())
async def test_a_bad_greeting_is_a_backend_error(info: bytes, error: str, tmp_path: Path) -> None:
    user = new_pair("user")
    (tmp_path / "user.nk").write_text(user.seed)
    with trio.fail_after(20):
        async with greeting(info) as url:
            backend = NatsBackend(url, credentials=Credentials(nkey_file=tmp_path / "user.nk"))
            with pytest.raises(BackendError, match=error) as raised:
                await backend.ns_fetch("n")
            assert user.seed not in str(raised.value)


async def test_a_server_that_wants_credentials_is_told_none_without_a_connect() -> None:
    with trio.fail_after(20):
        async with greeting(b'INFO {"auth_required": true}\r\n') as url:
            with pytest.raises(BackendError, match="the server wants credentials"):
                await NatsBackend(url).ns_fetch("n")


async def test_the_servers_a_cluster_announces_are_bounded() -> None:
    announced: list[object] = ["no-port", "[::1]:99999", 7, "h:" + "9" * 400, "[::1]:5"]
    announced += [f"10.0.{i // 250}.{i % 250}:4222" for i in range(2000)]
    info = json.dumps({"connect_urls": announced, "headers": True}).encode()
    with trio.fail_after(20):
        async with greeting(b"INFO " + info + b"\r\n") as url:
            backend = NatsBackend(url)
            conn = await backend._connect()
            await conn.stream.aclose()
            # The URL's server, and of the first MAX_SERVERS announced the usable ones.
            assert len(backend.servers) == 1 + MAX_SERVERS - 4
            assert backend.servers[1:3] == ["[::1]:5", "10.0.0.0:4222"]
