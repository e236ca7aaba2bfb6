"""The helper under hostile clients: per-address connection caps, quotas, refusals that keep
the connection, names that cannot escape the store, and sequences that stay updatable."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.remotelog import BackendError, FileBackend, log_name
from mvds_node.remotelog._format import MAX_OBJECT_BYTES, public_key, sign_head
from mvds_node.remotelog._http import HelperLimits, HttpBackend, serve_helper
from mvds_node.remotelog.proto import cas_pb2, ns_pb2, remotelog_pb2

KEY = Ed25519PrivateKey.generate()


async def start(nursery: trio.Nursery, root: Path, **limits: float) -> tuple[str, int]:
    listeners = await nursery.start(
        functools.partial(
            serve_helper,
            str(root),
            "127.0.0.1",
            0,
            limits=HelperLimits(**limits),  # type: ignore[arg-type]
        )
    )
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}", port


def request(route: str, body: bytes) -> bytes:
    return (
        f"POST /twirp/{route} HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_answers(stream: trio.abc.Stream, count: int) -> list[tuple[int, bytes]]:
    """``count`` answers ``(status, body)`` from one connection."""
    buf = b""
    out: list[tuple[int, bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive_some(65536)
            assert chunk, f"connection closed after {len(out)} answers"
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = next(int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length"))
        while len(buf) < length:
            chunk = await stream.receive_some(65536)
            assert chunk
            buf += chunk
        out.append((int(lines[0].split(" ")[1]), buf[:length]))
        buf = buf[length:]
    return out


async def connect_from(source: str, port: int) -> trio.SocketStream:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def test_idle_connections_from_one_address_do_not_lock_out_another(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    url, port = await start(
        nursery, tmp_path / "s", max_connections=40, max_connections_per_address=8
    )
    streams = []
    try:
        with trio.fail_after(30):
            for _ in range(50):
                streams.append(await connect_from("127.0.0.2", port))
            # The ones over the address's cap are told so at once.
            refused = 0
            for s in streams:
                with trio.move_on_after(0.5):
                    answer = await read_answers(s, 1)
                    assert answer[0][0] == 503
                    refused += 1
            assert refused == 42
            backend = HttpBackend(url)
            assert await backend.cas_get(b"\x00" * 32) is None  # 127.0.0.1 is served
            await backend.aclose()
    finally:
        for s in streams:
            await s.aclose()


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    _, port = await start(nursery, tmp_path / "s", idle_timeout=0.3)
    stream = await connect_from("127.0.0.1", port)
    with trio.fail_after(10):
        assert await stream.receive_some(100) == b""
    await stream.aclose()


async def test_refusals_keep_the_connection_and_pipelined_excess_gets_429(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    _, port = await start(nursery, tmp_path / "s", requests_per_second=0.01, burst=3)
    stream = await connect_from("127.0.0.1", port)
    get = request("vac.cas.CAS/Get", cas_pb2.Address(id=b"\x00" * 32).SerializeToString())
    with trio.fail_after(10):
        await stream.send_all(get * 6)  # pipelined, all at once
        answers = await read_answers(stream, 6)
    assert [status for status, _ in answers] == [404, 404, 404, 429, 429, 429]
    assert json.loads(answers[0][1])["code"] == "not_found"
    assert json.loads(answers[3][1])["code"] == "resource_exhausted"
    await stream.aclose()


async def test_bad_names_are_400_and_never_show_the_store(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    _, port = await start(nursery, tmp_path / "store")
    stream = await connect_from("127.0.0.1", port)
    names = ["..", "", "mvds/../../etc", "mvds/" + "a" * 64 + "/" + "b" * 16 + "/.."]
    with trio.fail_after(10):
        for name in names:
            await stream.send_all(
                request("vac.ns.NS/Fetch", ns_pb2.Query(name=name).SerializeToString())
            )
        answers = await read_answers(stream, len(names))
    for status, body in answers:
        assert status == 400
        assert json.loads(body)["code"] == "invalid_argument"
        assert str(tmp_path).encode() not in body
    await stream.aclose()


async def test_quotas_per_address(tmp_path: Path, nursery: trio.Nursery) -> None:
    url, _ = await start(
        nursery, tmp_path / "s", max_names_per_address=2, max_bytes_per_address=10_000
    )
    backend = HttpBackend(url)
    with trio.fail_after(20):
        a = await backend.cas_add(b"a" * 6000)
        with pytest.raises(BackendError, match="429 resource_exhausted"):
            await backend.cas_add(b"b" * 6000)
        assert await backend.cas_add(b"a" * 6000) == a  # already stored: free
        names = [log_name(public_key(KEY), bytes([g]) * 32) for g in range(3)]
        for name in names[:2]:
            await backend.ns_update(name, sign_head(KEY, name, 1, b"", False))
        with pytest.raises(BackendError, match="429 resource_exhausted"):
            await backend.ns_update(names[2], sign_head(KEY, names[2], 1, b"", False))
        await backend.ns_update(names[0], sign_head(KEY, names[0], 2, b"", False))  # an update
        assert await backend.ns_fetch(names[2]) is None
    await backend.aclose()


async def test_objects_over_the_readers_limit_are_refused(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    url, _ = await start(nursery, tmp_path / "s")
    backend = HttpBackend(url)
    with trio.fail_after(30):
        with pytest.raises(BackendError, match="400 invalid_argument"):
            await backend.cas_add(b"x" * (MAX_OBJECT_BYTES + 1))
        assert await backend.cas_add(b"x" * MAX_OBJECT_BYTES)
    assert len(list((tmp_path / "s" / "cas").iterdir())) == 1
    await backend.aclose()


async def test_unsigned_heads_and_unreachable_sequences(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    url, _ = await start(nursery, tmp_path / "s")
    backend = HttpBackend(url)
    name = log_name(public_key(KEY), b"G" * 32)
    bare = remotelog_pb2.RemoteLog(tail=b"t" * 32).SerializeToString()
    with trio.fail_after(20):
        with pytest.raises(BackendError, match="403") as caught:
            await backend.ns_update(name, bare)
        assert "not a signed head" in str(caught.value)
        assert "another key" not in str(caught.value)
        with pytest.raises(BackendError, match="400 invalid_argument"):
            await backend.ns_update(name, sign_head(KEY, name, 2**64 - 1, b"", False))
        with pytest.raises(BackendError, match="400 invalid_argument"):
            await backend.ns_update(name, sign_head(KEY, name, 2**63, b"", False))
        await backend.ns_update(name, sign_head(KEY, name, 2**63 - 1, b"", False))
    await backend.aclose()


async def test_helper_serve_takes_the_quota_options(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "mvds_node.node.cli", "helper", "serve", str(tmp_path / "s")]
    argv += ["--listen", "127.0.0.1:0", "--max-names-per-address", "1"]
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    assert process.stdout is not None
    try:
        with trio.fail_after(30):
            line = b""
            while b"\n" not in line:
                chunk = await process.stdout.receive_some(1000)
                assert chunk, "the helper exited"
                line += chunk
            url = line.decode().split(" on ")[1].strip()
            backend = HttpBackend(url)
            names = [log_name(public_key(KEY), bytes([g]) * 32) for g in range(2)]
            await backend.ns_update(names[0], sign_head(KEY, names[0], 1, b"", False))
            with pytest.raises(BackendError, match="429 resource_exhausted"):
                await backend.ns_update(names[1], sign_head(KEY, names[1], 1, b"", False))
            await backend.aclose()
    finally:
        process.terminate()
        await process.wait()
        await process.stdout.aclose()


async def test_a_bug_on_one_request_fails_only_that_request(
    tmp_path: Path,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def broken(self: FileBackend, address: bytes) -> bytes | None:
        raise RuntimeError("a bug in the store")

    monkeypatch.setattr(FileBackend, "cas_get", broken)
    url, _ = await start(nursery, tmp_path / "s")
    backend = HttpBackend(url)
    with trio.fail_after(20):
        with pytest.raises(BackendError, match="500 internal") as caught:
            await backend.cas_get(b"\x00" * 32)
        assert "a bug in the store" not in str(caught.value)
        assert await backend.cas_add(b"still serving")
    assert "RuntimeError: a bug in the store" in capsys.readouterr().err
    await backend.aclose()


async def test_request_bodies_held_at_once_are_bounded_in_all_and_per_address(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    mib = 1024 * 1024
    _, port = await start(
        nursery,
        tmp_path / "s",
        max_body_bytes_in_flight=5 * mib,
        max_body_bytes_in_flight_per_address=3 * mib,
    )

    def add(size: int, fill: bytes) -> tuple[bytes, bytes]:
        data = cas_pb2.Content(data=fill * size).SerializeToString()
        whole = request("vac.cas.CAS/Add", data)
        return whole[: -len(data)], data

    async def begin(source: str, fill: bytes) -> tuple[trio.SocketStream, bytes]:
        """A 2 MiB upload whose header and first byte are sent: the helper now holds it."""
        head, body = add(2 * mib, fill)
        stream = await connect_from(source, port)
        await stream.send_all(head + body[:1])
        # Loopback has delivered the bytes; once every task waits, the helper has read them.
        await trio.testing.wait_all_tasks_blocked()
        return stream, body[1:]

    async def status_of(source: str, fill: bytes, *, whole: bool = False) -> tuple[int, str]:
        """The answer to a 2 MiB upload; its body is sent only when it should be accepted."""
        head, body = add(2 * mib, fill)
        stream = await connect_from(source, port)
        await stream.send_all(head + body if whole else head)
        [(status, answer)] = await read_answers(stream, 1)
        await stream.aclose()
        return status, json.loads(answer)["code"] if status != 200 else ""

    with trio.fail_after(30):
        a, rest_a = await begin("127.0.0.2", b"a")
        # 127.0.0.2 holds 2 MiB: 2 more would pass its 3 MiB.
        assert await status_of("127.0.0.2", b"b") == (503, "unavailable")
        b, rest_b = await begin("127.0.0.3", b"c")
        # 4 MiB held in all: 2 more would pass the 5 MiB budget, whoever asks.
        assert await status_of("127.0.0.4", b"d") == (503, "unavailable")
        # The held uploads complete and are stored; their bytes are free again.
        for stream, rest in ((a, rest_a), (b, rest_b)):
            await stream.send_all(rest)
            assert (await read_answers(stream, 1))[0][0] == 200
            await stream.aclose()
        assert len(list((tmp_path / "s" / "cas").iterdir())) == 2
        assert await status_of("127.0.0.4", b"d", whole=True) == (200, "")
        assert await status_of("127.0.0.2", b"b", whole=True) == (200, "")
