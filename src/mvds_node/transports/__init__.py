"""Transports: the ``Transport`` protocol, packet framing, Noise sessions, and the carriers.

Packets travel as frames (``_framing``: an 8-byte header, then a SYNC, NOSYNC or CONTROL body)
over a carrier that implements :class:`Transport`: in memory (:class:`MemoryHub`), Noise XX over
TCP (:class:`TcpTransport`), or UDP multicast sealed with a group key
(:class:`MulticastTransport`). Bundle files (:func:`write_bundle`, :func:`open_bundle`) carry
payloads by hand. :class:`NoiseStream` is the encrypted ``trio.abc.Stream`` under TCP, and
:func:`seal_to`/:func:`open_sealed` serve carriers that cannot run a handshake. The wire format
is documented byte by byte in ``docs/wire.md``.
"""

from __future__ import annotations

import warnings
from typing import Any

from mvds_node.transports._base import DialFailed as DialFailed
from mvds_node.transports._base import EventQueue as EventQueue
from mvds_node.transports._base import InputRejected as InputRejected
from mvds_node.transports._base import InternalError as InternalError
from mvds_node.transports._base import PacketDropped as PacketDropped
from mvds_node.transports._base import PeerDown as PeerDown
from mvds_node.transports._base import PeerUp as PeerUp
from mvds_node.transports._base import Transport as Transport
from mvds_node.transports._base import TransportEvent as TransportEvent
from mvds_node.transports._file import BundleError as BundleError
from mvds_node.transports._file import BundleHeader as BundleHeader
from mvds_node.transports._file import Progress as Progress
from mvds_node.transports._file import open_bundle as open_bundle
from mvds_node.transports._file import write_bundle as write_bundle
from mvds_node.transports._framing import AVAILABLE_ALWAYS as AVAILABLE_ALWAYS
from mvds_node.transports._framing import AVAILABLE_UNKNOWN as AVAILABLE_UNKNOWN
from mvds_node.transports._framing import DEFAULT_LIMITS as DEFAULT_LIMITS
from mvds_node.transports._framing import HEADER_SIZE as HEADER_SIZE
from mvds_node.transports._framing import MAGIC as MAGIC
from mvds_node.transports._framing import WIRE_VERSION as WIRE_VERSION
from mvds_node.transports._framing import Author as Author
from mvds_node.transports._framing import Capability as Capability
from mvds_node.transports._framing import ControlKind as ControlKind
from mvds_node.transports._framing import Frame as Frame
from mvds_node.transports._framing import FrameDecoder as FrameDecoder
from mvds_node.transports._framing import FrameError as FrameError
from mvds_node.transports._framing import FrameErrorReason as FrameErrorReason
from mvds_node.transports._framing import FrameLimits as FrameLimits
from mvds_node.transports._framing import FrameMode as FrameMode
from mvds_node.transports._framing import Hello as Hello
from mvds_node.transports._framing import NoSyncFrame as NoSyncFrame
from mvds_node.transports._framing import Ping as Ping
from mvds_node.transports._framing import Pong as Pong
from mvds_node.transports._framing import SyncFrame as SyncFrame
from mvds_node.transports._framing import UnknownControl as UnknownControl
from mvds_node.transports._framing import check_frame as check_frame
from mvds_node.transports._framing import decode_checked as decode_checked
from mvds_node.transports._framing import decode_frame as decode_frame
from mvds_node.transports._framing import encode_frame as encode_frame
from mvds_node.transports._memory import MemoryHub as MemoryHub
from mvds_node.transports._memory import MemoryHubStatistics as MemoryHubStatistics
from mvds_node.transports._memory import MemoryTransport as MemoryTransport
from mvds_node.transports._memory import memory_transport_pair as memory_transport_pair
from mvds_node.transports._multicast import BROADCAST as BROADCAST
from mvds_node.transports._multicast import DEFAULT_GROUP as DEFAULT_MULTICAST_GROUP
from mvds_node.transports._multicast import DEFAULT_PORT as DEFAULT_MULTICAST_PORT
from mvds_node.transports._multicast import MulticastStatistics as MulticastStatistics
from mvds_node.transports._multicast import MulticastTransport as MulticastTransport
from mvds_node.transports._multicast import interface_problem as interface_problem
from mvds_node.transports._noise import MAX_PLAINTEXT as MAX_PLAINTEXT
from mvds_node.transports._noise import PROLOGUE as PROLOGUE
from mvds_node.transports._noise import PROTOCOL_NAME as PROTOCOL_NAME
from mvds_node.transports._noise import Keypair as Keypair
from mvds_node.transports._noise import NoiseError as NoiseError
from mvds_node.transports._noise import NoiseHandshake as NoiseHandshake
from mvds_node.transports._noise import NoiseSession as NoiseSession
from mvds_node.transports._noise import PeerRefused as PeerRefused
from mvds_node.transports._noise import Unsealed as Unsealed
from mvds_node.transports._noise import open_sealed as open_sealed
from mvds_node.transports._noise import seal_to as seal_to
from mvds_node.transports._noise_stream import NoiseStream as NoiseStream
from mvds_node.transports._tcp import OpenStream as OpenStream
from mvds_node.transports._tcp import ReconnectPolicy as ReconnectPolicy
from mvds_node.transports._tcp import TcpStatistics as TcpStatistics
from mvds_node.transports._tcp import TcpTransport as TcpTransport

__all__ = [
    "DEFAULT_MULTICAST_GROUP",
    "DEFAULT_MULTICAST_PORT",
    "AVAILABLE_ALWAYS",
    "AVAILABLE_UNKNOWN",
    "Author",
    "BROADCAST",
    "BundleError",
    "BundleHeader",
    "Capability",
    "ControlKind",
    "DEFAULT_LIMITS",
    "DialFailed",
    "EventQueue",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameErrorReason",
    "FrameLimits",
    "FrameMode",
    "HEADER_SIZE",
    "Hello",
    "InputRejected",
    "InternalError",
    "Keypair",
    "MAGIC",
    "MAX_PLAINTEXT",
    "MemoryHub",
    "MemoryHubStatistics",
    "MemoryTransport",
    "MulticastStatistics",
    "MulticastTransport",
    "NoSyncFrame",
    "NoiseError",
    "NoiseHandshake",
    "NoiseSession",
    "NoiseStream",
    "OpenStream",
    "PROLOGUE",
    "PROTOCOL_NAME",
    "PacketDropped",
    "PeerDown",
    "PeerRefused",
    "PeerUp",
    "Ping",
    "Pong",
    "Progress",
    "ReconnectPolicy",
    "SyncFrame",
    "TcpStatistics",
    "TcpTransport",
    "Transport",
    "TransportEvent",
    "UnknownControl",
    "Unsealed",
    "WIRE_VERSION",
    "check_frame",
    "decode_checked",
    "decode_frame",
    "encode_frame",
    "interface_problem",
    "memory_transport_pair",
    "open_bundle",
    "open_sealed",
    "seal_to",
    "write_bundle",
]


def __getattr__(name: str) -> Any:
    """``Mode``: the old name of :class:`FrameMode` (deprecated; it clashed with
    ``mvds_node.sync.Mode``, a peer's delivery mode)."""
    if name == "Mode":
        warnings.warn(
            "mvds_node.transports.Mode is deprecated: use mvds_node.transports.FrameMode",
            DeprecationWarning,
            stacklevel=2,
        )
        return FrameMode
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
