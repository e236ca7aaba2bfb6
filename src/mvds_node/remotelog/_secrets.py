"""Where a backend is, how it authenticates, and how that is shown without its secrets.

Theory of operation: a backend is named by one URL (``rediss://alice@host:6380/2``,
``nats://a:4222,b:4222``, ``https://helper:8443``) plus optional settings of ``[remote_log]``
for what does not belong in a URL: a secret kept in an environment variable or a file, a CA
file, a client certificate. :func:`parse_backend_url` splits the URL once, for every backend, so
each backend reads fields (hosts, user, password, TLS or not) instead of parsing strings of its
own; :class:`Credentials` carries the rest.

A secret is a :class:`Secret`: its ``repr`` and ``str`` are ``***``, so printing a URL object,
a credentials object, an exception or a status line never shows it; only :meth:`Secret.reveal`
gives the text, and only the code that puts it on the wire calls it. Everything the node shows
(``status``, events, errors, logs) names a backend by :func:`redact_url`.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, final
from urllib.parse import unquote

from mvds_node.errors import MvdsError

REDACTED: Final = "***"

MAX_SECRET_BYTES: Final = 64 * 1024
"""A secret file larger than this is not a secret file (a token or a ``.creds`` file is a few
KiB): refusing it keeps a wrong path (a log file, a disk image) from being read into memory."""

MAX_URL_HOSTS: Final = 64
"""Servers one URL may list (a cluster's seed list): more is a mistake, not a cluster."""


class SecretError(MvdsError):
    """A secret, certificate or backend URL could not be used; the message says which and why,
    and never contains the secret."""


@final
class Secret:
    """A password or token that prints as ``***``.

    Args:
        value: the secret text.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: only for putting it on the wire."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def read_secret_file(path: Path, *, what: str) -> str:
    """The text of a secret file, without the line break an editor adds at its end.

    Raises:
        SecretError: it cannot be read, is too large or is not UTF-8.
    """
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SECRET_BYTES + 1)
    except OSError as error:
        raise SecretError(f"{what}: cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError(f"{what}: {path} is over {MAX_SECRET_BYTES} bytes; not a secret file")
    try:
        return data.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise SecretError(f"{what}: {path} is not UTF-8 text") from None


def resolve_secret(spec: str, *, what: str) -> Secret:
    """A secret written as ``env:NAME`` (an environment variable), ``file:PATH`` (a file's
    text) or as the text itself.

    Args:
        spec: the setting's value.
        what: the setting, for error messages (``remote_log.secret``).

    Raises:
        SecretError: the variable is unset or empty, or the file cannot be read.
    """
    if spec.startswith("env:"):
        name = spec.removeprefix("env:")
        value = os.environ.get(name, "")
        if not value:
            raise SecretError(f"{what}: environment variable {name} is unset or empty")
        return Secret(value)
    if spec.startswith("file:"):
        value = read_secret_file(Path(spec.removeprefix("file:")).expanduser(), what=what)
        if not value:
            raise SecretError(f"{what}: {spec.removeprefix('file:')} is empty")
        return Secret(value)
    return Secret(spec)


@final
@dataclass(frozen=True, slots=True)
class Credentials:
    """What a backend needs beyond its URL: a secret and TLS files (all optional).

    ``secret`` is the password (with a user name in the URL) or the token (without one); given
    here it wins over one written in the URL.
    """

    secret: Secret | None = None
    ca_file: Path | None = None
    """Trust only this CA (PEM) instead of the system's."""
    cert_file: Path | None = None
    """A client certificate (PEM), for servers that ask for one; with ``key_file``."""
    key_file: Path | None = None
    creds_file: Path | None = None
    """NATS: a ``.creds`` file (user JWT and NKey seed)."""
    nkey_file: Path | None = None
    """NATS: a file holding an NKey seed (``SU...``)."""


@final
@dataclass(frozen=True, slots=True)
class BackendUrl:
    """A backend URL split into its parts; see :func:`parse_backend_url`."""

    scheme: str
    hosts: tuple[tuple[str, int], ...]
    """One (host, port) for most backends; a cluster's seed servers for NATS."""
    username: str | None = None
    password: Secret | None = None
    """The URL's password, or a token written alone before ``@`` (``nats://TOKEN@host``)."""
    path: str = ""
    """What follows the hosts, without the leading ``/`` (a Redis database number)."""
    tls: bool = False
    """The scheme asks for TLS (``https``, ``rediss``, ``tls``, ``ipfs+https``)."""
    original: str = field(default="", repr=False, compare=False)

    @property
    def host(self) -> str:
        return self.hosts[0][0]

    @property
    def port(self) -> int:
        return self.hosts[0][1]

    def redacted(self) -> str:
        """The URL as the node shows it: the password or token is ``***``."""
        return redact_url(self.original)


_TLS_SCHEMES: Final = frozenset({"https", "rediss", "tls", "ipfs+https"})


def _split_host(text: str, *, default_port: int, url: str) -> tuple[str, int]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise SecretError(f"{redact_url(url)}: an IPv6 address needs its closing ']'")
        port_text = rest.removeprefix(":") if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise SecretError(f"{redact_url(url)}: unexpected {rest!r} after the address")
    elif text.count(":") > 1:
        raise SecretError(f"{redact_url(url)}: write an IPv6 address in brackets, [::1]:port")
    else:
        host, _, port_text = text.partition(":")
    if not port_text:
        port = default_port
    elif port_text.isdigit() and len(port_text) <= 5:
        port = int(port_text)
    else:
        raise SecretError(f"{redact_url(url)}: the port {port_text!r} is not a number")
    if not 0 < port < 65536:
        raise SecretError(f"{redact_url(url)}: port {port} is out of range")
    return host or "127.0.0.1", port


def parse_backend_url(url: str, *, default_port: int, many_hosts: bool = False) -> BackendUrl:
    """``scheme://[user[:password]@]host[:port][,host[:port]...][/path]``, split.

    Args:
        url: the ``remote_log.url``.
        default_port: the port of a host written without one.
        many_hosts: whether a comma-separated list of servers is allowed (NATS).

    Raises:
        SecretError: the URL is malformed (the message shows it redacted).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        # Not echoed: a string that is no URL may be a secret pasted in the wrong place.
        raise SecretError("the backend address is not a URL (scheme://host:port)")
    authority, _, path = rest.partition("/")
    userinfo, at, hostpart = authority.rpartition("@")
    username: str | None = None
    password: Secret | None = None
    if at:
        user, colon, secret = userinfo.partition(":")
        if colon:
            username = unquote(user) or None
            password = Secret(unquote(secret)) if secret else None
        elif user:
            # One word before "@": NATS reads it as a token, Redis (redis-py's convention) and
            # HTTP as a user name; the backend decides.
            username = unquote(user)
    texts = hostpart.split(",") if hostpart else [""]
    if len(texts) > 1 and not many_hosts:
        raise SecretError(f"{redact_url(url)}: one server only (host:port)")
    if len(texts) > MAX_URL_HOSTS:
        raise SecretError(f"{redact_url(url)}: over {MAX_URL_HOSTS} servers")
    hosts = tuple(_split_host(t, default_port=default_port, url=url) for t in texts)
    return BackendUrl(
        scheme=scheme.lower(),
        hosts=hosts,
        username=username,
        password=password,
        path=path.rstrip("/"),
        tls=scheme.lower() in _TLS_SCHEMES,
        original=url,
    )


def redact_url(url: str) -> str:
    """``url`` with its password (or lone token) replaced by ``***``; the user name stays (it
    tells which account is used and is not a secret)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    userinfo, at, hostpart = authority.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    if colon:
        shown = f"{user}:{REDACTED}"
    elif scheme.lower() in ("nats", "tls"):
        shown = REDACTED  # nats://TOKEN@host: the one word is the token
    else:
        shown = user
    return f"{scheme}://{shown}@{hostpart}{slash}{path}"


def tls_context(credentials: Credentials, *, what: str) -> ssl.SSLContext:
    """A client TLS context: the system's CAs, or only ``ca_file``; a client certificate when
    ``cert_file`` is given. Hostnames are checked.

    Raises:
        SecretError: a file cannot be read or is not a certificate or key.
    """
    try:
        context = ssl.create_default_context(
            cafile=str(credentials.ca_file) if credentials.ca_file else None
        )
    except (OSError, ssl.SSLError) as error:
        raise SecretError(f"{what}: CA file {credentials.ca_file}: {error}") from None
    if credentials.cert_file is not None:
        try:
            context.load_cert_chain(
                str(credentials.cert_file),
                str(credentials.key_file) if credentials.key_file else None,
            )
        except (OSError, ssl.SSLError) as error:
            raise SecretError(
                f"{what}: client certificate {credentials.cert_file}: {error}"
            ) from None
    elif credentials.key_file is not None:
        raise SecretError(f"{what}: key_file is set without cert_file")
    return context
