"""What the commands print: documents for scripts, lines and tables for people, errors, progress.

Every command prints through one :class:`Output`. Under ``--json`` stdout carries exactly one JSON
document (``run`` prints one per line) and nothing else; errors are then one JSON object on stderr,
``{"error": ..., "kind": ..., ...}`` with ``file`` or ``address`` when the error is about one.
Without ``--json`` output is for people: rich styles it when stdout is a terminal, and never when
it is not, when ``NO_COLOR`` is set or with ``--no-color``. Progress bars go to stderr (so a
pipe of ``--json`` output never sees one), only when stderr is a terminal or ``--progress`` asks.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.text import Text

__all__ = ["PROG", "REFRESH", "Failure", "Output", "ProgressBar", "plural"]

PROG: Final = "mvds-node"
REFRESH: Final = 0.1
"""Seconds between two redraws of a progress bar (a pass may report thousands of steps)."""


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 member``, ``2 members`` (``nouns`` for an irregular plural)."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


class Failure(Exception):
    """An error the CLI reports and exits on: one line for people, one JSON object for scripts.

    Args:
        message: what went wrong, naming the file or address it is about.
        kind: a short stable word for scripts (``config``, ``usage``, ``bundle``, ``os``...).
        code: the exit status (1; 2 for a usage error).
        about: ``file=...`` or ``address=...``, added to the JSON object.
    """

    def __init__(self, message: str, *, kind: str = "error", code: int = 1, **about: Any) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.code = code
        self.about = {k: v for k, v in about.items() if v is not None}

    def document(self) -> dict[str, Any]:
        return {"error": self.message, "kind": self.kind, **self.about}


@dataclass
class Output:
    """The output of one command (see the module docstring)."""

    json: bool = False
    color: bool = True
    """False turns styles off even on a terminal (``--no-color``)."""
    _out: Console | None = field(default=None, repr=False)
    _err: Console | None = field(default=None, repr=False)

    def console(self, *, stderr: bool = False) -> Console:
        """The rich console of stdout (or stderr), made on first use so that it writes to the
        streams of the moment (click's test runner swaps them)."""
        made = self._err if stderr else self._out
        if made is None or made.file is not (sys.stderr if stderr else sys.stdout):
            made = Console(
                file=sys.stderr if stderr else sys.stdout,
                soft_wrap=True,
                highlight=False,
                no_color=not self.color or None,
            )
            if stderr:
                self._err = made
            else:
                self._out = made
        return made

    def document(self, document: Any) -> None:
        """One JSON document on stdout."""
        sys.stdout.write(json.dumps(document) + "\n")
        sys.stdout.flush()

    def line(self, *parts: str | tuple[str, str]) -> None:
        """One line for people: plain strings, and ``(text, style)`` pairs styled by rich."""
        self.console().print(styled(*parts))

    def show(self, document: Any, *parts: str | tuple[str, str]) -> None:
        """``document`` under ``--json``, else the line for people."""
        if self.json:
            self.document(document)
        else:
            self.line(*parts)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Columns under bold headers, aligned to the widest cell (never wrapped: a key or an
        address stays whole however narrow the terminal)."""
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        console = self.console()
        head = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
        console.print(Text(head, style="bold"))
        for row in rows:
            cells = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
            console.print(Text(cells.rstrip()))

    def error(self, failure: Failure) -> None:
        """The error on stderr: a JSON object under ``--json``, else one line."""
        if self.json:
            sys.stderr.write(json.dumps(failure.document()) + "\n")
            sys.stderr.flush()
            return
        self.console(stderr=True).print(
            styled((f"{PROG}: error:", "bold red"), f" {failure.message}")
        )

    def progress(self, label: str, *, forced: bool = False) -> ProgressBar:
        """A progress bar on stderr: shown when stderr is a terminal, or when ``forced``."""
        return ProgressBar(self, label, enabled=forced or sys.stderr.isatty(), forced=forced)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Rich text from plain strings and ``(text, style)`` pairs; never parses markup, so names
    and messages from peers print as they are."""
    text = Text()
    for part in parts:
        if isinstance(part, tuple):
            text.append(part[0], style=part[1])
        else:
            text.append(part)
    return text


class ProgressBar:
    """A ``(done, total)`` callback drawing a rich progress bar on stderr.

    The bar appears at the first call and is finished (left on screen as a record) when
    ``done`` reaches ``total`` or the ``with`` block ends, so that bars of successive passes
    (a bundle's check, then applying it) follow one another: rich draws one live display at a
    time.
    """

    def __init__(self, output: Output, label: str, *, enabled: bool, forced: bool) -> None:
        self.enabled = enabled
        self._label = label
        self._color = output.color
        self._forced = forced
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._drawn = 0.0

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._finish()

    def _finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __call__(self, done: float, total: float) -> None:
        if not self.enabled or total <= 0:
            return
        if self._task is None:
            console = Console(
                file=sys.stderr,
                force_terminal=True if self._forced else None,
                no_color=not self._color or None,
            )
            # No auto_refresh: it would draw from a thread of its own; the bar is redrawn
            # here instead, at most every REFRESH seconds.
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                MofNCompleteColumn(),
                console=console,
                auto_refresh=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=total)
        if self._progress is None:
            return  # finished already
        now = time.monotonic()
        redraw = now - self._drawn >= REFRESH
        if redraw:
            self._drawn = now
        self._progress.update(self._task, completed=done, total=total, refresh=redraw)
        if done >= total:
            self._finish()
