"""An IPFS backend (``ipfs://host:port``, the Kubo RPC API), tested against js-ipfs.

* CAS: ``block/put?format=raw&mhtype=sha2-256`` and ``block/get``. A raw CIDv1 with a SHA-256
  multihash *is* our address in another spelling, so no mapping is stored: the CID is computed
  from the address. (These parameter forms are the ones both js-ipfs and Kubo accept.)
* NS: IPNS names belong to IPFS keys, so each writer publishes one *directory* under one key it
  generates (``key/gen``, named ``mvds-directory-<log key prefix>``): a small block mapping each
  of its log names to the CID of that name's current record. ``ns_update`` stores the record
  as a block, updates the directory and ``name/publish``es it. A reader resolves a writer's
  directory through the writer's IPNS id, which it must be told (``ipns_ids``: log key hex ->
  IPNS id; a node learns it from the peer's configuration; ``mvds-node key --ipns`` prints
  ours).

The records themselves are signed and sequence-checked by the reader as with every backend;
IPNS adds nothing to trust here, only reachability.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from mvds_node.remotelog._backend import BackendError
from mvds_node.remotelog._format import MAX_OBJECT_BYTES, address_of
from mvds_node.remotelog._http import HttpBackend

__all__ = ["IpfsBackend", "cid_of"]

DIRECTORY_KEY: Final = "mvds-directory"
GET_TIMEOUT: Final = "3s"
"""How long the node may look for a block in the network before we call it absent."""
_BOUNDARY: Final = "mvds-node-boundary-7f3a"


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


class IpfsBackend:
    """A :class:`~mvds_node.remotelog.Backend` on an IPFS node's RPC API."""

    def __init__(self, url: str, *, ipns_ids: Mapping[str, str] | None = None) -> None:
        self.http = HttpBackend("http://" + url.removeprefix("ipfs://"))
        self.http.timeout = 60.0  # IPNS publishing is slow on some nodes
        self.ipns_ids = dict(ipns_ids or {})
        self._own_ids: dict[str, str] = {}
        self._directories: dict[str, dict[str, str]] = {}

    async def _rpc(self, command: str, body: bytes = b"", **args: str) -> Any:
        query = "&".join(f"{k.replace('_', '-')}={quote(v, safe='')}" for k, v in args.items())
        path = f"/api/v0/{command}" + (f"?{query}" if query else "")
        if body:
            status, payload = await self.http.post(
                path, _multipart(body), f"multipart/form-data; boundary={_BOUNDARY}"
            )
        else:
            status, payload = await self.http.post(path, b"", "application/octet-stream")
        if status != 200:
            raise BackendError(f"ipfs {command}: {status} {payload[:200].decode(errors='replace')}")
        return payload

    async def _json(self, command: str, body: bytes = b"", **args: str) -> Any:
        payload = await self._rpc(command, body, **args)
        try:
            return json.loads(payload)
        except ValueError:
            raise BackendError(f"ipfs {command}: not JSON") from None

    async def aclose_connection(self) -> None:
        await self.http.aclose_connection()

    # --- CAS --------------------------------------------------------------------------------

    async def cas_add(self, data: bytes) -> bytes:
        address = address_of(data)
        reply = await self._json("block/put", data, format="raw", mhtype="sha2-256")
        if reply.get("Key") != cid_of(address):
            raise BackendError(
                f"ipfs stored the block as {reply.get('Key')}, not {cid_of(address)}"
            )
        return address

    async def cas_get(self, address: bytes) -> bytes | None:
        if len(address) != 32:
            return None
        try:
            data: bytes = await self._rpc("block/get", arg=cid_of(address), timeout=GET_TIMEOUT)
        except BackendError as e:
            # Absent (or not found in the network within the timeout): None, as for every CAS.
            if any(w in str(e).lower() for w in ("not found", "timeout", "timed out")):
                return None
            raise
        if len(data) > MAX_OBJECT_BYTES:
            raise BackendError("ipfs block over the limit")
        return data

    # --- NS ---------------------------------------------------------------------------------

    async def own_ipns_id(self, writer: str) -> str:
        """The IPNS id of ``writer``'s directory on this node (its key is made on first use);
        ``writer`` is the log key, hex. Give the id to readers."""
        key_name = f"{DIRECTORY_KEY}-{writer[:32]}"
        if key_name not in self._own_ids:
            keys = await self._json("key/list")
            for key in keys.get("Keys", []):
                if key.get("Name") == key_name:
                    self._own_ids[key_name] = str(key["Id"])
                    break
            else:
                made = await self._json("key/gen", arg=key_name, type="ed25519")
                self._own_ids[key_name] = str(made["Id"])
        return self._own_ids[key_name]

    async def _read_directory(self, ipns_id: str) -> dict[str, str] | None:
        try:
            reply = await self._json("name/resolve", arg=f"/ipns/{ipns_id}")
        except BackendError as e:
            if "could not resolve" in str(e).lower() or "not found" in str(e).lower():
                return None
            raise
        path = str(reply.get("Path", ""))
        if not path.startswith("/ipfs/"):
            raise BackendError(f"ipfs: {ipns_id} resolves to {path!r}")
        data = await self._rpc("block/get", arg=path.removeprefix("/ipfs/"), timeout=GET_TIMEOUT)
        try:
            directory = json.loads(data)
        except ValueError:
            raise BackendError("ipfs: the directory block is not JSON") from None
        if not isinstance(directory, dict):
            raise BackendError("ipfs: the directory is not a mapping")
        return {str(k): str(v) for k, v in directory.items()}

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
        data: bytes = await self._rpc("block/get", arg=directory[name], timeout=GET_TIMEOUT)
        return data


def _writer_of(name: str) -> str:
    parts = name.split("/")
    if len(parts) < 3 or parts[0] != "mvds" or len(parts[1]) != 64:
        raise BackendError(f"not a remote-log name: {name!r}")
    return parts[1]
