"""Suite-wide guards.

An ``InternalError`` event means outside input hit a bug: the node survived it, but the suite
must not. Every test fails if a node it ran reported one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mvds_node.node import AnyEvent, InternalError
from mvds_node.node._driver import Driver


@pytest.fixture(autouse=True)
def no_internal_errors(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[InternalError]]:
    """Collect the ``InternalError`` events of every node; fail the test if there were any.

    A test that provokes one on purpose marks itself ``@pytest.mark.internal_errors_expected``
    and reads them from this fixture."""
    seen: list[InternalError] = []
    original = Driver.emit

    def emit(self: Driver, event: AnyEvent) -> None:
        if isinstance(event, InternalError):
            seen.append(event)
        original(self, event)

    monkeypatch.setattr(Driver, "emit", emit)
    yield seen
    if seen and request.node.get_closest_marker("internal_errors_expected") is None:
        first = seen[0]
        pytest.fail(
            f"{len(seen)} InternalError event(s); first in {first.where}: {first.error}\n"
            f"{first.traceback}"
        )
