"""``mvds_node.sync`` is sans-IO, checked by reading its source.

The engine is driven by hand-stepped clocks in tests, by the simulator's virtual clock and by
the Trio node; that only works if nothing in ``sync/`` does I/O, reads a clock, starts threads
or draws global randomness. This test parses every module of the package (the generated
``*_pb2.py`` excepted) and allows only a short list of imports:

* pure standard-library modules (hashing, data structures, typing, ...);
* ``google.protobuf``, for the wire format;
* ``sqlite3``, in ``store/_sqlite.py`` only: the durable store is the one place that touches a
  file, through SQLite and, for large message bodies, its segment files (written by
  ``store/_segments.py``, which may use ``mmap`` for its page-aligned buffer). Both may use the
  file calls they need (listed below, with ``errno`` to say what a failed write means and
  ``os.access`` to refuse a store it cannot write), and nothing else of ``os`` (no clock, no
  environment, no processes);
* other modules of ``mvds_node.sync``, and ``mvds_node.errors``.

It also refuses calls that reach the outside world without an import statement (``open``,
``print``, ``__import__``, ...) and any use of a clock, socket, thread or random module by
name (``time.time()``), which catches code that gets such a module by another route.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mvds_node.sync

SYNC_DIR = Path(mvds_node.sync.__file__).resolve().parent
PACKAGE = "mvds_node.sync"

# Modules that do I/O, read a clock, run concurrently or hold global random state. Named here so
# that a violation says what it is; anything not allowed below is refused anyway.
FORBIDDEN = frozenset(
    {
        "asyncio",
        "datetime",
        "os",
        "random",
        "secrets",
        "select",
        "selectors",
        "socket",
        "threading",
        "time",
        "trio",
    }
)
PURE_STDLIB = frozenset(
    {
        "__future__",
        "abc",
        "base64",
        "binascii",
        "bisect",
        "collections",
        "contextlib",
        "copy",
        "dataclasses",
        "enum",
        "functools",
        "hashlib",
        "heapq",
        "hmac",
        "itertools",
        "math",
        "numbers",
        "operator",
        "struct",
        "types",
        "typing",
        "warnings",
    }
)
ALLOWED_PACKAGES = (PACKAGE, "mvds_node.errors", "google.protobuf")
# Per file: modules allowed there only, and the only attributes of them that may be used.
FILE_EXCEPTIONS: dict[str, dict[str, frozenset[str] | None]] = {
    "store/_sqlite.py": {
        "sqlite3": None,
        # Telling a full disk from a read-only one, and refusing a store it cannot write.
        "errno": None,
        # The package's file steps (a directory flush), besides what every module may import.
        "mvds_node": frozenset({"errors", "sync", "_files"}),
        "os": frozenset(
            {
                "fspath",
                "PathLike",
                "path",
                "open",
                "close",
                "pread",
                "makedirs",
                "listdir",
                "unlink",
                "O_RDONLY",
                "access",
                "W_OK",
                # A probe file: the one test of a file system the kernel took read-only.
                "O_CREAT",
                "O_WRONLY",
            }
        ),
    },
    "store/_segments.py": {
        # One writer thread per open segment, joined when the segment is closed; the store
        # waits for its writes before every commit, so callers see synchronous writes.
        "concurrent": None,
        "errno": None,
        "mmap": frozenset({"mmap"}),
        "os": frozenset(
            {
                "open",
                "close",
                "preadv",
                "pwrite",
                "ftruncate",
                "fsync",
                "posix_fadvise",
                "POSIX_FADV_DONTNEED",
                "O_RDWR",
                "O_CREAT",
            }
        ),
    },
}
# Builtins that do I/O or import by name.
FORBIDDEN_CALLS = frozenset(
    {"open", "input", "print", "breakpoint", "__import__", "exec", "eval", "compile"}
)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _resolve(node: ast.ImportFrom, module: str) -> list[str]:
    """The absolute module names an ``import from`` statement in ``module`` loads.

    ``from m import x`` gives ``m.x`` for each name: ``x`` may be a submodule, and a name taken
    from a module is checked like an attribute of it (``from os import environ``).
    """
    if node.level == 0:
        base = node.module or ""
    else:
        # Relative to the importing module's package (a package's __init__ is its own package).
        parts = module.split(".")
        base = ".".join(parts[: len(parts) - node.level])
        if node.module:
            base = f"{base}.{node.module}" if base else node.module
    return [f"{base}.{alias.name}" for alias in node.names]


def _module_name(relpath: str) -> str:
    # A package's __init__ keeps its "__init__" part, so that level 1 strips only that.
    return ".".join([PACKAGE, *relpath.removesuffix(".py").split("/")])


def violations(source: str, relpath: str) -> list[str]:
    """Every way ``source`` (the module at ``relpath`` under ``sync/``) breaks the rule."""
    exceptions = FILE_EXCEPTIONS.get(relpath, {})
    module = _module_name(relpath)
    found: list[str] = []

    def check(name: str, lineno: int) -> None:
        top, _, rest = name.partition(".")
        if top in exceptions:
            allowed = exceptions[top]
            attr = rest.partition(".")[0]
            if allowed is not None and attr and attr not in allowed:
                found.append(f"{relpath}:{lineno}: uses {top}.{attr}")
            return
        if top in FORBIDDEN:
            found.append(f"{relpath}:{lineno}: imports {name} (I/O, clock, threads or random)")
        elif top in PURE_STDLIB or any(_within(name, p) for p in ALLOWED_PACKAGES):
            return
        else:
            found.append(f"{relpath}:{lineno}: imports {name}, which sync/ may not use")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            for name in _resolve(node, module):
                check(name, node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{relpath}:{node.lineno}: calls {func.id}()")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            root = node.value.id
            if root in exceptions:
                allowed = exceptions[root]
                if allowed is not None and node.attr not in allowed:
                    found.append(f"{relpath}:{node.lineno}: uses {root}.{node.attr}")
            elif root in FORBIDDEN:
                found.append(f"{relpath}:{node.lineno}: uses {root}.{node.attr}")
    return found


def sync_modules() -> list[str]:
    return sorted(
        p.relative_to(SYNC_DIR).as_posix()
        for p in SYNC_DIR.rglob("*.py")
        if not p.name.endswith("_pb2.py")
    )


def test_every_module_is_checked() -> None:
    modules = sync_modules()
    assert {
        "__init__.py",
        "_backoff.py",
        "_causal.py",
        "_config.py",
        "_drain.py",
        "_engine.py",
        "_events.py",
        "_export.py",
        "_peers.py",
        "_receive.py",
        "_requests.py",
        "_send.py",
        "_state.py",
        "store/__init__.py",
        "store/_memory.py",
        "store/_protocol.py",
        "store/_segments.py",
        "store/_sqlite.py",
        "_wire.py",
        "proto/__init__.py",
    } <= set(modules)
    # Generated code is left out, and it is there to be left out.
    assert (SYNC_DIR / "proto" / "mvds_pb2.py").is_file()
    assert not any(m.endswith("_pb2.py") for m in modules)


@pytest.mark.parametrize("relpath", sync_modules())
def test_module_is_sans_io(relpath: str) -> None:
    assert violations((SYNC_DIR / relpath).read_text(), relpath) == []


# ------------------------------------------------------------------- the checker checked

PLANTED = [
    ("_engine.py", "import time\n"),
    ("_engine.py", "import trio\n"),
    ("_engine.py", "import asyncio as aio\n"),
    ("_engine.py", "from socket import socket\n"),
    ("_engine.py", "import os.path\n"),
    ("_engine.py", "from os import urandom\n"),
    ("_engine.py", "from threading import Thread\n"),
    ("_engine.py", "import select\n"),
    ("_engine.py", "import selectors\n"),
    ("_engine.py", "from datetime import datetime\n"),
    ("_engine.py", "from secrets import token_bytes\n"),
    ("_engine.py", "def f() -> float:\n    import random\n    return random.random()\n"),
    ("_engine.py", "if TYPE_CHECKING:\n    import trio\n"),
    ("_engine.py", "try:\n    import time\nexcept ImportError:\n    pass\n"),
    # No import statement, but a clock or randomness by name.
    ("_engine.py", "def f(now: float = time.time()) -> None: ...\n"),
    ("_engine.py", "x = random.randrange(10)\n"),
    ("_engine.py", "deadline = time.monotonic\n"),
    # Importing by other routes, and I/O without an import.
    ("_engine.py", "clock = __import__('time')\n"),
    ("_engine.py", "import importlib\n"),
    ("_engine.py", "data = open('state.bin').read()\n"),
    ("_engine.py", "print('debug')\n"),
    # Not a pure module, nor one of ours.
    ("_engine.py", "import urllib.request\n"),
    ("_engine.py", "import subprocess\n"),
    ("_engine.py", "import logging\n"),
    ("_engine.py", "import sys\n"),
    # Other layers of the project.
    ("_engine.py", "from mvds_node.node import Node\n"),
    ("_engine.py", "from mvds_node.transports import memory\n"),
    ("_engine.py", "from .. import remotelog\n"),
    ("_engine.py", "from ..sim import Net\n"),
    # sqlite3 belongs to the SQLite store alone, and so does its sliver of os.
    ("_engine.py", "import sqlite3\n"),
    ("store/_protocol.py", "import sqlite3\n"),
    ("store/_memory.py", "import os\n"),
    ("_sqlite.py", "import sqlite3\n"),
    ("proto/_sqlite.py", "import sqlite3\n"),
    ("store/_sqlite.py", "import os\npid = os.getpid()\n"),
    ("store/_sqlite.py", "from os import environ\n"),
    ("store/_sqlite.py", "import time\n"),
]


@pytest.mark.parametrize(("relpath", "source"), PLANTED)
def test_checker_catches_planted_violation(relpath: str, source: str) -> None:
    assert violations(source, relpath) != []


ALLOWED = [
    ("_engine.py", "import hashlib\nimport math\nfrom collections import deque\n"),
    ("_engine.py", "from collections.abc import Iterable\nfrom typing import Final\n"),
    ("_engine.py", "from mvds_node.errors import LocalProtocolError\n"),
    ("_engine.py", "from mvds_node.sync._wire import message_id\n"),
    ("_engine.py", "from . import _wire\nfrom ._state import TRANSITIONS\n"),
    ("_engine.py", "from .. import errors\n"),
    ("_wire.py", "from google.protobuf.message import DecodeError\n"),
    ("proto/__init__.py", "from . import mvds_pb2\nfrom .. import _wire\n"),
    ("store/_sqlite.py", "import os\nimport sqlite3\npath = os.fspath(p)\nT = os.PathLike[str]\n"),
    # A local name that merely looks like a module is fine when not used as one.
    ("_engine.py", "def f(epoch: int) -> int:\n    time_left = epoch\n    return time_left\n"),
]


@pytest.mark.parametrize(("relpath", "source"), ALLOWED)
def test_checker_allows_pure_code(relpath: str, source: str) -> None:
    assert violations(source, relpath) == []


def test_relative_imports_resolve_from_the_module_package() -> None:
    # In sync/_engine.py ".." is mvds_node; in sync/proto/__init__.py it is mvds_node.sync.
    assert violations("from .. import node\n", "_engine.py") != []
    assert violations("from .. import _engine\n", "proto/__init__.py") == []
    assert violations("from ... import node\n", "proto/__init__.py") != []
