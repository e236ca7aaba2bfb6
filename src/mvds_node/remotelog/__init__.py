"""The remote log (3/REMOTE-LOG): a writer's messages on a CAS, its newest page named in an NS.

A peer that comes online reads the logs of its group's peers and catches up even while they are
offline. This package has the record formats (:mod:`._format`: pages, signed heads, sealing),
the backend interface with the embedded file backend (:mod:`._backend`), and the writer and
reader (:mod:`._log`). ``docs/remote-log.md`` records the decisions the spec leaves open.
"""

from __future__ import annotations

from mvds_node.remotelog._backend import Backend as Backend
from mvds_node.remotelog._backend import BackendError as BackendError
from mvds_node.remotelog._backend import FileBackend as FileBackend
from mvds_node.remotelog._backend import MemoryBackend as MemoryBackend
from mvds_node.remotelog._format import LogError as LogError
from mvds_node.remotelog._format import log_name as log_name
from mvds_node.remotelog._log import LogReader as LogReader
from mvds_node.remotelog._log import LogSettings as LogSettings
from mvds_node.remotelog._log import LogWriter as LogWriter
from mvds_node.remotelog._log import ReadResult as ReadResult

__all__ = [
    "Backend",
    "BackendError",
    "FileBackend",
    "LogError",
    "LogReader",
    "LogSettings",
    "LogWriter",
    "MemoryBackend",
    "ReadResult",
    "log_name",
]
