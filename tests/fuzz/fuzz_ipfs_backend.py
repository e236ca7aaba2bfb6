"""Target: the IPFS backend's handling of Kubo RPC answers (``remotelog/_ipfs.py``).

An :class:`IpfsBackend` makes up to four calls (``cas_add``, ``cas_get``, ``ns_update``,
``ns_fetch``, ``own_ipns_id``, as the fuzzer picks); every connection it opens reads the
fuzzer's raw answer bytes through httpx's real parsing (see ``_httpfake.py``): JSON replies, key
lists, resolved paths, directory blocks. Only :class:`BackendError` may come out.
"""

from __future__ import annotations

import trio

from mvds_node.remotelog._backend import BackendError
from mvds_node.remotelog._ipfs import IpfsBackend
from tests.fuzz._httpfake import Network, install
from tests.fuzz._support import Input, seed_bytes

MAX_LEN = 16384
WRITER = "ab" * 32
NAME = f"mvds/{WRITER}/" + "cd" * 8
OTHER = "ef" * 32
OTHER_NAME = f"mvds/{OTHER}/" + "cd" * 8
ADDRESS = seed_bytes("object")


async def _calls(fdp: Input) -> None:
    ops = [fdp.ConsumeIntInRange(0, 4) for _ in range(fdp.ConsumeIntInRange(1, 4))]
    cut = fdp.ConsumeIntInRange(1, 4096)
    answers = [fdp.ConsumeBlob(8192) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    backend = IpfsBackend("ipfs://127.0.0.1:5001", ipns_ids={OTHER: "k51other"})
    pool = install(backend.http, Network(answers, cut=cut))
    try:
        for op in ops:
            try:
                if op == 0:
                    await backend.cas_add(b"object")
                elif op == 1:
                    await backend.cas_get(ADDRESS)
                elif op == 2:
                    await backend.ns_update(NAME, b"record")
                elif op == 3:
                    await backend.ns_fetch(OTHER_NAME)
                else:
                    await backend.own_ipns_id(WRITER)
            except BackendError:
                pass
    finally:
        await pool.aclose()


def TestOneInput(data: bytes) -> None:
    trio.run(_calls, Input(data))
