"""The signed envelope: its bytes (docs/wire.md section 6), the node's check of who wrote a
message, and what the application and the CLI see: the author, never the relaying peer."""

from __future__ import annotations

import contextlib
import re
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mvds_node.node import (
    EnvelopeMismatch,
    GroupConfig,
    Identity,
    Message,
    Node,
    group_id_for,
    load_config,
    open_node,
)
from mvds_node.node._envelope import (
    ENVELOPE_OVERHEAD,
    Authors,
    EnvelopeError,
    open_envelope,
    seal,
    seal_batch,
    signing_digest,
    unwrap,
)
from mvds_node.node._events import event_to_json
from mvds_node.node.cli._events import event_line, message_json, message_line
from mvds_node.sync import PayloadRejected, RejectReason, message_id
from mvds_node.transports import MemoryHub
from tests.node.helpers import config_for, memory_nodes, next_event

WIRE_MD = Path(__file__).parents[2] / "docs" / "wire.md"
CHAT = group_id_for("chat")


def public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# --------------------------------------------------------------------------- the bytes


def test_the_examples_in_wire_md_are_what_the_code_writes() -> None:
    text = WIRE_MD.read_text(encoding="utf-8")
    blocks = re.findall(r"^```envelope\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    alone, second = (
        bytes.fromhex("".join(line.split("#")[0] for line in block.splitlines()))
        for block in blocks
    )
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    t = 1_700_000_000_000
    written = seal(key, public(key), CHAT, t, b"hi carol")
    assert written.hex() == alone.hex()
    batch = seal_batch(key, public(key), CHAT, t, [b"hi carol", b"and bob"])
    assert batch[1].hex() == second.hex()
    assert CHAT.hex() in text
    assert signing_digest(CHAT, t, b"hi carol").hex() in text
    assert len(written) == ENVELOPE_OVERHEAD + 8 and ENVELOPE_OVERHEAD == 108
    public_key = key.public_key()
    opened = open_envelope(alone)
    assert (opened.author, opened.body, opened.path) == (public(key), b"hi carol", ())
    public_key.verify(opened.signature, signing_digest(CHAT, t, b"hi carol"))
    opened = open_envelope(second)
    assert (opened.body, opened.index, len(opened.path)) == (b"and bob", 1, 1)
    root = opened.signed_bytes(CHAT, t)
    assert root.hex() in text
    public_key.verify(opened.signature, root)
    # The first of the batch reaches the same root by its own path.
    assert open_envelope(batch[0]).signed_bytes(CHAT, t) == root


@pytest.mark.parametrize("n", [2, 3, 64, 65, 130])
def test_a_batch_costs_one_signature_and_each_message_is_checked_alone(n: int) -> None:
    key = Ed25519PrivateKey.generate()
    bodies = [i.to_bytes(2, "big") * 5 for i in range(n)]
    sealed = seal_batch(key, public(key), CHAT, 9, bodies)
    assert [unwrap(e) for e in sealed] == [(public(key), b) for b in bodies]
    assert len({open_envelope(e).signature for e in sealed}) == (n + 63) // 64
    authors = Authors(b"m" * 32, {CHAT: frozenset([public(key)])}, {})
    # The last message alone, as a relay might bring it first: checked by its own proof.
    assert authors(CHAT, b"r" * 32, 9, sealed[-1], False) is None
    assert all(authors(CHAT, b"r" * 32, 9, e, False) is None for e in sealed)
    # A signature checked once is remembered, a root's or a message's signed alone.
    assert authors.verified == (n + 63) // 64
    for e in sealed:
        changed = e[:-1] + bytes([e[-1] ^ 1])
        assert authors(CHAT, b"r" * 32, 9, changed, False) == RejectReason.BAD_SIGNATURE
        assert authors(CHAT, b"r" * 32, 10, e, False) == RejectReason.BAD_SIGNATURE
    # Another message's path: it leads to another root, whose signature is not this one.
    first, second = open_envelope(sealed[0]), open_envelope(sealed[1])
    swapped = sealed[1][:104] + b"".join(first.path) + sealed[1][104 + 32 * len(first.path) :]
    assert second.path != first.path
    assert authors(CHAT, b"r" * 32, 9, swapped, False) == RejectReason.BAD_SIGNATURE


