"""The reason tokens ``InputRejected`` documents are exactly the ones the carriers emit."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import mvds_node
from mvds_node.transports import InputRejected

SRC = Path(mvds_node.__file__).parent
# A literal reason: the third argument of InputRejected(...), or the first of a carrier's
# _reject(...) helper. An f-string placeholder stands for a FrameErrorReason value.
CALLS = (
    re.compile(
        r"InputRejected\(\s*[^,()]+(?:\([^()]*\))?,\s*[^,()]+(?:\([^()]*\))?,\s*f?\"([^\"]+)\""
    ),
    re.compile(r"_reject\(\s*f?\"([^\"]+)\""),
)


def emitted() -> set[str]:
    tokens = set()
    for package in ("transports", "node"):
        for path in (SRC / package).glob("*.py"):
            text = path.read_text()
            for pattern in CALLS:
                for token in pattern.findall(text):
                    tokens.add(re.sub(r"\{[^}]*\}", "<FrameErrorReason value>", token))
    return tokens


def documented() -> set[str]:
    source = inspect.getsource(InputRejected)
    block = source[source.index("reason: str") : source.index("detail: str")]
    return set(re.findall(r"``([^`]+)``", block))


def test_every_emitted_reason_is_documented_and_no_other() -> None:
    found = emitted()
    assert {"unknown-key", "replay", "frame:<FrameErrorReason value>"} <= found
    assert documented() == found
