"""NoiseStream: trio's generic stream conformance suite, key checks, chunking, broken input."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
import trio
import trio.testing

from mvds_node.transports import MAX_PLAINTEXT, Keypair, NoiseError, NoiseStream, PeerRefused

ALICE = Keypair.generate()
BOB = Keypair.generate()
MALLORY = Keypair.generate()


async def handshake_pair(
    left: trio.abc.Stream,
    right: trio.abc.Stream,
    *,
    initiator_key: Keypair = ALICE,
    responder_key: Keypair = BOB,
    accept_initiator: Callable[[bytes], bool] | None = None,
    accept_responder: Callable[[bytes], bool] | None = None,
) -> tuple[NoiseStream, NoiseStream]:
    results: dict[str, NoiseStream] = {}

    async def side(name: str, stream: trio.abc.Stream, key: Keypair, initiator: bool) -> None:
        accept = accept_responder if initiator else accept_initiator
        results[name] = await NoiseStream.handshake(stream, key, initiator=initiator, accept=accept)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, "i", left, initiator_key, True)
        nursery.start_soon(side, "r", right, responder_key, False)
    return results["i"], results["r"]


async def memory_noise_pair() -> tuple[NoiseStream, NoiseStream]:
    return await handshake_pair(*trio.testing.memory_stream_pair())


async def lockstep_noise_pair() -> tuple[NoiseStream, NoiseStream]:
    return await handshake_pair(*trio.testing.lockstep_stream_pair())


async def test_generic_stream_contract_over_memory() -> None:
    with trio.fail_after(30):
        await trio.testing.check_two_way_stream(memory_noise_pair, lockstep_noise_pair)


async def tcp_noise_pair() -> tuple[NoiseStream, NoiseStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    try:
        port = listener.socket.getsockname()[1]
        client: trio.abc.Stream | None = None
        server: trio.abc.Stream | None = None

        async def connect() -> None:
            nonlocal client
            client = await trio.open_tcp_stream("127.0.0.1", port)

        async def accept() -> None:
            nonlocal server
            server = await listener.accept()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(connect)
            nursery.start_soon(accept)
        assert client is not None and server is not None
        return await handshake_pair(client, server)
    finally:
        await listener.aclose()


async def test_generic_stream_contract_over_tcp() -> None:
    with trio.fail_after(30):
        # Kernel buffers cannot be clogged on demand, so no clogged variant over TCP.
        await trio.testing.check_two_way_stream(tcp_noise_pair, None)


async def test_remote_static_is_the_proved_key() -> None:
    with trio.fail_after(5):
        i, r = await memory_noise_pair()
        assert i.remote_static == BOB.public
        assert r.remote_static == ALICE.public
        assert i.handshake_hash == r.handshake_hash
        await i.aclose()
        await r.aclose()


async def test_initiator_refuses_wrong_responder_before_revealing_itself() -> None:
    with trio.fail_after(5):
        left, right = trio.testing.memory_stream_pair()
        seen: list[bytes] = []

        async def responder() -> None:
            with pytest.raises(trio.BrokenResourceError):
                await NoiseStream.handshake(right, MALLORY, initiator=False)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(responder)

            def remember_and_allow_bob(key: bytes) -> bool:
                seen.append(key)
                return key == BOB.public

            with pytest.raises(PeerRefused) as info:
                await NoiseStream.handshake(
                    left,
                    ALICE,
                    initiator=True,
                    accept=remember_and_allow_bob,
                )
        assert info.value.remote_static == MALLORY.public
        assert seen == [MALLORY.public]  # asked once, after message 2


async def test_responder_refuses_unknown_initiator() -> None:
    with trio.fail_after(5):
        left, right = trio.testing.memory_stream_pair()

        async def initiator() -> None:
            stream = await NoiseStream.handshake(left, MALLORY, initiator=True)
            # The responder closed the connection: the initiator sees EOF or a broken stream.
            with contextlib.suppress(trio.BrokenResourceError):
                assert await stream.receive_some() == b""
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(initiator)
            with pytest.raises(PeerRefused) as info:
                await NoiseStream.handshake(
                    right, BOB, initiator=False, accept=lambda key: key == ALICE.public
                )
        assert info.value.remote_static == MALLORY.public


async def test_prologue_mismatch_is_a_noise_error() -> None:
    with trio.fail_after(5):
        left, right = trio.testing.memory_stream_pair()
        outcomes: list[type[BaseException]] = []

        async def side(stream: trio.abc.Stream, key: Keypair, initiator: bool, p: bytes) -> None:
            try:
                await NoiseStream.handshake(stream, key, initiator=initiator, prologue=p)
            except (NoiseError, trio.BrokenResourceError) as exc:
                outcomes.append(type(exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, left, ALICE, True, b"mvds-node/1")
            nursery.start_soon(side, right, BOB, False, b"other/1")
        assert NoiseError in outcomes


async def test_handshake_closes_the_stream_on_failure() -> None:
    with trio.fail_after(5):
        left, right = trio.testing.memory_stream_pair()
        await right.send_all(b"\x00\x05short")  # a 5-byte "message 1"
        with pytest.raises(NoiseError):
            await NoiseStream.handshake(left, BOB, initiator=False)
        with pytest.raises(trio.ClosedResourceError):
            await left.send_all(b"x")
        await right.aclose()


async def test_handshake_stream_ends_early() -> None:
    with trio.fail_after(5):
        left, right = trio.testing.memory_stream_pair()
        await right.send_all(b"\x00\x20" + bytes(10))
        await right.aclose()
        with pytest.raises(trio.BrokenResourceError, match="during the Noise handshake"):
            await NoiseStream.handshake(left, BOB, initiator=False)


async def test_300kB_message_is_chunked_under_the_noise_limit() -> None:
    with trio.fail_after(10):
        left, right = trio.testing.memory_stream_pair()
        i, r = await handshake_pair(left, right)
        # Stop the pump so that the ciphertext stays in the send buffer where we can read it.
        left.send_stream.send_all_hook = None
        message = bytes(n % 251 for n in range(300_000))
        await i.send_all(message)
        raw = bytes(left.send_stream.get_data_nowait())
        # Parse the wire: u16 length prefix, then the Noise message.
        sizes = []
        offset = 0
        while offset < len(raw):
            size = int.from_bytes(raw[offset : offset + 2], "big")
            sizes.append(size)
            offset += 2 + size
        assert offset == len(raw)
        assert sizes == [MAX_PLAINTEXT + 16] * 4 + [300_000 - 4 * MAX_PLAINTEXT + 16]
        assert max(sizes) == 65535
        right.receive_stream.put_data(raw)
        got = bytearray()
        while len(got) < len(message):
            got += await r.receive_some(100_000)
        assert got == message
        await i.aclose()
        await r.aclose()


async def test_tampered_ciphertext_breaks_the_receiver_for_good() -> None:
    with trio.fail_after(5):
        left, right = trio.testing.memory_stream_pair()
        i, r = await handshake_pair(left, right)
        left.send_stream.send_all_hook = None
        await i.send_all(b"hello")
        raw = bytearray(left.send_stream.get_data_nowait())
        raw[-1] ^= 1
        right.receive_stream.put_data(bytes(raw))
        with pytest.raises(trio.BrokenResourceError) as info:
            await r.receive_some()
        assert isinstance(info.value.__cause__, NoiseError)
        with pytest.raises(trio.BrokenResourceError):
            await r.receive_some()
        await i.aclose()
        await r.aclose()


async def test_stream_ending_inside_a_message_is_broken() -> None:
    with trio.fail_after(5):
        left, right = trio.testing.memory_stream_pair()
        i, r = await handshake_pair(left, right)
        left.send_stream.send_all_hook = None
        await i.send_all(b"hello")
        raw = left.send_stream.get_data_nowait()
        right.receive_stream.put_data(raw[:-3])
        right.receive_stream.put_eof()
        with pytest.raises(trio.BrokenResourceError, match="into a Noise message"):
            await r.receive_some()
        await i.aclose()
        await r.aclose()


async def test_data_right_after_the_handshake_is_not_lost() -> None:
    """The initiator's first data can arrive in the same read as message 3."""
    with trio.fail_after(5):
        # Initiator -> responder bytes move only when this test moves them.
        i_out = trio.testing.MemorySendStream()
        r_in = trio.testing.MemoryReceiveStream()
        r_out, i_in = trio.testing.memory_stream_one_way_pair()
        left = trio.StapledStream(i_out, i_in)
        right = trio.StapledStream(r_out, r_in)
        results: dict[str, NoiseStream] = {}
        initiator_done = trio.Event()

        async def run_initiator() -> None:
            results["i"] = await NoiseStream.handshake(left, ALICE, initiator=True)
            await results["i"].send_all(b"first data")
            initiator_done.set()

        async def run_responder() -> None:
            results["r"] = await NoiseStream.handshake(right, BOB, initiator=False)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_initiator)
            nursery.start_soon(run_responder)
            r_in.put_data(await i_out.get_data())  # message 1 alone
            await initiator_done.wait()  # message 3 and the data are now both buffered
            r_in.put_data(i_out.get_data_nowait())  # and arrive in one piece
        assert await results["r"].receive_some() == b"first data"
        await results["i"].aclose()
        await results["r"].aclose()


