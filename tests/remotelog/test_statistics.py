"""Backends and clients that count what they do say so in one way: ``statistics()``, a frozen
snapshot; the older shapes are deprecated aliases."""

from __future__ import annotations

import dataclasses

import pytest
import trio

from mvds_node.remotelog import (
    BackendError,
    HttpBackend,
    HttpClient,
    HttpStatistics,
    MemoryBackend,
    MemoryBackendStatistics,
)


async def test_memory_backend_statistics() -> None:
    backend = MemoryBackend()
    address = await backend.cas_add(b"x")
    await backend.cas_get(address)
    await backend.ns_fetch("n")
    backend.down = True
    with pytest.raises(BackendError):
        await backend.ns_update("n", b"r")
    snapshot = backend.statistics()
    assert snapshot == MemoryBackendStatistics(cas_add=1, cas_get=1, ns_update=1, ns_fetch=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.cas_add = 5  # type: ignore[misc]
    assert backend.statistics() is not snapshot
    with pytest.deprecated_call(match="statistics"):
        assert backend.calls == {"cas_add": 1, "cas_get": 1, "ns_update": 1, "ns_fetch": 1}


async def test_http_statistics_count_failed_requests_too() -> None:
    # Port 1 on loopback: refused at once, and counted all the same.
    client = HttpClient("http://127.0.0.1:1", what="helper 127.0.0.1:1")
    backend = HttpBackend("http://127.0.0.1:1")
    with trio.fail_after(30):
        with pytest.raises(BackendError):
            await client.post("/x", b"", "application/protobuf", max_bytes=100)
        with pytest.raises(BackendError):
            await backend.ns_fetch("mvds/" + "0" * 64 + "/" + "0" * 16)
    await client.aclose()
    await backend.aclose_connection()
    assert client.statistics() == HttpStatistics(requests=1)
    assert backend.statistics() == HttpStatistics(requests=1)
    with pytest.deprecated_call(match="statistics"):
        assert client.requests == 1
    with pytest.deprecated_call(match="statistics"):
        assert backend.calls == 1
