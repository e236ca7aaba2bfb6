"""One supervisor per carrier: read its packets and events into the node's loop, reopen it.

Theory of operation
-------------------
Every carrier the node holds gets one :func:`supervise` task. It reads packets (and, when the
carrier has them, events) and puts them on the loop's input channel, the one bounded channel it
reads, so that every engine input goes through that loop and a flood waits in the carrier.
What happens to the carrier itself goes there too, as :class:`CarrierOpened` and
:class:`CarrierFailed`: the loop, not this task, updates the routes and reports it.

A carrier that can reopen (it has ``open()`` and ``reopen()``, as a multicast carrier whose LAN
interface comes and goes) is opened here, and after a failure (``TransportBroken``, or an
``OSError`` opening it) reopened after 1, 2, 5 ... 60 seconds until it opens again. Any other
carrier is read until it closes or breaks; one that breaks is not read again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Protocol, final, runtime_checkable

import trio

from mvds_node.errors import TransportBroken, TransportClosed
from mvds_node.transports import Transport, TransportEvent

__all__ = [
    "carrier_name",
    "CarrierEvent",
    "CarrierFailed",
    "CarrierOpened",
    "describe",
    "read_events",
    "supervise",
]

REOPEN_DELAYS: Final = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Seconds between attempts to reopen a failed carrier (the last one repeats)."""


@runtime_checkable
class Reopens(Protocol):
    """A carrier that is opened by its supervisor and can be opened again after a failure."""

    async def open(self) -> None: ...

    async def reopen(self) -> None: ...


@final
@dataclass(frozen=True, slots=True)
class CarrierOpened:
    """A carrier that reopens is open; ``restored`` if it had failed before."""

    carrier: Transport
    restored: bool


@final
@dataclass(frozen=True, slots=True)
class CarrierFailed:
    """A carrier failed as a whole, or cannot open."""

    carrier: Transport
    detail: str


@final
@dataclass(frozen=True, slots=True)
class CarrierEvent:
    """An event a carrier reported (a peer up or down, refused input)."""

    carrier: Transport
    event: TransportEvent


def carrier_name(carrier: Transport) -> str:
    """A carrier's short name, as traces and ``status`` show it: its ``name`` attribute, else
    its class name without ``Transport``, in lower case (``tcp``, ``multicast``, ``memory``)."""
    name = getattr(carrier, "name", None)
    if isinstance(name, str) and name:
        return name
    return type(carrier).__name__.removesuffix("Transport").lower() or "carrier"


def describe(carrier: Transport) -> str:
    """What a person reads about a carrier: its ``description`` or its class name."""
    text = getattr(carrier, "description", None)
    return text if isinstance(text, str) else type(carrier).__name__


async def supervise(
    carrier: Transport,
    inputs: trio.MemorySendChannel[Any],
    *,
    task_status: trio.TaskStatus[CarrierOpened | CarrierFailed | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Read ``carrier`` into ``inputs`` until it closes; reopen it if it can (see the module
    doc). Reports started after the first attempt to open it, whether it opened or not (the
    node runs without it meanwhile), with that attempt's outcome instead of queueing it: None
    for a carrier that is not opened here."""
    reopens = isinstance(carrier, Reopens)
    attempt = 0  # failed attempts since the carrier last worked (picks the delay)
    down = False
    started = False
    while True:
        outcome: CarrierOpened | CarrierFailed | None = None
        if isinstance(carrier, Reopens):
            try:
                await (carrier.reopen() if attempt else carrier.open())
            except TransportClosed:
                if not started:
                    task_status.started(None)
                return
            except OSError as e:
                if not down:
                    down = True
                    outcome = CarrierFailed(carrier, f"cannot open: {e}")
            else:
                outcome = CarrierOpened(carrier, restored=down)
                down = False
                attempt = 0
        if not started:
            task_status.started(outcome)
            started = True
        elif outcome is not None:
            await inputs.send(outcome)
        if not down:
            try:
                while True:
                    peer, packet = await carrier.receive()
                    await inputs.send((carrier, peer, packet))
            except (TransportClosed, trio.EndOfChannel, trio.ClosedResourceError):
                return
            except TransportBroken as e:
                down = True
                await inputs.send(CarrierFailed(carrier, str(e)))
        if not reopens:
            return
        await trio.sleep(REOPEN_DELAYS[min(attempt, len(REOPEN_DELAYS) - 1)])
        attempt += 1


async def read_events(
    carrier: Transport,
    events: trio.MemoryReceiveChannel[TransportEvent],
    inputs: trio.MemorySendChannel[Any],
) -> None:
    """Forward a carrier's events to ``inputs`` until they end."""
    async for event in events:
        await inputs.send(CarrierEvent(carrier, event))
