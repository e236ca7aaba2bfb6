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
