"""The helper's client against a hostile helper: oversized, slow and malformed answers."""

from __future__ import annotations

import pytest
import trio

from mvds_node.remotelog import BackendError
from mvds_node.remotelog._http import ClientTimeouts, HttpBackend
from mvds_node.remotelog.proto import cas_pb2

from .hostile import HostileServer, response

BIG = b"\x01" * 32
SLOW = b"\x02" * 32
GARBAGE = b"\x03" * 32
BAD_PROTOBUF = b"\x04" * 32
HUGE_LENGTH = b"\x05" * 32
SERVER_ERROR = b"\x06" * 32
CLOSE = b"\x07" * 32


async def answer(path: str, body: bytes) -> bytes | None:
    address = cas_pb2.Address.FromString(body).id
    if address == BIG:  # 9 MiB: over the client's limit, and sent in full
        return response(200, cas_pb2.Content(data=b"x" * (9 << 20)).SerializeToString())
    if address == SLOW:
        await trio.sleep_forever()
    if address == GARBAGE:
        return b"this is not HTTP\r\n\r\n"
    if address == BAD_PROTOBUF:
        return response(200, b"\xff\xff\xff")
    if address == HUGE_LENGTH:
        return b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
    if address == SERVER_ERROR:
        return response(500, b"<html>oops</html>", content_type="text/html")
    if address == CLOSE:
        return None
    return response(200, cas_pb2.Content(data=b"object " + address).SerializeToString())


async def test_an_oversized_answer_does_not_desynchronise_the_next(nursery: trio.Nursery) -> None:
    server = HostileServer(answer)
    backend = HttpBackend(await server.start(nursery), max_connections=1)
    with trio.fail_after(30):
        assert await backend.cas_get(b"a" * 32) == b"object " + b"a" * 32
        with pytest.raises(BackendError, match="answer over"):
            await backend.cas_get(BIG)
        # The next answer is its own, not the rest of the big one.
        for c in b"bcd":
            assert await backend.cas_get(bytes([c]) * 32) == b"object " + bytes([c]) * 32
        assert server.connections == 2  # the abandoned connection was not reused
        await backend.aclose()


async def test_a_slow_request_delays_only_itself(nursery: trio.Nursery) -> None:
    server = HostileServer(answer)
    backend = HttpBackend(await server.start(nursery), timeouts=ClientTimeouts(read=3.0))
    done: list[str] = []

    async def slow() -> None:
        with pytest.raises(BackendError, match="timed out"):
            await backend.cas_get(SLOW)
        done.append("slow")

    async def quick(i: int) -> None:
        address = bytes([0x40 + i]) * 32
        assert await backend.cas_get(address) == b"object " + address
        done.append("quick")

    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            n.start_soon(slow)
            await trio.testing.wait_all_tasks_blocked()
            for i in range(5):
                n.start_soon(quick, i)
    # Every other request was answered while the slow one was still waiting.
    assert done == ["quick"] * 5 + ["slow"]
    await backend.aclose()


@pytest.mark.parametrize(
    ("address", "message"),
    [
        (GARBAGE, "unreachable"),
        (BAD_PROTOBUF, "not the route's protobuf"),
        (HUGE_LENGTH, "helper 127.0.0.1"),
        (SERVER_ERROR, "answered 500"),
        (CLOSE, "unreachable"),
    ],
)
async def test_malformed_answers_are_backend_errors(
    nursery: trio.Nursery, address: bytes, message: str
) -> None:
    backend = HttpBackend(await HostileServer(answer).start(nursery))
    with trio.fail_after(30):
        with pytest.raises(BackendError, match=message) as caught:
            await backend.cas_get(address)
        assert "/twirp/vac.cas.CAS/Get" in str(caught.value)
        # The backend is still usable after it.
        assert await backend.cas_get(b"z" * 32) == b"object " + b"z" * 32
        await backend.aclose()
