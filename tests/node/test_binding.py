"""Members learn each other's signing key when they connect: the ``AUTHOR`` control frame.

A member listed under ``[[peers]]`` by its Noise key alone (no ``log_key``) proves its Ed25519
key over a carrier that proves the peer (``proves_peer``: Noise, memory); the node adopts it,
saves it, and accepts what that key signs from then on, relayed messages too. A configured key
is never replaced, a key that is another member's is never taken, and a carrier that does not
prove its sender teaches nothing.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mvds_node.node import (
    AuthorLearned,
    AuthorMismatch,
    GroupConfig,
    Identity,
    Node,
    NodeConfig,
    PeerConfig,
    group_id_for,
    load_config,
    load_identity,
    open_node,
    save_config,
)
from mvds_node.node._envelope import binding_digest, sign_binding, verify_binding
from mvds_node.node._events import event_to_json
from mvds_node.sync import PayloadRejected, RejectReason
from mvds_node.transports import (
    Author,
    ControlKind,
    FrameMode,
    InputRejected,
    MemoryHub,
    MemoryTransport,
    encode_frame,
)
from tests.node.helpers import next_event

WIRE_MD = Path(__file__).parents[2] / "docs" / "wire.md"
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "datadir-55a02fa"


def _raw(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# --------------------------------------------------------------------------- the binding


def test_the_author_example_in_wire_md_is_the_documented_keys_binding() -> None:
    signing = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    noise = _raw(X25519PrivateKey.from_private_bytes(bytes(range(32, 64))))
    signature = sign_binding(signing, noise)
    text = WIRE_MD.read_text(encoding="utf-8")
    assert noise.hex() in text
    assert binding_digest(noise).hex() in text
    head = f'Author(bytes.fromhex("{_raw(signing).hex()}"), bytes.fromhex("{signature.hex()}"))'
    assert f"```frame\n{head}\n" in text  # test_wire_doc checks its bytes against the codec
    assert verify_binding(_raw(signing), noise, signature)


def test_a_binding_holds_for_one_noise_key_and_one_signing_key() -> None:
    signing, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    noise, elsewhere = Identity.generate().public_key, Identity.generate().public_key
    signature = sign_binding(signing, noise)
    assert verify_binding(_raw(signing), noise, signature)
    assert not verify_binding(_raw(signing), elsewhere, signature)  # replayed by another peer
    assert not verify_binding(_raw(other), noise, signature)  # someone else's key claimed
    assert not verify_binding(_raw(signing), noise, bytes(64))
    # Not a point on the curve: refused, never raised.
    assert not verify_binding(b"\xff" * 32, noise, signature)


# --------------------------------------------------------------------------- nodes


class HeldAuthors:
    """A memory endpoint that holds back the ``AUTHOR`` frames it receives until ``release``
    is set: messages arrive before their author's key does."""

    proves_peer = True

    def __init__(self, endpoint: MemoryTransport) -> None:
        self._endpoint = endpoint
        self.release = trio.Event()
        self.held: list[tuple[bytes, bytes]] = []
        self.reliable = endpoint.reliable
        self.max_payload = endpoint.max_payload
        self.max_latency = endpoint.max_latency

    def reaches(self, peer: bytes) -> bool:
        return self._endpoint.reaches(peer)

    async def send(self, peer: bytes, packet: bytes) -> None:
        await self._endpoint.send(peer, packet)

    async def receive(self) -> tuple[bytes, bytes]:
        while True:
            if self.release.is_set() and self.held:
                return self.held.pop(0)
            peer, packet = await self._endpoint.receive()
            is_author = packet[3] == FrameMode.CONTROL and packet[8] == ControlKind.AUTHOR
            if is_author and not self.release.is_set():
                self.held.append((peer, packet))
                continue
            return peer, packet

    async def aclose(self) -> None:
        await self._endpoint.aclose()


