"""One way to write an address: host:port, an IPv6 host in brackets, read back by parse_address."""

from __future__ import annotations

import pytest

from mvds_node._address import format_address
from mvds_node.node import parse_address


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [
        ("127.0.0.1", 7700, "127.0.0.1:7700"),
        ("::1", 7700, "[::1]:7700"),
        ("fe80::1%eth0", 1, "[fe80::1%eth0]:1"),
        ("helper.example", 8001, "helper.example:8001"),
    ],
)
def test_format_address(host: str, port: int, text: str) -> None:
    assert format_address(host, port) == text
    if "%" not in host:
        assert parse_address(text) == (host, port)
