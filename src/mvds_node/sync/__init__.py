"""The sans-IO MVDS layer: wire format, message IDs, the engine, backoff and stores.

The engine does no I/O, reads no clock and uses no global randomness: time comes in as
arguments (``now``, and ``wall`` for expiry), and output is drained by the caller (see
:class:`Engine`). The one I/O in this package is the stores', behind the :class:`Store`
protocol, all under ``sync/store/``, and only when the caller hands the engine a store that
does it:

* :class:`SQLiteStore` (``store/_sqlite.py``) reads and writes one SQLite database file (stdlib
  :mod:`sqlite3`, WAL mode, committed per engine input), and
* large message bodies in *segment files* beside it (``<store>.bodies/*.seg``), appended by
  ``store/_segments.py`` in page-aligned writes (``O_DIRECT`` where allowed) from one writer
  thread per open segment, which the store waits for before each commit, so callers see
  synchronous writes; read back with plain ``pread``.

:class:`MemoryStore` (``store/_memory.py``) does none. ``tests/sync/test_layering.py`` enforces
this: only those two modules may import :mod:`sqlite3` or call the file functions they need.

Inside the package, a message's path runs through: ``_engine`` (the facade: inputs in, outputs
out) → ``_send`` or ``_receive`` → ``_state`` (every record change, one table) and the store →
``_causal`` (frontier, held messages, delivery order) → ``_drain`` (packing payloads); per-peer
memory is in ``_peers``, request bounds in ``_requests``, snapshots for one-way carriers in
``_export``, and what :meth:`Engine.trace` reports about one message in ``_trace``.
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
from mvds_node.sync._engine import GroupSync as GroupSync
from mvds_node.sync._engine import MessageTrace as MessageTrace
from mvds_node.sync._engine import Outstanding as Outstanding
from mvds_node.sync._engine import PeerSync as PeerSync
from mvds_node.sync._engine import PeerTrace as PeerTrace
from mvds_node.sync._events import Event as Event
from mvds_node.sync._events import GaveUp as GaveUp
from mvds_node.sync._events import MessageAcked as MessageAcked
from mvds_node.sync._events import MessageDelivered as MessageDelivered
from mvds_node.sync._events import MessageExpired as MessageExpired
from mvds_node.sync._events import PayloadRejected as PayloadRejected
from mvds_node.sync._export import ExportSnapshot as ExportSnapshot
from mvds_node.sync._export import SnapshotMessages as SnapshotMessages
from mvds_node.sync._reasons import RejectReason as RejectReason
from mvds_node.sync._receive import Validator as Validator
from mvds_node.sync._state import Record as Record
from mvds_node.sync._state import RecordType as RecordType
from mvds_node.sync._wire import ID_RECORD_SIZE as ID_RECORD_SIZE
from mvds_node.sync._wire import decode_payload as decode_payload
from mvds_node.sync._wire import decode_stored as decode_stored
from mvds_node.sync._wire import encode_message as encode_message
from mvds_node.sync._wire import encode_payload as encode_payload
from mvds_node.sync._wire import message_id as message_id
from mvds_node.sync._wire import payload_overhead as payload_overhead
from mvds_node.sync.store import InboxEntry as InboxEntry
from mvds_node.sync.store import MemoryStore as MemoryStore
from mvds_node.sync.store._protocol import Store as Store
from mvds_node.sync.store._protocol import StoredMessage as StoredMessage
from mvds_node.sync.store._protocol import StoreReader as StoreReader
from mvds_node.sync.store._protocol import StoreView as StoreView
from mvds_node.sync.store._sqlite import SQLiteStore as SQLiteStore

__all__ = [
    "payload_overhead",
    "decode_stored",
    "ID_RECORD_SIZE",
    "RejectReason",
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
    "InboxEntry",
    "MemoryStore",
    "MessageAcked",
    "MessageDelivered",
    "MessageExpired",
    "MissingParents",
    "Mode",
    "Outstanding",
    "GroupSync",
    "MessageTrace",
    "PeerSync",
    "PeerTrace",
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
    "Validator",
    "decode_payload",
    "encode_message",
    "encode_payload",
    "message_id",
]
