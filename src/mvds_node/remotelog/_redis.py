"""A Redis backend (``redis://host:port``) on coredis, a maintained Redis client that runs on Trio.

* CAS: ``SET mvds:cas:<address hex> <bytes> NX`` (content addressed: a second write of the same
  bytes changes nothing), ``GET``.
* NS: a Lua script compares the record's sequence number with the stored one and writes only a
  higher one, atomically, then ``PUBLISH``es the name on ``mvds:ns``, so that readers that
  :meth:`RedisBackend.watch` hear about an update at once instead of at their next poll.

*Connections.* coredis keeps its connections in a pool whose reader and writer tasks live in a
task group, so the pool must be opened by a task that outlives the requests. ``async with
backend:`` opens it for the block: every task started inside shares its connections (the
node's remote-log service does this around its tasks). A call made outside such a block opens
the pool for that one call (one connection, closed after): right for a one-shot command such as
``mvds-node log export``, and what the tests of the plain backend use.

*The boundary.* Every call runs under a deadline (:data:`TIMEOUT`); every coredis exception
(unreachable, refused, timed out, a reply its parser rejects) and every reply of the wrong
type becomes a :class:`~mvds_node.remotelog.BackendError` naming the server. A value is refused
if it is longer than an object may be (:data:`~mvds_node.remotelog._format.MAX_OBJECT_BYTES`).
coredis buffers a reply until it is complete, so a hostile server can make us hold what it
sends within one deadline before the size check refuses it.

TLS (``rediss://``), an ACL user and password and a database number are options of the
coredis client this module builds in one place (:meth:`RedisBackend._new_client`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Final, TypeVar

import coredis
import coredis.connection
import coredis.pool
import coredis.retry
import trio

from mvds_node._address import format_address
from mvds_node.remotelog._backend import BackendError
from mvds_node.remotelog._format import MAX_OBJECT_BYTES, address_of, signed_seq

__all__ = ["TIMEOUT", "RedisBackend"]

TIMEOUT: Final = 10.0
"""Seconds one call may take, connecting included (the writer retries, the reader polls)."""
_POOL_SIZE: Final = 8
"""Connections per pool: the node runs one writer and a reader per peer log, a few at once."""
_CHANNEL: Final = b"mvds:ns"
# KEYS[1] record key, KEYS[2] sequence key; ARGV[1] record, ARGV[2] sequence, ARGV[3] name.
_CAS_SCRIPT: Final = """
local cur = redis.call('GET', KEYS[2])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PUBLISH', 'mvds:ns', ARGV[3])
return 1
"""

_T = TypeVar("_T")


class _Connection(coredis.connection.TCPConnection):
    """coredis's TCP connection, closing its buffers when connecting fails.

    coredis 6.9 opens six in-memory streams per connection and closes them only once the TCP
    connection is up; a server that is down then leaves them to the garbage collector, which
    warns (an error under ``filterwarnings = error``). They are private attributes, which is why
    ``pyproject.toml`` keeps coredis to 6.9.
    """

    async def _connect(self) -> Any:
        try:
            return await super()._connect()
        except BaseException:
            for stream in (
                self._write_buffer_in,
                self._write_buffer_out,
                self._push_message_buffer_in,
                self._push_message_buffer_out,
                self._streamed_message_buffer_in,
                self._streamed_message_buffer_out,
            ):
                stream.close()
            raise


def _causes(e: BaseException) -> list[BaseException]:
    """``e`` and what caused it (coredis wraps a timed-out handshake in a ConnectionError)."""
    chain: list[BaseException] = []
    todo: list[BaseException] = [e]
    while todo and len(chain) < 16:
        cause = todo.pop()
        chain.append(cause)
        if isinstance(cause, BaseExceptionGroup):
            todo.extend(cause.exceptions)
        if (next_cause := cause.__cause__ or cause.__context__) is not None:
            todo.append(next_cause)
    return chain


def _parse_url(url: str) -> tuple[str, int]:
    rest = url.removeprefix("redis://").rstrip("/")
    host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    try:
        number = int(port or 6379)
    except ValueError:
        raise BackendError(f"{url}: the port is not a number") from None
    if not 0 < number < 65536:
        raise BackendError(f"{url}: port {number} is out of range")
    return host or "127.0.0.1", number


class RedisBackend:
    """A :class:`~mvds_node.remotelog.Backend` on a Redis server.

    Args:
        url: ``redis://host:port`` (port 6379 if left out).
        timeout: seconds one call may take.

    Raises:
        BackendError: the URL's port is unusable.
    """

    def __init__(self, url: str, *, timeout: float = TIMEOUT) -> None:
        self.host, self.port = _parse_url(url)
        self.timeout = timeout
        self._client = self._new_client()
        # Set in the task that opened the pool (and inherited by the tasks it starts): a call
        # there shares the pool instead of opening one for itself.
        self._open: contextvars.ContextVar[bool] = contextvars.ContextVar("open", default=False)
        self._stack: contextlib.AsyncExitStack | None = None
        self._lone = trio.Lock()

    @property
    def server(self) -> str:
        """The server, as error messages name it."""
        return f"redis {format_address(self.host, self.port)}"

    def _new_client(self) -> coredis.Redis[bytes]:
        # Connection options (TLS, ACL user and password, database number) go here.
        pool = coredis.pool.ConnectionPool(
            connection_class=_Connection,
            location=coredis.connection.TCPLocation(self.host, self.port),
            stream_timeout=self.timeout,
            connect_timeout=self.timeout,
            timeout=self.timeout,
            max_connections=_POOL_SIZE,
        )
        return coredis.Redis(
            connection_pool=pool,
            # Retrying is the writer's and the reader's business, with their own backoff.
            retry_policy=coredis.retry.NoRetryPolicy(),
        )

    async def __aenter__(self) -> RedisBackend:
        """Open the connection pool for the block (see the module's notes).

        Raises:
            BackendError: the server is unreachable.
        """
        stack = contextlib.AsyncExitStack()
        try:
            # No deadline here: the pool's task group must outlive any scope opened around it
            # (entering it connects nothing; connections open on demand, each under a deadline).
            await stack.enter_async_context(self._client)
        except Exception as e:
            await stack.aclose()
            raise self._error(e) from None
        self._stack = stack
        self._open.set(True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._open.set(False)
        if stack is not None:
            try:
                await stack.aclose()
            except Exception as e:
                raise self._error(e) from None

    async def aclose_connection(self) -> None:
        """Drop the connections of an open pool; the next call connects again."""
        if self._stack is None:
            await trio.lowlevel.checkpoint()
            return
        await self.__aexit__(None, None, None)
        self._client = self._new_client()

    def _error(self, e: BaseException) -> BackendError:
        if isinstance(e, BackendError):
            return e
        # A Cancelled inside a coredis error is one of its own deadlines (connecting).
        timed_out = (trio.TooSlowError, TimeoutError, trio.Cancelled)
        if any(isinstance(c, timed_out) for c in _causes(e)):
            return BackendError(f"{self.server} did not answer within {self.timeout:g} s")
        if isinstance(e, coredis.exceptions.ResponseError):
            return BackendError(f"{self.server}: {e}")
        if isinstance(e, coredis.exceptions.ConnectionError | OSError):
            cause = e.__cause__ or e
            return BackendError(f"{self.server} unreachable: {cause}")
        if isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
            return self._error(e.exceptions[0])
        return BackendError(f"{self.server} sent a malformed reply ({type(e).__name__}: {e})")

    async def _call(self, request: Callable[[coredis.Redis[bytes]], Awaitable[_T]]) -> _T:
        try:
            with trio.fail_after(self.timeout):
                if self._open.get():
                    return await request(self._client)
                async with self._lone, self._new_client() as client:  # a pool for this call
                    return await request(client)
        except Exception as e:
            raise self._error(e) from None

    def _value(self, reply: object) -> bytes | None:
        if reply is None:
            return None
        if not isinstance(reply, bytes):
            raise BackendError(f"{self.server} answered with a {type(reply).__name__}")
        if len(reply) > MAX_OBJECT_BYTES:
            raise BackendError(f"{self.server} sent {len(reply)} bytes, over the object limit")
        return reply

    async def cas_add(self, data: bytes) -> bytes:
        """Store ``data`` under its address.

        Raises:
            BackendError: the server is unreachable or failed.
        """
        address = address_of(data)
        key = b"mvds:cas:" + address.hex().encode()
        await self._call(lambda c: c.set(key, data, condition=coredis.PureToken.NX))
        return address

    async def cas_get(self, address: bytes) -> bytes | None:
        """The object stored under ``address``, or None.

        Raises:
            BackendError: the server is unreachable, failed or sent a malformed reply.
        """
        key = b"mvds:cas:" + address.hex().encode()
        return self._value(await self._call(lambda c: c.get(key)))

    async def ns_update(self, name: str, record: bytes) -> None:
        """Name ``record``; refused unless its signed sequence is above the stored one.

        Raises:
            BackendError: refused, or the server is unreachable or failed.
        """
        seq = signed_seq(record)
        key = f"mvds:ns:{name}".encode()
        if seq is None:  # a plain log's bare RemoteLog: no sequence to compare

            async def plain(c: coredis.Redis[bytes]) -> None:
                await c.set(key, record)
                await c.publish(_CHANNEL, name.encode())

            await self._call(plain)
            return
        done = await self._call(
            lambda c: c.eval(
                _CAS_SCRIPT, [key, key + b":seq"], [record, str(seq).encode(), name.encode()]
            )
        )
        if isinstance(done, bool) or not isinstance(done, int) or done not in (0, 1):
            kind = type(done).__name__  # not its repr: that of a reply nested deep recurses
            raise BackendError(f"{self.server} answered the update of {name} with a {kind}")
        if done != 1:
            raise BackendError(f"redis refused {name}: sequence {seq} is not above the stored one")

    async def ns_fetch(self, name: str) -> bytes | None:
        """The record named ``name``, or None.

        Raises:
            BackendError: the server is unreachable, failed or sent a malformed reply.
        """
        key = f"mvds:ns:{name}".encode()
        return self._value(await self._call(lambda c: c.get(key)))

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[AsyncIterator[str]]:
        """Names as they are updated (``SUBSCRIBE mvds:ns``), on a connection of its own::

            async with backend.watch() as updates:   # subscribed when this returns
                async for name in updates:
                    ...

        Raises:
            BackendError: the server is unreachable, or the subscription broke (on entry, or
                out of the block when it breaks later).
        """
        client = self._new_client()
        ended_by: BaseException | None = None  # what ended the caller's block, if anything
        try:
            async with client, client.pubsub(retry_policy=None) as pubsub:
                with trio.fail_after(self.timeout):
                    await pubsub.subscribe(_CHANNEL)

                async def names() -> AsyncGenerator[str, None]:
                    async for message in pubsub:
                        data: Any = message.get("data") if isinstance(message, dict) else None
                        if message.get("type") == "message" and isinstance(data, bytes):
                            yield data.decode(errors="replace")
                    raise BackendError(f"{self.server} ended the subscription")

                updates = names()
                async with contextlib.aclosing(updates):
                    try:
                        yield updates
                    except BaseException as e:
                        ended_by = e
                        raise
        except BaseException as e:
            if ended_by is not None:
                # coredis's unsubscribe on the way out can fail on a connection already gone;
                # what ended the block (a cancellation, the caller's own error) is the news.
                raise ended_by from None
            if isinstance(e, Exception):
                raise self._error(e) from None
            raise
