"""How a NATS URL and the [remote_log] credentials are read (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mvds_node.errors import ConfigError
from mvds_node.node._remotelog import backend_for
from mvds_node.remotelog import Credentials, Secret, SecretError
from mvds_node.remotelog._nats import NatsBackend


@pytest.mark.parametrize(
    ("url", "secret", "auth", "sent", "shown"),
    [
        ("nats://T0KEN@h:4222", None, "token", "T0KEN", "nats://***@h:4222"),
        ("nats://alice:pw@h", None, "user", "pw", "nats://alice:***@h"),
        ("nats://alice@h", "pw", "user", "pw", "nats://alice@h"),
        ("nats://alice:old@h", "pw", "user", "pw", "nats://alice:***@h"),
        ("nats://h", "T0KEN", "token", "T0KEN", "nats://h"),
        ("tls://h", None, "", None, "tls://h"),
    ],
)
def test_who_a_url_authenticates_as(
    url: str, secret: str | None, auth: str, sent: str | None, shown: str
) -> None:
    credentials = Credentials(secret=Secret(secret) if secret else None)
    backend = NatsBackend(url, credentials=credentials)
    assert (backend._auth, backend.server) == (auth, shown)
    assert backend._user == ("alice" if auth == "user" else None)
    assert backend._secret == (Secret(sent) if sent else None)
    # Nothing secret in what the backend prints of itself.
    assert "pw" not in repr(vars(backend)) and "T0KEN" not in repr(vars(backend))


def test_a_server_list_and_replicas() -> None:
    backend = NatsBackend("nats://a:1,b,[::1]:3?replicas=3")
    assert backend.servers == ["a:1", "b:4222", "[::1]:3"]
    assert backend.replicas == 3
    assert NatsBackend("nats://a").replicas == 1


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("nats://a?replicas=9", "replicas must be 1 to 5"),
        ("nats://a?replicas=x", "replicas must be 1 to 5"),
        ("nats://a?copies=3", "unknown setting 'copies'"),
        ("nats://a:port", "not a number"),
        ("nats://" + ",".join(["a"] * 65), "over 64 servers"),
    ],
)
def test_a_malformed_url_is_refused(url: str, error: str) -> None:
    with pytest.raises(SecretError, match=error):
        NatsBackend(url)


def test_backend_for_passes_the_credentials_and_names_the_setting(tmp_path: Path) -> None:
    seedless = tmp_path / "empty.nk"
    seedless.write_text("")
    backend = backend_for("nats://alice@h", credentials=Credentials(secret=Secret("pw")))
    assert isinstance(backend, NatsBackend) and backend._auth == "user"
    tls = backend_for("tls://h", credentials=Credentials())
    assert isinstance(tls, NatsBackend) and tls._ssl is not None
    with pytest.raises(ConfigError, match=r"remote_log\.nkey_file"):
        backend_for("nats://h", credentials=Credentials(nkey_file=seedless))
    with pytest.raises(ConfigError, match="CA file"):
        backend_for("tls://h", credentials=Credentials(ca_file=tmp_path / "missing.pem"))
    with pytest.raises(ConfigError) as raised:
        backend_for("nats://s3cret:pw@h?replicas=0")
    assert "pw" not in str(raised.value)
