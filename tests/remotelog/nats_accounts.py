"""NATS identities for tests: NKeys, and the operator, account and user JWTs of an operator
deployment (what ``nsc`` would make), signed with ``cryptography``'s Ed25519."""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mvds_node.remotelog._nkeys import encode_public, encode_seed


@dataclass(frozen=True)
class Pair:
    kind: str
    key: Ed25519PrivateKey

    @property
    def public(self) -> str:
        raw = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return encode_public(self.kind, raw)

    @property
    def seed(self) -> str:
        return encode_seed(self.kind, self.key.private_bytes_raw())


def new_pair(kind: str) -> Pair:
    return Pair(kind, Ed25519PrivateKey.generate())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(issuer: Pair, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (``ed25519-nkey``) that ``issuer`` signs about ``subject``."""
    header = {"typ": "JWT", "alg": "ed25519-nkey"}
    claims = {
        "jti": base64.b32encode(os.urandom(20)).decode().rstrip("="),
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    body = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{body}.{_b64(issuer.key.sign(body.encode()))}"


UNLIMITED = {"subs": -1, "data": -1, "payload": -1}


@dataclass(frozen=True)
class Operator:
    """An operator, one account with JetStream, and its users' JWTs."""

    operator: Pair
    account: Pair
    operator_jwt: str
    account_jwt: str
    system: Pair
    system_jwt: str

    def server_config(self) -> str:
        """What a nats-server's configuration says to trust this operator and account."""
        return (
            f'operator: "{self.operator_jwt}"\nresolver: MEMORY\n'
            f'system_account: "{self.system.public}"\n'
            f'resolver_preload: {{ {self.account.public}: "{self.account_jwt}", '
            f'{self.system.public}: "{self.system_jwt}" }}\n'
        )

    def creds(self, path: Path, user: Pair | None = None, *, signer: Pair | None = None) -> Path:
        """A ``.creds`` file for ``user`` (a new one by default), signed by the account."""
        user = user or new_pair("user")
        token = jwt(
            signer or self.account,
            user.public,
            "mvds",
            {"pub": {}, "sub": {}, **UNLIMITED, "type": "user"},
        )
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{token}\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{user.seed}\n"
            "------END USER NKEY SEED------\n"
        )
        return path


def new_operator() -> Operator:
    operator, account, system = new_pair("operator"), new_pair("account"), new_pair("account")
    limits = {
        **UNLIMITED,
        "imports": -1,
        "exports": -1,
        "wildcards": True,
        "conn": -1,
        "leaf": -1,
        "mem_storage": -1,
        "disk_storage": -1,
        "streams": -1,
        "consumer": -1,
    }
    return Operator(
        operator,
        account,
        jwt(operator, operator.public, "mvds-operator", {"type": "operator"}),
        jwt(operator, account.public, "mvds-account", {"type": "account", "limits": limits}),
        system,
        jwt(operator, system.public, "SYS", {"type": "account", "limits": UNLIMITED}),
    )
