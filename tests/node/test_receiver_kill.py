"""A receiver killed with SIGKILL 20 times while a sender streams loses no message: every
message the sender's ``send()`` accepted reaches the receiving application at least once (see
``receiver_kill.py``; ``benchmarks/receiver_kill.py`` runs it with 100 kills)."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from tests.node.receiver_kill import run_kills


async def test_a_receiver_killed_20_times_loses_no_message(tmp_path: Path) -> None:
    with trio.fail_after(90):
        result = await run_kills(tmp_path, 20)
    print(result, file=sys.stderr)
    assert result["messages"] > 100  # the sender streamed throughout
    assert result["lost"] == 0, result
    # At least once: a message whose ID reached the file but whose confirmation the kill cut
    # off comes again, at most one per kill.
    assert result["duplicates"] <= result["kills"], result
