"""The root of the command line: global options, the command tree, and how errors end a command.

``main`` runs click in non-standalone mode so that every way a command can end is decided here,
once: a :class:`~mvds_node.node.cli._output.Failure`, a usage error (exit status 2), an
``MvdsError`` or ``OSError`` (1, one line naming the file or address), Ctrl-C (130). Under
``--json`` each is one JSON object on stderr. ``--json`` and ``--dir`` are accepted before the
command and after it (``mvds-node status --json``): :func:`common_options` adds them to every
command, and they land in the one :class:`State` of the invocation.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import click

from mvds_node.errors import ConfigError, MvdsError
from mvds_node.node._config import NodeConfig, default_data_dir, load_config
from mvds_node.node.cli._output import PROG, Failure, Output
from mvds_node.sim import JSON_META

__all__ = ["State", "common_options", "error_kind", "fail", "main", "pass_state", "root"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    """What the global options said, shared by every command of one invocation."""

    dir: Path | None = None
    output: Output = field(default_factory=Output)

    @property
    def data_dir(self) -> Path:
        return self.dir if self.dir is not None else default_data_dir()

    def config(self) -> NodeConfig:
        return load_config(self.data_dir)


def _state(ctx: click.Context) -> State:
    return ctx.ensure_object(State)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        _state(ctx).output.json = True
        ctx.meta[JSON_META] = True  # for `sim`, which knows nothing of State


def _set_dir(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        _state(ctx).dir = Path(value)


def _set_no_color(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        _state(ctx).output.color = False


def common_options(f: F) -> F:
    """``--dir``, ``--json`` and ``--no-color``, accepted after the command as before it."""
    # click lists options in the reverse of the order they are applied: --dir comes first.
    f = click.option(
        "--no-color",
        is_flag=True,
        expose_value=False,
        callback=_set_no_color,
        help="No colour even on a terminal (also: NO_COLOR set in the environment).",
    )(f)
    f = click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Machine-readable output: one JSON document on stdout, errors as JSON on stderr.",
    )(f)
    f = click.option(
        "--dir",
        metavar="DIR",
        expose_value=False,
        callback=_set_dir,
        type=click.Path(file_okay=False),
        help="The node's data directory (default: $MVDS_NODE_HOME, else the platform's).",
    )(f)
    return f


pass_state = click.make_pass_decorator(State, ensure=True)


def _version() -> str:
    try:
        return version("mvds-node")
    except PackageNotFoundError:  # pragma: no cover - run from a tree that was never installed
        return "unknown"


_ORDER: Final = (
    *("init", "key", "run", "send", "messages", "status", "trace", "peers", "groups", "config"),
    "cursors",
    *("export", "import", "log", "helper", "sim", "completion"),
)
"""The order ``--help`` lists the commands in: the order a newcomer needs them."""


class _Root(click.Group):
    """The root group: lists commands in :data:`_ORDER`, and ends every command the same way
    (:func:`_end`), whether it runs under :func:`main` or click's ``CliRunner``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        rank = {name: i for i, name in enumerate(_ORDER)}
        return sorted(self.commands, key=lambda name: rank.get(name, len(rank)))

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        extra.setdefault("obj", State(output=Output(json=_wants_json(argv))))
        return super().main(argv, prog_name or PROG, **extra)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:  # a usage error before any command
            state = extra.get("obj")
            _end(exc, state if isinstance(state, State) else State())

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except (Exception, KeyboardInterrupt) as exc:
            _end(exc, _state(ctx))


def _end(exc: BaseException, state: State) -> NoReturn:
    """Report ``exc`` as the command's error and exit with its status; re-raise a bug."""
    failure = failure_of(exc)
    if failure is None:
        raise exc
    if isinstance(exc, click.ClickException) and not state.output.json:
        raise exc  # click's own rendering of a usage error: the usage line, then the error
    if failure.kind == "closed":
        # The reader of stdout went away (`mvds-node peers | head -1`): nothing to tell it,
        # and stdout must not be flushed again at exit (that would print a traceback).
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise click.exceptions.Exit(failure.code) from None
    state.output.error(failure)
    raise click.exceptions.Exit(failure.code) from None


@click.group(
    cls=_Root,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=(
        "Data directory: --dir, else $MVDS_NODE_HOME, else the platform's data directory. "
        "Run `mvds-node COMMAND --help` for a command's options; `mvds-node completion bash` "
        "prints shell completion."
    ),
)
@click.version_option(_version(), "-V", "--version", prog_name=PROG, message="%(prog)s %(version)s")
@common_options
def root() -> None:
    """Reliable sync of messages between devices that are offline most of the time.

    Start with `mvds-node init`, exchange keys with `mvds-node key`, add peers and groups, then
    `mvds-node run`.
    """


def _wants_json(argv: Sequence[str]) -> bool:
    """Whether ``--json`` was given, read before parsing so that even a usage error (which
    stops the parser) is reported as JSON."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def failure_of(exc: BaseException) -> Failure | None:
    """The failure a command's exception means; None for an exception that is a bug (it keeps
    its traceback)."""
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = _leaves(exc)
        interrupted = [e for e in leaves if isinstance(e, KeyboardInterrupt)]
        if interrupted:
            return Failure("interrupted", kind="interrupted", code=130)
        known = [f for f in map(failure_of, leaves) if f is not None]
        return known[0] if known and len(known) == len(leaves) else None
    if isinstance(exc, KeyboardInterrupt | click.Abort):
        return Failure("interrupted", kind="interrupted", code=130)
    if isinstance(exc, click.UsageError):
        hint = ""
        if exc.ctx is not None:
            hint = f" (see `{exc.ctx.command_path} --help`)"
        return Failure(exc.format_message() + hint, kind="usage", code=exc.exit_code)
    if isinstance(exc, click.ClickException):
        return Failure(exc.format_message(), kind="usage", code=exc.exit_code)
    if isinstance(exc, ConfigError):
        # Its message starts with the file it is about, when it is about one.
        head = str(exc).split(":", 1)[0]
        return Failure(str(exc), kind="config", file=head if head.endswith(".toml") else None)
    if isinstance(exc, MvdsError):
        return Failure(str(exc), kind=error_kind(exc))
    if isinstance(exc, OSError):
        name = exc.filename
        text = exc.strerror or str(exc)
        if exc.errno == errno.EPIPE:
            return Failure("output closed", kind="closed", code=1)
        return Failure(f"{name}: {text}" if name else text, kind="os", file=name and str(name))
    return None


def error_kind(exc: MvdsError) -> str:
    """``BundleError`` -> ``bundle``; plain ``MvdsError`` -> ``error``."""
    name = type(exc).__name__.removesuffix("Error")
    return name.lower() if name and name != "Mvds" else "error"


def fail(message: str, **about: Any) -> NoReturn:
    """End the command with an error (exit status 1)."""
    raise Failure(message, **about)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``mvds-node`` console script: returns when the command succeeded.

    Raises:
        SystemExit: the command failed, with its exit status (1; 2 for a usage error; 130 when
            interrupted).
    """
    try:
        code = root.main(argv, prog_name=PROG, standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.Abort:
        raise SystemExit(130) from None
    if isinstance(code, int) and code != 0:
        raise SystemExit(code)
