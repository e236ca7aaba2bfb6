"""The remote log (3/REMOTE-LOG): a writer's messages on a CAS, its newest page named in an NS.

A peer that comes online reads the logs of its group's peers and catches up even while they are
offline. This package has the record formats (:mod:`._format`: pages, signed heads, sealing),
the backend interface with the embedded file backend (:mod:`._backend`) and the others
(HTTP helper, IPFS, Redis, NATS), the writer and reader (:mod:`._log`), and the sans-IO core of
the acknowledgement records (:mod:`._acks`), shared by the node and the simulator.
``docs/remote-log.md`` records the decisions the spec leaves open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mvds_node._lazy import lazy_attributes
from mvds_node.remotelog._acks import ACK_CHUNK as ACK_CHUNK
from mvds_node.remotelog._acks import MAX_PUBLISHED as MAX_PUBLISHED
from mvds_node.remotelog._acks import AckRecords as AckRecords
from mvds_node.remotelog._acks import MemoryLedger as MemoryLedger
from mvds_node.remotelog._acks import PendingRecord as PendingRecord
from mvds_node.remotelog._acks import PublishedLedger as PublishedLedger
from mvds_node.remotelog._acks import ack_payloads as ack_payloads
from mvds_node.remotelog._archive import ArchiveError as ArchiveError
from mvds_node.remotelog._archive import ArchiveResult as ArchiveResult
from mvds_node.remotelog._archive import export_log as export_log
from mvds_node.remotelog._archive import import_log as import_log
from mvds_node.remotelog._backend import Backend as Backend
from mvds_node.remotelog._backend import BackendError as BackendError
from mvds_node.remotelog._backend import FileBackend as FileBackend
from mvds_node.remotelog._backend import MemoryBackend as MemoryBackend
from mvds_node.remotelog._backend import MemoryBackendStatistics as MemoryBackendStatistics
from mvds_node.remotelog._format import LogError as LogError
from mvds_node.remotelog._format import log_name as log_name
from mvds_node.remotelog._format import public_key as public_key
from mvds_node.remotelog._log import Cursor as Cursor
from mvds_node.remotelog._log import LogReader as LogReader
from mvds_node.remotelog._log import LogSettings as LogSettings
from mvds_node.remotelog._log import LogWriter as LogWriter
from mvds_node.remotelog._log import ReadResult as ReadResult
from mvds_node.remotelog._log import Resume as Resume
from mvds_node.remotelog._secrets import BackendUrl as BackendUrl
from mvds_node.remotelog._secrets import Credentials as Credentials
from mvds_node.remotelog._secrets import Secret as Secret
from mvds_node.remotelog._secrets import SecretError as SecretError
from mvds_node.remotelog._secrets import parse_backend_url as parse_backend_url
from mvds_node.remotelog._secrets import redact_url as redact_url
from mvds_node.remotelog._secrets import resolve_secret as resolve_secret
from mvds_node.remotelog._secrets import tls_context as tls_context

if TYPE_CHECKING:
    from mvds_node.remotelog._helper import HelperLimits as HelperLimits
    from mvds_node.remotelog._helper import HelperTokens as HelperTokens
    from mvds_node.remotelog._helper import helper_tls_context as helper_tls_context
    from mvds_node.remotelog._helper import serve_helper as serve_helper
    from mvds_node.remotelog._http import ClientTimeouts as ClientTimeouts
    from mvds_node.remotelog._http import HttpBackend as HttpBackend
    from mvds_node.remotelog._http import HttpClient as HttpClient
    from mvds_node.remotelog._http import HttpStatistics as HttpStatistics
    from mvds_node.remotelog._ipfs import IpfsBackend as IpfsBackend
    from mvds_node.remotelog._nats import NatsBackend as NatsBackend
    from mvds_node.remotelog._redis import RedisBackend as RedisBackend

_LAZY: Final = {
    "HelperLimits": "mvds_node.remotelog._helper",
    "HelperTokens": "mvds_node.remotelog._helper",
    "helper_tls_context": "mvds_node.remotelog._helper",
    "serve_helper": "mvds_node.remotelog._helper",
    "ClientTimeouts": "mvds_node.remotelog._http",
    "HttpBackend": "mvds_node.remotelog._http",
    "HttpClient": "mvds_node.remotelog._http",
    "HttpStatistics": "mvds_node.remotelog._http",
    "IpfsBackend": "mvds_node.remotelog._ipfs",
    "NatsBackend": "mvds_node.remotelog._nats",
    "RedisBackend": "mvds_node.remotelog._redis",
}
"""Names whose modules load on first use: they import httpx, h11 or coredis, which an
application that only reads a file backend, or the simulator, does not need at import time."""

__all__ = [
    "ACK_CHUNK",
    "ack_payloads",
    "AckRecords",
    "ArchiveError",
    "ArchiveResult",
    "Backend",
    "BackendError",
    "BackendUrl",
    "ClientTimeouts",
    "Credentials",
    "Cursor",
    "export_log",
    "FileBackend",
    "helper_tls_context",
    "HelperLimits",
    "HelperTokens",
    "HttpBackend",
    "HttpClient",
    "HttpStatistics",
    "import_log",
    "IpfsBackend",
    "log_name",
    "LogError",
    "LogReader",
    "LogSettings",
    "LogWriter",
    "MAX_PUBLISHED",
    "MemoryBackend",
    "MemoryBackendStatistics",
    "MemoryLedger",
    "NatsBackend",
    "parse_backend_url",
    "PendingRecord",
    "public_key",
    "PublishedLedger",
    "ReadResult",
    "redact_url",
    "RedisBackend",
    "resolve_secret",
    "Resume",
    "Secret",
    "SecretError",
    "serve_helper",
    "tls_context",
]


__getattr__ = lazy_attributes(__name__, _LAZY)
