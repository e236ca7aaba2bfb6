"""Simulation: engines on a virtual clock and a seeded network model."""

from __future__ import annotations

from mvds_node.sim._net import Net as Net
from mvds_node.sim._net import Transfer as Transfer

__all__ = ["Net", "Transfer"]
