"""dev.py: the test command's phase timings, and `dev.py fuzz`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import dev


@pytest.fixture
def no_venv(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Run dev.py's commands without building a venv or running anything; return the argv's."""
    ran: list[tuple[str, ...]] = []
    monkeypatch.setattr(dev, "_PHASES", [])
    monkeypatch.setattr(dev, "ensure_venv", lambda: None)
    monkeypatch.setattr(dev, "check_gencode", lambda: None)
    monkeypatch.setattr(dev, "ensure_services", lambda: None)
    monkeypatch.setattr(dev, "ensure_kubo", lambda: None)
    monkeypatch.setattr(dev, "_run", lambda *argv, env=None: ran.append(tuple(map(str, argv))))
    return ran


def _phases(stderr: str) -> list[list[str]]:
    table = stderr.split("dev.py: time per phase\n", 1)[1]
    return [line.split() for line in table.splitlines() if line.startswith("  ")]


def test_test_prints_each_phase_time(
    no_venv: list[tuple[str, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    dev.main(["test"])
    rows = _phases(capsys.readouterr().err)
    names = [" ".join(r[: r.index("s") - 1]) for r in rows]
    assert names == [
        "venv and install",
        "ruff check",
        "ruff format --check",
        "mypy --strict",
        "gencode check",
        "services install",
        "go-interop",
        "kubo build",
        "pytest",
        "pytest tests/fuzz",
        "total",
    ]
    assert all(r[-1] == "ok" for r in rows[:-1])
    pytests = [argv[3:] for argv in no_venv if argv[1:3] == ("-m", "pytest")]
    assert pytests == [("--ignore=tests/fuzz",), ("tests/fuzz",)]


def test_test_prints_phases_on_failure(
    no_venv: list[tuple[str, ...]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def mypy_fails(*argv: object, env: object = None) -> None:
        if "mypy" in str(argv[0]):
            raise SystemExit("dev.py: failed (1): mypy")

    monkeypatch.setattr(dev, "_run", mypy_fails)
    with pytest.raises(SystemExit, match="mypy"):
        dev.main(["test"])
    rows = _phases(capsys.readouterr().err)
    assert [r[-1] for r in rows[:-1]] == ["ok", "ok", "ok", "failed"]
    assert rows[3][:2] == ["mypy", "--strict"]


def test_test_with_pytest_arguments_runs_one_pytest_phase(
    no_venv: list[tuple[str, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    dev.main(["test", "-k", "noise"])
    assert _phases(capsys.readouterr().err)[-2][0] == "pytest"
    assert [argv[3:] for argv in no_venv if argv[1:3] == ("-m", "pytest")] == [("-k", "noise")]


@pytest.mark.slow
def test_fuzz_runs_a_target_and_prints_its_json(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dev, "ensure_venv", lambda: None)
    monkeypatch.setattr(dev, "VENV", Path(sys.executable).parent.parent)  # this venv
    dev.main(["fuzz", "--target", "framing", "--seconds", "4", "--runs", "2000"])
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert [line["target"] for line in lines] == ["framing"]
    assert lines[0]["findings"] == [] and lines[0]["inputs"] > lines[0]["seeds"] > 0


def test_fuzz_refuses_an_unknown_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "ensure_venv", lambda: None)
    monkeypatch.setattr(dev, "VENV", Path(sys.executable).parent.parent)
    with pytest.raises(SystemExit, match="no fuzz target nope"):
        dev.main(["fuzz", "--target", "nope"])


def test_kubo_build_is_skipped_once_the_binary_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    binary = tmp_path / "mvds-node" / f"kubo-{dev.KUBO_VERSION}" / "ipfs"
    assert dev.kubo_path() == binary
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"")

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("built again")

    monkeypatch.setattr(subprocess, "run", no_build)
    dev.ensure_kubo()


def test_kubo_build_without_go_says_so_and_with_a_failing_go_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    dev.ensure_kubo()  # no Go at all
    assert "Go is missing: the Kubo tests skip" in capsys.readouterr().err
    (tmp_path / "bin").mkdir()
    go = tmp_path / "bin" / "go"
    go.write_text("#!/bin/sh\necho 'proxy said no' >&2\nexit 1\n")
    go.chmod(0o755)
    with pytest.raises(dev.KuboBuildFailed):
        dev.ensure_kubo()
    err = capsys.readouterr().err
    assert "Kubo build failed at `go mod download`" in err and "proxy said no" in err
    assert not dev.kubo_path().exists()


def test_a_failed_kubo_build_fails_its_phase_and_the_tests_still_run(
    no_venv: list[tuple[str, ...]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fails() -> None:
        raise dev.KuboBuildFailed("build")

    monkeypatch.setattr(dev, "ensure_kubo", fails)
    dev.main(["test"])
    rows = {" ".join(r[: r.index("s") - 1]): r[-1] for r in _phases(capsys.readouterr().err)}
    assert rows["kubo build"] == "failed" and rows["pytest"] == "ok"
