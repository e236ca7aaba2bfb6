"""How an address is written wherever one is shown: status, errors, logs, configuration files."""

from __future__ import annotations

__all__ = ["format_address"]


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::1]:7700``) so that the port cannot be
    read as part of it; the form :func:`~mvds_node.node.parse_address` reads back."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
