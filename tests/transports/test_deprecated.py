"""Names renamed in the transports package keep a deprecated alias for one release."""

from __future__ import annotations

import pytest

import mvds_node.transports as transports
from mvds_node.sync import Mode as SyncMode


def test_mode_is_the_deprecated_name_of_frame_mode() -> None:
    with pytest.deprecated_call(match="FrameMode"):
        alias = transports.Mode
    assert alias is transports.FrameMode
    assert set(transports.FrameMode.__members__) != set(SyncMode.__members__)
    assert "Mode" not in transports.__all__


def test_unknown_names_are_still_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        transports.Nope  # noqa: B018
