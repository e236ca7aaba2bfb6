"""docs/wire.md cannot rot: every example in it is parsed and checked against the codec."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from mvds_node import transports
from mvds_node.transports import (
    MAX_PLAINTEXT,
    PROLOGUE,
    Frame,
    FrameError,
    FrameErrorReason,
    Keypair,
    decode_frame,
    encode_frame,
    seal_to,
)

WIRE_MD = Path(__file__).parents[2] / "docs" / "wire.md"
BLOCK = re.compile(r"^```(frame|frame-error)\n(.*?)^```$", re.MULTILINE | re.DOTALL)

# What an example's first line may name: the frame classes and constants, nothing else.
NAMESPACE: dict[str, object] = {
    "__builtins__": {},
    "bytes": bytes,
    **{name: getattr(transports, name) for name in transports.__all__},
}


@dataclass(frozen=True)
class Example:
    kind: str
    head: str
    data: bytes
    line: int


def parse_hex(lines: list[str]) -> bytes:
    return bytes.fromhex("".join(line.split("#", 1)[0] for line in lines))


def examples() -> list[Example]:
    text = WIRE_MD.read_text(encoding="utf-8")
    found = []
    for match in BLOCK.finditer(text):
        head, *rest = match.group(2).rstrip("\n").split("\n")
        line = text.count("\n", 0, match.start()) + 1
        found.append(Example(match.group(1), head.strip(), parse_hex(rest), line))
    return found


EXAMPLES = examples()


def test_the_doc_has_examples() -> None:
    kinds = [example.kind for example in EXAMPLES]
    assert kinds.count("frame") >= 8
    assert kinds.count("frame-error") >= 8
    # Every refusal reason that a datagram can produce has an example, except the one that
    # needs a 4 MiB packet to show.
    shown = {example.head for example in EXAMPLES if example.kind == "frame-error"}
    assert shown == {reason.value for reason in FrameErrorReason} - {"oversized"}


@pytest.mark.parametrize(
    "example",
    [example for example in EXAMPLES if example.kind == "frame"],
    ids=lambda example: f"wire.md:{example.line}",
)
def test_frame_example(example: Example) -> None:
    frame = eval(example.head, NAMESPACE)
    assert isinstance(frame, Frame)
    assert encode_frame(frame).hex(" ") == example.data.hex(" ")
    assert decode_frame(example.data) == frame


@pytest.mark.parametrize(
    "example",
    [example for example in EXAMPLES if example.kind == "frame-error"],
    ids=lambda example: f"wire.md:{example.line}",
)
def test_frame_error_example(example: Example) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(example.data)
    assert info.value.reason.value == example.head


def test_numbers_in_the_prose() -> None:
    text = WIRE_MD.read_text(encoding="utf-8")
    assert PROLOGUE.hex(" ") in text
    assert str(MAX_PLAINTEXT) in text
    # The sizes of empty sealed blobs quoted in section 3.
    recipient = Keypair.generate()
    n_blob = len(seal_to(recipient.public, b""))
    x_blob = len(seal_to(recipient.public, b"", sender_static=Keypair.generate()))
    assert f"a {n_blob}-byte N blob or\na {x_blob}-byte X blob" in text
