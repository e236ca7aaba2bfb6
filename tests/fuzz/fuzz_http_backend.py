"""Target: the HTTP helper client's handling of answers (``remotelog/_http.py``).

An :class:`HttpBackend` makes up to four calls (``cas_add``, ``cas_get``, ``ns_update``,
``ns_fetch``, as the fuzzer picks); every connection it opens reads the fuzzer's raw answer
bytes through httpx's real parsing (see ``_httpfake.py``). Only :class:`BackendError` may come
out, and an object fetched must have come whole from an answer.
"""

from __future__ import annotations

import trio

from mvds_node.remotelog._backend import BackendError
from mvds_node.remotelog._http import HttpBackend
from tests.fuzz._httpfake import Network, install
from tests.fuzz._support import Input, seed_bytes

MAX_LEN = 16384
NAME = "mvds/" + "ab" * 32 + "/" + "cd" * 8
ADDRESS = seed_bytes("object")


async def _calls(fdp: Input) -> None:
    ops = [fdp.ConsumeIntInRange(0, 3) for _ in range(fdp.ConsumeIntInRange(1, 4))]
    cut = fdp.ConsumeIntInRange(1, 4096)
    answers = [fdp.ConsumeBlob(8192) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    backend = HttpBackend("http://127.0.0.1:8001")
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
                else:
                    await backend.ns_fetch(NAME)
            except BackendError:
                pass
    finally:
        await pool.aclose()


def TestOneInput(data: bytes) -> None:
    trio.run(_calls, Input(data))
