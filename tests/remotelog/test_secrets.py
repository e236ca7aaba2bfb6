"""Backend URLs, secrets and their redaction: what every backend parses its URL with."""

from __future__ import annotations

from pathlib import Path

import pytest

from mvds_node.errors import ConfigError
from mvds_node.node import NodeConfig
from mvds_node.node._remotelog import backend_for, credentials_from
from mvds_node.remotelog import (
    Credentials,
    Secret,
    SecretError,
    parse_backend_url,
    redact_url,
    resolve_secret,
    tls_context,
)


def test_a_secret_never_prints() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert "hunter2" not in repr(Credentials(secret=secret))
    assert secret.reveal() == "hunter2"
    url = parse_backend_url("redis://alice:hunter2@db:6380/2", default_port=6379)
    assert "hunter2" not in repr(url) and "hunter2" not in url.redacted()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1", "redis://:***@h:1"),
        ("rediss://alice:pw@h:1/3", "rediss://alice:***@h:1/3"),
        ("nats://tok@h:4222", "nats://***@h:4222"),
        ("nats://u:p@a:1,b:2", "nats://u:***@a:1,b:2"),
        ("https://h:8443", "https://h:8443"),
        ("http://user@h:1", "http://user@h:1"),
        ("file:///x/y", "file:///x/y"),
    ],
)
def test_redaction(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_urls_split_into_parts() -> None:
    url = parse_backend_url("rediss://alice:p%40ss@db.local:6380/2", default_port=6379)
    assert (url.scheme, url.host, url.port, url.username, url.path, url.tls) == (
        "rediss",
        "db.local",
        6380,
        "alice",
        "2",
        True,
    )
    assert url.password is not None and url.password.reveal() == "p@ss"
    many = parse_backend_url("nats://[::1]:4223,127.0.0.1", default_port=4222, many_hosts=True)
    assert many.hosts == (("::1", 4223), ("127.0.0.1", 4222))
    assert parse_backend_url("tls://h", default_port=4222).tls
    assert parse_backend_url("redis://", default_port=6379).hosts == (("127.0.0.1", 6379),)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:secret@h:99999",
        "redis://:secret@h:port",
        "redis://:secret@a:1,b:2",
        "nats://:secret@::1:4222",
        "no-scheme-secret",
    ],
)
def test_bad_urls_are_refused_without_their_secret(url: str) -> None:
    with pytest.raises(SecretError) as caught:
        parse_backend_url(url, default_port=1)
    assert "secret" not in str(caught.value)


def test_secrets_come_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MVDS_TEST_SECRET", "from-env")
    assert resolve_secret("env:MVDS_TEST_SECRET", what="x").reveal() == "from-env"
    (tmp_path / "pw").write_text("from-file\n")
    assert resolve_secret(f"file:{tmp_path / 'pw'}", what="x").reveal() == "from-file"
    assert resolve_secret("literal", what="x").reveal() == "literal"
    with pytest.raises(SecretError, match="MVDS_UNSET_VARIABLE is unset"):
        resolve_secret("env:MVDS_UNSET_VARIABLE", what="x")
    with pytest.raises(SecretError, match="cannot read"):
        resolve_secret(f"file:{tmp_path / 'missing'}", what="x")
    (tmp_path / "big").write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(SecretError, match="not a secret file"):
        resolve_secret(f"file:{tmp_path / 'big'}", what="x")


def test_the_node_reads_credentials_from_its_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MVDS_TEST_SECRET", "s3")
    config = NodeConfig(data_dir=tmp_path)
    rl = config.remote_log
    assert credentials_from(rl) == Credentials()
    from dataclasses import replace

    rl = replace(rl, secret="env:MVDS_TEST_SECRET", ca_file="~/ca.pem")
    credentials = credentials_from(rl)
    assert credentials.secret == Secret("s3")
    assert credentials.ca_file == Path("~/ca.pem").expanduser()
    with pytest.raises(ConfigError, match=r"remote_log\.secret"):
        credentials_from(replace(rl, secret="env:MVDS_UNSET_VARIABLE"))
    with pytest.raises(ConfigError) as caught:
        backend_for("gopher://u:topsecret@h:1")
    assert "topsecret" not in str(caught.value)


def test_tls_context_reports_the_file(tmp_path: Path) -> None:
    assert tls_context(Credentials(), what="redis").check_hostname
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(SecretError, match="CA file"):
        tls_context(Credentials(ca_file=tmp_path / "ca.pem"), what="redis")
    with pytest.raises(SecretError, match="key_file is set without cert_file"):
        tls_context(Credentials(key_file=tmp_path / "k"), what="redis")
