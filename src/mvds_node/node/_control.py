"""The control socket: how ``mvds-node send``, ``status`` and friends talk to a running node.

A running node (``mvds-node run``) listens on a Unix socket, ``control.sock`` in its data
directory, readable only by its owner. Each connection carries one request and one response, each
a single line of JSON: ``{"op": "send", ...}`` in, ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}`` out. A streaming request (``messages --follow``) gets a
:class:`Stream` instead: one JSON line per document until either side closes. Requests
are bounded in size; a malformed one gets an error response, never a crash. The CLI falls
back to opening the store itself when no node runs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final, final

import trio

from mvds_node.errors import MvdsError

__all__ = ["ControlUnavailable", "Stream", "call", "serve_control", "stream"]

MAX_LINE: Final = 12 * 1024 * 1024
"""A request carries at most one message body (engine limit 8 MiB) in base64, plus a little."""


Send = Callable[[dict[str, Any]], Awaitable[None]]


@final
class Stream:
    """A response of many lines: ``produce(send)`` sends each document as one line, until it
    returns or the client hangs up (``send`` then raises, which ends ``produce``)."""

    def __init__(self, produce: Callable[[Send], Awaitable[None]]) -> None:
        self.produce = produce


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | Stream]]


class ControlUnavailable(MvdsError):
    """No node answers on the control socket (it is not running)."""


async def _read_line(stream: trio.SocketStream) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_LINE:
            raise ValueError(f"request over {MAX_LINE} bytes")
    return bytes(buf.split(b"\n", 1)[0])


async def _serve_one(stream: trio.SocketStream, handler: Handler) -> None:
    async with stream:
        try:
            with trio.fail_after(60):
                line = await _read_line(stream)
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                raise ValueError("a request is a JSON object with an 'op'")
            response = await handler(request)
        except (ValueError, MvdsError, OSError, trio.TooSlowError) as e:
            response = {"ok": False, "error": str(e) or type(e).__name__}
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            if isinstance(response, Stream):

                async def send(document: dict[str, Any]) -> None:
                    await stream.send_all(json.dumps(document).encode() + b"\n")

                await response.produce(send)
                return
            await stream.send_all(json.dumps(response).encode() + b"\n")


async def serve_control(
    path: Path,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer requests on the Unix socket ``path`` until cancelled; removes the socket after."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a stale socket from a node that was killed
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(os.fspath(path))
    finally:
        os.umask(old_umask)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                nursery.start_soon(_serve_one, stream, handler)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        await trio.aclose_forcefully(listener)


async def call(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request to the node listening on ``path`` and return its response.

    Bound it with ``trio.fail_after`` if the caller cannot wait (an export may take minutes).

    Raises:
        ControlUnavailable: no node listens there.
    """
    try:
        stream = await trio.open_unix_socket(os.fspath(path))
    except OSError as e:
        raise ControlUnavailable(f"no node is running in {path.parent}") from e
    async with stream:
        await stream.send_all(json.dumps(request).encode() + b"\n")
        buf = bytearray()
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_LINE:
                raise ControlUnavailable("the node's answer is too long")
    try:
        response = json.loads(bytes(buf))
    except ValueError:
        raise ControlUnavailable(
            "the node closed the control connection without answering"
        ) from None
    if not isinstance(response, dict):
        raise ControlUnavailable("the node's answer is not a JSON object")
    return response


async def stream(path: Path, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """Send a streaming request to the node on ``path`` and yield each document it sends.

    Raises:
        ControlUnavailable: no node listens there, or it sent something that is not a line of
            JSON (or a line over the bound).
    """
    try:
        sock = await trio.open_unix_socket(os.fspath(path))
    except OSError as e:
        raise ControlUnavailable(f"no node is running in {path.parent}") from e
    async with sock:
        await sock.send_all(json.dumps(request).encode() + b"\n")
        buf = bytearray()
        while True:
            chunk = await sock.receive_some(65536)
            if not chunk:
                return
            buf += chunk
            while (end := buf.find(b"\n")) >= 0:
                line = bytes(buf[:end])
                del buf[: end + 1]
                try:
                    document = json.loads(line)
                except ValueError:
                    raise ControlUnavailable("the node sent a line that is not JSON") from None
                if not isinstance(document, dict):
                    raise ControlUnavailable("the node's answer is not a JSON object")
                yield document
            if len(buf) > MAX_LINE:
                raise ControlUnavailable("the node's answer is too long")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(text, validate=True)
