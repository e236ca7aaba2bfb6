"""Shell completion of names from the node's configuration (click's completion machinery).

``mvds-node completion SHELL`` prints the script to source; completing ``send <TAB>`` then offers
the group names of the data directory given so far (``--dir``), or of the default one.
"""

from __future__ import annotations

from pathlib import Path

import click
from click.shell_completion import CompletionItem

from mvds_node.errors import MvdsError
from mvds_node.node._config import NodeConfig, default_data_dir, load_config

__all__ = ["complete_group", "complete_peer", "complete_setting"]


def _config(ctx: click.Context) -> NodeConfig | None:
    directory: Path | None = None
    for c in (ctx, *_parents(ctx)):
        given = c.params.get("dir") or getattr(c.obj, "dir", None)
        if given:
            directory = Path(given)
            break
    try:
        return load_config(directory or default_data_dir())
    except MvdsError:
        return None  # no node there (yet): nothing to offer


def _parents(ctx: click.Context) -> list[click.Context]:
    found = []
    while ctx.parent is not None:
        ctx = ctx.parent
        found.append(ctx)
    return found


def complete_group(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    config = _config(ctx)
    names = [g.name for g in config.groups] if config else []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def complete_peer(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    config = _config(ctx)
    names = [p.name or p.key.hex() for p in config.peers] if config else []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def complete_setting(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    from mvds_node.node._schema import SETTINGS

    return [CompletionItem(s.name, help=s.help) for s in SETTINGS if s.name.startswith(incomplete)]