GOOD = seal(Ed25519PrivateKey.generate(), bytes(32), CHAT, 1, b"body")
LONG = seal(Ed25519PrivateKey.generate(), bytes(32), CHAT, 1, bytes(64))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (GOOD[:107], "shorter than its header"),
        (b"mvx" + GOOD[3:], "no magic"),
        (GOOD[:3] + b"\x02" + GOOD[4:], "version 2"),
        (GOOD[:4] + b"\x07" + GOOD[5:], "key type 7"),
        (GOOD[:-1], "does not match"),
        (GOOD + b"x", "does not match"),
        (GOOD[:104] + struct.pack(">I", 2**32 - 1) + GOOD[108:], "exceeds"),
        (GOOD[:101] + b"\x11" + GOOD[102:], "depth 17 exceeds 16"),
        (GOOD[:101] + b"\x00\x00\x01" + GOOD[104:], "index 1 is outside"),
        (GOOD[:101] + b"\x02\x00\x00" + GOOD[104:], "shorter than its path"),
        (LONG[:101] + b"\x01\x00\x00" + LONG[104:], "does not match"),
    ],
)
def test_the_parser_bounds_every_length(data: bytes, error: str) -> None:
    with pytest.raises(EnvelopeError, match=error):
        open_envelope(data)
    assert unwrap(data) == (None, data)  # never raises: no author


def test_a_body_too_long_for_the_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(EnvelopeError, match="exceeds 3"):
        open_envelope(GOOD, max_body=3)


# --------------------------------------------------------------------------- the check


def test_who_may_write_and_when_the_signature_is_checked() -> None:
    carol, dave, me = (Ed25519PrivateKey.generate() for _ in range(3))
    bob_x, carol_x = b"B" * 32, b"C" * 32
    mismatches: list[tuple[bytes, bytes, str]] = []
    authors = Authors(
        public(me),
        {CHAT: frozenset([public(carol)])},
        {carol_x: public(carol)},
        mismatch=lambda g, p, s: mismatches.append((g, p, s)),
    )
    by_carol = seal(carol, public(carol), CHAT, 7, b"hi")
    # Relayed by bob: checked.
    assert authors(CHAT, bob_x, 7, by_carol, True) is None
    assert (authors.verified, authors.trusted) == (1, 0)
    # Straight from carol over Noise: taken on the session's word.
    assert authors(CHAT, carol_x, 7, by_carol, True) is None
    assert (authors.verified, authors.trusted) == (1, 1)
    # ... but not over a carrier that does not prove her (multicast, a bundle, a log); a
    # signature already checked is not checked again.
    assert authors(CHAT, carol_x, 7, by_carol, False) is None
    assert authors.verified == 1
    assert authors(CHAT, carol_x, 7, seal(carol, public(carol), CHAT, 7, b"new"), False) is None
    assert authors.verified == 2
    # Moved to another time or group, or changed: the signature no longer verifies.
    assert authors(CHAT, bob_x, 8, by_carol, True) == RejectReason.BAD_SIGNATURE
    forged = by_carol[:-2] + b"yo"
    assert authors(CHAT, bob_x, 7, forged, True) == RejectReason.BAD_SIGNATURE
    # A forgery in carol's name sent by bob, who cannot sign as carol.
    claimed = seal(dave, public(carol), CHAT, 7, b"hi")
    assert authors(CHAT, bob_x, 7, claimed, True) == RejectReason.BAD_SIGNATURE
    # Dave is no member; we are one (our messages come back relayed).
    by_dave = seal(dave, public(dave), CHAT, 7, b"hi")
    assert authors(CHAT, bob_x, 7, by_dave, True) == RejectReason.UNKNOWN_AUTHOR
    assert authors(CHAT, bob_x, 7, seal(me, public(me), CHAT, 7, b"x"), True) is None
    # A signed group refuses a body without an envelope, or a damaged one.
    assert authors(CHAT, bob_x, 7, b"plain", True) == RejectReason.UNSIGNED
    assert mismatches == [(CHAT, bob_x, "raw")]
    assert authors(CHAT, bob_x, 7, by_carol[:-1], True) == RejectReason.ENVELOPE_MALFORMED
    # A raw group takes anything, and says when a member's envelope shows it is signed there.
    raw = b"r" * 32
    assert authors(raw, bob_x, 7, b"plain", False) is None
    assert authors(raw, bob_x, 7, by_carol, False) is None
    assert mismatches[-1] == (raw, bob_x, "signed")


# --------------------------------------------------------------------------- the nodes


@contextlib.asynccontextmanager
async def line_of_three(
    tmp_path: Path, *, alice_knows_carol: bool = True
) -> AsyncIterator[dict[str, Node]]:
    """alice - bob - carol: carol and alice reach each other only through bob (two hubs);
    alice knows carol's Ed25519 key unless told otherwise."""
    ids = {n: Identity.generate() for n in ("alice", "bob", "carol")}
    left, right = MemoryHub(), MemoryHub()
    carriers = {
        "alice": (left.transport(ids["alice"].public_key),),
        "bob": (left.transport(ids["bob"].public_key), right.transport(ids["bob"].public_key)),
        "carol": (right.transport(ids["carol"].public_key),),
    }
    async with contextlib.AsyncExitStack() as stack:
        nodes = {}
        for name, me in ids.items():
            others = {n: i for n, i in ids.items() if n != name}
            config = config_for(tmp_path, name, me, others, listen=None)
            if name == "alice" and not alice_knows_carol:
                config = config.with_peer(replace(config.peer("carol"), log_key=None))
            nodes[name] = await stack.enter_async_context(
                open_node(config, identity=me, transports=carriers[name])
            )
        yield nodes


