"""The Go drivers' build: cached by their sources, and a clear line without Go."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.interop import bridge, gobuild


def test_without_go_the_interop_tests_skip_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("MVDS_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"Go toolchain \(go\) is not installed"):
        bridge.go_driver("vacp2p-v0.0.23")


def test_without_go_the_test_command_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("MVDS_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="Go toolchain"):
        bridge.go_driver("vacp2p-v0.0.23")


def test_the_cache_follows_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain (go) is not installed")
    shutil.copytree(gobuild.SOURCES / "vacp2p-v0.0.23", tmp_path / "d")
    monkeypatch.setattr(gobuild, "SOURCES", tmp_path)
    before = gobuild._key("d", go)
    assert gobuild._key("d", go) == before
    main = tmp_path / "d" / "main.go"
    main.write_text(main.read_text() + "\n// changed\n")
    assert gobuild._key("d", go) != before
    (tmp_path / "d" / "notes.txt").write_text("not a source")
    after = gobuild._key("d", go)
    (tmp_path / "d" / "notes.txt").write_text("still not a source")
    assert gobuild._key("d", go) == after
