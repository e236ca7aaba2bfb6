"""No package under ``src/mvds_node`` imports another package's private modules.

What one package needs of another is public API: re-exported by that package's ``__init__``
(``from ._mod import Name as Name``, listed in ``__all__``). Inside a package its private modules
import each other freely, and the root's own private modules (``mvds_node._files``) serve every
package. ``tests/sync/test_layering.py`` checks what ``sync/`` may import at all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _package_of(path: Path, src: Path) -> tuple[str, ...]:
    """``("mvds_node", "node")`` for ``src/mvds_node/node/_node.py``; the module's own dotted
    name parts for relative imports come from :func:`_module_parts`."""
    return _module_parts(path, src)[:2]


def _module_parts(path: Path, src: Path) -> tuple[str, ...]:
    parts = path.relative_to(src).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported(tree: ast.AST, module: tuple[str, ...], is_package: bool) -> list[tuple[int, str]]:
    """Every (line, dotted name) the module imports, relative imports resolved, and for
    ``from X import a`` both ``X`` and ``X.a`` (``a`` may be a module)."""
    out: list[tuple[int, str]] = []
    here = module if is_package else module[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return out


def private_imports(src: Path) -> list[str]:
    """``file:line: name`` for each import of another package's private module under ``src``."""
    found: dict[str, None] = {}
    for path in sorted((src / "mvds_node").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        module = _module_parts(path, src)
        own = _package_of(path, src)
        for line, name in _imported(tree, module, path.name == "__init__.py"):
            parts = tuple(name.split("."))
            if parts[0] != "mvds_node" or len(parts) < 3:
                continue  # not ours, or the root package and its own modules
            if parts[:2] == own:
                continue  # inside its own package
            private = [i for i, p in enumerate(parts) if i >= 2 and p.startswith("_")]
            if private:
                module_name = ".".join(parts[: private[0] + 1])
                found[f"{path.relative_to(src)}:{line}: {module_name}"] = None
    return list(found)


def test_no_package_imports_another_packages_private_modules() -> None:
    assert private_imports(SRC) == []


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "mvds_node"
    (pkg / "node").mkdir(parents=True)
    (pkg / "sync").mkdir()
    (pkg / "node" / "_a.py").write_text(
        "from mvds_node.sync._wire import x\n"
        "import mvds_node.sync._wire\n"
        "from mvds_node.sync import _wire\n"
        "from ..sync._wire import y\n"
        "from mvds_node.node._b import fine\n"
        "from mvds_node.sync import public\n"
        "from mvds_node._files import shared\n"
        "def later() -> None:\n"
        "    from mvds_node.sync._state import z\n"
    )
    (pkg / "sync" / "__init__.py").write_text("from mvds_node.sync._wire import x as x\n")
    assert private_imports(tmp_path) == [
        "mvds_node/node/_a.py:1: mvds_node.sync._wire",
        "mvds_node/node/_a.py:2: mvds_node.sync._wire",
        "mvds_node/node/_a.py:3: mvds_node.sync._wire",
        "mvds_node/node/_a.py:4: mvds_node.sync._wire",
        "mvds_node/node/_a.py:9: mvds_node.sync._state",
    ]


def test_importing_the_library_loads_no_backend_client_and_no_command_line() -> None:
    # httpx (which also loads click and rich when they are installed), coredis and h11 load
    # when a backend or the helper is first used, and click and rich with the command line:
    # an application that embeds a node with a file remote log, or runs the simulator, pays
    # for none of them at import time.
    code = (
        "import sys, mvds_node.node, mvds_node.sim, mvds_node.remotelog;"
        "print(sorted(m for m in ('httpx', 'coredis', 'h11', 'click', 'rich') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"
