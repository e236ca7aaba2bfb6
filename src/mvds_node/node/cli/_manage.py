"""The commands that edit ``config.toml``: ``peers``, ``groups`` and ``config get/set``.

Each reads the configuration, changes only what its options name, checks the result as the file
is checked when loaded, and writes it atomically (``save_config``). A running node reads the file
when it next starts.
"""

from __future__ import annotations

import dataclasses
import secrets
import tomllib
from typing import Any, Literal

import click
import trio

from mvds_node.errors import ConfigError
from mvds_node.node._config import (
    GroupConfig,
    NodeConfig,
    PeerConfig,
    group_id_for,
    parse_address,
    parse_config,
    render_config,
    save_config,
    setting_value,
)
from mvds_node.node._schema import (
    SETTINGS,
    find_setting,
    format_address,
    toml_value,
    value_from_text,
)
from mvds_node.node.cli._app import State, common_options, fail, pass_state, root
from mvds_node.node.cli._complete import complete_group, complete_peer, complete_setting
from mvds_node.node.cli._local import node_status
from mvds_node.node.cli._output import plural
from mvds_node.sync import Mode

__all__: list[str] = []


def _short(key: bytes) -> str:
    return key.hex()[:12]


def _parse_key(text: str, what: str = "a key") -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        fail(f"{text!r} is not a hex key ({what})", kind="usage")
    if len(key) != 32:
        fail(f"{what} is 64 hex digits, got {len(text)}", kind="usage")
    return key


def _group(config: NodeConfig, name: str, *, create: bool) -> GroupConfig:
    try:
        return config.group(name)
    except ConfigError:
        if create:
            return GroupConfig(name=name, id=group_id_for(name))
        known = ", ".join(g.name for g in config.groups) or "none yet"
        fail(
            f"no group {name!r} in {config.config_path} (groups: {known}); create it with "
            f"`mvds-node groups add {name}` or give --create-group",
            kind="config",
            file=str(config.config_path),
        )


def _peer_json(config: NodeConfig, p: PeerConfig) -> dict[str, Any]:
    return {
        "key": p.key.hex(),
        "name": p.name,
        "address": format_address(p.address) if p.address else None,
        "log_key": p.log_key.hex() if p.log_key else None,
        "ipns": p.ipns,
        "groups": [g.name for g in config.groups if p.key in g.members],
    }


def _group_json(g: GroupConfig) -> dict[str, Any]:
    return {
        "name": g.name,
        "id": g.id.hex(),
        "mode": g.mode.value,
        "members": [m.hex() for m in g.members],
        "secret": g.secret is not None,
        "envelope": g.envelope,
    }


# --------------------------------------------------------------------------- peers


