"""The engine's stores: the only code under ``sync/`` that does I/O.

* :class:`Store` is the protocol the engine writes through (one transaction per input), and
  :class:`StoreReader` its reading half; :class:`StoreView` is a read-only view of a store
  (``Engine.store_view``).
* :class:`MemoryStore` keeps everything in memory: no I/O.
* :class:`SQLiteStore` keeps one SQLite database file (stdlib :mod:`sqlite3`, WAL mode), and
  large message bodies in segment files beside it (``<store>.bodies/*.seg``), appended in
  page-aligned writes by one writer thread per open segment (``_segments``), which the store
  waits for before each commit.
"""

from __future__ import annotations

from mvds_node.sync.store._memory import MemoryStore as MemoryStore
from mvds_node.sync.store._protocol import InboxEntry as InboxEntry
from mvds_node.sync.store._protocol import Store as Store
from mvds_node.sync.store._protocol import StoredMessage as StoredMessage
from mvds_node.sync.store._protocol import StoreReader as StoreReader
from mvds_node.sync.store._protocol import StoreView as StoreView
from mvds_node.sync.store._sqlite import SQLiteStore as SQLiteStore

__all__ = [
    "InboxEntry",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "StoreReader",
    "StoreView",
    "StoredMessage",
]