async def test_cancelled_send_marks_the_send_side_broken() -> None:
    with trio.fail_after(5):
        i, r = await lockstep_noise_pair()
        with trio.move_on_after(0.01):  # lockstep: blocks until the peer reads
            await i.send_all(b"x" * 100)
        with pytest.raises(trio.BrokenResourceError, match="interrupted"):
            await i.send_all(b"more")
        # Receiving is independent of sending and still works.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(r.send_all, b"reply")
            assert await i.receive_some() == b"reply"
        await i.aclose()
        await r.aclose()


def test_is_a_stream_not_half_closeable() -> None:
    assert issubclass(NoiseStream, trio.abc.Stream)
    assert not issubclass(NoiseStream, trio.abc.HalfCloseableStream)
    assert not hasattr(NoiseStream, "send_eof")


async def test_many_small_reads_of_a_big_message() -> None:
    with trio.fail_after(10):
        i, r = await memory_noise_pair()
        await i.send_all(b"abc" * 20_000)
        got = bytearray()
        while len(got) < 60_000:
            got += await r.receive_some(7)
        assert got == b"abc" * 20_000
        await i.aclose()
        await r.aclose()


def pending(stream: NoiseStream) -> float | None:
    return stream.receive_pending_since  # through a call: each read is a fresh value for mypy


async def test_receive_pending_since_marks_the_first_byte_of_an_incomplete_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What a frame timeout above needs: since when a Noise message has been arriving."""
    with trio.fail_after(100):
        left, right = trio.testing.memory_stream_pair()
        a, b = await handshake_pair(left, right)
        # From now on the test carries a's bytes to b by hand, cut where it likes.
        left.send_stream.send_all_hook = None
        await a.send_all(b"hello")
        await a.send_all(b"world")
        wire = await left.send_stream.get_data()
        assert pending(b) is None
        await trio.sleep(5)  # virtual time (autojump clock): the sender is silent until t = 5
        right.receive_stream.put_data(wire[:1])  # one byte of a length prefix, then silence
        with trio.move_on_after(10):
            await b.receive_some()
        assert pending(b) == 5.0
        # The rest of "hello" and the start of "world" arrive at t = 20.
        await trio.sleep(5)  # virtual time, as above
        right.receive_stream.put_data(wire[1:-3])
        assert await b.receive_some() == b"hello"
        assert pending(b) == 20.0
        right.receive_stream.put_data(wire[-3:])
        assert await b.receive_some() == b"world"
        assert pending(b) is None