async def test_a_relayed_message_names_its_author_and_the_peer_that_relayed_it(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with line_of_three(tmp_path) as nodes, nodes["alice"].messages() as inbox:
            alice, bob, carol = nodes["alice"], nodes["bob"], nodes["carol"]
            await carol.send("chat", b"hi from carol")
            m = await inbox.receive()
            assert m.body == b"hi from carol"
            assert m.author == carol.identity.signing_public_key
            assert m.via == bob.identity.public_key
            # The CLI shows carol as the author, bob as the relay; the JSON has both.
            names = {bob.identity.public_key: "bob", carol.identity.public_key: "carol"}
            authors = {
                carol.identity.signing_public_key: ("carol", carol.identity.public_key),
                bob.identity.signing_public_key: ("bob", bob.identity.public_key),
            }
            line = message_line(m, lambda k: names.get(k or b"", "?"), authors.__getitem__)
            shown = "".join(p if isinstance(p, str) else p[0] for p in line)
            assert shown == "[chat] carol (via bob): hi from carol"
            doc = message_json(m)
            assert doc["author"] == carol.identity.signing_public_key.hex()
            assert doc["via"] == doc["sender"] == bob.identity.public_key.hex()
            # What bob wrote himself comes straight from him: no "via".
            await bob.send("chat", b"and bob")
            m = await inbox.receive()
            assert (m.author, m.via) == (bob.identity.signing_public_key, bob.identity.public_key)
            line = message_line(m, lambda k: names.get(k or b"", "?"), authors.__getitem__)
            assert "".join(p if isinstance(p, str) else p[0] for p in line) == (
                "[chat] bob: and bob"
            )
            # Alice verified carol's signature (relayed), and took bob's on his session's word.
            assert (alice._authors.verified, alice._authors.trusted) == (1, 1)


async def test_a_member_not_known_by_its_key_cannot_write(tmp_path: Path) -> None:
    """Carol is in alice's group but alice has no Ed25519 key for her: carol's messages, by
    relay, are refused as unknown-author, and nothing of them is delivered."""
    with trio.fail_after(30):
        async with line_of_three(tmp_path, alice_knows_carol=False) as nodes:
            alice, carol = nodes["alice"], nodes["carol"]
            assert alice.config.peer("carol").log_key is None
            async with alice.events() as events, alice.messages() as inbox:
                await carol.send("chat", b"who am I?")
                rejected = await next_event(events, PayloadRejected)
                assert rejected.reason == RejectReason.UNKNOWN_AUTHOR
                assert rejected.peer == nodes["bob"].identity.public_key
                with pytest.raises(trio.WouldBlock):
                    inbox.receive_nowait()


async def test_a_raw_group_sends_bodies_as_they_are_and_has_no_author(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with memory_nodes(tmp_path) as nodes:
            alice, bob = nodes["alice"], nodes["bob"]
            for node in (alice, bob):
                node.add_group(replace(node.group("chat"), envelope="raw"))
            async with bob.messages() as inbox:
                mid = await alice.send("chat", b"plain")
                m = await inbox.receive()
            assert (m.body, m.author, m.via) == (b"plain", None, alice.identity.public_key)
            # The MVDS body is the application's bytes: the ID is MVDS's of exactly those.
            assert mid == message_id(CHAT, m.timestamp, b"plain")
            assert bob._engine.has_message(mid)
            shown = "".join(
                p if isinstance(p, str) else p[0] for p in message_line(m, lambda k: "alice")
            )
            assert shown == "[chat] (no author, via alice): plain"


async def test_members_that_disagree_on_the_envelope_are_told(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with memory_nodes(tmp_path) as nodes:
            alice, bob = nodes["alice"], nodes["bob"]
            bob.add_group(replace(bob.group("chat"), envelope="raw"))
            async with alice.events() as events, alice.messages() as inbox:
                mid = await bob.send("chat", b"raw from bob")
                mismatch = await next_event(events, EnvelopeMismatch)
                assert (mismatch.group, mismatch.peer) == ("chat", bob.identity.public_key)
                assert (mismatch.ours, mismatch.theirs) == ("signed", "raw")
                doc = event_to_json(mismatch)
                assert doc["type"] == "envelope-mismatch" and doc["theirs"] == "raw"
                parts = event_line(mismatch, doc, lambda k: "bob")
                assert "[chat] is signed here and raw there" in "".join(
                    p if isinstance(p, str) else p[0] for p in parts
                )
                rejected = await next_event(events, PayloadRejected)
                assert rejected.reason == RejectReason.UNSIGNED
                assert not alice._engine.has_message(mid)
                with pytest.raises(trio.WouldBlock):
                    inbox.receive_nowait()
            # Bob's raw group takes alice's envelope as bytes, and says so.
            async with bob.events() as events, bob.messages() as inbox:
                await alice.send("chat", b"signed from alice")
                mismatch = await next_event(events, EnvelopeMismatch)
                assert (mismatch.ours, mismatch.theirs) == ("raw", "signed")
                m = await inbox.receive()
                assert m.author is None and m.body.endswith(b"signed from alice")


async def test_ephemeral_messages_carry_the_envelope_too(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with memory_nodes(tmp_path) as nodes:
            alice, bob = nodes["alice"], nodes["bob"]
            async with bob.messages(live=True) as inbox:  # ephemeral: live only
                await alice.send("chat", b"typing", ephemeral=True)
                m = await inbox.receive()
            assert (m.body, m.ephemeral) == (b"typing", True)
            assert m.author == alice.identity.signing_public_key


def test_sender_is_a_deprecated_alias_of_via() -> None:
    m = Message("chat", CHAT, b"i" * 32, b"x", b"v" * 32, 1)
    with pytest.warns(DeprecationWarning, match="Message.via"):
        assert m.sender == b"v" * 32
    assert m.author is None


def test_the_group_setting_is_parsed_written_and_checked(tmp_path: Path) -> None:
    from mvds_node.errors import ConfigError
    from mvds_node.node._config import parse_config, render_config

    doc = {"groups": [{"name": "chat", "envelope": "raw"}]}
    config = parse_config(doc, data_dir=tmp_path, where="t")
    assert config.group("chat").envelope == "raw"
    assert 'envelope = "raw"' in render_config(config)
    again = parse_config({"groups": [{"name": "chat"}]}, data_dir=tmp_path, where="t")
    assert again.group("chat") == GroupConfig("chat", CHAT)
    assert again.group("chat").envelope == "signed"
    with pytest.raises(ConfigError, match="envelope must be one of signed, raw"):
        parse_config({"groups": [{"name": "chat", "envelope": "none"}]}, data_dir=tmp_path,
                     where="t")  # fmt: skip


def test_groups_add_sets_the_envelope_and_peers_add_warns(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mvds_node.node.cli import root

    home = str(tmp_path / "a")

    def run(*args: str) -> str:
        result = CliRunner().invoke(root, ["--dir", home, *args])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return result.stdout + result.stderr

    run("init", "--name", "a", "--listen", "", "--group", "chat")
    run("groups", "add", "plain", "--envelope", "raw")
    assert load_config(home).group("plain").envelope == "raw"
    assert load_config(home).group("chat").envelope == "signed"
    bob = Identity.generate()
    out = run("peers", "add", bob.public_key.hex(), "--name", "bob", "--group", "chat")
    assert "bob has no --log-key" in out and "unknown-author" in out
    assert "learned on the first direct connection" in out
    out = run("peers", "add", bob.public_key.hex(), "--log-key", bob.signing_public_key.hex())
    assert "no --log-key" not in out
    assert load_config(home).peer("bob").log_key == bob.signing_public_key
    out = run("peers", "add", Identity.generate().public_key.hex(), "--group", "plain")
    assert "no --log-key" not in out  # a raw group has no authors


def test_messages_written_before_envelopes_are_taken_without_an_author(tmp_path: Path) -> None:
    carol = Ed25519PrivateKey.generate()
    authors = Authors(b"m" * 32, {CHAT: frozenset([public(carol)])}, {}, legacy_before=1000)
    assert authors(CHAT, b"b" * 32, 999, b"from the old release", False) is None
    assert authors.legacy == 1
    assert authors(CHAT, b"b" * 32, 1000, b"written since", False) == RejectReason.UNSIGNED
    # NOSYNC has no timestamp, and no earlier release to come from.
    assert authors(CHAT, b"b" * 32, 0, b"typing", True, ephemeral=True) == RejectReason.UNSIGNED
    # The node keeps the time it first required envelopes, and refuses a damaged record of it.
    from mvds_node.errors import ConfigError
    from mvds_node.node._node import envelopes_since

    first = envelopes_since(tmp_path)
    assert envelopes_since(tmp_path) == first > 0
    (tmp_path / "envelopes-since").write_text("yesterday\n")
    with pytest.raises(ConfigError, match="envelopes-since: damaged"):
        envelopes_since(tmp_path)
