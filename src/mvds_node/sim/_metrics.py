"""What a simulation run measured, as a table for people and as stable JSON for plots.

Theory of operation: the simulator counts while it runs and hands the totals to
:class:`SimResult`, which derives the figures (ratios, percentiles, multipliers) and renders
them. Nothing here depends on the wall clock, so the JSON of a run is byte-identical for the same
scenario and seed.

Definitions
-----------
* A *delivery* is one (message, recipient) pair: the recipients of a message are the other
  regular members of the sender's group (caches are not recipients). ``expected`` counts every
  pair of every message sent, ``delivered`` the pairs delivered before the run ended.
* *Latency* is the virtual time from ``send`` at the sender to delivery at the recipient. The
  p-th percentile is the nearest-rank one: the ``ceil(p/100 * n)``-th smallest latency.
* The *minimum* cost of a delivery is one MESSAGE record, and the bytes of a payload that
  carries only that message (``payload_overhead(len(wire))``). ``multiplier.bytes`` is every byte
  sent (sync payloads, hellos, remote-log traffic both ways) over the minimum bytes of the
  deliveries made; ``multiplier.records`` is every record sent over the deliveries made;
  ``multiplier.messages`` counts only full-message transfers (MESSAGE records, messages put into
  and fetched from the log). Traffic spent on messages that were never delivered still counts,
  so a low delivery ratio raises the multipliers.
* Records: ``ACK``, ``OFFER``, ``REQUEST``, ``MESSAGE`` (sync records in payloads sent,
  delivered or lost), ``HELLO`` (CONTROL frames), ``LOG_PUT`` (a message appended to a remote
  log), ``LOG_GET`` (a message a reader fetched from a log), ``LOG_ACK`` (one ID in a published
  acknowledgement record).
* Remote-log bytes are what crossed the helper's interface: NS records and CAS objects written
  (``log_up``) and read (``log_down``), including a head read that found nothing new.
  ``breakdown`` splits every byte: sync bytes by record type, hellos, and the log's bytes each
  way into signed log heads (``head``), frozen pages (``page``), message bodies stored by
  address (``body``) and acknowledgement records (``ack``).

JSON schema (``mvds-node/sim-result/1``); times in seconds, ratios in [0, 1]::

    {
      "schema": "mvds-node/sim-result/1",
      "scenario": {<every Scenario setting>},
      "deliveries": {"messages": int, "expected": int, "delivered": int, "ratio": float,
                     "complete": float},        # complete: share of messages every recipient got
      "latency": {"count": int, "mean": float|null, "p50": float|null, "p95": float|null,
                  "max": float|null},
      "latencies": [float, ...],                # every delivery's latency, sorted (for a CDF)
      "records": {"ACK": int, "OFFER": int, "REQUEST": int, "MESSAGE": int, "HELLO": int,
                  "LOG_PUT": int, "LOG_GET": int, "LOG_ACK": int, "total": int},
      "bytes": {"sync": int, "hello": int, "log_up": int, "log_down": int, "total": int},
      "breakdown": {"sync": {"ACK": int, "OFFER": int, "REQUEST": int, "MESSAGE": int},
                    "hello": int,
                    "log_up": {"head": int, "page": int, "body": int, "ack": int},
                    "log_down": {"head": int, "page": int, "body": int, "ack": int}},
      "payloads": {"sent": int, "lost": int, "delivered": int},
      "minimum": {"records": int, "bytes": int},
      "multiplier": {"bytes": float|null, "records": float|null, "messages": float|null},
      "gave_up": int,
      "per_node": [{"node": int, "group": int, "role": "member"|"cache", "mode": str,
                    "sent": int,             # messages this node sent
                    "delivered": int,        # deliveries to this node
                    "bytes_sent": int, "bytes_received": int, "log_bytes": int,
                    "records": {"ACK": int, "OFFER": int, "REQUEST": int, "MESSAGE": int}}],
      "nodes": {"bytes_sent": {"mean": float, "max": int},
                "bytes_received": {"mean": float, "max": int},
                "log_bytes": {"mean": float, "max": int}}   # over members, caches excluded
    }

A sweep (:func:`mvds_node.sim.sweep`) is ``{"schema": "mvds-node/sim-sweep/1", "key": str,
"values": [...], "runs": [{"scenario": name, "value": v, "result": <result>}, ...]}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from mvds_node.sim._scenario import Scenario
from mvds_node.sync import ID_RECORD_SIZE

__all__ = ["RECORD_TYPES", "NodeFigures", "SimResult", "percentile"]

SCHEMA: Final = "mvds-node/sim-result/1"
SWEEP_SCHEMA: Final = "mvds-node/sim-sweep/1"
RECORD_TYPES: Final = (
    "ACK",
    "OFFER",
    "REQUEST",
    "MESSAGE",
    "HELLO",
    "LOG_PUT",
    "LOG_GET",
    "LOG_ACK",
)


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of an ascending sequence (None if empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


@dataclass(slots=True)
class NodeFigures:
    """One node's row of ``per_node`` (fields in the order of the JSON)."""

    node: int
    group: int
    role: str
    mode: str
    sent: int
    delivered: int
    bytes_sent: int
    bytes_received: int
    log_bytes: int
    records: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class SimResult:
    """The totals of one run; figures are derived on demand."""

    scenario: Scenario
    messages: int
    expected: int
    delivered: int
    complete: int
    """Messages delivered to every recipient."""
    latencies: list[float]
    records: dict[str, int]
    sync_bytes: int
    hello_bytes: int
    log_up: int
    log_down: int
    log_up_parts: dict[str, int]
    """``log_up`` by what it carried: "head" (log heads), "page" (frozen pages), "body"
    (messages stored by address), "ack" (acknowledgement records)."""
    log_down_parts: dict[str, int]
    """``log_down`` likewise."""
    payloads_sent: int
    payloads_lost: int
    min_bytes: int
    gave_up: int
    nodes: list[NodeFigures]

    def __post_init__(self) -> None:
        self.latencies.sort()

    # ----------------------------------------------------------------- figures

    @property
    def ratio(self) -> float:
        return self.delivered / self.expected if self.expected else 1.0

    @property
    def total_bytes(self) -> int:
        return self.sync_bytes + self.hello_bytes + self.log_up + self.log_down

    @property
    def total_records(self) -> int:
        return sum(self.records.values())

    def breakdown(self) -> dict[str, Any]:
        """Where the bytes went: sync bytes by record type (an ACK, OFFER or REQUEST takes
        ``ID_RECORD_SIZE`` bytes, a MESSAGE the rest), hellos, and remote-log bytes by part."""
        ids = {k: self.records[k] * ID_RECORD_SIZE for k in ("ACK", "OFFER", "REQUEST")}
        return {
            "sync": {**ids, "MESSAGE": self.sync_bytes - sum(ids.values())},
            "hello": self.hello_bytes,
            "log_up": dict(self.log_up_parts),
            "log_down": dict(self.log_down_parts),
        }

    def latency(self, p: float) -> float | None:
        return percentile(self.latencies, p)

    @property
    def multiplier_bytes(self) -> float | None:
        return self.total_bytes / self.min_bytes if self.min_bytes else None

    @property
    def multiplier_records(self) -> float | None:
        return self.total_records / self.delivered if self.delivered else None

    @property
    def multiplier_messages(self) -> float | None:
        if not self.delivered:
            return None
        r = self.records
        return (r["MESSAGE"] + r["LOG_PUT"] + r["LOG_GET"]) / self.delivered

    # ---------------------------------------------------------------- rendering

    def to_dict(self) -> dict[str, Any]:
        """The result as the JSON object documented in this module."""
        lat = self.latencies
        members = [n for n in self.nodes if n.role == "member"]

        def spread(values: list[int]) -> dict[str, Any]:
            return {
                "mean": _r(sum(values) / len(values)) if values else 0.0,
                "max": max(values, default=0),
            }

        return {
            "schema": SCHEMA,
            "scenario": self.scenario.to_dict(),
            "deliveries": {
                "messages": self.messages,
                "expected": self.expected,
                "delivered": self.delivered,
                "ratio": _r(self.ratio),
                "complete": _r(self.complete / self.messages if self.messages else 1.0),
            },
            "latency": {
                "count": len(lat),
                "mean": _r(sum(lat) / len(lat)) if lat else None,
                "p50": _r(self.latency(50)),
                "p95": _r(self.latency(95)),
                "max": _r(lat[-1]) if lat else None,
            },
            "latencies": [round(x, 6) for x in lat],
            "records": {**{k: self.records[k] for k in RECORD_TYPES}, "total": self.total_records},
            "bytes": {
                "sync": self.sync_bytes,
                "hello": self.hello_bytes,
                "log_up": self.log_up,
                "log_down": self.log_down,
                "total": self.total_bytes,
            },
            "breakdown": self.breakdown(),
            "payloads": {
                "sent": self.payloads_sent,
                "lost": self.payloads_lost,
                "delivered": self.payloads_sent - self.payloads_lost,
            },
            "minimum": {"records": self.delivered, "bytes": self.min_bytes},
            "multiplier": {
                "bytes": _r(self.multiplier_bytes),
                "records": _r(self.multiplier_records),
                "messages": _r(self.multiplier_messages),
            },
            "gave_up": self.gave_up,
            "per_node": [n.to_dict() for n in self.nodes],
            "nodes": {
                "bytes_sent": spread([n.bytes_sent for n in members]),
                "bytes_received": spread([n.bytes_received for n in members]),
                "log_bytes": spread([n.log_bytes for n in members]),
            },
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """A short human summary (what ``mvds-node sim`` prints by default)."""
        s = self.scenario

        def secs(x: float | None) -> str:
            return "-" if x is None else f"{x:.1f} s"

        def times(x: float | None) -> str:
            return "-" if x is None else f"x{x:.2f}"

        lat = self.latencies
        rows = [
            ("scenario", f"{s.name} (seed {s.seed})"),
            ("nodes", f"{s.nodes} + {len(self.nodes) - s.nodes} caches"),
            ("messages sent", str(self.messages)),
            (
                "delivered",
                f"{self.delivered}/{self.expected} ({self.ratio * 100:.1f} %), "
                f"{self.complete}/{self.messages} messages to everyone",
            ),
            (
                "latency",
                f"p50 {secs(self.latency(50))}, p95 {secs(self.latency(95))}, "
                f"max {secs(lat[-1] if lat else None)}",
            ),
            (
                "multiplier",
                f"bytes {times(self.multiplier_bytes)}, records {times(self.multiplier_records)}, "
                f"messages {times(self.multiplier_messages)}",
            ),
            (
                "records",
                ", ".join(f"{k} {self.records[k]}" for k in RECORD_TYPES if self.records[k]),
            ),
            (
                "bytes",
                f"{self.total_bytes} (sync {self.sync_bytes}, hello {self.hello_bytes}, "
                f"log up {self.log_up}, log down {self.log_down}; minimum {self.min_bytes})",
            ),
            ("payloads", f"{self.payloads_sent} sent, {self.payloads_lost} lost"),
        ]
        b = self.breakdown()
        parts = [
            ("sync", ", ".join(f"{k} {v}" for k, v in b["sync"].items() if v)),
            ("log up", ", ".join(f"{k} {v}" for k, v in b["log_up"].items() if v)),
            ("log down", ", ".join(f"{k} {v}" for k, v in b["log_down"].items() if v)),
        ]
        where = "; ".join(f"{k}: {v}" for k, v in parts if v)
        if where:
            rows.append(("bytes by part", where))
        if self.gave_up:
            rows.append(("gave up", str(self.gave_up)))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
