"""``mvds_node.sync`` stays sans-IO: no trio, sockets, clocks or global randomness in it.

Time enters the engine as ``now`` and every timer is a deadline it returns; a stray ``import
time`` or ``random.random()`` would make it untestable by hand-stepped clocks and simulations.
The check reads the source (AST), so it also catches imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mvds_node.sync

SYNC = Path(mvds_node.sync.__file__).resolve().parent

# Modules that do I/O, read a clock, or hold global random state.
FORBIDDEN_MODULES = frozenset(
    {
        "asyncio",
        "datetime",
        "os",
        "random",
        "secrets",
        "select",
        "selectors",
        "socket",
        "ssl",
        "subprocess",
        "threading",
        "time",
        "trio",
        "urllib",
        "http",
        "mvds_node.node",
        "mvds_node.transports",
        "mvds_node.remotelog",
    }
)
# Only the SQLite store may open files, and only through sqlite3 (os for fspath).
ALLOWED_IN = {"_sqlite.py": frozenset({"os"})}
FORBIDDEN_CALLS = frozenset({"open", "input", "print", "__import__", "exec", "eval"})


def violations(source: str, filename: str) -> list[str]:
    """What in ``source`` breaks the sans-IO rule (empty if nothing)."""
    allowed = ALLOWED_IN.get(filename, frozenset())
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            for bad in FORBIDDEN_MODULES:
                if (name == bad or name.startswith(bad + ".") or top == bad) and (
                    top not in allowed
                ):
                    found.append(f"{filename}:{getattr(node, 'lineno', 0)}: imports {name}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            found.append(f"{filename}:{node.lineno}: calls {node.func.id}()")
    return found


def sync_sources() -> list[Path]:
    return sorted(p for p in SYNC.rglob("*.py") if not p.name.endswith("_pb2.py"))


def test_there_is_something_to_check() -> None:
    names = {p.name for p in sync_sources()}
    assert {"_engine.py", "_wire.py", "_store.py", "_sqlite.py", "_state.py"} <= names


@pytest.mark.parametrize("path", sync_sources(), ids=lambda p: p.name)
def test_sync_is_sans_io(path: Path) -> None:
    assert violations(path.read_text(), path.name) == []


@pytest.mark.parametrize(
    "planted",
    [
        "import time\n",
        "import trio\n",
        "from socket import socket\n",
        "def f():\n    import random\n    return random.random()\n",
        "from datetime import datetime\n",
        "from mvds_node.transports import TcpTransport\n",
        "def f():\n    return open('x')\n",
        "import os.path\n",
    ],
)
def test_checker_catches_planted_violations(planted: str) -> None:
    assert violations(planted, "_engine.py")


def test_checker_allows_pure_modules() -> None:
    clean = (
        "import hashlib\nimport math\nfrom collections import deque\n"
        "from mvds_node.errors import X\n"
    )
    assert violations(clean, "_engine.py") == []
    assert violations("import os\n", "_sqlite.py") == []
