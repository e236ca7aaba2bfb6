"""Target: the Redis backend's handling of replies (``remotelog/_redis.py``).

The fuzzer's bytes are what a Redis server sends on one connection. coredis' own RESP parser
(``coredis.parser.Parser``, the one its connections run) cuts them into replies, and each
reply's value (or the error the parser makes of it; pushes are skipped, as coredis does) is
handed to the backend as the result of its next call (``cas_get``, ``ns_fetch``, ``ns_update``
of a signed or a plain record, ``cas_add``): the backend's reply checks and its mapping of
coredis errors then run as on a live connection. A server that stops short of a whole reply is
a timeout. Only :class:`BackendError` may come out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from coredis.constants.resp import DataType
from coredis.parser import NOT_ENOUGH_DATA, Parser

from mvds_node.remotelog._backend import BackendError
from mvds_node.remotelog._format import public_key, sign_head
from mvds_node.remotelog._redis import RedisBackend
from tests.fuzz._support import Input, drive, seed_bytes, signing_key

MAX_LEN = 8192
SIGNING = signing_key("writer")
NAME = "mvds/" + public_key(SIGNING).hex() + "/" + "cd" * 8
SIGNED = sign_head(SIGNING, NAME, 7, b"", False)
ADDRESS = seed_bytes("object")


class _Replies:
    """Replies in the order the server sent them, parsed as coredis parses them."""

    def __init__(self, backend: RedisBackend, data: bytes) -> None:
        self.backend = backend
        self.parser = Parser()
        self.parser.feed(data)

    async def call(self, request: Callable[[Any], Awaitable[Any]]) -> Any:
        # What RedisBackend._call does with a client's result or exception, minus the socket.
        try:
            while True:
                reply = self.parser.parse(decode=False)
                if reply is NOT_ENOUGH_DATA:
                    raise TimeoutError("the server sent no whole reply")
                kind, value = reply  # type: ignore[misc]
                if kind != DataType.PUSH:  # a push goes to subscribers, not to the request
                    break
            if isinstance(value, BaseException):
                raise value
            return value
        except Exception as e:
            raise self.backend._error(e) from None


def TestOneInput(data: bytes) -> None:
    fdp = Input(data)
    ops = [fdp.ConsumeIntInRange(0, 4) for _ in range(fdp.ConsumeIntInRange(1, 4))]
    backend = RedisBackend("redis://127.0.0.1:6379")
    replies = _Replies(backend, fdp.ConsumeBytes(fdp.remaining_bytes()))
    backend._call = replies.call  # type: ignore[method-assign]
    for op in ops:
        try:
            if op == 0:
                got = drive(backend.cas_get(ADDRESS))
                if got is not None and not isinstance(got, bytes):
                    raise AssertionError(f"cas_get returned a {type(got).__name__}")
            elif op == 1:
                drive(backend.ns_fetch(NAME))
            elif op == 2:
                drive(backend.ns_update(NAME, SIGNED))
            elif op == 3:
                drive(backend.ns_update(NAME, b"\x0a\x00"))  # a plain log's bare RemoteLog
            else:
                drive(backend.cas_add(b"object"))
        except BackendError:
            pass
