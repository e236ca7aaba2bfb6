"""Target: the signed envelope (``node/_envelope.py``) and the node's check of it.

Bytes from outside go through :func:`open_envelope` (with the default and a small body limit)
and :func:`unwrap`, and through :class:`Authors` as a relayed message of a signed group (the
signature checked) and of a raw group. Only :class:`EnvelopeError` may come out of the parser;
the check and ``unwrap`` never raise. An envelope that opens re-encodes to the same bytes (the
parser is strict), and no input the fuzzer writes is accepted as signed by the member's key.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mvds_node.node._envelope import Authors, EnvelopeError, open_envelope, unwrap
from tests.fuzz._support import GROUP_ID, Input, keypair, signing_key

MAX_LEN = 4096
_ALICE = signing_key("alice").public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
_ME = signing_key("me").public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
_PEER = keypair("peer").public
_AUTHORS = Authors(_ME, {GROUP_ID: frozenset([_ALICE])}, {_PEER: _ALICE})


def TestOneInput(data: bytes) -> None:
    fdp = Input(data)
    small = fdp.ConsumeBool()
    timestamp = fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        opened = open_envelope(body, max_body=64 if small else 1024 * 1024)
    except EnvelopeError:
        pass
    else:
        again = body[:104] + b"".join(opened.path) + body[104 + 32 * len(opened.path) :]
        if again != body or len(opened.author) != 32 or len(opened.signature) != 64:
            raise AssertionError("an envelope that opens does not re-encode to its bytes")
    author, inner = unwrap(body)
    try:
        whole = open_envelope(body)
    except EnvelopeError:
        if (author, inner) != (None, body):
            raise AssertionError("unwrap found an envelope the parser refuses") from None
    else:
        if (author, inner) != (whole.author, whole.body):
            raise AssertionError("unwrap and the parser disagree")
    verdict = _AUTHORS(GROUP_ID, _PEER, timestamp, body, False)
    if verdict is None:
        # Only a real signature by alice (or us) passes; the fuzzer cannot make one, except by
        # replaying a seed, which make_corpus signed for this group and timestamp.
        assert author in (_ALICE, _ME)
    if _AUTHORS(b"raw group", _PEER, timestamp, body, False) is not None:
        raise AssertionError("a raw group refused a body")
