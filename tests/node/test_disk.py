"""A node on a full disk, then a read-only one: the scenario of ``disk_node.py``, run in a
private mount namespace whose tmpfs of 4 MiB holds the receiver's store (``unshare -m``, root
only: the test is skipped elsewhere)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mvds_node

_SCRIPT = Path(__file__).with_name("disk_node.py")
_SRC = Path(mvds_node.__file__).resolve().parent.parent


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True, timeout=10
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _can_unshare(), reason="needs root and unshare -m for a private size-limited tmpfs"
)


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("disk")
    small, big = root / "small", root / "big"
    small.mkdir()
    big.mkdir()
    command = (
        f"mount -t tmpfs -o size=4m tmpfs {small} && exec {sys.executable} {_SCRIPT} {small} {big}"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_SRC), str(_SCRIPT.parent)])}
    run = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert run.returncode == 0, f"the scenario failed:\n{run.stdout}\n{run.stderr}"
    result: dict[str, Any] = json.loads(run.stdout.splitlines()[-1])
    return result


def test_sends_are_refused_with_a_clear_error(seen: dict[str, Any]) -> None:
    path = seen["store_path"]
    assert seen["send_error"].startswith(f"{path}: disk full")
    assert "no space" in seen["send_error"]
    assert seen["large_send_error"].startswith(f"{path}: disk full: no space left for message")
    assert seen["status_while_full"] is not None and "disk full" in seen["status_while_full"]


def test_messages_it_cannot_store_are_not_acknowledged(seen: dict[str, Any]) -> None:
    assert seen["delivered_while_full"] == 0
    assert seen["acked_while_full"] == 0
    assert seen["pending_while_full"] == 10, "the sender still holds all of them for the peer"


def test_it_recovers_by_itself_and_nothing_is_lost(seen: dict[str, Any]) -> None:
    assert seen["before_delivered"] == [f"before {i}" for i in range(5)]
    assert seen["after_delivered"], "every message refused on the full disk arrived later"
    assert seen["pending_after"] == 0
    assert seen["status_after"] is None
    # 5 before, 10 while full, 1 sent by the receiver after: all of them, also after a restart.
    assert seen["messages_stored"] == seen["reopened_messages"] == 16


def test_one_failed_and_one_recovered_event_per_episode(seen: dict[str, Any]) -> None:
    path = seen["store_path"]
    assert [e["type"] for e in seen["events"]] == ["StoreFailed", "StoreRecovered"]
    assert {e["path"] for e in seen["events"]} == {path}
    assert "disk full" in seen["events"][0]["reason"]


def test_a_read_only_store_is_refused_when_opened(seen: dict[str, Any]) -> None:
    assert seen["read_only_error"].startswith(f"{seen['store_path']}: the store is read-only")
