"""Live interop with github.com/vacp2p/mvds v0.0.23, the spec's field numbers without Metadata.

v0.0.23 is the last vacp2p release with the field numbers of 2/MVDS (5001-5004, 6001-6003), the
code the Status app's fork (github.com/status-im/mvds, not served by the Go module proxy) started
from. Real payloads cross between a Go node (``go/vacp2p-v0.0.23/main.go``, its own epoch loop
on the wall clock) and our engine, in batch and interactive mode, both directions, with a seeded
share of the payloads dropped in each direction. Bodies are raw MVDS bodies (no envelope).
"""

from __future__ import annotations

import pytest
import trio

from mvds_node.sync import Mode
from tests.interop.bridge import EPOCH, GO_PEER, Bridge, bridge, go_driver

DRIVER = "vacp2p-v0.0.23"
MODES = [
    pytest.param("batch", Mode.BATCH, id="batch"),
    pytest.param("interactive", Mode.INTERACTIVE, id="interactive"),
]


def _bodies(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix} {i}".encode() for i in range(n)]


async def _exchange(b: Bridge, n: int) -> tuple[list[bytes], list[bytes]]:
    """n messages each way; return (our IDs, Go's IDs) once both sides delivered everything
    and our side saw every one of its messages acknowledged."""
    py_ids = [b.py_send(body) for body in _bodies("from python", n)]
    go_ids = [await b.go_append(body) for body in _bodies("from go", n)]

    def done() -> bool:
        go_seen = {mid for mid, _ in b.go_delivered}
        py_seen = {e.message_id for e in b.py_delivered}
        return set(py_ids) <= go_seen and set(go_ids) <= py_seen and set(py_ids) <= b.py_acked

    await b.run_until(done)
    return py_ids, go_ids


def _check_delivery(b: Bridge, py_ids: list[bytes], go_ids: list[bytes], n: int) -> None:
    # Our engine delivered each of Go's messages exactly once, under the ID Go computed.
    assert sorted(e.message_id for e in b.py_delivered) == sorted(go_ids)
    assert {e.message_id: e.body for e in b.py_delivered} == dict(
        zip(go_ids, _bodies("from go", n), strict=True)
    )
    assert all(e.sender == GO_PEER for e in b.py_delivered)
    # Go received ours under the IDs our engine computed, with the bodies we sent. Go's node does
    # not check its store before delivering (REPORT section 3, bug 6): a copy we retransmitted
    # after a lost ACK reaches its subscriber again. Our side delivers each message once.
    assert {mid: m.body for mid, m in b.go_delivered} == dict(
        zip(py_ids, _bodies("from python", n), strict=True)
    )
    assert all(mid == m.id for mid, m in b.go_delivered)


MIXED = [
    pytest.param("batch", Mode.INTERACTIVE, id="go-batch-we-interactive"),
    pytest.param("interactive", Mode.BATCH, id="go-interactive-we-batch"),
]


@pytest.mark.parametrize(("go_mode", "py_mode"), MODES + MIXED)
async def test_both_directions_without_loss(go_mode: str, py_mode: Mode) -> None:
    driver = go_driver(DRIVER)
    with trio.fail_after(30):
        async with bridge(driver, go_mode=go_mode, py_mode=py_mode) as b:
            py_ids, go_ids = await _exchange(b, 10)
            _check_delivery(b, py_ids, go_ids, 10)
            # Interactive: OFFER, REQUEST, MESSAGE, ACK; batch: MESSAGE, ACK. Each side sends in
            # its own mode and answers the other's.
            if go_mode == "interactive":
                assert b.from_go.offers and b.from_py.requests
            else:
                assert not (b.from_go.offers or b.from_py.requests)
            if py_mode is Mode.INTERACTIVE:
                assert b.from_py.offers and b.from_go.requests
            else:
                assert not (b.from_py.offers or b.from_go.requests)
            await b.settle()
            # The Go node answers a payload without messages with an empty payload (REPORT
            # section 3, bug 2); we answer those with nothing, so the ping-pong stops at once.
            assert b.go_empty_payloads
            # Once everything is acknowledged nobody retransmits: over 25 epochs neither side
            # sends an OFFER, REQUEST or MESSAGE, and we send nothing at all.
            go, py = await b.quiet(25 * EPOCH)
            assert go.data_records == 0, go
            assert py.payloads == 0, py


@pytest.mark.parametrize(("go_mode", "py_mode"), MODES)
@pytest.mark.parametrize("seed", [1, 2])
async def test_both_directions_with_loss(go_mode: str, py_mode: Mode, seed: int) -> None:
    driver = go_driver(DRIVER)
    n = 20
    with trio.fail_after(60):
        async with bridge(
            driver, go_mode=go_mode, py_mode=py_mode, drop=0.3, drop_first=True, seed=seed
        ) as b:
            py_ids, go_ids = await _exchange(b, n)
            assert b.from_go.dropped_messages and b.from_py.dropped_messages  # loss both ways
            _check_delivery(b, py_ids, go_ids, n)
            # Loss ends; the ACKs lost meanwhile are answered once the Go node retransmits, and
            # then the retransmissions stop on both sides.
            await b.settle()
            go, py = await b.quiet(25 * EPOCH)
            assert go.data_records == 0, go
            assert py.payloads == 0, py
