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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_SRC), str(_SCRIPT.parents[2])])}
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


_READ_ONLY_SCRIPT = Path(__file__).with_name("readonly_node.py")
_EXT4_TOOLS = ("mkfs.ext4", "losetup", "blockdev", "mount", "umount")


@pytest.fixture(scope="module")
def read_only_seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not all(shutil.which(t) for t in _EXT4_TOOLS) or not Path("/sys/fs/ext4").is_dir():
        pytest.skip("needs ext4, mkfs.ext4 and loop devices to turn a file system read-only")
    root = tmp_path_factory.mktemp("ro")
    image, small, big = root / "disk.img", root / "small", root / "big"
    small.mkdir()
    big.mkdir()
    with image.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=30)
    # The loop device is set writable explicitly (some hosts make new ones read-only), and
    # detached whatever the scenario does.
    command = (
        f"L=$(losetup -f --show {image}) || exit 1; blockdev --setrw $L;"
        f" mount -o errors=remount-ro $L {small} &&"
        f" {sys.executable} {_READ_ONLY_SCRIPT} {small} {big} $L; rc=$?;"
        f" umount {small} 2>/dev/null; losetup -d $L; exit $rc"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_SRC), str(_SCRIPT.parents[2])])}
    run = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 0, f"the scenario failed:\n{run.stdout}\n{run.stderr}"
    result: dict[str, Any] = json.loads(run.stdout.splitlines()[-1])
    return result


def test_a_store_turned_read_only_refuses_sends_with_a_clear_error(
    read_only_seen: dict[str, Any],
) -> None:
    path = read_only_seen["store_path"]
    assert read_only_seen["send_error"].startswith(f"{path}: the store became read-only")
    assert read_only_seen["status_while_read_only"].startswith(f"{path}: ")
    assert "read-only" in read_only_seen["status_while_read_only"].removeprefix(path)


def test_a_store_turned_read_only_acknowledges_nothing_it_cannot_store(
    read_only_seen: dict[str, Any],
) -> None:
    assert read_only_seen["before_delivered"] == 5
    assert read_only_seen["delivered_while_read_only"] == 0
    assert read_only_seen["acked_while_read_only"] == 0
    assert read_only_seen["pending_while_read_only"] == 4, "the sender still holds them all"


def test_a_store_turned_read_only_is_one_reported_failure_and_keeps_what_it_committed(
    read_only_seen: dict[str, Any],
) -> None:
    events = read_only_seen["events"]
    assert [e["type"] for e in events] == ["StoreFailed"], events
    assert "read-only" in events[0]["reason"].removeprefix(read_only_seen["store_path"])
    # With store_sync = "full" what was committed was on the disk before it went bad.
    assert read_only_seen["reopened_messages"] == 5
