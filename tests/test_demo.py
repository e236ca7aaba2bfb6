"""The README's first command: the demo runs and tells the story it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_syncs_over_tcp_and_catches_up_by_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mvds_node.demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = result.stdout
    assert "alice connected to bob" in out
    assert "bob   got 'lunch on friday?' from alice" in out
    assert "carol imported it: 4 new messages, sender alice proved by Noise_X" in out
    assert "importing it twice: 0 new, 4 known" in out
    assert "bob   got 'thanks both, friday works' from alice" in out
    assert "alice: carol has everything" in out
    assert (tmp_path / "demo" / "carol" / "store.sqlite").exists()
