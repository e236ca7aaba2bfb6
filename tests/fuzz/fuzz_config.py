"""Target: the configuration file (``node/_config.py``: ``load_config``).

The fuzzer's bytes are ``config.toml`` in a scratch data directory. A file that loads must
render back (``render_config``) to a file that loads as the same configuration. Only
:class:`ConfigError` may come out.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mvds_node.errors import ConfigError
from mvds_node.node._config import CONFIG_NAME, load_config, render_config

MAX_LEN = 8192
_SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # a file per input: keep it off disk
DATA_DIR = Path(tempfile.mkdtemp(prefix="mvds-fuzz-config-", dir=_SHM))
PATH = DATA_DIR / CONFIG_NAME


def TestOneInput(data: bytes) -> None:
    PATH.write_bytes(data)
    try:
        config = load_config(DATA_DIR)
    except ConfigError:
        return
    PATH.write_text(render_config(config), encoding="utf-8")
    if load_config(DATA_DIR) != config:
        raise AssertionError("a configuration does not survive render_config and load_config")
