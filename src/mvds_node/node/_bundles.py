"""Export and import of bundle files (sneakernet), joining the engine and the file carrier.

``export_bundle`` takes what a peer (or every member of a group) still needs from the engine,
writes it as one sealed file, and only after the file is complete and on disk counts it as sent,
with a carrier latency of days so that the engine does not chase it with retransmissions.
The payloads are made one chunk at a time as the file is written, so the bundle is never held
twice in memory. ``import_bundle`` authenticates a whole file first, then streams its payloads
(authenticated again as they are read) into :meth:`Engine.receive_payloads` as if they had
arrived from the sender over the network: acknowledgements, dependencies and delivery work
unchanged, a second import of the same file only finds duplicates, and a file that fails
half-way (or changes between the two passes) changes nothing, neither in the store nor in the
engine's events and acknowledgement queues.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mvds_node.errors import MvdsError
from mvds_node.sync import ID_RECORD_SIZE, Engine, ExportSnapshot, encode_payload, payload_overhead
from mvds_node.transports import (
    BundleError,
    BundleHeader,
    Keypair,
    Progress,
    open_bundle,
    write_bundle,
)

__all__ = ["FILE_LATENCY", "ExportResult", "ImportResult", "export_bundle", "import_bundle"]

FILE_LATENCY: Final = 3 * 24 * 3600.0
"""Seconds a bundle is assumed to take to reach its reader (carried by hand): retransmission of
what it carried waits twice this long, or until the peer shows up on a live carrier."""
CHUNK_BYTES: Final = 1024 * 1024
"""Payload size inside a bundle: big enough to be efficient, small enough to stream."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    path: Path
    bytes: int
    messages: int
    acks: int
    requests: int
    prerequisites: int


@dataclass(frozen=True, slots=True)
class ImportResult:
    sender: bytes
    sender_proved: bool
    messages_new: int
    messages_known: int
    acks: int
    missing_prerequisites: int
    """Parents the bundle's messages name that we do not have (they are requested from the
    sender the next time we sync with it)."""


def _plan(snapshot: ExportSnapshot, acks: list[bytes]) -> list[tuple[str, int, int]]:
    """Cut the snapshot into payloads of at most about :data:`CHUNK_BYTES`: one (kind, start,
    end) slice per payload, so that the count is known before any payload is made."""
    per_chunk = CHUNK_BYTES // ID_RECORD_SIZE
    plan = [("acks", i, i + per_chunk) for i in range(0, len(acks), per_chunk)]
    plan += [("requests", i, i + per_chunk) for i in range(0, len(snapshot.requests), per_chunk)]
    start, size = 0, 0
    for index, length in enumerate(snapshot.messages.sizes):
        cost = payload_overhead(length)
        if index > start and size + cost > CHUNK_BYTES:
            plan.append(("messages", start, index))
            start, size = index, 0
        size += cost
    if start < len(snapshot.messages) or not plan:
        plan.append(("messages", start, len(snapshot.messages)))
    return plan


def _acks(snapshot: ExportSnapshot) -> list[bytes]:
    return list(dict.fromkeys(a for ids in snapshot.acks.values() for a in ids))


def _payloads(
    snapshot: ExportSnapshot, acks: list[bytes], plan: list[tuple[str, int, int]]
) -> Iterator[bytes]:
    """The payloads of ``plan``, each made only when the writer asks for it."""
    for kind, start, end in plan:
        if kind == "acks":
            yield encode_payload(acks[start:end])
        elif kind == "requests":
            yield encode_payload((), (), snapshot.requests[start:end])
        else:
            yield encode_payload((), (), (), snapshot.messages[start:end])


