"""Every fuzz target, in a subprocess each: its seeds replayed, then a bounded number of new
inputs; a finding fails the test.

The budget (:data:`RUNS` new inputs or :data:`SECONDS` of wall time per target, whichever comes
first) keeps the whole module within three minutes on a shared two-core machine; ``python3
dev.py fuzz`` runs the same targets for as long as asked. atheris is imported by the workers
only, never by pytest's process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fuzz import run

RUNS = 20_000
"""New inputs per target after its seeds."""
SECONDS = 6.0
"""Wall-time bound per target, worker start-up included (15 targets: about 1.5 minutes)."""


def test_every_target_has_seeds() -> None:
    """Each target replays a committed corpus made by make_corpus.py."""
    corpus = Path(run.__file__).parent / "corpus"
    assert run.targets(), "no fuzz targets found"
    for target in run.targets():
        assert any((corpus / target).iterdir()), f"{target} has no seeds"


@pytest.mark.slow
@pytest.mark.parametrize("target", run.targets())
def test_target_has_no_finding(target: str) -> None:
    summary = run.run_target(target, runs=RUNS, seconds=SECONDS, tolerate=run.KNOWN.get(target, ()))
    assert summary["inputs"] >= summary["seeds"] > 0, summary
    assert summary["findings"] == [], summary


def test_only_known_findings_are_counted(tmp_path: Path) -> None:
    """A known finding is counted and the run goes on; anything else is still a finding."""

    def target(data: bytes) -> None:
        if data == b"known":
            raise ValueError("Error computing shared key.")
        if data == b"other":
            raise ValueError("something else")

    counts = tmp_path / "counts.json"
    one_input = run._tolerating(target, ("ValueError: Error computing shared key.",), counts)
    one_input(b"known")
    one_input(b"fine")
    assert json.loads(counts.read_text()) == {"ValueError: Error computing shared key.": 1}
    with pytest.raises(ValueError, match="something else"):
        one_input(b"other")


def test_inputs_are_counted_from_libfuzzer_output() -> None:
    log = b"#2\tINITED cov: 3\n#4096\tpulse\nDone 5000 runs\nstat::number_of_executed_units: 5001\n"
    assert run._executed(log) == 5001
    assert run._executed(b"#2\tINITED\n#77\tNEW cov: 4\n==1== ERROR: crash\n") == 77
