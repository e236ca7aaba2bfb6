"""Target: the NATS JetStream backend's handling of a server (``remotelog/_nats.py``, ``_lines``).

Every connection the backend opens reads the fuzzer's server bytes (``INFO``, ``PONG``,
``MSG``/``HMSG`` frames with JSON API answers, direct-get headers, ``-ERR``), cut into reads as
the fuzzer says; the backend makes up to four calls (``ns_fetch``, ``ns_update``, ``cas_add``,
``cas_get``). Its inbox is fixed (``_INBOX.f``), so seeds can answer on the subjects it waits
on. In this process ``trio.open_tcp_stream`` is replaced by the fake. Only
:class:`BackendError` may come out.
"""

from __future__ import annotations

from typing import Any

import trio

from mvds_node.remotelog._backend import BackendError
from mvds_node.remotelog._format import public_key, sign_head
from mvds_node.remotelog._nats import NatsBackend
from tests.fuzz._support import FakeStream, Input, seed_bytes, signing_key

MAX_LEN = 16384
SIGNING = signing_key("writer")
NAME = "mvds/" + public_key(SIGNING).hex() + "/" + "cd" * 8
SIGNED = sign_head(SIGNING, NAME, 7, b"", False)
ADDRESS = seed_bytes("object")
INBOX = "_INBOX.f"


class _Server:
    """The scripted connections: the bytes each new one reads, in reads of ``cut`` bytes."""

    def __init__(self, scripts: list[bytes], cut: int) -> None:
        self.scripts = list(reversed(scripts))
        self.cut = cut

    async def open_tcp_stream(self, host: str, port: int, **_: Any) -> FakeStream:
        await trio.lowlevel.checkpoint()
        if not self.scripts:
            raise OSError("connection refused")
        data = self.scripts.pop()
        return FakeStream([data[i : i + self.cut] for i in range(0, len(data), self.cut)])


_SERVER = _Server([], 1)
trio.open_tcp_stream = _SERVER.open_tcp_stream  # type: ignore[assignment]


async def _calls(fdp: Input) -> None:
    ops = [fdp.ConsumeIntInRange(0, 3) for _ in range(fdp.ConsumeIntInRange(1, 4))]
    _SERVER.cut = fdp.ConsumeIntInRange(1, 4096)
    _SERVER.scripts = list(
        reversed([fdp.ConsumeBlob(8192) for _ in range(fdp.ConsumeIntInRange(0, 3))])
    )
    backend = NatsBackend("nats://127.0.0.1:4222")
    backend._inbox = INBOX
    for op in ops:
        try:
            if op == 0:
                await backend.ns_fetch(NAME)
            elif op == 1:
                await backend.ns_update(NAME, SIGNED)
            elif op == 2:
                await backend.cas_add(b"object")
            else:
                got = await backend.cas_get(ADDRESS)
                if got is not None and len(got) > 8 * 1024 * 1024:
                    raise AssertionError("cas_get returned more than an object may hold")
        except BackendError:
            pass
    await backend.aclose_connection()


def TestOneInput(data: bytes) -> None:
    trio.run(_calls, Input(data))