def export_bundle(
    engine: Engine,
    path: str | os.PathLike[str],
    *,
    sender: Keypair,
    now: float,
    created_ms: int,
    peer: bytes | None = None,
    group_id: bytes | None = None,
    group_key: bytes | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Write what ``peer`` (or every member of ``group_id``) lacks to ``path``.

    A peer bundle is sealed to the peer's key; a group bundle to ``group_key``. Records count as
    sent only once the file is complete and fsynced; if writing fails, nothing changes.

    Raises:
        BundleError: no target given, or the file cannot be written.
    """
    if (peer is None) == (group_id is None):
        raise BundleError("export for exactly one of: a peer, a group")
    if group_id is not None:
        members = engine.groups().get(group_id)
        if members is None:
            raise BundleError(f"not a member of group {group_id.hex()[:16]}")
        if group_key is None:
            raise BundleError("a group bundle needs the group's secret (groups add --secret)")
        peers = list(members)
    else:
        assert peer is not None
        peers = [peer]
    snapshot = engine.export_snapshot(peers, now=now)
    acks = _acks(snapshot)
    plan = _plan(snapshot, acks)
    header = BundleHeader(
        sender=sender.public,
        recipient=peer,
        group_id=group_id,
        created_ms=created_ms,
        chunks=len(plan),
        messages=len(snapshot.messages),
        acks=sum(len(a) for a in snapshot.acks.values()),
        requests=len(snapshot.requests),
        prerequisites=snapshot.prerequisites,
        prerequisites_total=len(snapshot.prerequisites),
    )
    target = Path(path)
    size = write_bundle(
        target,
        _payloads(snapshot, acks, plan),
        header,
        sender=sender,
        group_key=group_key,
        progress=progress,
    )
    engine.commit_export(snapshot, now=now, latency_seconds=FILE_LATENCY)
    return ExportResult(
        target,
        size,
        header.messages,
        header.acks,
        header.requests,
        header.prerequisites_total,
    )


def import_bundle(
    engine: Engine,
    path: str | os.PathLike[str],
    *,
    keypair: Keypair,
    now: float,
    group_keys: Mapping[bytes, bytes] | None = None,
    progress: Progress | None = None,
    apply_progress: Progress | None = None,
) -> ImportResult:
    """Authenticate the bundle at ``path`` completely, then apply it as one input.

    The payloads are read (and authenticated) again as they are applied, with
    :meth:`Engine.receive_payloads`: all of them, or none.

    Args:
        progress: called with (chunks verified, chunks in all) during the first pass.
        apply_progress: called with (chunks applied, chunks in all) during the second.

    Raises:
        BundleError: not a bundle, not for us, damaged, changed since it was verified,
            unreadable, or from a key that shares no group with us. Nothing was applied.
    """
    bundle = open_bundle(path, keypair=keypair, group_keys=group_keys, progress=progress)
    header = bundle.header
    sender = header.sender
    groups = engine.groups()
    if not any(sender in members for members in groups.values()):
        raise BundleError(
            f"{bundle.path}: bundle from {sender.hex()[:16]}, who shares no group with us"
        )
    if header.group_id is not None and header.group_id not in groups:
        raise BundleError(f"{bundle.path}: bundle for a group we are not in")
    stats = engine.statistics()
    before_received = stats.messages_received
    before_dup = stats.duplicates_received
    try:
        engine.receive_payloads(
            sender,
            _counted(bundle.payloads(), header.chunks, apply_progress),
            now=now,
            via="bundle",
        )
    except BundleError:
        raise
    except MvdsError as e:
        raise BundleError(f"{bundle.path}: could not apply the bundle: {e}") from e
    missing = sum(1 for p in header.prerequisites if not engine.has_message(p))
    stats = engine.statistics()  # a snapshot: taken again after the payloads
    return ImportResult(
        sender=sender,
        sender_proved=bundle.sender_proved,
        messages_new=(stats.messages_received - before_received)
        - (stats.duplicates_received - before_dup),
        messages_known=stats.duplicates_received - before_dup,
        acks=header.acks,
        missing_prerequisites=missing,
    )


def _counted(payloads: Iterator[bytes], total: int, progress: Progress | None) -> Iterator[bytes]:
    """``payloads``, reporting each one as applied when the engine asks for the next."""
    for done, payload in enumerate(payloads, 1):
        yield payload
        if progress is not None:
            progress(done, total)
