"""An IPFS backend (``ipfs://host:port``, or ``ipfs+https://host:port`` through a TLS proxy: the
Kubo RPC API), tested against Kubo 0.43.

* CAS: ``block/put?cid-codec=raw&mhtype=sha2-256`` and ``block/get``. A raw CIDv1 with a SHA-256
  multihash *is* our address in another spelling, so no mapping is stored: the CID is computed
  from the address. (Every parameter is in the form Kubo's RPC reference documents; every call
  is a POST, as Kubo requires.)
* NS: IPNS names belong to IPFS keys, so each writer publishes one *directory* under one key it
  generates (``key/gen``, named ``mvds-directory-<log key prefix>``): a small block mapping each
  of its log names to the CID of that name's current record. ``ns_update`` stores the record
  as a block, updates the directory and ``name/publish``es it. A reader resolves a writer's
  directory through the writer's IPNS id, which it must be told (``ipns_ids``: log key hex ->
  IPNS id; a node learns it from the peer's configuration; ``mvds-node key --ipns`` prints
  ours).

*Access.* Kubo's ``API.Authorizations`` admits a request by its ``Authorization`` header: a
user name and password (in the URL, or the password in ``remote_log.secret``) are sent as HTTP
Basic; a secret alone is read as Kubo writes its ``AuthSecret`` (``bearer:TOKEN``,
``basic:USER:PASSWORD``, or a bare token, taken as bearer) and sent as Kubo expects it. A refusal
(403) is a :class:`BackendError` that says what to check, never the secret. Kubo's API has no TLS
of its own: ``ipfs+https://`` talks to a TLS proxy in front of it, trusting the system's CAs or
``remote_log.ca_file``.

The records themselves are signed and sequence-checked by the reader as with every backend;
IPNS adds nothing to trust here, only reachability.

Every reply is untrusted input: JSON is parsed with NaN/Infinity refused and nesting bounded,
every field is checked for its type before use, and any reply that does not have the expected
shape is a :class:`BackendError` naming the node and the command (the HTTP side, timeouts and
answer-size limits are :class:`~mvds_node.remotelog._http.HttpClient`'s).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from mvds_node._address import format_address
from mvds_node.remotelog._backend import BackendError
from mvds_node.remotelog._format import MAX_OBJECT_BYTES, address_of
from mvds_node.remotelog._http import ClientTimeouts, HttpClient
from mvds_node.remotelog._secrets import (
    BackendUrl,
    Credentials,
    SecretError,
    parse_backend_url,
    tls_context,
)

__all__ = ["IpfsBackend", "authorization_header", "cid_of"]

DEFAULT_PORT: Final = 5001
"""Kubo's RPC API port."""

DIRECTORY_KEY: Final = "mvds-directory"
GET_TIMEOUT: Final = "3s"
"""How long the node may look for a block in the network before we call it absent."""
_BOUNDARY: Final = "mvds-node-boundary-7f3a"
MAX_JSON_BYTES: Final = 1024 * 1024
"""Largest JSON reply read (key lists, resolve and publish replies are a few hundred bytes)."""
MAX_JSON_DEPTH: Final = 32
"""Deepest nesting of a JSON reply accepted (the replies we read are two levels deep)."""
_TIMEOUTS: Final = ClientTimeouts(read=60.0, total=120.0)
"""IPNS publishing is slow on some nodes."""


def _no_constant(value: str) -> Any:
    raise ValueError(f"{value} is not JSON data")


