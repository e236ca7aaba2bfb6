"""Simulation: engines on a virtual clock and a seeded network model.

:class:`Net` steps a few engines in rounds (tests, benchmarks, the demo). :func:`run` is the
discrete-event simulator behind ``mvds-node sim``: real engines and a real remote log on a
virtual clock, driven by a :class:`Scenario` (settings, TOML files, named :data:`PRESETS`),
measured in a :class:`SimResult`; :func:`sweep` runs scenarios over the values of one setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mvds_node._lazy import lazy_attributes
from mvds_node.sim._metrics import SimResult as SimResult
from mvds_node.sim._net import Net as Net
from mvds_node.sim._net import Transfer as Transfer
from mvds_node.sim._run import run as run
from mvds_node.sim._run import sweep as sweep
from mvds_node.sim._scenario import PRESETS as PRESETS
from mvds_node.sim._scenario import Scenario as Scenario
from mvds_node.sim._scenario import ScenarioError as ScenarioError
from mvds_node.sim._scenario import load_scenario as load_scenario
from mvds_node.sim._scenario import preset as preset
from mvds_node.sim._scenario import with_overrides as with_overrides

if TYPE_CHECKING:
    from mvds_node.sim._cli import JSON_META as JSON_META
    from mvds_node.sim._cli import cmd_sim as cmd_sim
    from mvds_node.sim._cli import sim as sim

_LAZY: Final = {
    "JSON_META": "mvds_node.sim._cli",
    "cmd_sim": "mvds_node.sim._cli",
    "sim": "mvds_node.sim._cli",
}
"""The ``mvds-node sim`` command, on click and rich: loaded on first use, so that running the
simulator from Python imports neither."""

__all__ = [
    "JSON_META",
    "PRESETS",
    "Net",
    "Scenario",
    "ScenarioError",
    "SimResult",
    "Transfer",
    "cmd_sim",
    "load_scenario",
    "preset",
    "run",
    "sim",
    "sweep",
    "with_overrides",
]


__getattr__ = lazy_attributes(__name__, _LAZY)
