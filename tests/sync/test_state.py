"""The record table in ``sync/_state.py``: complete, the same as docs/engine.md, the only writer.

The table is the engine's one account of what happens to a (message, peer) record; the doc
shows it to readers, so the two must not drift. ``apply`` is the only code that assigns a
record's fields (an AST scan of ``sync/`` checks it), and a pair missing from the table is an
engine bug that raises ``LocalProtocolError``, which the payload fuzz target lets escape as a
finding.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mvds_node.sync
from mvds_node.errors import LocalProtocolError
from mvds_node.sync._state import (
    TRANSITIONS,
    Input,
    Record,
    RecordType,
    apply,
    blank,
    create,
    step,
    transition,
)
from tests.fuzz import fuzz_payload

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "engine.md"
SYNC_DIR = Path(mvds_node.sync.__file__).resolve().parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus" / "payload"
M, P, G = b"m" * 32, b"p" * 32, b"g" * 32
RECORD_FIELDS = frozenset({"type", "send_count", "send_epoch", "first_epoch", "parked"})


def _name(t: RecordType) -> str:
    return "none" if t is RecordType.NONE else t.name


def doc_table() -> dict[tuple[str, str], tuple[str, str]]:
    """(input, state) -> (result, why), read from the markdown table in docs/engine.md."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("<!-- state table")
    end = text.index("<!-- end of state table -->")
    rows: dict[tuple[str, str], tuple[str, str]] = {}
    for line in text[start:end].splitlines()[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("input", "---"):
            continue
        key = (cells[0].strip("`"), cells[1])
        assert key not in rows, f"{key} is in the doc's table twice"
        rows[key] = (cells[2], cells[3])
    return rows


def code_table() -> dict[tuple[str, str], tuple[str, str]]:
    return {
        (event.name, _name(state)): ("kept" if s.kept else _name(s.to), s.why)
        for (state, event), s in TRANSITIONS.items()
    }


def test_every_state_has_a_result_for_every_input() -> None:
    missing = [(s, e) for s in RecordType for e in Input if (s, e) not in TRANSITIONS]
    assert missing == []
    assert all(step.why for step in TRANSITIONS.values())


def test_the_doc_shows_the_code_table() -> None:
    doc, code = doc_table(), code_table()
    assert len(doc) == len(RecordType) * len(Input)
    assert {k: v for k, v in doc.items() if code.get(k) != v} == {}
    assert set(code) - set(doc) == set()


def test_a_pair_left_out_raises_local_protocol_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(TRANSITIONS, (RecordType.REQUEST, Input.GOT_REQUEST))
    stale = Record(M, P, RecordType.REQUEST, b"", 2, 5, 1)
    with pytest.raises(LocalProtocolError, match="REQUEST \\+ GOT_REQUEST"):
        apply(stale, Input.GOT_REQUEST, due=3)
    with pytest.raises(LocalProtocolError):
        transition(RecordType.REQUEST, Input.GOT_REQUEST)


def test_the_payload_fuzz_target_lets_a_missing_pair_escape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A missing transition reached from peer input must be a finding, not swallowed."""
    seeds = sorted(CORPUS.iterdir())
    for seed in seeds:  # the seeds run clean with the whole table
        fuzz_payload.TestOneInput(seed.read_bytes())
    # Without what a request does to a record, a seed that asks for our message stops.
    for state in RecordType:
        monkeypatch.delitem(TRANSITIONS, (state, Input.GOT_REQUEST))
    escaped = 0
    for seed in seeds:
        try:
            fuzz_payload.TestOneInput(seed.read_bytes())
        except LocalProtocolError:
            escaped += 1
    assert escaped


def test_created_records_start_afresh() -> None:
    made = create(M, P, G, Input.SHARE_BATCH, due=7)
    assert made == Record(M, P, RecordType.MESSAGE, G, 0, 7, -1, False)
    assert create(M, P, b"", Input.GOT_OFFER_MISSING, due=2).type is RecordType.REQUEST
    assert apply(blank(M, P, G), Input.GOT_ACK) is None
    with pytest.raises(LocalProtocolError):
        create(M, P, G, Input.GOT_ACK, due=1)


def test_a_request_answers_an_offer_and_keeps_its_schedule_but_replaces_a_request() -> None:
    offer = Record(M, P, RecordType.OFFER, G, 3, 9, 4, True)
    assert step(offer, Input.GOT_REQUEST, due=10) == Record(M, P, RecordType.MESSAGE, G, 3, 10, 4)
    stale = Record(M, P, RecordType.REQUEST, b"", 3, 9, 4)
    assert step(stale, Input.GOT_REQUEST, due=10, group_id=G) == Record(
        M, P, RecordType.MESSAGE, G, 0, 10
    )


def test_transmissions_count_and_keep_the_first_epoch() -> None:
    r = create(M, P, G, Input.SHARE_INTERACTIVE, due=1)
    once = step(r, Input.TRANSMITTED, epoch=1, due=3)
    twice = step(once, Input.TRANSMITTED, epoch=3, due=7)
    assert (twice.send_count, twice.send_epoch, twice.first_epoch) == (2, 7, 1)
    back = step(twice, Input.NOT_SENT, due=4)
    assert (back.send_count, back.send_epoch, back.first_epoch) == (1, 4, 1)
    exported = step(back, Input.EXPORTED, epoch=5, due=2)
    assert (exported.send_count, exported.send_epoch) == (2, 4)  # never earlier than it was
    assert once is r  # a record that stays is updated in place


def test_reset_renews_offers_and_messages_but_not_a_requests_age() -> None:
    parked = step(Record(M, P, RecordType.MESSAGE, G, 5, 9, 2), Input.GIVE_UP)
    assert parked.parked and parked.send_epoch == 9
    assert step(parked, Input.RESET, due=11) == Record(M, P, RecordType.MESSAGE, G, 0, 11)
    request = Record(M, P, RecordType.REQUEST, G, 5, 9, 2, True)
    assert step(request, Input.REARM, due=11) == Record(M, P, RecordType.REQUEST, G, 0, 11, 2)


def test_kept_means_the_same_record() -> None:
    r = Record(M, P, RecordType.REQUEST, G, 1, 4, 1)
    assert apply(r, Input.GOT_ACK) is r
    assert apply(r, Input.GOT_OFFER_MISSING) is r
    assert apply(r, Input.GOT_MESSAGE_ELSEWHERE) is None


def test_no_other_code_assigns_record_fields() -> None:
    """Only ``_state.py`` sets a record's fields: an assignment to one of them elsewhere in
    ``sync/`` (``r.send_count += 1``) would bypass the table."""
    found = []
    for path in sorted(SYNC_DIR.rglob("*.py")):
        if path.name == "_state.py" or path.name.endswith("_pb2.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.stmt):
                continue
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            for t in targets:
                if (
                    isinstance(t, ast.Attribute)
                    and t.attr in RECORD_FIELDS
                    and not (isinstance(t.value, ast.Name) and t.value.id == "self")
                ):
                    found.append(f"{path.name}:{node.lineno} .{t.attr}")
    assert found == []


def test_the_fast_paths_agree_with_apply() -> None:
    """``transmitted`` and ``create_for``, the drain's and the send's shortcuts, give what
    ``apply`` gives for every record type, and refuse what the table refuses."""
    from mvds_node.errors import LocalProtocolError
    from mvds_node.sync._state import (
        Input,
        Record,
        RecordType,
        apply,
        blank,
        create_for,
        transmitted,
    )

    for kind in (RecordType.OFFER, RecordType.REQUEST, RecordType.MESSAGE):
        for first in (-1, 3):
            a = Record(b"m", b"p", kind, b"g", 2, 5, first)
            b = Record(b"m", b"p", kind, b"g", 2, 5, first)
            assert transmitted(a, 7, 9) == apply(b, Input.TRANSMITTED, epoch=7, due=9)
    with pytest.raises(LocalProtocolError):
        transmitted(blank(b"m", b"p"), 7, 9)
    for share in (Input.SHARE_BATCH, Input.SHARE_INTERACTIVE):
        made = create_for([b"m1", b"m2"], [(b"p1", 4), (b"p2", 6)], b"g", share)
        expected = [
            apply(blank(mid, peer, b"g"), share, due=due)
            for peer, due in [(b"p1", 4), (b"p2", 6)]
            for mid in (b"m1", b"m2")
        ]
        assert made == expected
    with pytest.raises(LocalProtocolError):
        create_for([b"m"], [(b"p", 1)], b"g", Input.GOT_ACK)
