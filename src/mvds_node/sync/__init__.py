"""The sans-IO MVDS layer: wire format, message IDs, the engine, backoff and stores.

Nothing in this package does I/O, reads a clock or uses global randomness: time comes in as
arguments, and output is drained by the caller (see :class:`Engine`).
"""

from __future__ import annotations

from mvds_node.sync._backoff import Backoff as Backoff
from mvds_node.sync._backoff import ExponentialBackoff as ExponentialBackoff
from mvds_node.sync._backoff import ReferenceBackoff as ReferenceBackoff
from mvds_node.sync._config import DeliveryMode as DeliveryMode
from mvds_node.sync._config import GiveUpPolicy as GiveUpPolicy
from mvds_node.sync._config import Limits as Limits
from mvds_node.sync._config import MissingParents as MissingParents
from mvds_node.sync._config import Mode as Mode
from mvds_node.sync._config import RelayPolicy as RelayPolicy
from mvds_node.sync._config import SyncConfig as SyncConfig
from mvds_node.sync._engine import Engine as Engine
from mvds_node.sync._engine import EngineStatistics as EngineStatistics
from mvds_node.sync._engine import Outstanding as Outstanding
from mvds_node.sync._events import Event as Event
from mvds_node.sync._events import GaveUp as GaveUp
from mvds_node.sync._events import MessageAcked as MessageAcked
from mvds_node.sync._events import MessageDelivered as MessageDelivered
from mvds_node.sync._events import MessageExpired as MessageExpired
from mvds_node.sync._events import PayloadRejected as PayloadRejected
from mvds_node.sync._export import ExportSnapshot as ExportSnapshot
from mvds_node.sync._export import SnapshotMessages as SnapshotMessages
from mvds_node.sync._sqlite import SQLiteStore as SQLiteStore
from mvds_node.sync._state import RecordType as RecordType
from mvds_node.sync._store import MemoryStore as MemoryStore
from mvds_node.sync._store import Record as Record
from mvds_node.sync._store import Store as Store
from mvds_node.sync._store import StoredMessage as StoredMessage
from mvds_node.sync._store import StoreReader as StoreReader
from mvds_node.sync._store import StoreView as StoreView
from mvds_node.sync._wire import decode_payload as decode_payload
from mvds_node.sync._wire import encode_message as encode_message
from mvds_node.sync._wire import encode_payload as encode_payload
from mvds_node.sync._wire import message_id as message_id

__all__ = [
    "Backoff",
    "DeliveryMode",
    "Engine",
    "EngineStatistics",
    "Event",
    "ExponentialBackoff",
    "ExportSnapshot",
    "SnapshotMessages",
    "GaveUp",
    "GiveUpPolicy",
    "Limits",
    "MemoryStore",
    "MessageAcked",
    "MessageDelivered",
    "MessageExpired",
    "MissingParents",
    "Mode",
    "Outstanding",
    "PayloadRejected",
    "Record",
    "RecordType",
    "ReferenceBackoff",
    "RelayPolicy",
    "SQLiteStore",
    "Store",
    "StoredMessage",
    "StoreReader",
    "StoreView",
    "SyncConfig",
    "decode_payload",
    "encode_message",
    "encode_payload",
    "message_id",
]
