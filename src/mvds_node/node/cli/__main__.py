"""``python -m mvds_node.node.cli``: the same as ``mvds-node``."""

from __future__ import annotations

from mvds_node.node.cli import main

main()
