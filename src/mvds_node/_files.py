"""Small file-system steps that several parts of the package need alike."""

from __future__ import annotations

import os

__all__ = ["fsync_directory"]


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Flush a directory, so that a file just created, renamed or linked in it keeps its name
    after a power loss (the file's own ``fsync`` does not cover its directory entry).

    Raises:
        OSError: the directory cannot be opened or flushed.
    """
    if os.name == "nt":
        return  # directories cannot be opened for fsync there; NTFS journals the names
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
