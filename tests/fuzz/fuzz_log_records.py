"""Target: remote-log records one by one (``remotelog/_format.py``).

The first byte picks the decoder, the rest is the record: a page (``parse_page``), a sealed page
(``unseal`` with the group key, then ``parse_page``), a signed head (``open_head`` and
``signed_seq``, which helpers and backends run on what a client sends) or an acknowledgement
record (``decode_acks``, with and without a member filter). Only :class:`LogError` may come out.
"""

from __future__ import annotations

from mvds_node.remotelog._format import (
    LogError,
    decode_acks,
    log_name,
    open_head,
    parse_page,
    signed_seq,
    unseal,
)
from mvds_node.remotelog._format import public_key as signing_public_key
from tests.fuzz._support import GROUP_ID, GROUP_KEY, seed_bytes, signing_key

MAX_LEN = 8192
WRITER = signing_public_key(signing_key("writer"))
NAME = log_name(WRITER, GROUP_ID)
MEMBERS = frozenset({WRITER, seed_bytes("member")})
PAGE, SEALED_PAGE, HEAD, ACKS = range(4)


def TestOneInput(data: bytes) -> None:
    kind, record = (data[0] % 4, data[1:]) if data else (PAGE, b"")
    try:
        if kind == PAGE:
            page = parse_page(record, NAME)
            if any(len(p.message_id) != 32 for p in page.pairs):
                raise AssertionError("parse_page kept a pair without a 32-byte ID")
        elif kind == SEALED_PAGE:
            parse_page(unseal(GROUP_KEY, record, NAME), NAME)
        elif kind == HEAD:
            seq = signed_seq(record)
            head = open_head(record, NAME, WRITER)
            if seq != head.seq:
                raise AssertionError("signed_seq and open_head disagree on the sequence")
        else:
            acks = decode_acks(record, NAME)
            filtered = decode_acks(record, NAME, members=MEMBERS)
            if not set(filtered.positions) <= set(acks.positions) & MEMBERS:
                raise AssertionError("the member filter kept a key it should have skipped")
    except LogError:
        pass
