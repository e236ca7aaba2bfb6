"""Real servers for backend tests: started per test on 127.0.0.1, stopped after.

``python3 dev.py test`` installs them (Debian packages) and sets MVDS_REQUIRE_SERVICES=1, so a
missing server fails the run there; a developer running pytest alone without them gets a skip
that says what to install.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


@asynccontextmanager
async def redis_server(tmp: Path) -> AsyncIterator[str]:
    """A redis-server on a free loopback port; yields its URL once it accepts connections."""
    binary = need("redis-server", "redis-server")
    port = random.randint(20000, 60000)
    os.makedirs(tmp, exist_ok=True)
    process = await trio.lowlevel.open_process(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp),
         "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "notice"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        with trio.fail_after(20):
            seen = b""
            while b"Ready to accept connections" not in seen:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"redis-server exited: {seen.decode(errors='replace')}")
                seen = (seen + chunk)[-8192:]
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
        process.kill()
        await process.wait()
        await process.stdout.aclose()


@asynccontextmanager
async def nats_server(tmp: Path) -> AsyncIterator[str]:
    """A nats-server with JetStream on a free loopback port; yields its URL once it listens."""
    binary = need("nats-server", "nats-server")
    port = random.randint(20000, 60000)
    os.makedirs(tmp, exist_ok=True)
    process = await trio.lowlevel.open_process(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp)],
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        with trio.fail_after(20):
            seen = b""
            while b"Server is ready" not in seen:
                chunk = await process.stderr.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"nats-server exited: {seen.decode(errors='replace')}")
                seen = (seen + chunk)[-8192:]
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
        process.kill()
        await process.wait()
        await process.stderr.aclose()