@root.group(invoke_without_command=True)
@common_options
@click.pass_context
def peers(ctx: click.Context) -> None:
    """List, add or remove peers.

    `mvds-node peers` alone lists them.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(peers_list)


@peers.command("list")
@common_options
@pass_state
def peers_list(state: State) -> None:
    """List the peers: name, key, whether connected, messages pending, address to dial."""
    config = state.config()
    doc = trio.run(node_status, config)
    known = {p.key.hex(): p for p in config.peers}
    rows = []
    for p in doc["peers"]:
        configured = known.get(p["key"])
        address = configured.address if configured else None
        # The status names the address a connection came from, which for an inbound one is
        # the peer's ephemeral port: the address to dial is the configured one.
        p["connected_from"] = p["address"] if p["connected"] else None
        p["address"] = format_address(address) if address else None
        rows.append(p)
    out = state.output
    if out.json:
        out.document(rows)
        return
    if not rows:
        out.line("no peers (add one with `mvds-node peers add KEY --address HOST:PORT`)")
        return
    table = []
    for p in rows:
        state_text = "connected" if p["connected"] else ("offline" if doc["running"] else "-")
        table.append(
            [p["name"] or "-", p["key"][:16], state_text, str(p["pending"]), p["address"] or "-"]
        )
    out.table(["NAME", "KEY", "STATE", "PENDING", "ADDRESS"], table)
    if not doc["running"]:
        out.line(("(node not running: STATE is known only while it runs)", "dim"))


@peers.command("add")
@click.argument("key")
@click.option("--name", help="A human name.")
@click.option("--address", metavar="HOST:PORT", help="Where to dial it.")
@click.option(
    "--log-key",
    help="Its Ed25519 key (`mvds-node key --log` on its side): signs its messages in signed "
    "groups and its remote log.",
)
@click.option("--ipns", help="Its IPNS id (`mvds-node key --ipns` on its side).")
@click.option(
    "--group",
    multiple=True,
    metavar="NAME",
    shell_complete=complete_group,
    help="Add it to the group NAME (repeatable).",
)
@click.option("--create-group", is_flag=True, help="Create the --group groups that do not exist.")
@common_options
@pass_state
def peers_add(
    state: State,
    key: str,
    name: str | None,
    address: str | None,
    log_key: str | None,
    ipns: str | None,
    group: tuple[str, ...],
    create_group: bool,
) -> None:
    """Add the peer KEY (64 hex digits, from `mvds-node key`), or change a known one.

    On a known key, only the options given change; the rest stay as they were.
    """
    config = state.config()
    raw = _parse_key(key)
    known = next((p for p in config.peers if p.key == raw), None)
    before = known or PeerConfig(key=raw)
    peer = dataclasses.replace(
        before,
        name=before.name if name is None else name,
        address=before.address
        if address is None
        else (parse_address(address, where="--address") if address else None),
        log_key=before.log_key
        if log_key is None
        else (_parse_key(log_key, "--log-key") if log_key else None),
        ipns=before.ipns if ipns is None else ipns,
    )
    groups = [_group(config, g, create=create_group) for g in dict.fromkeys(group)]
    config = config.with_peer(peer)
    for g in groups:
        members = tuple(dict.fromkeys((*g.members, raw)))
        config = config.with_group(dataclasses.replace(g, members=members))
    save_config(config)
    signed = [g.name for g in config.groups if raw in g.members and g.envelope == "signed"]
    if peer.log_key is None and signed:
        click.echo(
            f"mvds-node: warning: {peer.name or _short(raw)} has no --log-key: it is learned on "
            "the first direct connection (TCP), and until then its messages in "
            f"{', '.join(signed)} (signed) are refused as unknown-author (its messages relayed "
            "by others too)",
            err=True,
        )
    verb = "updated" if known else "added"
    state.output.show(
        {"peer": _peer_json(config, peer), "added": known is None},
        f"{verb} peer {peer.name or _short(raw)}",
    )


@peers.command("remove")
@click.argument("key", shell_complete=complete_peer)
@common_options
@pass_state
def peers_remove(state: State, key: str) -> None:
    """Forget a peer: KEY is its key, a key prefix or its name."""
    config = state.config()
    peer = config.peer(key)
    config = dataclasses.replace(
        config,
        peers=tuple(p for p in config.peers if p.key != peer.key),
        groups=tuple(
            dataclasses.replace(g, members=tuple(m for m in g.members if m != peer.key))
            for g in config.groups
        ),
    )
    save_config(config)
    state.output.show({"removed": peer.key.hex()}, f"removed peer {peer.name or _short(peer.key)}")


# --------------------------------------------------------------------------- groups


@root.group(invoke_without_command=True)
@common_options
@click.pass_context
def groups(ctx: click.Context) -> None:
    """List or add groups.

    `mvds-node groups` alone lists them.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(groups_list)


@groups.command("list")
@common_options
@pass_state
def groups_list(state: State) -> None:
    """List the groups: name, mode, members, whether it has a secret, ID."""
    config = state.config()
    out = state.output
    if out.json:
        out.document([_group_json(g) for g in config.groups])
        return
    if not config.groups:
        out.line("no groups (create one with `mvds-node groups add NAME`)")
        return
    out.table(
        ["NAME", "MODE", "MEMBERS", "SECRET", "ID"],
        [
            [
                g.name,
                g.mode.value,
                plural(len(g.members), "member"),
                "yes" if g.secret else "no",
                g.id.hex()[:16],
            ]
            for g in config.groups
        ],
    )