class Unproved:
    """A memory endpoint that, like multicast or a file, does not prove who sent a packet."""

    proves_peer = False

    def __init__(self, endpoint: MemoryTransport) -> None:
        self._endpoint = endpoint
        self.reliable = endpoint.reliable
        self.max_payload = endpoint.max_payload
        self.max_latency = endpoint.max_latency

    def reaches(self, peer: bytes) -> bool:
        return self._endpoint.reaches(peer)

    async def send(self, peer: bytes, packet: bytes) -> None:
        await self._endpoint.send(peer, packet)

    async def receive(self) -> tuple[bytes, bytes]:
        return await self._endpoint.receive()

    async def aclose(self) -> None:
        await self._endpoint.aclose()


def written_config(
    tmp_path: Path, name: str, peers: dict[str, tuple[Identity, bool]], members: list[str]
) -> NodeConfig:
    """``name``'s configuration, saved in its data directory: each peer by its Noise key, with
    its ``log_key`` if its flag says so, and the signed group ``chat`` of ``members``."""
    entries = tuple(
        PeerConfig(key=i.public_key, name=n, log_key=i.signing_public_key if known else None)
        for n, (i, known) in peers.items()
    )
    config = NodeConfig(
        data_dir=tmp_path / name,
        name=name,
        listen=None,
        peers=entries,
        groups=(
            GroupConfig(
                name="chat",
                id=group_id_for("chat"),
                members=tuple(peers[m][0].public_key for m in members),
            ),
        ),
        epoch_seconds=0.05,
    )
    save_config(config)
    return load_config(tmp_path / name)


