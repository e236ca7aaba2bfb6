"""The one exception tree of mvds-node.

::

    MvdsError
     ├── ProtocolError
     │    ├── LocalProtocolError   the caller misused the API (a bug in the calling code)
     │    └── RemoteProtocolError  a peer sent something we refuse (never raised by the engine,
     │                             which reports bad input as a ``PayloadRejected`` event instead)
     ├── StoreError                the durable store failed or holds data we cannot read
     ├── ConfigError               a configuration or key file is missing, unreadable or invalid
     ├── NodeFailed                a running node's own tasks failed (its cause is their group)
     └── TransportError            a carrier failed; ``Closed`` means we closed it, ``Broken``
          ├── TransportClosed      means the peer or the network did
          └── TransportBroken

Every error the package raises on purpose derives from :class:`MvdsError`; there are no other roots.

Anything else that escapes the handling of outside input (one connection, one datagram, one
remote log, one backend's reply) is a bug: :func:`describe_failure` turns it into the text of an
``InternalError`` event, that one piece of work ends, and the node goes on.
"""

from __future__ import annotations

import traceback

__all__ = [
    "ConfigError",
    "LocalProtocolError",
    "MvdsError",
    "NodeFailed",
    "ProtocolError",
    "RemoteProtocolError",
    "StoreError",
    "TransportBroken",
    "TransportClosed",
    "TransportError",
    "describe_failure",
]


class MvdsError(Exception):
    """Base of every error mvds-node raises on purpose."""


class ProtocolError(MvdsError):
    """Something violated the MVDS protocol or the engine's contract."""


class LocalProtocolError(ProtocolError):
    """The calling code used the API wrongly (unknown group, oversized body, ...)."""


class RemoteProtocolError(ProtocolError):
    """A peer sent data we refuse."""


class StoreError(MvdsError):
    """The store failed, or holds data that does not parse."""


class ConfigError(MvdsError):
    """A configuration or key file is missing, unreadable or invalid; the message says where."""


class NodeFailed(MvdsError):
    """A node could not start, or one of its tasks failed: ``__cause__`` is the exception group
    of what its tasks raised (an address already in use, say)."""


class TransportError(MvdsError):
    """A transport could not carry a packet."""


class TransportClosed(TransportError):
    """The transport was closed by us; using it again is a bug in the caller."""


class TransportBroken(TransportError):
    """The peer or the network broke the transport."""


MAX_TRACEBACK_CHARS = 16_000
"""An ``InternalError`` carries at most this much traceback (the end of it, where the fault is)."""


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """``("ExceptionType: message", traceback)`` for an ``InternalError`` event, bounded."""
    error = f"{type(exc).__name__}: {exc}"[:1000]
    text = "".join(traceback.format_exception(exc))
    return error, text[-MAX_TRACEBACK_CHARS:]
