"""``python -m mvds_node`` is the ``mvds-node`` command."""

from __future__ import annotations

from mvds_node.node.cli import main

main()
