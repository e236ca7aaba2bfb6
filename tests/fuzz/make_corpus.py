"""Regenerate the seed corpora under ``tests/fuzz/corpus/<target>/`` from the project's encoders.

Usage (from the repository root)::

    python -m tests.fuzz.make_corpus            # every target
    python -m tests.fuzz.make_corpus framing    # some

Theory of operation
-------------------
A seed is a valid input, made the way the node makes it: frames by ``encode_frame``, payloads
by ``encode_payload``/``encode_message``, bundle headers by ``BundleHeader.to_json``, logs by
``LogWriter`` and archives by ``export_log``, helper requests by h11 as httpx sends them and the
helper's answers by the helper itself. The fuzzer starts from them, so its mutations begin deep
inside each decoder instead of at its first length check. Structured targets read their input
through :class:`~tests.fuzz._support.Input`; :class:`~tests.fuzz._support.Script` writes the
choices each seed makes (which role, which peer, how the stream is cut).

The output is deterministic: keys come from fixed seeds, and ``os.urandom`` (the nonces of
sealed pages, the file IDs of bundles) is replaced by a counter-driven stream while the seeds
are made, so running this twice writes the same files. The crypto inside a run of a target
(Noise ephemeral keys) stays random: seeds hold choices there, not ciphertext. Each file is
named by the SHA-1 of its bytes, as libFuzzer names its corpus files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import h11
import trio

from mvds_node.node._config import parse_config, render_config
from mvds_node.remotelog import _format, _helper
from mvds_node.remotelog._archive import export_log
from mvds_node.remotelog._backend import MemoryBackend
from mvds_node.remotelog._format import (
    Page,
    Pair,
    address_of,
    encode_acks,
    log_name,
    public_key,
    seal,
    sign_head,
)
from mvds_node.remotelog._ipfs import DIRECTORY_KEY, cid_of
from mvds_node.remotelog._log import LogSettings, LogWriter
from mvds_node.remotelog.proto import cas_pb2, ns_pb2, remotelog_pb2
from mvds_node.sync import encode_message, encode_payload, message_id
from mvds_node.transports._file import BundleHeader
from mvds_node.transports._framing import (
    AVAILABLE_ALWAYS,
    Author,
    Capability,
    Hello,
    NoSyncFrame,
    Ping,
    Pong,
    SyncFrame,
    UnknownControl,
    encode_frame,
)
from tests.fuzz._support import GROUP_ID, GROUP_KEY, Script, keypair, seed_bytes, signing_key
from tests.remotelog.hostile import response

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
Seeds = Iterator[bytes]


def _deterministic_urandom() -> Callable[[int], bytes]:
    state = {"n": 0}

    def urandom(n: int) -> bytes:
        state["n"] += 1
        return seed_bytes(f"urandom/{state['n']}", n)

    return urandom


# --- transports ----------------------------------------------------------------------------


def _payload_bytes() -> list[bytes]:
    own = message_id(GROUP_ID, 1_700_000_000, b"own message")
    first = encode_message(GROUP_ID, 5, b"hello")
    child = encode_message(GROUP_ID, 6, b"child", parents=[message_id(GROUP_ID, 5, b"hello")])
    orphan = encode_message(GROUP_ID, 7, b"orphan", parents=[seed_bytes("missing parent")])
    return [
        encode_payload(acks=[own]),
        encode_payload(requests=[own]),
        encode_payload(offers=[message_id(GROUP_ID, 5, b"hello"), seed_bytes("unknown")]),
        encode_payload(messages=[first]),
        encode_payload(messages=[child, first]),
        encode_payload(messages=[orphan]),
        encode_payload(messages=[encode_message(GROUP_ID, 8, b"eph", ephemeral=True)]),
        encode_payload(messages=[encode_message(GROUP_ID, 9, b"gone", expires_at=1)]),
        encode_payload(messages=[encode_message(GROUP_ID, 10, b"old", with_metadata=False)]),
        encode_payload(acks=[own], offers=[seed_bytes("x")], messages=[first]),
    ]


def framing() -> Seeds:
    frames = [SyncFrame(p) for p in _payload_bytes()[:4]] + [
        NoSyncFrame(GROUP_ID, b"ephemeral"),
        Ping(1),
        Pong(2**64 - 1),
        Hello(),
        Hello(
            capabilities=Capability.SYNC | Capability.REMOTE_LOG,
            available_until_ms=AVAILABLE_ALWAYS,
        ),
        UnknownControl(0x7F, b"later"),
        Author(keypair("author").public, bytes(range(64))),
    ]
    for frame in frames:
        yield Script().flag(False).integer(0, 0, 8).raw(encode_frame(frame)).build()
    stream = b"".join(encode_frame(f) for f in frames[3:8])
    yield (
        Script()
        .flag(False)
        .integer(3, 0, 8)
        .integer(3, 1, 64)
        .integer(9, 1, 64)
        .integer(40, 1, 64)
        .raw(stream)
        .build()
    )
    yield Script().flag(True).integer(0, 0, 8).raw(encode_frame(SyncFrame(b"x" * 600))).build()


def payload() -> Seeds:
    payloads = _payload_bytes()
    for i, data in enumerate(payloads):
        s = Script().flag(i % 2 == 1).flag(i % 3 == 0).flag(False).integer(1, 1, 6)
        yield s.integer(i % 2, 0, 4).integer(4, 0, 120).blob(data, 8192).build()
    # A conversation: a message, its child, then the ACK of our own message, from two peers.
    s = Script().flag(True).flag(False).flag(True).integer(4, 1, 6)
    for pick, data in ((0, payloads[3]), (1, payloads[4]), (0, payloads[0]), (4, payloads[5])):
        s.integer(pick, 0, 4).integer(8, 0, 120).blob(data, 8192)
    yield s.build()


def _honest(s: Script) -> Script:
    """``_message`` choosing the real message, unaltered."""
    return s.flag(False).integer(0, 0, 2).flag(False)


def noise_handshake() -> Seeds:
    yield _honest(_honest(Script().flag(True).flag(True))).build()  # a complete handshake
    yield _honest(Script().flag(True).flag(True)).flag(True).blob(bytes(64), 512).build()
    yield Script().flag(True).flag(False).blob(keypair("eph").public, 512).build()
    yield _honest(Script().flag(False).flag(True)).build()  # we initiate, an honest answer
    yield Script().flag(False).flag(False).blob(keypair("eph2").public + bytes(64), 512).build()


def noise_session() -> Seeds:
    s = Script().integer(3, 0, 4)
    for text in (b"first", b"second", b""):
        s.blob(text, 256).flag(True).flag(False)
    yield s.blob(b"sealed", 1024).flag(True).flag(True).integer(0, 0, 2).flag(False).build()
    yield (
        Script()
        .integer(1, 0, 4)
        .blob(b"m", 256)
        .flag(True)
        .flag(True)
        .integer(1, 0, 2)
        .integer(0, 0, 16)
        .integer(1, 1, 255)
        .flag(False)
        .blob(b"anon", 1024)
        .flag(True)
        .flag(False)
        .integer(0, 0, 2)
        .flag(False)
        .build()
    )
    yield Script().integer(0, 0, 4).blob(b"MS\x01N", 1024).flag(False).raw(bytes(40)).build()


def multicast() -> Seeds:
    frames = [encode_frame(Ping(7)), encode_frame(SyncFrame(_payload_bytes()[3]))]
    frames.append(encode_frame(NoSyncFrame(GROUP_ID, b"hi")))
    for to in range(3):
        for frame in frames:
            yield (
                Script()
                .integer(1, 1, 6)
                .integer(1, 0, 4)
                .integer(to, 0, 2)
                .blob(frame, 1291)
                .flag(False)
                .build()
            )
    # Sent, then replayed; a foreign group's datagram; raw bytes.
    yield (
        Script()
        .integer(2, 1, 6)
        .integer(1, 0, 4)
        .integer(1, 0, 2)
        .blob(frames[0], 1291)
        .flag(False)
        .integer(3, 0, 4)
        .integer(0, 0, 0)
        .build()
    )
    yield (
        Script()
        .integer(1, 1, 6)
        .integer(4, 0, 4)
        .integer(1, 0, 2)
        .blob(frames[0], 1291)
        .flag(False)
        .build()
    )
    yield Script().integer(1, 1, 6).integer(0, 0, 4).blob(b"MVMC\x01" + bytes(120), 1500).build()


def bundle() -> Seeds:
    ours, theirs = keypair("node"), keypair("peer")
    content_key = seed_bytes("content-key")
    payloads = _payload_bytes()[:3]
    for peer in (True, False):
        header = BundleHeader(
            sender=theirs.public,
            recipient=ours.public if peer else None,
            group_id=None if peer else GROUP_ID,
            created_ms=1_700_000_000_000,
            chunks=len(payloads),
            messages=2,
            acks=1,
            requests=0,
            prerequisites=(seed_bytes("prerequisite"),),
            prerequisites_total=1,
        ).to_json(content_key)
        s = Script().raw(b"\x01").flag(peer).blob(header, 4096)
        s.integer(len(payloads), 0, 4).integer(1, -1, 1)
        for p in payloads:
            s.blob(p, 512)
        yield s.integer(0, 0, 8).build()
    yield b"\x00MVDSBNDL\x01\x02" + bytes(20)


# --- remote log ----------------------------------------------------------------------------


def _messages(n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        wire = encode_message(GROUP_ID, 100 + i, f"log message {i}".encode())
        out.append((message_id(GROUP_ID, 100 + i, f"log message {i}".encode()), wire))
    return out


async def _write_log(settings: LogSettings, key: bytes | None, batches: list[int]) -> MemoryBackend:
    backend = MemoryBackend()
    writer = LogWriter(backend, signing_key("writer"), GROUP_ID, settings=settings, group_key=key)
    await writer.load()
    done = 0
    for n in batches:
        await writer.append(_messages(done + n)[done:])
        done += n
    return backend


_LOGS = [
    (LogSettings(page_size=4, inline=2), None, [3, 6]),
    (LogSettings(page_size=2, inline=0, head_size=0), None, [5]),
    (LogSettings(page_size=3, inline=3), GROUP_KEY, [4, 2]),
    (LogSettings(signed=False, page_size=2, inline=1), None, [3]),
]


def _logs() -> Iterator[tuple[bool, MemoryBackend]]:
    for settings, key, batches in _LOGS:
        yield settings.signed, trio.run(_write_log, settings, key, batches)


def log_records() -> Seeds:
    writer = public_key(signing_key("writer"))
    name = log_name(writer, GROUP_ID)
    for signed, backend in _logs():
        for record in backend.ns.values():
            if signed:
                yield b"\x02" + record
                head = remotelog_pb2.SignedHead.FromString(record)
                yield (b"\x01" if head.sealed else b"\x00") + head.log
            else:
                yield b"\x00" + record
        for data in list(backend.cas.values())[:3]:
            yield b"\x00" + data
    page = Page((Pair(seed_bytes("id"), b"", b"inline"),), seed_bytes("tail")).encode()
    yield b"\x01" + seal(GROUP_KEY, page)
    yield b"\x02" + sign_head(signing_key("writer"), name, 2**63, page, False)
    yield b"\x03" + encode_acks({writer: 5, seed_bytes("member"): 2**64 - 1})
    yield b"\x03" + encode_acks({})
    yield b"\x03" + seed_bytes("old format", 64)


def log_reader() -> Seeds:
    for signed, backend in _logs():
        objects = list(backend.cas.values())
        for record in backend.ns.values():
            if signed:
                head = remotelog_pb2.SignedHead.FromString(record)
                flags, seq, log = int(head.sealed) | (1 << 4), head.seq, head.log
            else:
                flags, seq, log = 2 | 4, 0, record
            s = Script().integer(flags, 0, 255).integer(seq, 0, 2**16).blob(log, 8192)
            s.integer(len(objects), 0, 16)
            for o in objects:
                s.blob(o, 4096)
            yield s.build()


async def _archives(scratch: Path) -> list[bytes]:
    out = []
    writer = public_key(signing_key("writer"))
    for i, (settings, key, batches) in enumerate(_LOGS[:3]):
        backend = await _write_log(settings, key, batches)
        path = scratch / f"{i}.mvdslog"
        await export_log(backend, writer, GROUP_ID, path, group_key=key)
        out.append(path.read_bytes())
    return out


def archive() -> Seeds:
    with tempfile.TemporaryDirectory() as scratch:
        for data in trio.run(_archives, Path(scratch)):
            yield b"\x00" + data
    for signed, backend in _logs():
        if not signed:
            continue
        objects = list(backend.cas.values())
        head = remotelog_pb2.SignedHead.FromString(next(iter(backend.ns.values())))
        s = Script().raw(b"\x01").integer(int(head.sealed), 0, 255).integer(head.seq, 0, 2**16)
        s.blob(head.log, 8192).integer(len(objects), 0, 16)
        for o in objects:
            s.blob(o, 4096)
        yield s.integer(0, 0, 4).build()


def _request(target: str, body: bytes) -> bytes:
    """A POST as httpx writes it (through h11, as httpcore does)."""
    conn = h11.Connection(h11.CLIENT)
    headers = [
        ("Host", "127.0.0.1:8001"),
        ("Accept-Encoding", "identity"),
        ("Content-Type", "application/protobuf"),
        ("Content-Length", str(len(body))),
    ]
    out = conn.send(h11.Request(method="POST", target=target, headers=headers)) or b""
    out += conn.send(h11.Data(data=body)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


def _helper_requests() -> list[list[bytes]]:
    signing = signing_key("writer")
    name = log_name(public_key(signing), GROUP_ID)
    page = Page((Pair(seed_bytes("id"), b"", b"inline"),), b"").encode()
    add = _request("/twirp/vac.cas.CAS/Add", cas_pb2.Content(data=b"object").SerializeToString())
    get = _request(
        "/twirp/vac.cas.CAS/Get", cas_pb2.Address(id=address_of(b"object")).SerializeToString()
    )
    update = _request(
        "/twirp/vac.ns.NS/Update",
        ns_pb2.NameUpdate(
            name=name, content=sign_head(signing, name, 1, page, False)
        ).SerializeToString(),
    )
    again = _request(
        "/twirp/vac.ns.NS/Update",
        ns_pb2.NameUpdate(
            name=name, content=sign_head(signing, name, 1, page, False)
        ).SerializeToString(),
    )
    fetch = _request("/twirp/vac.ns.NS/Fetch", ns_pb2.Query(name=name).SerializeToString())
    missing = _request(
        "/twirp/vac.ns.NS/Fetch", ns_pb2.Query(name=name[:-1] + "0").SerializeToString()
    )
    return [
        [add],
        [get],
        [add, get],
        [update, fetch],
        [update, again, fetch, missing],
        [add, get, update, fetch],
    ]


def helper() -> Seeds:
    for i, requests in enumerate(_helper_requests()):
        yield Script().flag(i == 4).integer(0, 0, 8).raw(b"".join(requests)).build()
    one = _request("/twirp/vac.cas.CAS/Add", cas_pb2.Content(data=b"cut").SerializeToString())
    yield (
        Script()
        .flag(False)
        .integer(2, 0, 8)
        .integer(7, 1, 2048)
        .integer(60, 1, 2048)
        .raw(one)
        .build()
    )


def http_backend() -> Seeds:
    from tests.fuzz import fuzz_helper  # the helper's own answers, from the helper itself

    ops_for = {0: [0], 1: [1], 2: [0, 1], 3: [2, 3], 4: [2, 2, 3, 3], 5: [0, 1, 2, 3]}
    for i, requests in enumerate(_helper_requests()):
        answers = trio.run(fuzz_helper._serve, _helper.HelperLimits(), requests)
        ops = ops_for[i]
        s = Script().integer(len(ops), 1, 4)
        for op in ops:
            s.integer(op, 0, 3)
        yield s.integer(4096, 1, 4096).integer(1, 0, 4).blob(answers, 8192).build()
    yield (
        Script()
        .integer(1, 1, 4)
        .integer(1, 0, 3)
        .integer(4096, 1, 4096)
        .integer(1, 0, 4)
        .blob(response(404, b'{"code":"not_found","msg":"no such object"}'), 8192)
        .build()
    )


def _kubo(payload: object) -> bytes:
    return response(200, json.dumps(payload).encode(), content_type="application/json")


def ipfs_backend() -> Seeds:
    writer, other = "ab" * 32, "ef" * 32
    name = f"mvds/{writer}/" + "cd" * 8
    other_name = f"mvds/{other}/" + "cd" * 8
    key_name = f"{DIRECTORY_KEY}-{writer[:32]}"
    record_cid = cid_of(address_of(b"record"))
    directory = json.dumps({name: record_cid}, sort_keys=True).encode()
    theirs = json.dumps({other_name: record_cid}, sort_keys=True).encode()
    answers = {
        "put": _kubo({"Key": cid_of(address_of(b"object")), "Size": 6}),
        "get": response(200, b"object", content_type="text/plain"),
        "keys": _kubo({"Keys": [{"Name": key_name, "Id": "k51own"}]}),
        "no keys": _kubo({"Keys": []}),
        "gen": _kubo({"Name": key_name, "Id": "k51own"}),
        "unresolved": response(500, b'{"Message":"could not resolve name"}'),
        "record put": _kubo({"Key": record_cid, "Size": 6}),
        "dir put": _kubo({"Key": cid_of(address_of(directory)), "Size": len(directory)}),
        "publish": _kubo({"Name": "k51own", "Value": "/ipfs/" + cid_of(address_of(directory))}),
        "missing": response(500, b'{"Message":"block not found"}'),
        "resolve theirs": _kubo({"Path": "/ipfs/" + cid_of(address_of(theirs))}),
        "their dir": response(200, theirs, content_type="text/plain"),
        "record": response(200, b"record", content_type="text/plain"),
    }
    scripts = [
        ([0], ["put"]),
        ([1], ["get"]),
        ([1], ["missing"]),
        ([4], ["keys"]),
        ([4], ["no keys", "gen"]),
        ([3], ["resolve theirs", "their dir", "record"]),
        ([2], ["keys", "unresolved", "record put", "dir put", "publish"]),
        ([0, 1, 3], ["put", "get", "resolve theirs", "their dir", "record"]),
    ]
    for ops, names in scripts:
        s = Script().integer(len(ops), 1, 4)
        for op in ops:
            s.integer(op, 0, 4)
        # One keep-alive connection carries every answer, as from a real node.
        s.integer(4096, 1, 4096).integer(1, 0, 8).blob(b"".join(answers[n] for n in names), 8192)
        yield s.build()


def _resp_bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def redis_backend() -> Seeds:
    replies = [
        _resp_bulk(b"object"),
        b"$-1\r\n",
        b"_\r\n",
        b":1\r\n",
        b":0\r\n",
        b"+OK\r\n",
        b"-ERR unknown command\r\n",
        b"-NOSCRIPT No matching script\r\n",
        b"*2\r\n$1\r\na\r\n:2\r\n",
        b"%1\r\n+k\r\n+v\r\n",
        b"#t\r\n",
    ]
    for op in range(5):
        for reply in replies[:6]:
            yield Script().integer(1, 1, 4).integer(op, 0, 4).raw(reply).build()
    yield (
        Script()
        .integer(4, 1, 4)
        .integer(0, 0, 4)
        .integer(1, 0, 4)
        .integer(2, 0, 4)
        .integer(3, 0, 4)
        .raw(b"".join(replies[6:]) + b":1\r\n")
        .build()
    )


def _nats_msg(reply: int, data: bytes) -> bytes:
    return b"MSG _INBOX.f.%d 1 %d\r\n%s\r\n" % (reply, len(data), data)


def _nats_hmsg(reply: int, headers: str, data: bytes) -> bytes:
    head = ("NATS/1.0" + headers + "\r\n\r\n").encode()
    total = len(head) + len(data)
    return b"HMSG _INBOX.f.%d 1 %d %d\r\n%s%s\r\n" % (reply, len(head), total, head, data)


def nats_backend() -> Seeds:
    hello = b'INFO {"server_id":"x","version":"2.10.0","headers":true}\r\n+OK\r\nPONG\r\n'
    ready = _nats_msg(1, b'{"config":{"name":"KV_mvds"}}') + _nats_msg(2, b'{"config":{}}')
    record = _format.sign_head(signing_key("writer"), "x", 7, b"", False)
    meta = json.dumps({"nuid": "abc123", "size": 6, "chunks": 1}).encode()
    scripts = [
        ([0], hello + ready + _nats_hmsg(3, "\r\nNats-Sequence: 5", record)),
        ([0], hello + ready + _nats_hmsg(3, " 404 No Message", b"")),
        (
            [1],
            hello
            + ready
            + _nats_hmsg(3, " 404 No Message", b"")
            + _nats_msg(4, b'{"stream":"KV_mvds","seq":9}'),
        ),
        (
            [1],
            hello
            + ready
            + _nats_hmsg(3, "\r\nNats-Sequence: 5", record)
            + _nats_msg(4, b'{"error":{"code":400,"err_code":10071,"description":"wrong last"}}'),
        ),
        (
            [2],
            hello
            + ready
            + _nats_hmsg(3, " 404 No Message", b"")
            + _nats_msg(4, b'{"seq":1}')
            + _nats_msg(5, b'{"seq":2}'),
        ),
        (
            [3],
            hello
            + ready
            + _nats_hmsg(3, "", meta)
            + _nats_hmsg(4, "\r\nNats-Sequence: 1", b"object"),
        ),
        ([0, 0], b"PING\r\n" + hello + ready + b"-ERR 'Authorization Violation'\r\n"),
    ]
    for ops, server in scripts:
        s = Script().integer(len(ops), 1, 4)
        for op in ops:
            s.integer(op, 0, 3)
        yield s.integer(4096, 1, 4096).integer(1, 0, 3).blob(server, 8192).build()
    # The same conversation in reads of 5 bytes.
    yield (
        Script()
        .integer(1, 1, 4)
        .integer(0, 0, 3)
        .integer(5, 1, 4096)
        .integer(1, 0, 3)
        .blob(scripts[0][1], 8192)
        .build()
    )


def envelope() -> Seeds:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from mvds_node.node._envelope import seal as seal_envelope

    key = signing_key("alice")
    author = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    low, high = -(2**63), 2**63 - 1
    for timestamp, body in ((0, b""), (1_700_000_000_000, b"hello"), (-1, bytes(300))):
        sealed = seal_envelope(key, author, GROUP_ID, timestamp, body)
        for cut in (sealed, sealed[:-1], sealed[:50]):  # whole, one byte short, cut in the key
            yield Script().flag(False).integer(timestamp, low, high).raw(cut).build()
    yield Script().flag(True).integer(0, low, high).raw(b"mve\x02" + bytes(200)).build()
    yield Script().flag(False).integer(5, low, high).raw(b"plain body of a raw group").build()


def config() -> Seeds:
    peer = keypair("peer").public.hex()
    docs: list[dict[str, object]] = [
        {},
        {"node": {"listen": "127.0.0.1:7700", "name": "alice", "accept_unknown": True}},
        {
            "peers": [{"key": peer, "name": "bob", "address": "192.0.2.7:7700"}],
            "groups": [{"name": "chat", "members": ["bob"], "secret": GROUP_KEY.hex()}],
        },
        {"remote_log": {"url": "http://127.0.0.1:8001", "page_size": 16, "inline": 4}},
        {"sync": {"epoch_seconds": 2.0, "delivery": "consistent", "store_sync": "full"}},
    ]
    with tempfile.TemporaryDirectory() as scratch:
        for doc in docs:
            config = parse_config(doc, data_dir=Path(scratch), where="seed")
            yield render_config(config).encode()
    yield b"[node]\nlisten = '0.0.0.0:7700'\n[discovery]\nenabled = false\n"


MAKERS: dict[str, Callable[[], Seeds]] = {
    "archive": archive,
    "bundle": bundle,
    "config": config,
    "envelope": envelope,
    "framing": framing,
    "helper": helper,
    "http_backend": http_backend,
    "ipfs_backend": ipfs_backend,
    "log_reader": log_reader,
    "log_records": log_records,
    "multicast": multicast,
    "nats_backend": nats_backend,
    "noise_handshake": noise_handshake,
    "noise_session": noise_session,
    "payload": payload,
    "redis_backend": redis_backend,
}


def write(target: str) -> int:
    """Replace ``corpus/<target>/`` with freshly made seeds; return how many."""
    directory = CORPUS / target
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    real_urandom = os.urandom
    os.urandom = _deterministic_urandom()
    try:
        seeds = {hashlib.sha1(s).hexdigest(): s for s in MAKERS[target]()}
    finally:
        os.urandom = real_urandom
    for name, data in seeds.items():
        (directory / name).write_bytes(data)
    return len(seeds)


def main(argv: list[str]) -> None:
    for target in argv or sorted(MAKERS):
        if target not in MAKERS:
            raise SystemExit(f"make_corpus: no target {target!r}")
        print(f"{target}: {write(target)} seeds", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
