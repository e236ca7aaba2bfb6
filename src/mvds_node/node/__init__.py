"""The running node: configuration, identity, the Trio driver and its public API.

Embed a node in a Trio program::

    from mvds_node.node import load_config, open_node

    async with open_node(load_config("/path/to/data-dir")) as node:
        await node.send("chat", b"hello")
        async with node.messages() as inbox:
            async for message in inbox:
                print(message.group, message.body)

``mvds-node init`` writes a data directory (configuration and key file) to start from.
"""

from __future__ import annotations

import warnings

from mvds_node.node._config import DiscoveryConfig as DiscoveryConfig
from mvds_node.node._config import GroupConfig as GroupConfig
from mvds_node.node._config import MulticastConfig as MulticastConfig
from mvds_node.node._config import NodeConfig as NodeConfig
from mvds_node.node._config import PeerConfig as PeerConfig
from mvds_node.node._config import RemoteLogConfig as RemoteLogConfig
from mvds_node.node._config import RetentionConfig as RetentionConfig
from mvds_node.node._config import TcpConfig as TcpConfig
from mvds_node.node._config import default_data_dir as default_data_dir
from mvds_node.node._config import group_id_for as group_id_for
from mvds_node.node._config import load_config as load_config
from mvds_node.node._config import parse_address as parse_address
from mvds_node.node._config import render_config as render_config
from mvds_node.node._config import save_config as save_config
from mvds_node.node._events import AnyEvent as AnyEvent
from mvds_node.node._events import AuthorLearned as AuthorLearned
from mvds_node.node._events import AuthorMismatch as AuthorMismatch
from mvds_node.node._events import EnvelopeMismatch as EnvelopeMismatch
from mvds_node.node._events import InboxSkipped as InboxSkipped
from mvds_node.node._events import InternalError as InternalError
from mvds_node.node._events import LogUploaded as LogUploaded
from mvds_node.node._events import NodeEvent as NodeEvent
from mvds_node.node._events import PeerConnected as PeerConnected
from mvds_node.node._events import PeerDisconnected as PeerDisconnected
from mvds_node.node._events import StoreFailed as StoreFailed
from mvds_node.node._events import StoreRecovered as StoreRecovered
from mvds_node.node._events import TransportFailed as TransportFailed
from mvds_node.node._events import TransportRestored as TransportRestored
from mvds_node.node._events import event_to_json as event_to_json
from mvds_node.node._events import to_json as to_json
from mvds_node.node._identity import Identity as Identity
from mvds_node.node._identity import create_identity as create_identity
from mvds_node.node._identity import load_identity as load_identity
from mvds_node.node._inbox import InboxReader as InboxReader
from mvds_node.node._node import Node as Node
from mvds_node.node._node import open_node as open_node
from mvds_node.node._remotelog import LogStatus as LogStatus
from mvds_node.node._status import Contact as Contact
from mvds_node.node._status import CursorStatus as CursorStatus
from mvds_node.node._status import GroupStatus as GroupStatus
from mvds_node.node._status import NodeStatus as NodeStatus
from mvds_node.node._status import PeerStatus as PeerStatus
from mvds_node.node._status import Trace as Trace
from mvds_node.node._status import WaitingFor as WaitingFor
from mvds_node.node._subscribers import Message as Message
from mvds_node.sync import GaveUp as GaveUp
from mvds_node.sync import MessageAcked as MessageAcked
from mvds_node.sync import MessageDelivered as MessageDelivered
from mvds_node.sync import MessageExpired as MessageExpired
from mvds_node.sync import PayloadRejected as PayloadRejected
from mvds_node.transports import InputRejected as InputRejected

__all__ = [
    "AnyEvent",
    "DiscoveryConfig",
    "GaveUp",
    "GroupConfig",
    "GroupStatus",
    "Identity",
    "InputRejected",
    "InboxSkipped",
    "InternalError",
    "AuthorLearned",
    "AuthorMismatch",
    "EnvelopeMismatch",
    "LogUploaded",
    "Message",
    "MessageAcked",
    "MessageDelivered",
    "MessageExpired",
    "MulticastConfig",
    "TcpConfig",
    "Node",
    "NodeConfig",
    "NodeEvent",
    "NodeStatus",
    "Contact",
    "CursorStatus",
    "Trace",
    "WaitingFor",
    "PayloadRejected",
    "PeerConfig",
    "PeerConnected",
    "PeerDisconnected",
    "PeerStatus",
    "LogStatus",
    "InboxReader",
    "RemoteLogConfig",
    "RetentionConfig",
    "StoreFailed",
    "StoreRecovered",
    "TransportFailed",
    "TransportRestored",
    "create_identity",
    "default_data_dir",
    "event_to_json",
    "group_id_for",
    "load_config",
    "load_identity",
    "open_node",
    "parse_address",
    "render_config",
    "save_config",
    "to_json",
]

# Event names of earlier releases, replaced by the engine's and the carriers' events that state
# the same facts (one vocabulary); kept for one release.
_DEPRECATED: dict[str, tuple[str, object]] = {
    "Acked": ("MessageAcked", MessageAcked),
    "Delivered": ("MessageDelivered", MessageDelivered),
    "Expired": ("MessageExpired", MessageExpired),
    "GaveUpSending": ("GaveUp", GaveUp),
    "Refused": ("InputRejected (or PayloadRejected, from the engine)", InputRejected),
}


def __getattr__(name: str) -> object:
    if name in _DEPRECATED:
        new, value = _DEPRECATED[name]
        warnings.warn(
            f"mvds_node.node.{name} is deprecated; use {new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
