"""The Redis backend against a hostile server: every malformed reply is a BackendError.

The fake server below speaks just enough RESP3 (``HELLO``, then one reply per command). Its
first connection answers the command under test with a bad reply; later connections answer
properly, so each test also shows that the backend works again afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from mvds_node.remotelog import BackendError
from mvds_node.remotelog._format import MAX_OBJECT_BYTES
from mvds_node.remotelog._redis import RedisBackend

_HELLO = (
    b"%4\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.0\r\n"
    b"$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:7\r\n"
)


async def _read_command(stream: trio.SocketStream, buf: bytearray) -> list[bytes] | None:
    """One command (a RESP array of bulk strings), or None at the end of the stream."""

    async def line() -> bytes | None:
        while b"\r\n" not in buf:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return None
            buf.extend(chunk)
        i = buf.index(b"\r\n")
        out = bytes(buf[:i])
        del buf[: i + 2]
        return out

    head = await line()
    if head is None:
        return None
    args = []
    for _ in range(int(head[1:])):
        size = await line()
        if size is None:
            return None
        n = int(size[1:])
        while len(buf) < n + 2:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return None
            buf.extend(chunk)
        args.append(bytes(buf[:n]))
        del buf[: n + 2]
    return args


@asynccontextmanager
async def hostile_redis(bad: bytes, good: bytes) -> AsyncIterator[tuple[str, list[int]]]:
    """A fake server on loopback: the first connection answers GET/SET/EVAL with ``bad``
    (and then closes), later ones with ``good``. Yields its URL and the connection count."""
    connections = [0]

    async def serve(stream: trio.SocketStream) -> None:
        connections[0] += 1
        hostile = connections[0] == 1
        buf = bytearray()
        async with stream:
            while (command := await _read_command(stream, buf)) is not None:
                name = command[0].upper()
                if name == b"HELLO":
                    await stream.send_all(_HELLO)
                elif name in (b"GET", b"SET", b"EVAL", b"PUBLISH"):
                    await stream.send_all(bad if hostile else good)
                    if hostile:
                        return
                else:
                    await stream.send_all(b"+OK\r\n")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"redis://127.0.0.1:{port}", connections
        nursery.cancel_scope.cancel()


DEEP = b"*1\r\n" * 5000 + b":1\r\n"
BAD_GET_REPLIES = {
    "bad integer": b":12x\r\n",
    "bad bulk length": b"$abc\r\n",
    "an integer for a value": b":5\r\n",
    "an array for a value": b"*2\r\n:1\r\n:2\r\n",
    "a map for a value": b"%1\r\n+a\r\n+b\r\n",
    "nested 5000 deep": DEEP,
    "unknown type byte": b"?what\r\n",
    "an error": b"-ERR boom\r\n",
    "closed mid-reply": b"$10\r\nabc",
    "a double": b",1.5\r\n",
    "a huge integer": b":" + b"9" * 400 + b"\r\n",
}


@pytest.mark.parametrize("reply", BAD_GET_REPLIES.values(), ids=BAD_GET_REPLIES.keys())
@pytest.mark.parametrize("pooled", [False, True], ids=["per-call", "pooled"])
async def test_a_malformed_value_reply_is_a_backend_error(reply: bytes, pooled: bool) -> None:
    with trio.fail_after(20):
        async with hostile_redis(reply, b"$2\r\nok\r\n") as (url, connections):
            backend = RedisBackend(url, timeout=5)
            async with backend if pooled else _nothing():
                with pytest.raises(BackendError, match=r"redis 127\.0\.0\.1:\d+"):
                    await backend.ns_fetch("name")
                # The next call gets a new connection and the proper answer.
                assert await backend.ns_fetch("name") == b"ok"
            assert connections[0] == 2


BAD_UPDATE_REPLIES = {
    "bad integer": b":1.0\r\n",
    "an integer out of range": b":" + str(2**63).encode() + b"\r\n",
    "a string": b"$1\r\n1\r\n",
    "a boolean": b"#t\r\n",
    "an array": b"*0\r\n",
    "nested 5000 deep": DEEP,
}


@pytest.mark.parametrize("reply", BAD_UPDATE_REPLIES.values(), ids=BAD_UPDATE_REPLIES.keys())
async def test_a_malformed_update_reply_is_a_backend_error(reply: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mvds_node.remotelog._format import sign_head

    key = Ed25519PrivateKey.generate()
    record = sign_head(key, "n", 4, b"", False)
    with trio.fail_after(20):
        async with hostile_redis(reply, b":1\r\n") as (url, _):
            backend = RedisBackend(url, timeout=5)
            async with backend:
                with pytest.raises(BackendError, match=r"redis 127\.0\.0\.1:\d+"):
                    await backend.ns_update("n", record)
                await backend.ns_update("n", record)


async def test_a_value_over_the_object_limit_is_refused() -> None:
    size = MAX_OBJECT_BYTES + 1
    big = b"$%d\r\n" % size + b"x" * size + b"\r\n"
    with trio.fail_after(20):
        async with hostile_redis(big, b"$0\r\n\r\n") as (url, _):
            backend = RedisBackend(url, timeout=5)
            with pytest.raises(BackendError, match="over the object limit"):
                await backend.cas_get(b"\x01" * 32)
            assert await backend.cas_get(b"\x01" * 32) == b""


async def test_a_server_that_never_answers_times_out() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            silent = trio.Event()

            async def serve(stream: trio.SocketStream) -> None:
                async with stream:
                    await silent.wait()  # accepts, reads nothing, answers nothing

            listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            backend = RedisBackend(f"redis://127.0.0.1:{port}", timeout=0.5)
            start = trio.current_time()
            with pytest.raises(BackendError, match=r"did not answer within 0\.5 s"):
                await backend.ns_fetch("name")
            assert trio.current_time() - start < 5
            silent.set()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield
