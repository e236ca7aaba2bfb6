"""Simulation scenarios: every setting of a run in one frozen dataclass, TOML files and presets.

Theory of operation: a :class:`Scenario` says who syncs with whom, who sends how often, how the
engines are tuned, when nodes (and the remote-log helper) are reachable, and how long to run.
Every field has a default, so a scenario file names only what differs; a file may start from a
preset (``preset = "notes-batch"``) and change a few keys. Every check names the offending key,
so a typo in a file is one clear line, never a traceback.

Availability models a node being online or not:

* ``"epoch"``: in each availability period (``availability_period`` seconds, by default one
  engine epoch) every node is online with probability ``availability``, independently, as in
  the MVDS design notes' simulation (``burstyMobile``: availability re-drawn each tick);
* ``"sessions"``: on and off sessions of exponential length; online sessions last
  ``session_seconds`` on average, offline ones ``session_seconds * (1 - p) / p``, so that the
  node is online a fraction ``p`` of the time.

An offline node neither sends nor receives; a payload to it is lost. ``offline_sends`` says what
its engine does meanwhile: ``"deferred"`` (a node knows it has no network and drains its engine
when it is back, so nothing is spent while offline) or ``"lost"`` (the node does not know: its
engine runs on and every payload it produces while offline is counted as sent and lost, which is
how the design notes count). ``loss`` is separate: each payload that both ends could carry is
lost with this probability (the Go simulation's ``-offline`` flag is this kind of loss).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mvds_node.errors import ConfigError

__all__ = [
    "PRESETS",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "parse_value",
    "preset",
    "with_overrides",
]


class ScenarioError(ConfigError):
    """A scenario setting, file or preset is invalid; the message names the key."""


_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "mode": ("batch", "interactive", "mixed"),
    "backoff": ("reference", "exponential", "constant"),
    "relay": ("mode", "offer", "none"),
    "availability_model": ("epoch", "sessions"),
    "offline_sends": ("deferred", "lost"),
    "log_readers": ("peers", "group"),
}


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything that defines one simulation run (times in seconds of virtual time)."""

    name: str = "custom"
    description: str = ""
    seed: int = 0
    """Seeds every random choice (topology, availability, loss, send phases)."""

    # Who syncs with whom.
    nodes: int = 3
    """Nodes that send and receive (caches come on top)."""
    group_size: int = 0
    """Nodes per group; 0 puts every node in one group. A remainder too small to form a group
    of two joins the last group."""
    sharing: int = 0
    """Peers each node picks at random among its group's members; 0: every member. Links are
    symmetric (a peer that picks us is our peer too)."""
    caches: int = 0
    """Always-on relay nodes added to each group and peered with every member (the design
    notes' "always-on cache"). They neither send nor count as recipients."""

    # Traffic.
    senders: int = 1
    """Nodes that send in each group (the first ones); 0: every member."""
    interval: float = 5.0
    """Seconds between two messages of one sender (each sender starts at a random phase)."""
    messages: int = 0
    """Stop sending after this many messages in total; 0: no limit."""
    send_for: float = 0.0
    """Senders send during the first ``send_for`` seconds; 0: the whole run. The rest of the
    run lets late messages arrive."""
    body_bytes: int = 64
    duration: float = 180.0

    # Engines.
    mode: str = "batch"
    """How each node sends to its peers: "batch", "interactive", or "mixed" (the first
    ``interactive_nodes`` of each group interactive, the others batch)."""
    interactive_nodes: int = 0
    epoch_seconds: float = 1.0
    backoff: str = "exponential"
    """"reference" (the Go code: epoch + 2 * count), "exponential" (gap backoff_base *
    backoff_factor**(n-1) epochs up to backoff_cap, plus jitter) or "constant" (every
    backoff_base epochs)."""
    backoff_base: int = 1
    backoff_factor: float = 2.0
    backoff_cap: int = 3600
    backoff_jitter: float = 0.0
    relay: str = "mode"
    max_attempts: int = 0
    """Transmissions of one record before the engine gives up; 0: never."""

    # Network.
    availability: float = 1.0
    availability_model: str = "epoch"
    availability_period: float = 0.0
    """Length of an availability period for the "epoch" model; 0: one engine epoch."""
    session_seconds: float = 60.0
    """Mean online session for the "sessions" model."""
    offline_sends: str = "deferred"
    loss: float = 0.0
    delay: float = 0.0
    """One-way delay of every payload."""
    hello: bool = False
    """A node coming online says hello to its peers; each peer online then answers, and both
    re-arm what they owe each other (``Engine.reset_peer``), so pending records go out at once
    instead of at their next backoff epoch. A hello costs a 20-byte CONTROL frame."""

    # The remote log (helper).
    log: bool = False
    """Every node writes its own messages to its remote log on an in-memory CAS/NS and reads
    its peers' logs."""
    log_availability: float = 1.0
    """Availability of the CAS/NS helper (same model and period as the nodes')."""
    log_poll: float = 30.0
    """Seconds between two reads of the peers' logs by an online node, counted from the last
    read; a node also reads them when it comes online, if ``hello`` is on."""
    log_acks: bool = False
    """Acknowledgements through the log: a node that fetched messages publishes how far it has
    read each log, and a writer reading that (while some of its messages await it) stops
    retransmitting what the reader holds."""
    log_page_size: int = 64
    log_head_size: int = 64
    """Entries the head page holds at most (and at most ``log_page_size``); every head read
    downloads them. 0: each upload freezes its messages into a new page and the head only
    names it."""
    log_inline: int = 64
    log_readers: str = "peers"
    """Whose logs a node reads: its sync "peers" or every member of its "group"."""

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ScenarioError:
            return ScenarioError(f"scenario key {key!r}: {why}, got {getattr(self, key)!r}")

        for key, choices in _CHOICES.items():
            if getattr(self, key) not in choices:
                raise bad(key, "must be one of " + ", ".join(repr(c) for c in choices))
        positive_ints = ("nodes", "backoff_base", "backoff_cap", "log_page_size")
        for key in positive_ints:
            if getattr(self, key) < 1:
                raise bad(key, "must be at least 1")
        for key in (
            "group_size",
            "sharing",
            "caches",
            "senders",
            "messages",
            "interactive_nodes",
            "max_attempts",
            "log_head_size",
            "log_inline",
        ):
            if getattr(self, key) < 0:
                raise bad(key, "must not be negative")
        if self.group_size == 1:
            raise bad("group_size", "must be 0 (one group) or at least 2")
        for key in ("interval", "duration", "epoch_seconds", "session_seconds", "log_poll"):
            value = getattr(self, key)
            if not (value > 0 and math.isfinite(value)):
                raise bad(key, "must be a positive number")
        for key in ("send_for", "availability_period", "delay"):
            value = getattr(self, key)
            if not (value >= 0 and math.isfinite(value)):
                raise bad(key, "must be a number >= 0")
        for key in ("availability", "log_availability"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise bad(key, "must be between 0 and 1")
        if not 0.0 <= self.loss < 1.0:
            raise bad("loss", "must be at least 0 and below 1")
        if not 0.0 <= self.backoff_jitter <= 1.0:
            raise bad("backoff_jitter", "must be between 0 and 1")
        if self.backoff_factor < 1.0:
            raise bad("backoff_factor", "must be at least 1")
        if self.backoff_cap < self.backoff_base:
            raise bad("backoff_cap", "must be at least backoff_base")
        if not 8 <= self.body_bytes <= 1024 * 1024:
            raise bad("body_bytes", "must be 8 (a sender and sequence tag) to 1 MiB (the limit)")

    @property
    def period(self) -> float:
        """The availability period actually used."""
        return self.availability_period or self.epoch_seconds

    @property
    def send_until(self) -> float:
        return min(self.send_for, self.duration) if self.send_for else self.duration

    def to_dict(self) -> dict[str, Any]:
        """Every setting, in field order (the ``scenario`` object of a result)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


_FIELDS: Final[dict[str, Any]] = {
    f.name: f.default for f in dataclasses.fields(Scenario) if f.default is not dataclasses.MISSING
}


def _typed(key: str, value: Any) -> Any:
    """Check ``value`` against the type of setting ``key`` (a float setting takes an int)."""
    if key not in _FIELDS:
        close = difflib.get_close_matches(key, list(_FIELDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ScenarioError(f"unknown scenario key {key!r}{hint}")
    default = _FIELDS[key]
    if key == "sharing" and value == "all":
        return 0
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ScenarioError(f"scenario key {key!r}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"scenario key {key!r}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScenarioError(f"scenario key {key!r}: expected a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ScenarioError(f"scenario key {key!r}: expected a string, got {value!r}")
    return value


def with_overrides(base: Scenario, values: Mapping[str, Any]) -> Scenario:
    """``base`` with some settings changed; each value is checked against its setting's type.

    Raises:
        ScenarioError: an unknown key, a value of the wrong type, or an invalid result.
    """
    changes = {key: _typed(key, value) for key, value in values.items()}
    return dataclasses.replace(base, **changes)


def parse_value(key: str, text: str) -> Any:
    """Parse the text of a ``--set key=value`` for setting ``key``.

    Raises:
        ScenarioError: an unknown key or text that is not a value of its type.
    """
    if key not in _FIELDS:
        _typed(key, None)  # raises, with a suggestion
    default = _FIELDS[key]
    try:
        if isinstance(default, bool):
            lowered = text.strip().lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            if key == "sharing" and text.strip() == "all":
                return 0
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = type(default).__name__
        raise ScenarioError(f"scenario key {key!r}: {text!r} is not a {kind}") from None
    return text


# The design notes' setting: two nodes, one sending every 5 s, each online 10 % of the time,
# re-drawn every 1 s epoch; the Go code's retransmission schedule (which produced the notes'
# figures). Thirty minutes of sending and thirty more for late messages to arrive. The notes
# say a node offline 90 % of the time loses each record 90 % of the time: a node sends while it
# is online and the record is lost when its peer is not ("deferred"). With "lost" the sender's
# own offline epochs lose 90 % more, so each record would be lost 99 % of the time.
_NOTES: Final[dict[str, Any]] = {
    "nodes": 2,
    "senders": 1,
    "interval": 5.0,
    "availability": 0.1,
    "availability_model": "epoch",
    "offline_sends": "deferred",
    "backoff": "reference",
    "duration": 3600.0,
    "send_for": 1800.0,
}

PRESETS: Final[dict[str, Scenario]] = {
    "go-default": Scenario(
        name="go-default",
        description=(
            "The reference Go simulation's defaults: 3 nodes each sharing with 2, node 0 "
            "sending every 5 s, 2 interactive + 1 batch, 90 % of payloads dropped, epoch + "
            "2*count backoff; 120 s of sending, measured at 180 s (messages >= 60 s old)"
        ),
        nodes=3,
        sharing=2,
        senders=1,
        interval=5.0,
        mode="mixed",
        interactive_nodes=2,
        loss=0.9,
        backoff="reference",
        duration=180.0,
        send_for=120.0,
    ),
    "notes-interactive": Scenario(
        name="notes-interactive",
        description=(
            "The design notes' scenario, interactive mode: 2 nodes each online 10 % of the "
            "time (re-drawn every 1 s epoch), one sending every 5 s, a node sends while "
            "online (each record is lost 90 % of the time), Go backoff (epoch + 2*count)"
        ),
        mode="interactive",
        **_NOTES,
    ),
    "notes-batch": Scenario(
        name="notes-batch",
        description="The design notes' scenario in batch mode",
        mode="batch",
        **_NOTES,
    ),
    "notes-cache": Scenario(
        name="notes-cache",
        description=(
            "The design notes' estimate: the batch scenario plus one always-on cache node "
            "that both nodes sync with and that a node syncs with on coming online (hello), "
            "exponential backoff x2 (sends at epochs 1, 2, 4, 8 ...)"
        ),
        mode="batch",
        caches=1,
        hello=True,
        **{**_NOTES, "backoff": "exponential"},
    ),
    "notes-log": Scenario(
        name="notes-log",
        description=(
            "The batch scenario with an always-on remote log (in-memory CAS/NS): each node "
            "uploads its messages and reads its peer's log every 30 s; exponential backoff"
        ),
        mode="batch",
        log=True,
        **{**_NOTES, "backoff": "exponential"},
    ),
    "notes-log-acks": Scenario(
        name="notes-log-acks",
        description="notes-log with acknowledgements through the log",
        mode="batch",
        log=True,
        log_acks=True,
        **{**_NOTES, "backoff": "exponential"},
    ),
    "notes-best": Scenario(
        name="notes-best",
        description=(
            "The notes' scenario with what the design offers against it, for the lowest "
            "latency: hello on coming online (peers re-arm their records), an always-on remote "
            "log read on coming online, whose head only names the newest page (each upload "
            "one new page, read once), acknowledgements through the log, exponential backoff"
        ),
        mode="batch",
        log=True,
        log_acks=True,
        log_head_size=0,
        hello=True,
        **{**_NOTES, "backoff": "exponential"},
    ),
    "notes-lowest": Scenario(
        name="notes-lowest",
        description=(
            "The notes' scenario for the fewest bytes at nearly the lowest latency: the remote "
            "log carries the messages (small head, acknowledgements through the log, read "
            "every 5 s while online, so at once on coming online), sync only offers IDs "
            "(interactive) and retransmits after 64 epochs at the earliest; no hello"
        ),
        mode="interactive",
        backoff_base=64,
        log=True,
        log_acks=True,
        log_head_size=0,
        log_poll=5.0,
        **{**_NOTES, "backoff": "exponential"},
    ),
    "group": Scenario(
        name="group",
        description=(
            "One fully meshed group of 10 (set nodes), every member sending every 10 s until "
            "50 messages in all, always online; no relaying (each member sends its own "
            "messages to every other member), exponential backoff"
        ),
        nodes=10,
        senders=0,
        interval=10.0,
        messages=50,
        relay="none",
        backoff="exponential",
        duration=600.0,
    ),
    "scale": Scenario(
        name="scale",
        description=(
            "1,000 nodes in 500 one-to-one chats, both ends sending every 10 s until 100,000 "
            "messages; sessions of 10 min on average, 50 % availability, 1 % loss"
        ),
        nodes=1000,
        group_size=2,
        senders=0,
        interval=10.0,
        messages=100_000,
        availability=0.5,
        availability_model="sessions",
        session_seconds=600.0,
        loss=0.01,
        duration=1500.0,
        send_for=1000.0,
    ),
}


def preset(name: str) -> Scenario:
    """The preset called ``name``.

    Raises:
        ScenarioError: no such preset (the message lists them).
    """
    found = PRESETS.get(name)
    if found is None:
        raise ScenarioError(f"unknown preset {name!r} (presets: {', '.join(PRESETS)})")
    return found


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario from a TOML file: top-level keys are settings; ``preset = NAME`` starts
    from a preset. The scenario's name defaults to the file's stem.

    Raises:
        ScenarioError: unreadable file, bad TOML, unknown key, wrong type or invalid value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"{path}: {e.strerror or e}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML: {e}") from None
    base = Scenario(name=path.stem)
    start = doc.pop("preset", None)
    try:
        if start is not None:
            if not isinstance(start, str):
                raise ScenarioError(f"scenario key 'preset': expected a name, got {start!r}")
            base = dataclasses.replace(preset(start), name=path.stem)
        for key, value in doc.items():
            if isinstance(value, dict):
                raise ScenarioError(f"scenario key {key!r}: tables are not settings")
        return with_overrides(base, doc)
    except ScenarioError as e:
        raise ScenarioError(f"{path}: {e}") from None
