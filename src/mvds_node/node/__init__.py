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

from mvds_node.node._config import DiscoveryConfig as DiscoveryConfig
from mvds_node.node._config import GroupConfig as GroupConfig
from mvds_node.node._config import MulticastConfig as MulticastConfig
from mvds_node.node._config import NodeConfig as NodeConfig
from mvds_node.node._config import PeerConfig as PeerConfig
from mvds_node.node._config import RemoteLogConfig as RemoteLogConfig
from mvds_node.node._config import TcpConfig as TcpConfig
from mvds_node.node._config import default_data_dir as default_data_dir
from mvds_node.node._config import group_id_for as group_id_for
from mvds_node.node._config import load_config as load_config
from mvds_node.node._config import parse_address as parse_address
from mvds_node.node._config import render_config as render_config
from mvds_node.node._config import save_config as save_config
from mvds_node.node._identity import Identity as Identity
from mvds_node.node._identity import create_identity as create_identity
from mvds_node.node._identity import load_identity as load_identity
from mvds_node.node._node import Acked as Acked
from mvds_node.node._node import Delivered as Delivered
from mvds_node.node._node import Expired as Expired
from mvds_node.node._node import GaveUpSending as GaveUpSending
from mvds_node.node._node import GroupStatus as GroupStatus
from mvds_node.node._node import InternalError as InternalError
from mvds_node.node._node import LogUploaded as LogUploaded
from mvds_node.node._node import Message as Message
from mvds_node.node._node import Node as Node
from mvds_node.node._node import NodeEvent as NodeEvent
from mvds_node.node._node import NodeStatus as NodeStatus
from mvds_node.node._node import PeerConnected as PeerConnected
from mvds_node.node._node import PeerDisconnected as PeerDisconnected
from mvds_node.node._node import PeerStatus as PeerStatus
from mvds_node.node._node import Refused as Refused
from mvds_node.node._node import StoreFailed as StoreFailed
from mvds_node.node._node import StoreRecovered as StoreRecovered
from mvds_node.node._node import TransportFailed as TransportFailed
from mvds_node.node._node import TransportRestored as TransportRestored
from mvds_node.node._node import open_node as open_node

__all__ = [
    "Acked",
    "Delivered",
    "DiscoveryConfig",
    "Expired",
    "GaveUpSending",
    "GroupConfig",
    "GroupStatus",
    "Identity",
    "InternalError",
    "LogUploaded",
    "Message",
    "MulticastConfig",
    "TcpConfig",
    "Node",
    "NodeConfig",
    "NodeEvent",
    "NodeStatus",
    "PeerConfig",
    "PeerConnected",
    "PeerDisconnected",
    "PeerStatus",
    "Refused",
    "RemoteLogConfig",
    "StoreFailed",
    "StoreRecovered",
    "TransportFailed",
    "TransportRestored",
    "create_identity",
    "default_data_dir",
    "group_id_for",
    "load_config",
    "load_identity",
    "open_node",
    "parse_address",
    "render_config",
    "save_config",
]
