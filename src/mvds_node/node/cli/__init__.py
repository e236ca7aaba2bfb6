"""``mvds-node``: the command line, on click (parsing, help, completion) and rich (colour,
tables, progress).

Every command works on one data directory (``--dir``, else ``$MVDS_NODE_HOME``, else the
platform's data directory). ``run`` keeps a node online; the other commands talk to that node
through its control socket when it runs, and otherwise open the store themselves, so ``send``
works offline too (the message goes out when the node next runs). Output is for people by
default; ``--json`` (before or after the command) prints one JSON document (or, for ``run``, one
per line) for scripts. Errors are one line on stderr (one JSON object under ``--json``) and exit
status 1; a usage error exits 2, Ctrl-C 130.

The commands are thin: they parse options, build configuration and hand the work to the node.

- ``_app.py``: the root group, the global options, ``main`` and how errors end a command;
- ``_output.py``: documents, lines, tables, errors and progress bars;
- ``_commands.py``: init, key, status, send, export/import, log, helper, completion;
- ``_manage.py``: peers, groups, config get/set (the commands that edit config.toml);
- ``_run.py``: run; ``_events.py``: its JSON lines and lines for people;
- ``_messages.py``: messages (stored messages, offline or from the running node), cursors;
- ``_local.py``: the running node's control socket, or the store opened here;
- ``mvds_node.sim._cli``: ``sim``.
"""

from __future__ import annotations

from mvds_node.node.cli import (  # noqa: F401 - they register commands
    _commands,
    _manage,
    _messages,
    _run,
)
from mvds_node.node.cli._app import main as main
from mvds_node.node.cli._app import root as root
from mvds_node.node.cli._events import encode_event as encode_event
from mvds_node.node.cli._events import event_json
from mvds_node.sim import sim as _sim

root.add_command(_sim)

_event_json = event_json
"""The name this encoder had when the CLI was one module (tests of the node use it)."""

__all__ = ["encode_event", "main", "root"]