def parse_json(payload: bytes, where: str) -> Any:
    """A JSON reply, or BackendError (not JSON, NaN/Infinity, nested too deep).

    Raises:
        BackendError: as above.
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in payload:  # bound nesting before the recursive parser sees it
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                raise BackendError(f"{where}: reply nested over {MAX_JSON_DEPTH} deep")
        elif byte in (0x5D, 0x7D):
            depth -= 1
    try:
        return json.loads(payload, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise BackendError(f"{where}: reply is not JSON") from None


def _field(reply: Any, key: str, kind: type[Any], where: str) -> Any:
    """``reply[key]``, checked to be a ``kind``.

    Raises:
        BackendError: the reply is not an object, or the field is missing or of another type.
    """
    if not isinstance(reply, dict):
        raise BackendError(f"{where}: reply is not a JSON object")
    value = reply.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BackendError(f"{where}: reply has no {kind.__name__} {key!r}")
    return value


def cid_of(address: bytes) -> str:
    """The raw CIDv1 (base32, ``b`` prefix) of the block whose SHA-256 is ``address``."""
    raw = b"\x01\x55\x12\x20" + address  # CIDv1, raw codec, sha2-256, 32 bytes
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def _multipart(data: bytes) -> bytes:
    return (
        (
            f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{_BOUNDARY}--\r\n".encode()
    )


def authorization_header(secret: str) -> str:
    """The ``Authorization`` header Kubo expects for an ``AuthSecret`` of its
    ``API.Authorizations`` (as Kubo's own ``ConvertAuthSecret`` reads it): ``bearer:TOKEN`` ->
    ``Bearer TOKEN``; ``basic:USER:PASSWORD`` -> ``Basic`` and their base64;
    ``basic:BASE64`` -> ``Basic BASE64``; a token with no ``:`` -> ``Bearer TOKEN``.

    Raises:
        SecretError: another ``type:`` (Kubo admits no request with it), an empty value, or
            characters a header cannot carry; the message never shows the secret.
    """
    kind, colon, value = secret.partition(":")
    if not colon:
        kind, value = "bearer", secret
    elif kind not in ("basic", "bearer"):
        raise SecretError(
            "remote_log.secret: not a Kubo AuthSecret: write bearer:TOKEN or "
            "basic:USER:PASSWORD (a user name in the URL makes the secret its password)"
        )
    if not value:
        raise SecretError(f"remote_log.secret: the {kind} secret is empty")
    if kind == "basic" and ":" in value:
        return "Basic " + base64.b64encode(value.encode()).decode()
    if not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise SecretError(
            f"remote_log.secret: a {kind} secret may hold only visible ASCII characters"
        )
    return ("Basic " if kind == "basic" else "Bearer ") + value


def _authorization(url: BackendUrl, credentials: Credentials) -> str | None:
    """The ``Authorization`` header for ``url`` and ``credentials``; None: send none."""
    secret = credentials.secret or url.password
    if url.username is not None:
        if not secret:
            # Not echoed: a lone word before "@" may be a token written in the wrong place.
            raise SecretError(
                f"ipfs {format_address(url.host, url.port)}: the user name in the URL needs a "
                "password, in the URL or in remote_log.secret (a token goes in remote_log.secret)"
            )
        pair = f"{url.username}:{secret.reveal()}"
        if any(c in pair for c in "\r\n\0"):
            raise SecretError(f"{url.redacted()}: the user name or password has a line break")
        return "Basic " + base64.b64encode(pair.encode()).decode()
    return authorization_header(secret.reveal()) if secret else None


class IpfsBackend:
    """A :class:`~mvds_node.remotelog.Backend` on an IPFS node's RPC API.

    Args:
        url: ``ipfs://[user:password@]host:port``, or ``ipfs+https://...`` for a TLS proxy in
            front of the API.
        ipns_ids: the IPNS id of each writer whose log we read (log key hex -> id).
        credentials: ``remote_log``'s secret and CA or client certificate files.

    Raises:
        SecretError: the URL is malformed, the secret is not in a form Kubo admits, TLS files
            are given for a plain ``ipfs://`` URL, or a TLS file cannot be read.
    """

    def __init__(
        self,
        url: str,
        *,
        ipns_ids: Mapping[str, str] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        credentials = credentials or Credentials()
        parsed = parse_backend_url(url.rstrip("/"), default_port=DEFAULT_PORT)
        if parsed.scheme not in ("ipfs", "ipfs+https"):
            raise SecretError(f"{parsed.redacted()}: not an ipfs:// or ipfs+https:// URL")
        if parsed.path:
            raise SecretError(f"{parsed.redacted()}: an IPFS URL has no path (ipfs://host:port)")
        if credentials.creds_file or credentials.nkey_file:
            raise SecretError(f"{parsed.redacted()}: creds_file and nkey_file are for NATS only")
        shown = parsed.redacted().removeprefix("ipfs://")
        self.server = shown
        """How errors and statistics name the node (any password as ``***``)."""
        address = format_address(parsed.host, parsed.port)
        if parsed.tls:
            context = tls_context(credentials, what=f"ipfs {shown}")
        elif credentials.ca_file or credentials.cert_file or credentials.key_file:
            raise SecretError(
                f"{parsed.redacted()}: ca_file, cert_file and key_file need an ipfs+https:// URL"
            )
        else:
            context = None
        header = _authorization(parsed, credentials)
        self.http = HttpClient(
            ("https://" if parsed.tls else "http://") + address,
            what=f"ipfs {shown}",
            timeouts=_TIMEOUTS,
            ssl=context,
            headers={"Authorization": header} if header else None,
        )
        self._authorized = header is not None
        self.ipns_ids = dict(ipns_ids or {})
        self._own_ids: dict[str, str] = {}
        self._directories: dict[str, dict[str, str]] = {}

    async def _rpc(
        self, command: str, body: bytes = b"", *, max_bytes: int = MAX_JSON_BYTES, **args: str
    ) -> bytes:
        query = "&".join(f"{k.replace('_', '-')}={quote(v, safe='')}" for k, v in args.items())
        path = f"/api/v0/{command}" + (f"?{query}" if query else "")
        if body:
            status, payload = await self.http.post(
                path,
                _multipart(body),
                f"multipart/form-data; boundary={_BOUNDARY}",
                max_bytes=max_bytes,
            )
        else:
            status, payload = await self.http.post(
                path, b"", "application/octet-stream", max_bytes=max_bytes
            )
        if status in (401, 403):
            check = (
                "check remote_log.secret against the node's API.Authorizations (AuthSecret, and "
                "AllowedPaths holding /api/v0)"
                if self._authorized
                else "the node asks for credentials: set remote_log.secret (bearer:TOKEN or "
                "basic:USER:PASSWORD) or user:password in the URL"
            )
            raise BackendError(f"{self.http.what} {command}: access denied ({status}): {check}")
        if status != 200:
            raise BackendError(
                f"{self.http.what} {command}: {status} {payload[:200].decode(errors='replace')}"
            )
        return payload

    async def _json(self, command: str, body: bytes = b"", **args: str) -> Any:
        payload = await self._rpc(command, body, max_bytes=MAX_JSON_BYTES, **args)
        return parse_json(payload, f"{self.http.what} {command}")

    async def _block(self, cid: str) -> bytes:
        return await self._rpc(
            "block/get", arg=cid, timeout=GET_TIMEOUT, max_bytes=MAX_OBJECT_BYTES
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def aclose_connection(self) -> None:
        """Close the connection pool (the name the node and CLI call on every backend)."""
        await self.http.aclose()

    # --- CAS --------------------------------------------------------------------------------

    async def cas_add(self, data: bytes) -> bytes:
        address = address_of(data)
        where = f"{self.http.what} block/put"
        reply = await self._json("block/put", data, cid_codec="raw", mhtype="sha2-256")
        key = _field(reply, "Key", str, where)
        if key != cid_of(address):
            raise BackendError(f"{where}: stored the block as {key[:100]!r}, not {cid_of(address)}")
        if "Size" in reply and _field(reply, "Size", int, where) != len(data):
            raise BackendError(f"{where}: stored {reply['Size']} bytes, not {len(data)}")
        return address

    async def cas_get(self, address: bytes) -> bytes | None:
        if len(address) != 32:
            return None
        try:
            data = await self._block(cid_of(address))
        except BackendError as e:
            # Absent (or not found in the network within the timeout): None, as for every CAS.
            if any(
                w in str(e).lower()
                for w in ("not found", "timeout", "timed out", "deadline exceeded")
            ):
                return None
            raise
        return data

    # --- NS ---------------------------------------------------------------------------------

    async def own_ipns_id(self, writer: str) -> str:
        """The IPNS id of ``writer``'s directory on this node (its key is made on first use);
        ``writer`` is the log key, hex. Give the id to readers."""
        key_name = f"{DIRECTORY_KEY}-{writer[:32]}"
        if key_name not in self._own_ids:
            where = f"{self.http.what} key/list"
            keys = _field(await self._json("key/list"), "Keys", list, where)
            for key in keys:
                if isinstance(key, dict) and key.get("Name") == key_name:
                    self._own_ids[key_name] = _field(key, "Id", str, where)
                    break
            else:
                made = await self._json("key/gen", arg=key_name, type="ed25519")
                self._own_ids[key_name] = _field(made, "Id", str, f"{self.http.what} key/gen")
        return self._own_ids[key_name]

    async def _read_directory(self, ipns_id: str) -> dict[str, str] | None:
        try:
            reply = await self._json(
                "name/resolve", arg=f"/ipns/{ipns_id}", nocache="true", dht_timeout=GET_TIMEOUT
            )
        except BackendError as e:
            if "could not resolve" in str(e).lower() or "not found" in str(e).lower():
                return None
            raise
        where = f"{self.http.what} name/resolve"
        path = _field(reply, "Path", str, where)
        if not path.startswith("/ipfs/"):
            raise BackendError(f"{where}: {ipns_id} resolves to {path[:100]!r}")
        data = await self._block(path.removeprefix("/ipfs/"))
        directory = parse_json(data, f"{self.http.what}: the directory of {ipns_id}")
        if not isinstance(directory, dict) or not all(
            isinstance(v, str) for v in directory.values()
        ):
            raise BackendError(f"{self.http.what}: the directory of {ipns_id} is not a mapping")
        return dict(directory)

    async def ns_update(self, name: str, record: bytes) -> None:
        writer = _writer_of(name)
        own = await self.own_ipns_id(writer)
        if writer not in self._directories:
            self._directories[writer] = await self._read_directory(own) or {}
        record_cid = cid_of(await self.cas_add(record))
        directory = {**self._directories[writer], name: record_cid}
        block = json.dumps(directory, sort_keys=True).encode()
        directory_cid = cid_of(await self.cas_add(block))
        await self._json(
            "name/publish",
            arg=f"/ipfs/{directory_cid}",
            key=f"{DIRECTORY_KEY}-{writer[:32]}",
            allow_offline="true",
            lifetime="24h",
        )
        self._directories[writer] = directory

    async def ns_fetch(self, name: str) -> bytes | None:
        writer = _writer_of(name)
        # A writer we were told about, else one whose key is on this node (our own log).
        ipns_id = self.ipns_ids.get(writer) or await self.own_ipns_id(writer)
        directory = await self._read_directory(ipns_id)
        if directory is None or name not in directory:
            return None
        return await self._block(directory[name])


def _writer_of(name: str) -> str:
    parts = name.split("/")
    if len(parts) < 3 or parts[0] != "mvds" or len(parts[1]) != 64:
        raise BackendError(f"not a remote-log name: {name!r}")
    return parts[1]
