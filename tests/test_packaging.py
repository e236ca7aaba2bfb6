"""The package as people install it: the wheel's contents, its metadata, and the command it gives.

The wheel is built from a copy of the tree (``pip wheel``, no build isolation: setuptools comes
from the lock file), then installed with ``--no-deps`` into a fresh virtual environment that
borrows the dependencies from the running one, so nothing is downloaded.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from mvds_node.node import GroupConfig, NodeConfig, create_identity, group_id_for, save_config
from mvds_node.sync import SQLiteStore
from tests.test_readme import run_snippet

ROOT = Path(__file__).resolve().parents[1]
PYPI_README = ROOT / "docs" / "pypi.md"
WHEEL_MUST_HOLD = [
    "mvds_node/py.typed",
    "mvds_node/sync/proto/mvds_pb2.py",
    "mvds_node/sync/proto/mvds_pb2.pyi",
    "mvds_node/sync/proto/mvds.proto",
    "mvds_node/remotelog/proto/remotelog_pb2.py",
    "mvds_node/remotelog/proto/cas_pb2.py",
    "mvds_node/remotelog/proto/ns_pb2.py",
    "mvds_node-0.1.0.dist-info/licenses/LICENSE",
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "LICENSE", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, tree / name)
    (tree / "docs").mkdir()
    shutil.copy(PYPI_README, tree / "docs" / "pypi.md")
    shutil.copytree(
        ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(tree),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("mvds_node-*.whl")
    return built


def test_the_wheel_holds_the_types_the_gencode_and_the_license(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in WHEEL_MUST_HOLD if n not in names]
    assert not missing, missing
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_the_metadata_describes_the_package_for_its_users(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        raw = z.read("mvds_node-0.1.0.dist-info/METADATA").decode()
    meta = email.message_from_string(raw)
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["Description-Content-Type"] == "text/markdown"
    description = meta.get_payload()
    assert isinstance(description, str)
    # The description is docs/pypi.md: it opens with what the package is and how to install it,
    # not with the repository's developer commands.
    assert description.strip() == PYPI_README.read_text().strip()
    assert "pip install mvds-node" in description
    assert "dev.py" not in description
    assert "Typing :: Typed" in meta.get_all("Classifier", [])
    entry_points = zipfile.ZipFile(wheel).read("mvds_node-0.1.0.dist-info/entry_points.txt")
    assert b"mvds-node = mvds_node.node.cli:main" in entry_points


def test_installing_the_wheel_gives_a_working_command(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    fresh = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies come from the running environment, appended after the fresh one's own.
    Path(fresh, "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "-q",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
        env=env,
    )
    command = env_dir / "bin" / "mvds-node"
    result = subprocess.run(
        [command, "--version"], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "mvds-node 0.1.0"
    where = subprocess.run(
        [python, "-c", "import mvds_node; print(mvds_node.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert where.startswith(fresh), where  # the wheel's copy, not the source tree


def test_the_library_example_on_the_package_index_runs(tmp_path: Path) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", PYPI_README.read_text(), re.DOTALL)
    alice = tmp_path / "alice"  # what `mvds-node --dir alice init --group chat` makes
    alice.mkdir(mode=0o700)
    create_identity(alice / "identity.key")
    chat = GroupConfig(name="chat", id=group_id_for("chat"))
    save_config(NodeConfig(data_dir=alice, listen=("127.0.0.1", 0), groups=(chat,)))
    run_snippet(code, tmp_path)
    store = SQLiteStore(alice / "store.sqlite")
    try:
        assert store.message_count() == 1
    finally:
        store.close()
