"""The IPFS backend against a hostile Kubo RPC server: every malformed reply a BackendError."""

from __future__ import annotations

import pytest
import trio

from mvds_node.remotelog import BackendError
from mvds_node.remotelog._format import address_of
from mvds_node.remotelog._ipfs import IpfsBackend, cid_of

from .hostile import HostileServer, response

WRITER = "ab" * 32
NAME = f"mvds/{WRITER}/" + "cd" * 8


def kubo(replies: dict[str, bytes]) -> HostileServer:
    async def answer(path: str, body: bytes) -> bytes | None:
        command = path.partition("?")[0].removeprefix("/api/v0/")
        return response(200, replies.get(command, b"{}"), content_type="application/json")

    return HostileServer(answer)


DEEP = b"[" * 5000 + b"]" * 5000
GOOD_PUT = b'{"Key": "%s", "Size": 5}' % cid_of(address_of(b"block")).encode()


@pytest.mark.parametrize(
    "reply",
    [
        b'{"Key": "%s", "Size": Infinity}' % cid_of(address_of(b"block")).encode(),
        b'{"Key": "%s", "Size": NaN}' % cid_of(address_of(b"block")).encode(),
        b'{"Key": "%s", "Size": "5"}' % cid_of(address_of(b"block")).encode(),
        b'{"Key": "%s", "Size": 1e400}' % cid_of(address_of(b"block")).encode(),
        b'{"Key": "%s", "Size": 99999999999999999999999}' % cid_of(address_of(b"block")).encode(),
        b"[]",
        b"null",
        DEEP,
        b'{"Key": 5}',
        b'{"Key": ' + b'"x' * 100 + b"}",
        b"\xff\xfe",
    ],
)
async def test_block_put_replies(nursery: trio.Nursery, reply: bytes) -> None:
    backend = IpfsBackend(
        (await kubo({"block/put": reply}).start(nursery)).replace("http:", "ipfs:")
    )
    with trio.fail_after(10), pytest.raises(BackendError, match=r"ipfs 127\.0\.0\.1"):
        await backend.cas_add(b"block")
    await backend.aclose()


@pytest.mark.parametrize(
    "replies",
    [
        {"key/list": b"[]"},
        {"key/list": b'{"Keys": {}}'},
        {"key/list": b'{"Keys": [[]]}', "key/gen": b"{}"},
        {"key/list": b'{"Keys": []}', "key/gen": b'{"Name": "x"}'},
        {"key/list": b'{"Keys": []}', "key/gen": b'{"Id": 12}'},
        {"key/list": b'{"Keys": [{"Name": "mvds-directory-%s", "Id": []}]}' % WRITER[:32].encode()},
        {"key/list": DEEP},
    ],
)
async def test_key_replies(nursery: trio.Nursery, replies: dict[str, bytes]) -> None:
    backend = IpfsBackend((await kubo(replies).start(nursery)).replace("http:", "ipfs:"))
    with trio.fail_after(10), pytest.raises(BackendError, match=r"ipfs 127\.0\.0\.1"):
        await backend.ns_fetch(NAME)
    await backend.aclose()


@pytest.mark.parametrize(
    "replies",
    [
        {"name/resolve": b"[]"},
        {"name/resolve": b'{"Path": 7}'},
        {"name/resolve": b'{"Path": "/ipfs/x"}', "block/get": b"[1, 2]"},
        {"name/resolve": b'{"Path": "/ipfs/x"}', "block/get": b'{"%s": 5}' % NAME.encode()},
        {"name/resolve": b'{"Path": "/ipfs/x"}', "block/get": DEEP},
        {"name/resolve": b'{"Path": "/ipfs/x"}', "block/get": b"Infinity"},
    ],
)
async def test_directory_replies(nursery: trio.Nursery, replies: dict[str, bytes]) -> None:
    url = (await kubo(replies).start(nursery)).replace("http:", "ipfs:")
    backend = IpfsBackend(url, ipns_ids={WRITER: "k51"})
    with trio.fail_after(10), pytest.raises(BackendError, match=r"ipfs 127\.0\.0\.1"):
        await backend.ns_fetch(NAME)
    await backend.aclose()


async def test_a_good_reply_passes(nursery: trio.Nursery) -> None:
    backend = IpfsBackend(
        (await kubo({"block/put": GOOD_PUT}).start(nursery)).replace("http:", "ipfs:")
    )
    with trio.fail_after(10):
        assert await backend.cas_add(b"block") == address_of(b"block")
    await backend.aclose()
