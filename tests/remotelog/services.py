"""Real servers for backend tests: started per test on 127.0.0.1, stopped after.

``python3 dev.py test`` installs them (Debian packages) and sets MVDS_REQUIRE_SERVICES=1, so a
missing server fails the run there; a developer running pytest alone without them gets a skip
that says what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

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


JSIPFS_DIR = Path(__file__).resolve().parents[2] / "services" / "jsipfs"


@asynccontextmanager
async def ipfs_node(repo: Path, *, online: bool = False) -> AsyncIterator[tuple[str, str]]:
    """A js-ipfs node on 127.0.0.1 (no bootstrap, no mDNS); yields (RPC URL, swarm address)."""
    binary = JSIPFS_DIR / "node_modules" / ".bin" / "jsipfs"
    if not binary.exists():
        message = "js-ipfs is not installed (services/jsipfs: npm ci; dev.py test does it)"
        if os.environ.get("MVDS_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    env = {
        **os.environ,
        "IPFS_PATH": str(repo),
        "NODE_OPTIONS": f"--require {JSIPFS_DIR / 'polyfill.cjs'}",
    }
    api, swarm = _free_port(), _free_port()
    await trio.run_process([str(binary), "init", "--profile", "test"], env=env, capture_stdout=True)
    config_path = repo / "config"
    config = json.loads(config_path.read_text())
    config["Addresses"].update(
        {
            "Swarm": [f"/ip4/127.0.0.1/tcp/{swarm}"],
            "API": f"/ip4/127.0.0.1/tcp/{api}",
            "Gateway": f"/ip4/127.0.0.1/tcp/{_free_port()}",
            "RPC": f"/ip4/127.0.0.1/tcp/{_free_port()}",
            "Delegates": [],
        }
    )
    config["Bootstrap"] = []
    config["Discovery"]["MDNS"]["Enabled"] = False
    config["Routing"] = {"Type": "dhtserver"}
    config_path.write_text(json.dumps(config))
    mode = ["--enable-namesys-pubsub"] if online else ["--offline"]
    argv = [str(binary), "daemon", *mode, "--enable-preload=false"]
    process = await trio.lowlevel.open_process(argv, env=env, stdout=subprocess.PIPE)
    assert process.stdout is not None
    try:
        with trio.fail_after(60):
            seen = b""
            while b"Daemon is ready" not in seen:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"jsipfs exited: {seen.decode(errors='replace')}")
                seen = (seen + chunk)[-16384:]
        peer_id = next(
            line.split("/p2p/")[1].strip()
            for line in seen.decode(errors="replace").splitlines()
            if "Swarm listening on" in line and "/p2p/" in line
        )
        yield f"ipfs://127.0.0.1:{api}", f"/ip4/127.0.0.1/tcp/{swarm}/p2p/{peer_id}"
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
