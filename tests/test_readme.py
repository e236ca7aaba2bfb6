"""Every Python snippet of the README is a complete program, and runs.

Each runs in its own interpreter, bounded in time, on loopback only, with ``trio.run`` given
an autojump clock (the node snippet listens for ten seconds: virtual ones here).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mvds_node.node import GroupConfig, NodeConfig, create_identity, group_id_for, save_config
from mvds_node.sync import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
RUNNER = """\
import sys

import trio
import trio.testing

_run = trio.run


def run(fn, *args, **kwargs):
    kwargs.setdefault("clock", trio.testing.MockClock(autojump_threshold=0))
    return _run(fn, *args, **kwargs)


trio.run = run
path = sys.argv[1]
with open(path) as f:
    exec(compile(f.read(), path, "exec"), {"__name__": "__main__"})
"""


def run_snippet(code: str, cwd: Path) -> str:
    (cwd / "snippet.py").write_text(code)
    (cwd / "runner.py").write_text(RUNNER)
    result = subprocess.run(
        # A deprecated name in the README is an error: readers copy what it shows.
        [sys.executable, "-W", "error::DeprecationWarning", "runner.py", "snippet.py"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_readme_has_its_snippets() -> None:
    assert len(SNIPPETS) == 2


@pytest.mark.parametrize("code", SNIPPETS, ids=["node", "engine"])
def test_each_snippet_is_complete(code: str) -> None:
    assert "import trio\n" in code and "trio.run(main)" in code


def test_the_node_snippet_runs(tmp_path: Path) -> None:
    (code,) = [c for c in SNIPPETS if "open_node" in c]
    alice = tmp_path / "alice"  # what `mvds-node --dir alice init --group chat` makes
    alice.mkdir(mode=0o700)
    create_identity(alice / "identity.key")
    chat = GroupConfig(name="chat", id=group_id_for("chat"))
    save_config(NodeConfig(data_dir=alice, listen=("127.0.0.1", 0), groups=(chat,)))
    run_snippet(code, tmp_path)
    store = SQLiteStore(alice / "store.sqlite")
    try:
        assert store.message_count() == 1  # the durable "hello"; the ephemeral one is not kept
    finally:
        store.close()


def test_the_engine_snippet_runs(tmp_path: Path) -> None:
    (code,) = [c for c in SNIPPETS if "Engine(" in c]
    assert run_snippet(code, tmp_path) == "bob got b'hello'\n"
    assert (tmp_path / "alice.db").exists()
