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
async def redis_deployment(
    tmp: Path,
    *,
    requirepass: str,
    users: dict[str, str],
    tls: tuple[Path, Path, Path] | None = None,
    auth_clients: str = "optional",
    acl: tuple[str, ...] = (),
) -> AsyncIterator[int]:
    """A redis-server set up as a deployment is: the ``default`` user's password
    (``requirepass``), ACL users (``user NAME on >PASSWORD ~* &* +@all``) and, with
    ``tls=(ca, cert, key)``, TLS only (``port 0``, ``tls-port``) asking client certificates as
    ``auth_clients`` says (``optional``, ``yes`` or ``no``); ``acl`` adds ``user`` lines as they
    are. Yields the port once it is ready."""
    binary = need("redis-server", "redis-server")
    os.makedirs(tmp, exist_ok=True)

    def argv(port: int) -> list[str]:
        lines = [
            "bind 127.0.0.1",
            f"dir {tmp}",
            'save ""',
            "appendonly no",
            "daemonize no",
            f"requirepass {requirepass}",
            *(f"user {name} on >{password} ~* &* +@all" for name, password in users.items()),
            *acl,
        ]
        if tls is None:
            lines.append(f"port {port}")
        else:
            ca, cert, key = tls
            lines += [
                "port 0",
                f"tls-port {port}",
                f"tls-ca-cert-file {ca}",
                f"tls-cert-file {cert}",
                f"tls-key-file {key}",
                f"tls-auth-clients {auth_clients}",
            ]
        conf = tmp / f"redis-{port}.conf"
        conf.write_text("\n".join(lines) + "\n")
        return [binary, str(conf)]

    async with _on_free_port(argv, b"Ready to accept connections", on_stderr=False) as port:
        yield port


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
async def nats_server_with(tmp: Path, config: Callable[[int], str]) -> AsyncIterator[int]:
    """A nats-server run from a configuration file, as deployments run it: ``config(port)`` is
    the file's text (TLS, users, an operator) for a server on ``port``; yields the port once the
    server is ready. JetStream is on, its store in ``tmp``."""
    binary = need("nats-server", "nats-server")
    os.makedirs(tmp, exist_ok=True)

    def argv(port: int) -> list[str]:
        path = tmp / "nats.conf"
        text = f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{tmp / "js"}" }}\n'
        path.write_text(text + config(port))
        return [binary, "-c", str(path)]

    async with _on_free_port(argv, b"Server is ready", on_stderr=True) as port:
        yield port


class NatsCluster:
    """Three (or more) nats-server processes on 127.0.0.1, clustered by routes, each with
    JetStream and a monitoring port. :meth:`kill` ends one with SIGKILL; :meth:`start` runs it
    again on its ports and store. Every wait is bounded."""

    def __init__(self, tmp: Path, nursery: trio.Nursery, size: int) -> None:
        self.binary = need("nats-server", "nats-server")
        self.tmp = tmp
        self.nursery = nursery
        self.ports = [(_free_port(), _free_port(), _free_port()) for _ in range(size)]
        """(client, route, monitoring) of each server."""
        self.processes: list[trio.Process | None] = [None] * size
        self._started: list[trio.Process] = []
        self.logs: list[bytearray] = [bytearray() for _ in range(size)]

    @property
    def url(self) -> str:
        """The URL that lists every server (``nats://a,b,c``)."""
        return self.url_from(0)

    def url_from(self, first: int) -> str:
        """The URL listing every server, server ``first`` first."""
        clients = [client for client, _, _ in self.ports]
        order = clients[first:] + clients[:first]
        return "nats://" + ",".join(f"127.0.0.1:{client}" for client in order)

    def _config(self, i: int) -> Path:
        client, route, monitor = self.ports[i]
        routes = ", ".join(f"nats-route://127.0.0.1:{r}" for _, r, _ in self.ports)
        path = self.tmp / f"n{i}.conf"
        path.write_text(
            f'server_name: "n{i}"\nlisten: "127.0.0.1:{client}"\nhttp: "127.0.0.1:{monitor}"\n'
            f'jetstream {{ store_dir: "{self.tmp / f"n{i}"}" }}\n'
            f'cluster {{ name: "mvds", listen: "127.0.0.1:{route}", routes: [{routes}] }}\n'
        )
        return path

    async def start(self, i: int) -> None:
        """Run server ``i``; returns once its log says it is ready."""
        argv = [self.binary, "-c", str(self._config(i))]
        process = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE)
        self.processes[i] = process
        self._started.append(process)
        ready = trio.Event()
        log = self.logs[i]
        log.clear()

        async def drain() -> None:  # read its log to the end, or the pipe would fill
            assert process.stderr is not None
            async with process.stderr:
                while chunk := await process.stderr.receive_some(65536):
                    log.extend(chunk)
                    del log[:-16384]
                    if b"Server is ready" in log:
                        ready.set()
            ready.set()

        self.nursery.start_soon(drain)
        with trio.fail_after(20):
            await ready.wait()
        if process.poll() is not None:
            raise RuntimeError(f"nats-server n{i} exited: {log.decode(errors='replace')}")

    async def healthy(self, i: int, *, js_enabled_only: bool = False) -> None:
        """Wait until server ``i``'s ``/healthz`` says ok (with ``js_enabled_only``: that
        JetStream is on; without: also that it is current with the cluster's streams)."""
        import httpx

        query = "?js-enabled-only=true" if js_enabled_only else ""
        url = f"http://127.0.0.1:{self.ports[i][2]}/healthz{query}"
        with trio.fail_after(30):
            async with httpx.AsyncClient(timeout=2) as client:
                while True:
                    try:
                        answer = await client.get(url)
                        if answer.status_code == 200 and answer.json().get("status") == "ok":
                            return
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.05)  # the next look at the endpoint

    def kill(self, i: int) -> None:
        """End server ``i`` at once (SIGKILL), as a crash would."""
        process = self.processes[i]
        assert process is not None
        process.kill()

    async def stop(self) -> None:
        for process in self._started:
            if process.poll() is None:
                process.kill()
            with trio.move_on_after(5):
                await process.wait()


@asynccontextmanager
async def nats_cluster(tmp: Path, size: int = 3) -> AsyncIterator[NatsCluster]:
    """A JetStream cluster of ``size`` servers on 127.0.0.1; yields it once every server's
    health endpoint says ok."""
    os.makedirs(tmp, exist_ok=True)
    async with trio.open_nursery() as nursery:
        cluster = NatsCluster(tmp, nursery, size)
        try:
            for i in range(size):
                await cluster.start(i)
            for i in range(size):
                await cluster.healthy(i, js_enabled_only=True)
            for i in range(size):
                await cluster.healthy(i)
            yield cluster
        finally:
            with trio.CancelScope(shield=True):
                await cluster.stop()
            nursery.cancel_scope.cancel()


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
