"""A lossy, duplicating, reordering network of engines on a hand-stepped clock.

Theory of operation: :class:`Net` drives real :class:`~mvds_node.sync.Engine` instances in
rounds. A round is one epoch: every engine is told the time, every engine's due payloads are
collected, the network decides each payload's fate from a seeded random generator (lost,
duplicated, delayed by some rounds, or delivered), and the survivors are handed to their
receivers in a shuffled order. Nothing here reads a clock or touches a socket, so any run is
reproduced exactly by its seed. Tests, benchmarks and the demo share it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import final

from mvds_node.sync import Engine, Event

__all__ = ["Net", "Transfer"]


@dataclass(frozen=True, slots=True)
class Transfer:
    """One payload the network carried (or lost)."""

    round: int
    sender: bytes
    receiver: bytes
    payload: bytes
    dropped: bool


@final
@dataclass
class Net:
    """Engines joined by a seeded lossy network.

    Args:
        seed: seeds every random choice of the network.
        loss: probability that a payload is lost.
        duplicate: probability that a delivered payload is delivered twice.
        delay: probability that a delivered payload is held back one or more rounds.
        max_delay: the most rounds a payload is held back.
        reorder: shuffle the payloads of a round before delivering them.
        epoch_seconds: the time one round advances (match the engines' epoch).
        drop: optional rule ``(round, sender, receiver) -> bool`` that drops payloads on purpose,
            applied before the random loss.
        record: keep every :class:`Transfer` in ``log``.
    """

    seed: int = 0
    loss: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    max_delay: int = 3
    reorder: bool = False
    epoch_seconds: float = 1.0
    drop: Callable[[int, bytes, bytes], bool] | None = None
    record: bool = False
    engines: dict[bytes, Engine] = field(default_factory=dict)
    events: dict[bytes, list[Event]] = field(default_factory=dict)
    log: list[Transfer] = field(default_factory=list)
    round: int = 0
    offline: set[bytes] = field(default_factory=set)
    payloads: int = 0
    wire_bytes: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._in_flight: list[tuple[int, bytes, bytes, bytes]] = []

    @property
    def now(self) -> float:
        return self.round * self.epoch_seconds

    def add(self, name: bytes, engine: Engine) -> Engine:
        self.engines[name] = engine
        self.events.setdefault(name, [])
        return engine

    def _collect_events(self) -> None:
        for name, engine in self.engines.items():
            self.events[name].extend(engine.events())

    def step(self) -> None:
        """Run one round: drain every online engine, carry the payloads, advance the clock."""
        now = self.now
        rng = self._rng
        outgoing: list[tuple[bytes, bytes, bytes]] = []
        for name, engine in self.engines.items():
            if name in self.offline:
                continue
            engine.handle_timer(now=now)
            while True:
                batch = engine.payloads_to_send(now=now)
                outgoing.extend((name, peer, data) for peer, data in batch)
                deadline = engine.next_deadline()
                if not batch or deadline is None or deadline > now:
                    break
        deliver: list[tuple[bytes, bytes, bytes]] = []
        held: list[tuple[int, bytes, bytes, bytes]] = []
        for due, sender, receiver, data in self._in_flight:
            if due <= self.round:
                deliver.append((sender, receiver, data))
            else:
                held.append((due, sender, receiver, data))
        self._in_flight = held
        for sender, receiver, data in outgoing:
            self.payloads += 1
            self.wire_bytes += len(data)
            lost = receiver not in self.engines or receiver in self.offline
            if not lost and self.drop is not None:
                lost = self.drop(self.round, sender, receiver)
            if not lost and self.loss:
                lost = rng.random() < self.loss
            if self.record:
                self.log.append(Transfer(self.round, sender, receiver, data, lost))
            if lost:
                continue
            copies = 2 if self.duplicate and rng.random() < self.duplicate else 1
            for _ in range(copies):
                if self.delay and rng.random() < self.delay:
                    later = self.round + rng.randint(1, self.max_delay)
                    self._in_flight.append((later, sender, receiver, data))
                else:
                    deliver.append((sender, receiver, data))
        if self.reorder:
            rng.shuffle(deliver)
        for sender, receiver, data in deliver:
            if receiver in self.offline or receiver not in self.engines:
                continue
            self.engines[receiver].receive_payload(sender, data, now=now)
        self._collect_events()
        self.round += 1

    def run(self, rounds: int) -> None:
        for _ in range(rounds):
            self.step()

    def run_until(self, done: Callable[[], bool], *, max_rounds: int) -> int:
        """Step until ``done()`` holds; return the rounds taken. Raises if it never does."""
        for taken in range(max_rounds + 1):
            self._collect_events()
            if done():
                return taken
            self.step()
        raise TimeoutError(f"condition not reached in {max_rounds} rounds (seed {self.seed})")

    def quiet(self) -> bool:
        """True when no engine has anything due and nothing is in flight."""
        if self._in_flight:
            return False
        for name, engine in self.engines.items():
            if name in self.offline:
                continue
            deadline = engine.next_deadline()
            if deadline is not None:
                return False
        return True