@groups.command("add")
@click.argument("name", shell_complete=complete_group)
@click.option(
    "--member",
    multiple=True,
    shell_complete=complete_peer,
    help="A peer's name or key (repeatable).",
)
@click.option("--mode", type=click.Choice(["batch", "interactive"]), help="How it syncs.")
@click.option("--secret", help='64 hex digits, or "new" to generate one.')
@click.option(
    "--envelope",
    type=click.Choice(["signed", "raw"]),
    help="signed: messages carry their author's signature (default); raw: bodies as they are "
    "(plain MVDS applications). The same on every member.",
)
@common_options
@pass_state
def groups_add(
    state: State,
    name: str,
    member: tuple[str, ...],
    mode: str | None,
    secret: str | None,
    envelope: Literal["signed", "raw"] | None,
) -> None:
    """Create the group NAME, or change it (members are added; mode and secret replaced)."""
    config = state.config()
    group = _group(config, name, create=True)
    key = group.secret
    if secret == "new":
        key = secrets.token_bytes(32)
    elif secret:
        key = _parse_key(secret, "--secret")
    members = [*group.members, *(config.peer(m).key for m in member)]
    group = dataclasses.replace(
        group,
        members=tuple(dict.fromkeys(members)),
        mode=Mode(mode) if mode else group.mode,
        secret=key,
        envelope=envelope or group.envelope,
    )
    save_config(config.with_group(group))
    state.output.show(
        _group_json(group), f"group {group.name}: {plural(len(group.members), 'member')}"
    )


# --------------------------------------------------------------------------- config


@root.group("config")
@common_options
def config_group() -> None:
    """Read or change the settings of config.toml.

    Every setting, its type, default and range: docs/configuration.md.
    """


def _redacted(name: str, value: Any) -> Any:
    """A setting's value as the CLI prints it: a password in ``remote_log.url`` and a literal
    ``remote_log.secret`` are ``***`` (``env:NAME`` and ``file:PATH`` only say where the secret
    is, and show). ``config.toml`` itself holds the real text."""
    if not isinstance(value, str) or not value:
        return value
    if name == "remote_log.url":
        from mvds_node.remotelog import redact_url  # a light module: no backend client loads

        return redact_url(value)
    if name == "remote_log.secret" and not value.startswith(("env:", "file:")):
        return "***"
    return value


def _shown(value: Any) -> str:
    return "(unset)" if value is None else toml_value(value)


@config_group.command("get")
@click.argument("name", required=False, shell_complete=complete_setting)
@common_options
@pass_state
def config_get(state: State, name: str | None) -> None:
    """Print the setting NAME (SECTION.KEY), or every setting.

    A password in remote_log.url and the text of remote_log.secret show as ***.
    """
    config = state.config()
    out = state.output
    if name is not None:
        setting = find_setting(name)
        value = _redacted(setting.name, setting_value(config, setting))
        if out.json:
            out.document({"setting": setting.name, "value": value, "default": setting.default})
        else:
            # A string prints bare, so that `$(mvds-node config get remote_log.url)` is the URL.
            out.line(value if isinstance(value, str) else _shown(value))
        return
    values = {s.name: _redacted(s.name, setting_value(config, s)) for s in SETTINGS}
    if out.json:
        out.document(values)
        return
    rows = []
    for s in SETTINGS:
        value = values[s.name]
        rows.append([s.name, _shown(value), "" if value == s.default else "(changed)"])
    out.table(["SETTING", "VALUE", ""], rows)


@config_group.command("set")
@click.argument("name", shell_complete=complete_setting)
@click.argument("value")
@common_options
@pass_state
def config_set(state: State, name: str, value: str) -> None:
    """Set NAME (SECTION.KEY) to VALUE, checked as config.toml is when loaded.

    A list takes comma-separated values; an optional setting is unset with "".
    """
    config = state.config()
    setting = find_setting(name)
    raw = value_from_text(setting, value)
    # Through the file's own form: the new value is checked with every other setting, exactly
    # as `load_config` will check it at the next start.
    doc = tomllib.loads(render_config(config))
    table = doc.setdefault(setting.section, {})
    if raw is None:
        table.pop(setting.key, None)
    else:
        table[setting.key] = raw
    changed = parse_config(doc, data_dir=config.data_dir, where="mvds-node config set")
    save_config(changed)
    after = _redacted(setting.name, setting_value(changed, setting))
    running = config.control_path.exists()
    state.output.show(
        {"setting": setting.name, "value": after},
        f"{setting.name} = {_shown(after)}",
        (" (the running node reads it when it next starts)", "dim") if running else "",
    )
