"""Retransmission schedules.

Theory of operation: 2/MVDS leaves the growth of a record's send epoch to the implementation. A
strategy maps (current epoch, send count, record key) to the epoch of the next transmission; the
engine calls it each time it transmits a record. Strategies are pure functions of their inputs so
that runs are reproducible: jitter comes from a keyed hash of the record and its count, not from a
random generator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, final

__all__ = ["Backoff", "ExponentialBackoff", "ReferenceBackoff"]


class Backoff(Protocol):
    """A retransmission schedule."""

    def next_epoch(self, *, epoch: int, send_count: int, key: bytes) -> int:
        """Return the epoch of the next transmission.

        Args:
            epoch: the current epoch, in which the record is being transmitted.
            send_count: transmissions so far, including this one (1 after the first).
            key: a stable identifier of the record (message ID and peer), for jitter.

        Returns:
            An epoch strictly greater than ``epoch``.
        """
        ...


@final
@dataclass(frozen=True, slots=True)
class ReferenceBackoff:
    """The Go reference simulation's schedule: ``epoch + 2 * send_count``.

    An unacknowledged record first sent at epoch 1 goes out again at 3, 7, 13, 21, 31, ...
    Useful for parity with the reference traces; the gap grows only linearly.
    """

    def next_epoch(self, *, epoch: int, send_count: int, key: bytes) -> int:
        return epoch + 2 * max(send_count, 1)


@final
@dataclass(frozen=True, slots=True)
class ExponentialBackoff:
    """Exponential growth with a cap and deterministic jitter (the default).

    The gap after the n-th transmission is ``min(cap, base * factor**(n-1))`` epochs, plus up to
    ``jitter`` of that gap, so that records queued together (a peer back from a long absence) do not
    stay in lock step. With the defaults and 0.5 s epochs: 1 s, 2 s, 4 s, ... up to one hour.
    """

    base_epochs: int = 2
    factor: float = 2.0
    cap_epochs: int = 7200
    jitter: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.base_epochs < 1 or self.cap_epochs < self.base_epochs:
            raise ValueError("need 1 <= base_epochs <= cap_epochs")
        if self.factor < 1.0 or not 0.0 <= self.jitter <= 1.0:
            raise ValueError("need factor >= 1 and 0 <= jitter <= 1")

    def next_epoch(self, *, epoch: int, send_count: int, key: bytes) -> int:
        n = max(send_count, 1) - 1
        # Stop multiplying once past the cap so huge counts cannot overflow a float.
        gap = (
            self.cap_epochs if n >= 64 else min(self.cap_epochs, self.base_epochs * self.factor**n)
        )
        extra = 0
        if self.jitter:
            digest = hashlib.blake2b(
                key + send_count.to_bytes(8, "little"),
                digest_size=8,
                key=self.seed.to_bytes(8, "little", signed=True),
            ).digest()
            unit = int.from_bytes(digest, "little") / 2**64
            extra = int(gap * self.jitter * unit)
        return epoch + max(1, int(gap) + extra)
