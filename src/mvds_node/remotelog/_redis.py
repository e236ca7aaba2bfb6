"""A Redis backend (``redis://host:port``, ``rediss://`` for TLS) on coredis, a maintained Redis
client that runs on Trio.

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

*Deployments.* ``redis://[user[:password]@]host[:port][/db]``: an ACL user and its password
(``AUTH user password`` through coredis's ``HELLO``), or a password alone for ``requirepass``
(the ``default`` user); ``remote_log.secret`` gives the password instead of the URL. The
database number follows the hosts. ``rediss://`` is TLS: the system's CAs or
``remote_log.ca_file``, hostnames checked, a client certificate (``cert_file``, ``key_file``) for
a server with ``tls-auth-clients``. All of it is set in one place,
:meth:`RedisBackend._new_client`, so the pooled connections, the one-call pools and the pub/sub
connection of :meth:`RedisBackend.watch` all authenticate and use TLS alike. Errors name the
server by its redacted URL (``redis rediss://alice:***@host:6380/2``), and any text of the
password is masked in them too, whatever the server or the library put in a message.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Final, TypeVar

import coredis
import coredis.connection
import coredis.pool
import coredis.retry
import trio

from mvds_node.remotelog._backend import BackendError
from mvds_node.remotelog._format import MAX_OBJECT_BYTES, address_of, signed_seq
from mvds_node.remotelog._secrets import (
    REDACTED,
    Credentials,
    SecretError,
    parse_backend_url,
    tls_context,
)

__all__ = ["TIMEOUT", "RedisBackend"]

TIMEOUT: Final = 10.0
"""Seconds one call may take, connecting included (the writer retries, the reader polls)."""
_POOL_SIZE: Final = 8
"""Connections per pool: the node runs one writer and a reader per peer log, a few at once."""
_CHANNEL: Final = b"mvds:ns"
MAX_DATABASE: Final = 1_000_000
"""Highest database number a URL may name (Redis has 16 unless ``databases`` says more)."""
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


def _database(path: str, server: str) -> int:
    if not path:
        return 0
    if not path.isdigit() or len(path) > 7 or int(path) > MAX_DATABASE:
        raise BackendError(
            f"{server}: the database {path[:16]!r} is not a number from 0 to {MAX_DATABASE} "
            "(redis://host/2)"
        )
    return int(path)


class RedisBackend:
    """A :class:`~mvds_node.remotelog.Backend` on a Redis server.

    Args:
        url: ``redis://[user[:password]@]host[:port][/db]`` (port 6379 if left out);
            ``rediss://`` for TLS.
        credentials: the password (``secret``, over one in the URL) and the TLS files.
        timeout: seconds one call may take.

    Raises:
        BackendError: the URL is malformed, a user is named without a password, TLS files are
            given for a ``redis://`` URL, or a TLS file cannot be used (the message names the
            server, redacted).
    """

    def __init__(
        self, url: str, *, credentials: Credentials | None = None, timeout: float = TIMEOUT
    ) -> None:
        credentials = credentials or Credentials()
        try:
            parsed = parse_backend_url(url, default_port=6379)
        except SecretError as e:
            raise BackendError(f"redis {e}") from None
        if parsed.scheme not in ("redis", "rediss"):
            raise BackendError(f"redis {parsed.redacted()}: use redis:// or rediss:// (TLS)")
        self.host, self.port = parsed.host, parsed.port
        self.url = parsed.redacted()
        """The URL as the node shows it (password masked)."""
        self.db = _database(parsed.path, self.server)
        self.username = parsed.username
        self._password = credentials.secret or parsed.password
        if self.username is not None and not self._password:
            raise BackendError(
                f"{self.server}: user {self.username} needs a password: set remote_log.secret "
                "(or write it in the URL)"
            )
        self._ssl: ssl.SSLContext | None = None
        if parsed.tls:
            try:
                self._ssl = tls_context(credentials, what=self.server)
            except SecretError as e:
                raise BackendError(str(e)) from None
        elif credentials.ca_file or credentials.cert_file or credentials.key_file:
            raise BackendError(
                f"{self.server}: remote_log.ca_file, cert_file and key_file are for TLS: "
                "use a rediss:// URL"
            )
        self.timeout = timeout
        self._client = self._new_client()
        # Set in the task that opened the pool (and inherited by the tasks it starts): a call
        # there shares the pool instead of opening one for itself.
        self._open: contextvars.ContextVar[bool] = contextvars.ContextVar("open", default=False)
        self._stack: contextlib.AsyncExitStack | None = None
        self._lone = trio.Lock()

    @property
    def server(self) -> str:
        """The server, as error messages and status name it: ``redis 127.0.0.1:6379``, or
        with what else its URL holds, the password masked (``redis rediss://alice:***@h:6380/2``).
        """
        return f"redis {self.url.removeprefix('redis://')}"

    def _new_client(self) -> coredis.Redis[bytes]:
        # Every connection (pooled, one-call, pub/sub) is made here: all authenticate alike.
        pool = coredis.pool.ConnectionPool(
            connection_class=_Connection,
            location=coredis.connection.TCPLocation(self.host, self.port),
            stream_timeout=self.timeout,
            connect_timeout=self.timeout,
            timeout=self.timeout,
            max_connections=_POOL_SIZE,
            username=self.username,
            password=self._password.reveal() if self._password else None,
            db=self.db,
            ssl_context=self._ssl,
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
        error = self._describe(e)
        password = self._password.reveal() if self._password else ""
        if password and password in str(error):
            return BackendError(str(error).replace(password, REDACTED))
        return error

    def _describe(self, e: BaseException) -> BackendError:
        if isinstance(e, BackendError):
            return e
        causes = _causes(e)
        # A Cancelled inside a coredis error is one of its own deadlines (connecting).
        timed_out = (trio.TooSlowError, TimeoutError, trio.Cancelled)
        if any(isinstance(c, timed_out) for c in causes):
            hint = ""
            if self._ssl is None:
                hint = " (a TLS port? use rediss://)"
            return BackendError(f"{self.server} did not answer within {self.timeout:g} s{hint}")
        for cause in causes:
            if isinstance(cause, coredis.exceptions.AuthenticationFailureError):
                return BackendError(
                    f"{self.server}: authentication failed (WRONGPASS): check remote_log.secret "
                    "or the user and password in the URL"
                )
            if isinstance(cause, coredis.exceptions.AuthenticationRequiredError):
                return BackendError(
                    f"{self.server}: the server wants a password (NOAUTH): set remote_log.secret "
                    "or write redis://user:password@host"
                )
            if isinstance(cause, coredis.exceptions.AuthorizationError):
                who = self.username or "default"
                return BackendError(
                    f"{self.server}: user {who} may not do this (NOPERM): grant it ~mvds:* "
                    "and +@all (or the commands get, set, eval, publish, subscribe) in its ACL"
                )
            if isinstance(cause, ssl.SSLCertVerificationError):
                return BackendError(
                    f"{self.server}: TLS: the server's certificate is not trusted "
                    f"({cause.verify_message}): check remote_log.ca_file"
                )
            if isinstance(cause, ssl.SSLError):
                return BackendError(
                    f"{self.server}: TLS handshake failed ({cause.reason or cause}): check the "
                    "server's TLS port and remote_log.cert_file / key_file"
                )
        if isinstance(e, coredis.exceptions.ResponseError):
            return BackendError(f"{self.server}: {e}")
        if isinstance(e, coredis.exceptions.ConnectionError | OSError):
            cause = e.__cause__ or e
            said = str(cause) or type(cause).__name__
            hint = ""
            if not isinstance(cause, OSError) or isinstance(cause, EOFError):
                # Connected, then closed by the server before any answer.
                hint = (
                    " (the server closed the connection: a TLS port? use rediss://)"
                    if self._ssl is None
                    else " (the server closed the connection: if it wants a client certificate, "
                    "set remote_log.cert_file and key_file; if it is no TLS port, use redis://)"
                )
            return BackendError(f"{self.server} unreachable: {said}{hint}")
        if isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
            return self._describe(e.exceptions[0])
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