async def test_a_peer_added_without_log_key_syncs_in_a_signed_group(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Alice and bob list each other by Noise key alone. Alice's first message reaches bob
    before her key does and is refused (unknown-author); it was not acknowledged, so alice
    sends it again, and once bob learned her key it is delivered, signed by her."""
    ids = {"alice": Identity.generate(), "bob": Identity.generate()}
    hub = MemoryHub()
    a_end = hub.transport(ids["alice"].public_key)
    b_end = HeldAuthors(hub.transport(ids["bob"].public_key))
    a_cfg = written_config(tmp_path, "alice", {"bob": (ids["bob"], False)}, ["bob"])
    b_cfg = written_config(tmp_path, "bob", {"alice": (ids["alice"], False)}, ["alice"])
    with trio.fail_after(60):
        async with (
            open_node(a_cfg, identity=ids["alice"], transports=(a_end,)) as alice,
            alice.events() as a_events,
            open_node(b_cfg, identity=ids["bob"], transports=(b_end,)) as bob,
            bob.events() as b_events,
            bob.messages() as inbox,
            alice.messages() as a_inbox,
        ):
            learned = await next_event(a_events, AuthorLearned)  # bob's AUTHOR is not held
            assert (learned.peer, learned.key) == (bob.identity.public_key, bob._author_key)
            mid = await alice.send("chat", b"before the binding")
            rejected = await next_event(b_events, PayloadRejected)
            assert rejected.reason == RejectReason.UNKNOWN_AUTHOR
            assert rejected.peer == alice.identity.public_key
            assert bob.status().messages_stored == 0
            b_end.release.set()
            learned = await next_event(b_events, AuthorLearned)
            assert learned == AuthorLearned(
                alice.identity.public_key, alice.identity.signing_public_key, True
            )
            assert event_to_json(learned)["type"] == "author-learned"
            m = await inbox.receive()
            assert (m.message_id, m.body) == (mid, b"before the binding")
            assert m.author == alice.identity.signing_public_key
            # Both directions, from now on, and saved: the next start knows the keys.
            await bob.send("chat", b"and back")
            back = await a_inbox.receive()
            assert (back.body, back.author) == (b"and back", bob.identity.signing_public_key)
            assert alice.config.peer("bob").log_key == bob.identity.signing_public_key
    assert load_config(tmp_path / "bob").peer("alice").log_key == ids["alice"].signing_public_key
    assert load_config(tmp_path / "alice").peer("bob").log_key == ids["bob"].signing_public_key


@contextlib.asynccontextmanager
async def running(
    configs: dict[str, NodeConfig], ids: dict[str, Identity], hubs: dict[str, list[MemoryHub]]
) -> AsyncIterator[dict[str, Node]]:
    async with contextlib.AsyncExitStack() as stack:
        nodes = {}
        for name, config in configs.items():
            carriers = tuple(h.transport(ids[name].public_key) for h in hubs[name])
            nodes[name] = await stack.enter_async_context(
                open_node(config, identity=ids[name], transports=carriers)
            )
        yield nodes


async def test_a_key_learned_by_connecting_once_checks_relayed_messages(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Alice meets carol once and learns her key (saved). Later alice reaches carol only
    through bob, who lists carol without log_key and learns her key when she connects: carol's
    messages reach alice by relay, checked against the key alice learned."""
    ids = {n: Identity.generate() for n in ("alice", "bob", "carol")}
    everyone = {n: (i, False) for n, i in ids.items()}

    def others(name: str) -> dict[str, tuple[Identity, bool]]:
        return {n: v for n, v in everyone.items() if n != name}

    with trio.fail_after(60):
        # Once, directly: alice and carol only.
        direct = MemoryHub()
        configs = {
            "alice": written_config(tmp_path, "alice", others("alice"), ["bob", "carol"]),
            "carol": written_config(tmp_path, "carol", others("carol"), ["alice", "bob"]),
        }
        async with (
            running(configs, ids, {"alice": [direct], "carol": [direct]}) as nodes,
            nodes["alice"].events() as events,
        ):
            learned = await next_event(events, AuthorLearned)
            assert learned.peer == ids["carol"].public_key and learned.saved
        assert load_config(tmp_path / "alice").peer("carol").log_key == (
            ids["carol"].signing_public_key
        )
        # Then a line: alice - bob - carol.
        left, right = MemoryHub(), MemoryHub()
        configs = {
            "alice": load_config(tmp_path / "alice"),
            "bob": written_config(tmp_path, "bob", others("bob"), ["alice", "carol"]),
            "carol": load_config(tmp_path / "carol"),
        }
        hubs = {"alice": [left], "bob": [left, right], "carol": [right]}
        async with running(configs, ids, hubs) as nodes, nodes["alice"].messages() as inbox:
            alice, bob, carol = nodes["alice"], nodes["bob"], nodes["carol"]
            await carol.send("chat", b"by way of bob")
            m = await inbox.receive()
            assert m.body == b"by way of bob"
            assert (m.author, m.via) == (carol.identity.signing_public_key, bob.identity.public_key)
            assert alice._authors.verified >= 1  # relayed: its signature was checked
            assert bob.config.peer("carol").log_key == carol.identity.signing_public_key
            # Alice never connected to bob's... she did: she learned his key as well.
            assert alice.config.peer("bob").log_key == bob.identity.signing_public_key


async def test_a_relay_cannot_teach_a_key(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Carol's AUTHOR reaches only bob; alice, who never connected to carol, still refuses
    carol's relayed messages as unknown-author."""
    ids = {n: Identity.generate() for n in ("alice", "bob", "carol")}
    everyone = {n: (i, False) for n, i in ids.items()}
    configs = {
        name: written_config(
            tmp_path,
            name,
            {n: v for n, v in everyone.items() if n != name},
            [n for n in ids if n != name],
        )
        for name in ids
    }
    left, right = MemoryHub(), MemoryHub()
    hubs = {"alice": [left], "bob": [left, right], "carol": [right]}
    with trio.fail_after(60):
        async with running(configs, ids, hubs) as nodes, nodes["alice"].events() as events:
            await nodes["carol"].send("chat", b"who am I?")
            rejected = await next_event(events, PayloadRejected)
            assert rejected.reason == RejectReason.UNKNOWN_AUTHOR
            assert rejected.peer == ids["bob"].public_key
            assert nodes["alice"].config.peer("carol").log_key is None


async def test_a_configured_key_is_kept_and_a_mismatch_reported(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    ids = {"alice": Identity.generate(), "bob": Identity.generate()}
    wrong = Identity.generate()  # alice was told another key for bob
    hub = MemoryHub()
    a_cfg = written_config(tmp_path, "alice", {"bob": (ids["bob"], False)}, ["bob"])
    a_cfg = a_cfg.with_peer(replace(a_cfg.peer("bob"), log_key=wrong.signing_public_key))
    save_config(a_cfg)
    b_cfg = written_config(tmp_path, "bob", {"alice": (ids["alice"], True)}, ["alice"])
    with trio.fail_after(60):
        async with (
            open_node(
                a_cfg, identity=ids["alice"], transports=(hub.transport(ids["alice"].public_key),)
            ) as alice,  # fmt: skip
            alice.events() as events,
            open_node(
                b_cfg, identity=ids["bob"], transports=(hub.transport(ids["bob"].public_key),)
            ),  # fmt: skip
        ):
            mismatch = await next_event(events, AuthorMismatch)
            assert mismatch == AuthorMismatch(
                ids["bob"].public_key,
                ids["bob"].signing_public_key,
                "configured",
                configured=wrong.signing_public_key,
            )
            assert event_to_json(mismatch) == {
                "type": "author-mismatch",
                "peer": ids["bob"].public_key.hex(),
                "offered": ids["bob"].signing_public_key.hex(),
                "reason": "configured",
                "configured": wrong.signing_public_key.hex(),
                "owner": None,
            }
            assert alice.config.peer("bob").log_key == wrong.signing_public_key
    assert load_config(tmp_path / "alice").peer("bob").log_key == wrong.signing_public_key


async def test_a_key_that_is_another_members_is_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Bob offers carol's signing key (he holds it): alice, who has it as carol's, refuses it
    and says whose it is."""
    carol = Identity.generate()
    ids = {"alice": Identity.generate(), "bob": Identity(Identity.generate().noise, carol.signing)}
    hub = MemoryHub()
    peers = {"bob": (ids["bob"], False), "carol": (carol, True)}
    a_cfg = written_config(tmp_path, "alice", peers, ["bob", "carol"])
    b_cfg = written_config(tmp_path, "bob", {"alice": (ids["alice"], True)}, ["alice"])
    with trio.fail_after(60):
        async with (
            open_node(
                a_cfg, identity=ids["alice"], transports=(hub.transport(ids["alice"].public_key),)
            ) as alice,  # fmt: skip
            alice.events() as events,
            open_node(
                b_cfg, identity=ids["bob"], transports=(hub.transport(ids["bob"].public_key),)
            ),  # fmt: skip
        ):
            mismatch = await next_event(events, AuthorMismatch)
            assert (mismatch.peer, mismatch.reason, mismatch.owner) == (
                ids["bob"].public_key,
                "in-use",
                carol.public_key,
            )
            assert alice.config.peer("bob").log_key is None


async def test_only_a_carrier_that_proves_the_peer_teaches_a_key(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Over a carrier that does not prove its sender, a valid AUTHOR is refused
    (author-unproved); over one that does, a forged one is refused (author-bad-signature) and
    a malformed one is a malformed frame; the node goes on and learns nothing from them."""
    alice_id, bob = Identity.generate(), Identity.generate()
    a_cfg = written_config(tmp_path, "alice", {"bob": (bob, False)}, ["bob"])
    proving, plain = MemoryHub(), MemoryHub()
    # Bob's endpoints, driven by hand: what a hostile bob (or someone claiming to be him) sends.
    bob_proving, bob_plain = proving.transport(bob.public_key), plain.transport(bob.public_key)
    valid = Author(bob.signing_public_key, sign_binding(bob.signing, bob.public_key))
    forged = Author(bob.signing_public_key, sign_binding(bob.signing, alice_id.public_key))
    carriers = (
        Unproved(plain.transport(alice_id.public_key)),
        proving.transport(alice_id.public_key),
    )
    with trio.fail_after(60):
        async with (
            open_node(a_cfg, identity=alice_id, transports=carriers) as alice,
            alice.events() as events,
        ):
            await bob_plain.send(alice_id.public_key, encode_frame(valid))
            refused = await next_event(events, InputRejected)
            assert (refused.peer, refused.reason) == (bob.public_key, "author-unproved")
            await bob_proving.send(alice_id.public_key, encode_frame(forged))
            refused = await next_event(events, InputRejected)
            assert (refused.peer, refused.reason) == (bob.public_key, "author-bad-signature")
            short = encode_frame(valid)[8:-1]  # one signature byte short, header to match
            header = b"MV\x01\x03" + len(short).to_bytes(4, "big")
            await bob_proving.send(alice_id.public_key, header + short)
            refused = await next_event(events, InputRejected)
            assert refused.reason == "frame:malformed-body"
            assert alice.config.peer("bob").log_key is None
            # Alice introduced herself to bob on the carrier that proves him, not the other.
            assert [p for _, p in _drain(bob_proving) if p[3] == FrameMode.CONTROL and p[8] == 4]
            assert not [p for _, p in _drain(bob_plain) if p[3] == FrameMode.CONTROL]
            # And a valid one, on the right carrier, is taken.
            await bob_proving.send(alice_id.public_key, encode_frame(valid))
            learned = await next_event(events, AuthorLearned)
            assert learned.key == bob.signing_public_key


def _drain(endpoint: MemoryTransport) -> list[tuple[bytes, bytes]]:
    out = []
    with contextlib.suppress(trio.WouldBlock):
        while True:
            out.append(endpoint.receive_nowait())
    return out


# --------------------------------------------------------------------------- upgrade


async def test_a_data_directory_without_log_keys_syncs_after_the_upgrade(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The 55a02fa fixture with its ``log_key`` lines gone (how peers were added then): after
    the upgrade alice and bob sign their messages, learn each other's key on connecting, and
    sync, with nobody adding a key by hand."""
    root = tmp_path / "fixture"
    shutil.copytree(FIXTURE, root)
    for secret in root.glob("*/*.key"):
        secret.chmod(0o600)
    for name in ("alice", "bob"):
        path = root / name / "config.toml"
        text = path.read_text().replace("@FIXTURE@", str(root))
        text = re.sub(r"^log_key = .*\n", "", text, flags=re.MULTILINE)
        text = re.sub(r'^url = "file://.*"$', 'url = ""', text, flags=re.MULTILINE)
        path.write_text(text)
    alice_cfg, bob_cfg = load_config(root / "alice"), load_config(root / "bob")
    assert all(p.log_key is None for p in (*alice_cfg.peers, *bob_cfg.peers))
    alice_id = load_identity(alice_cfg.identity_path)
    bob_key = load_identity(bob_cfg.identity_path).public_key
    # Dave is new: alice adds him by his Noise key, as she added bob then.
    dave = Identity.generate()
    alice_cfg = alice_cfg.with_peer(PeerConfig(key=dave.public_key, name="dave"))
    chat = alice_cfg.group("chat")
    alice_cfg = alice_cfg.with_group(replace(chat, members=(*chat.members, dave.public_key)))
    save_config(alice_cfg)
    dave_cfg = written_config(tmp_path, "dave", {"alice": (alice_id, False)}, ["alice"])
    hub = MemoryHub()
    with trio.fail_after(120):
        async with (
            open_node(alice_cfg, transports=(hub.transport(alice_id.public_key),)) as alice,
            alice.messages() as a_inbox,
            open_node(bob_cfg, transports=(hub.transport(bob_key),)) as bob,
            bob.messages() as b_inbox,
            open_node(dave_cfg, identity=dave, transports=(hub.transport(dave.public_key),)) as d,
            d.messages() as d_inbox,
        ):
            mid = await alice.send("chat", b"after the upgrade")
            async for m in b_inbox:  # bob's inbox holds what the migration put there first
                if m.message_id == mid:
                    break
            assert (m.author, m.via) == (alice_id.signing_public_key, alice_id.public_key)
            async for m in d_inbox:
                if m.message_id == mid:
                    break
            assert m.author == alice_id.signing_public_key
            await d.send("chat", b"hello alice")
            async for m in a_inbox:
                if m.body == b"hello alice" and m.author == dave.signing_public_key:
                    break
            await bob.send("chat", b"bob too")
            async for m in a_inbox:
                if m.body == b"bob too":
                    break
            assert m.author == bob.identity.signing_public_key
    assert load_config(root / "bob").peer("alice").log_key == alice_id.signing_public_key
    saved = load_config(root / "alice")
    assert saved.peer("bob").log_key == bob.identity.signing_public_key
    assert saved.peer("dave").log_key == dave.signing_public_key
    assert load_config(tmp_path / "dave").peer("alice").log_key == alice_id.signing_public_key


def test_the_events_read_for_people() -> None:
    from mvds_node.node.cli._events import event_line

    bob, carol = b"\x0b" * 32, b"\x0c" * 32
    names = {bob: "bob", carol: "carol"}

    def line(event: AuthorLearned | AuthorMismatch) -> str:
        parts = event_line(event, event_to_json(event), lambda k: names.get(k or b"", "?"))
        return "".join(p if isinstance(p, str) else p[0] for p in parts)

    assert line(AuthorLearned(bob, b"\xaa" * 32, True)) == (
        "* author-learned bob: signs with aaaaaaaaaaaa (saved in config.toml)"
    )
    assert line(AuthorMismatch(bob, b"\xaa" * 32, "configured", configured=b"\xbb" * 32)) == (
        "* author-mismatch bob: offers the signing key aaaaaaaaaaaa, config.toml says "
        "bbbbbbbbbbbb (kept; check its `mvds-node key --log`)"
    )
    assert line(AuthorMismatch(bob, b"\xaa" * 32, "in-use", owner=carol)) == (
        "* author-mismatch bob: offers the signing key aaaaaaaaaaaa, already carol's (refused)"
    )


async def test_over_tcp_the_noise_session_teaches_the_keys(tmp_path: Path) -> None:
    """The real carrier: two nodes on 127.0.0.1 that list each other without log_key sync
    signed messages once one dials the other."""
    from tests.node.helpers import config_for, connected

    ids = {"alice": Identity.generate(), "bob": Identity.generate()}

    def unkeyed(name: str, other: str) -> NodeConfig:
        config = config_for(tmp_path, name, ids[name], {other: ids[other]})
        return config.with_peer(replace(config.peer(other), log_key=None))

    with trio.fail_after(30):
        async with (
            open_node(unkeyed("alice", "bob"), identity=ids["alice"]) as alice,
            open_node(unkeyed("bob", "alice"), identity=ids["bob"]) as bob,
            alice.events() as a_events,
            bob.events() as b_events,
            bob.messages() as inbox,
        ):
            await connected(alice, bob, "bob", a_events)
            assert (await next_event(a_events, AuthorLearned)).key == ids["bob"].signing_public_key
            assert (await next_event(b_events, AuthorLearned)).key == (
                ids["alice"].signing_public_key
            )
            await alice.send("chat", b"over noise")
            m = await inbox.receive()
            assert (m.body, m.author) == (b"over noise", ids["alice"].signing_public_key)
            assert bob._authors.trusted >= 1  # direct over Noise: taken on the session's word


async def test_a_learned_key_keeps_an_edit_made_while_the_node_runs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """`peers add` writes config.toml while alice runs; the key alice learns afterwards goes
    into the file as it is then, so the edit stays."""
    ids = {"alice": Identity.generate(), "bob": Identity.generate()}
    carol = Identity.generate()
    hub = MemoryHub()
    a_cfg = written_config(tmp_path, "alice", {"bob": (ids["bob"], False)}, ["bob"])
    b_cfg = written_config(tmp_path, "bob", {"alice": (ids["alice"], True)}, ["alice"])
    a_end = hub.transport(ids["alice"].public_key)
    with trio.fail_after(60):
        async with (
            open_node(a_cfg, identity=ids["alice"], transports=(a_end,)) as alice,
            alice.events() as events,
        ):
            edited = load_config(tmp_path / "alice").with_peer(
                PeerConfig(key=carol.public_key, name="carol")
            )
            save_config(edited)
            async with open_node(
                b_cfg, identity=ids["bob"], transports=(hub.transport(ids["bob"].public_key),)
            ):
                learned = await next_event(events, AuthorLearned)
                assert learned.saved, learned.detail
    on_disk = load_config(tmp_path / "alice")
    assert on_disk.peer("carol").key == carol.public_key
    assert on_disk.peer("bob").log_key == ids["bob"].signing_public_key
