"""Real servers for backend tests: started per test on 127.0.0.1, stopped after.

``python3 dev.py test`` installs them (redis-server and nats-server from Debian; Kubo built with
Go, see ``dev.ensure_kubo``) and sets MVDS_REQUIRE_SERVICES=1, so a missing server fails the run
there (Kubo only where Go is installed); a developer running pytest alone without them gets a
skip that says what to install.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio


def need(binary: str, package: str) -> str:
    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None
    )
    if path is None:
        message = f"{binary} is not installed (Debian package {package}; dev.py test installs it)"
        if os.environ.get("MVDS_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


class _PortTaken(RuntimeError):
    """The server could not listen: another process took the port since we picked it."""


@asynccontextmanager
async def _server(argv: list[str], ready: bytes, *, on_stderr: bool) -> AsyncIterator[None]:
    """Run a server until the block ends; enter once its log (stdout or stderr) says ``ready``.

    Raises:
        _PortTaken: the server exited because its port is in use.
        RuntimeError: the server exited for another reason.
    """
    if on_stderr:
        process = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE)
    else:
        process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    log = process.stderr if on_stderr else process.stdout
    assert log is not None
    try:
        with trio.fail_after(20):
            seen = b""
            while ready not in seen:
                chunk = await log.receive_some(4096)
                if not chunk:
                    text = seen.decode(errors="replace")
                    if "address already in use" in text.lower():
                        raise _PortTaken(text)
                    raise RuntimeError(f"{argv[0]} exited: {text}")
                seen = (seen + chunk)[-8192:]
        yield
    finally:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
        process.kill()
        await process.wait()
        await log.aclose()


def _free_port() -> int:
    """A loopback port free a moment ago (the kernel's pick). Another process may take it
    before the server binds it; the servers below then start again on another."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_ATTEMPTS = 5


@asynccontextmanager
async def _on_free_port(
    make_argv: Callable[[int], list[str]], ready: bytes, *, on_stderr: bool
) -> AsyncIterator[int]:
    """Start the server ``make_argv(port)`` describes on a free port; yield the port."""
    async with AsyncExitStack() as stack:
        for attempt in range(_ATTEMPTS):
            port = _free_port()
            try:
                server = _server(make_argv(port), ready, on_stderr=on_stderr)
                await stack.enter_async_context(server)
                break
            except _PortTaken:
                if attempt == _ATTEMPTS - 1:
                    raise
        yield port


@asynccontextmanager
async def redis_server(tmp: Path) -> AsyncIterator[str]:
    """A redis-server on a free loopback port; yields its URL once it accepts connections."""
    binary = need("redis-server", "redis-server")
    os.makedirs(tmp, exist_ok=True)

    def argv(port: int) -> list[str]:
        return [
            *(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
        ]

    async with _on_free_port(argv, b"Ready to accept connections", on_stderr=False) as port:
        yield f"redis://127.0.0.1:{port}"


@asynccontextmanager
async def nats_server(tmp: Path) -> AsyncIterator[str]:
    """A nats-server with JetStream on a free loopback port; yields its URL once it listens."""
    binary = need("nats-server", "nats-server")
    os.makedirs(tmp, exist_ok=True)

    def argv(port: int) -> list[str]:
        return [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp)]

    async with _on_free_port(argv, b"Server is ready", on_stderr=True) as port:
        yield f"nats://127.0.0.1:{port}"


def kubo_binary() -> str:
    """The Kubo binary ``dev.py test`` builds (cached per version), or a skip or failure that
    says why there is none: without Go the Kubo tests skip; with Go, under
    MVDS_REQUIRE_SERVICES=1, a missing binary means its build failed, and they fail."""
    import dev

    path = dev.kubo_path()
    if path.exists():
        return str(path)
    if shutil.which("go") is None:
        pytest.skip(f"Kubo tests skipped: Go is not installed (Kubo {dev.KUBO_VERSION} is built "
                    "from source)")  # fmt: skip
    message = f"Kubo {dev.KUBO_VERSION} is not built at {path} (python3 dev.py test builds it)"
    if os.environ.get("MVDS_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Kubo:
    """A running Kubo daemon."""

    url: str
    """``ipfs://127.0.0.1:PORT``, its RPC API."""
    api_port: int
    swarm: str
    """Its swarm address with its peer id, for ``swarm/connect``."""
    peer_id: str


_API_LINE = re.compile(rb"RPC API server listening on /ip4/127\.0\.0\.1/tcp/(\d+)")
_SWARM_LINE = re.compile(rb"Swarm listening on 127\.0\.0\.1:(\d+) ")
_PEER_LINE = re.compile(rb"PeerID: (\w+)")


def kubo_config(config: dict[str, Any], authorizations: dict[str, Any] | None) -> None:
    """A deployment's settings for a node of a private group, on top of ``init --profile test``
    (every listener on 127.0.0.1 port 0, no bootstrap peers, no mDNS, no AutoTLS/AutoConf):
    no DHT (``Routing.Type`` "none": peers are connected on purpose), IPNS over pubsub so a
    name resolves between connected peers, telemetry off, and the API's authorizations."""
    config["Routing"]["Type"] = "none"
    config.setdefault("Ipns", {})["UsePubsub"] = True
    config.setdefault("Pubsub", {})["Enabled"] = True
    config["Bootstrap"] = []
    config["Discovery"]["MDNS"]["Enabled"] = False
    plugins = config.get("Plugins") or {}
    plugins["Plugins"] = {
        **(plugins.get("Plugins") or {}),
        "telemetry": {"Config": {"Mode": "off"}},
    }
    config["Plugins"] = plugins
    if authorizations is not None:
        config["API"]["Authorizations"] = authorizations


@asynccontextmanager
async def kubo_node(
    repo: Path, *, authorizations: dict[str, Any] | None = None
) -> AsyncIterator[Kubo]:
    """A Kubo daemon on 127.0.0.1 (see :func:`kubo_config`); yields it once it is ready."""
    binary = kubo_binary()
    env = {**os.environ, "IPFS_PATH": str(repo), "IPFS_TELEMETRY": "off"}
    await trio.run_process(
        [binary, "init", "--profile", "test", "--empty-repo"], env=env, capture_stdout=True
    )
    config_path = repo / "config"
    config = json.loads(config_path.read_text())
    kubo_config(config, authorizations)
    config_path.write_text(json.dumps(config))
    with (repo / "daemon.log").open("wb") as log:
        process = await trio.lowlevel.open_process(
            [binary, "daemon"], env=env, stdout=subprocess.PIPE, stderr=log
        )
    assert process.stdout is not None
    try:
        with trio.fail_after(60):
            seen = b""
            while b"Daemon is ready" not in seen:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    errors = (repo / "daemon.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"kubo exited: {seen.decode(errors='replace')}{errors}")
                seen = (seen + chunk)[-16384:]
        api, swarm, peer = (r.search(seen) for r in (_API_LINE, _SWARM_LINE, _PEER_LINE))
        assert api and swarm and peer, seen.decode(errors="replace")
        peer_id = peer.group(1).decode()
        yield Kubo(
            url=f"ipfs://127.0.0.1:{int(api.group(1))}",
            api_port=int(api.group(1)),
            swarm=f"/ip4/127.0.0.1/tcp/{int(swarm.group(1))}/p2p/{peer_id}",
            peer_id=peer_id,
        )
    finally:
        process.terminate()
        with trio.move_on_after(10):
            await process.wait()
        process.kill()
        await process.wait()
        await process.stdout.aclose()


@asynccontextmanager
async def ipfs_node(repo: Path) -> AsyncIterator[tuple[str, str]]:
    """A Kubo daemon (see :func:`kubo_node`); yields (RPC URL, swarm address)."""
    async with kubo_node(repo) as node:
        yield node.url, node.swarm


async def tls_proxy(nursery: trio.Nursery, context: ssl.SSLContext, port: int) -> int:
    """A TLS-terminating proxy on a free loopback port in front of 127.0.0.1:``port`` (as a
    deployment puts one in front of Kubo's API, which has no TLS of its own); its port."""

    async def forward(client: trio.SSLStream[trio.SocketStream]) -> None:
        async with client:
            try:
                upstream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                return
            async with upstream, trio.open_nursery() as pumps:

                async def pump(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
                    # A refused handshake or a closed side ends both directions.
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        while data := await source.receive_some(65536):
                            await sink.send_all(data)
                    pumps.cancel_scope.cancel()

                pumps.start_soon(pump, client, upstream)
                pumps.start_soon(pump, upstream, client)

    serve = functools.partial(trio.serve_ssl_over_tcp, forward, 0, context, host="127.0.0.1")
    listeners = await nursery.start(serve)
    proxy_port: int = listeners[0].transport_listener.socket.getsockname()[1]
    return proxy_port
