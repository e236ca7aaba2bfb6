"""Appending message bodies to a segment file: page-aligned writes that bypass the page cache.

:class:`SegmentWriter` is the write side of the SQLite store's segment files (see "Large bodies"
in :mod:`mvds_node.sync.store._sqlite`). Bodies are copied into a page-aligned staging buffer and
written out in whole pages, at page-aligned offsets, with ``O_DIRECT`` where the platform and
the file system allow it (Linux on ext4, xfs, btrfs, ...). A direct write moves the bytes from
the buffer to the disk without a copy in the page cache; the flush before a commit then finds
nothing left to write back. Through the page cache the same bytes cost the kernel a copy, the
dirty-page accounting and a writeback pass per page: on the virtual machine measured, 0.2-0.5 s
of system time per 300 MB written and flushed in batches of 6 MB, against 0.01-0.03 s direct,
taken from the cores the node needs for everything else.

The file's last page is usually partly filled. Its bytes stay in the staging buffer, and the
next write rewrites that page whole: the bytes already there are written again unchanged, so a
write cut short by a crash leaves every sector of them as it was (old or new, both the same).
Where ``O_DIRECT`` is refused (``EINVAL``: some network file systems, older tmpfs, or alignment
the device does not accept; one write is tried when the segment is opened), the same aligned
writes go through the page cache, and the pages are released once flushed, so a bulk of bodies
does not fill the page cache.

Reading is not done here: the store reads through ordinary descriptors, which see what direct
writes wrote (a direct write invalidates the cached pages it covers). Only bytes still in the
staging buffer, not yet written out, must be taken from it (:meth:`SegmentWriter.staged`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final

__all__ = ["PAGE", "SegmentWriter"]

PAGE: Final = 4096
"""Alignment of every write: offsets, lengths and the buffer's address. 4096 suits devices with
512-byte and with 4096-byte logical blocks."""
_MASK: Final = PAGE - 1
_STAGE: Final = 1024 * 1024
"""Bytes staged before they are written out: one system call per MiB of bodies."""
_BUFFERS: Final = 4
"""Staging buffers at most: one being filled, the others written in the background."""
_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_O_DIRECT: Final = getattr(os, "O_DIRECT", 0)
_fadvise: Final = getattr(os, "posix_fadvise", None)
# fdatasync skips the inode's timestamps; where it does not exist (macOS), fsync does the job.
_fdatasync: Final = getattr(os, "fdatasync", os.fsync)


class SegmentWriter:
    """Appends to one segment file whose committed bytes end at ``end``.

    Full buffers are written by a background thread while the caller goes on filling the next
    (the write does not hold the interpreter lock): storing a batch of bodies overlaps their
    copying and hashing with the disk. At most :data:`_BUFFERS` buffers exist; the caller waits
    for the oldest write when all are in flight. :meth:`sync` writes the last, partly filled
    buffer itself, waits for the thread's writes, then flushes. A background write that failed
    is raised by the next :meth:`write` or :meth:`sync`.

    Args:
        path: the segment file, created (mode 0600) if it does not exist.
        end: where its committed bytes end; the file is cut back to it (what a crash left
            after it is referred to by nothing), and the page holding ``end`` is read back
            into the staging buffer, so that the next write can rewrite it whole.
        direct: try ``O_DIRECT`` (the default); False writes through the page cache.

    Raises:
        OSError: the file cannot be opened or its last page read.
    """

    def __init__(self, path: str, *, end: int = 0, direct: bool = True) -> None:
        self._path = path
        self._direct = bool(direct and _O_DIRECT)
        self._fd = -1
        self._buffer = mmap.mmap(-1, _STAGE)  # anonymous: page-aligned
        self._view = memoryview(self._buffer)
        self._spare: list[tuple[mmap.mmap, memoryview]] = []
        self._buffers = 1  # allocated, in use, in flight or spare
        self._in_flight: collections.deque[_InFlight] = collections.deque()
        self._executor: ThreadPoolExecutor | None = None
        self._base = 0  # file offset of the buffer's first byte, page-aligned
        self._fill = 0  # bytes of the buffer that hold the file's bytes
        self._pending = False  # the buffer holds bytes not yet written to the file
        self._unsynced = False  # bytes written to the file and not yet flushed to the disk
        try:
            self._fd = self._open()
            self._load(end)
            if self._direct:
                self._probe()
            # Bytes past ``end`` were written by a transaction that never committed (or are
            # the probe's page): nothing refers to them.
            os.ftruncate(self._fd, end)
        except BaseException:
            self.close()
            raise

    @property
    def direct(self) -> bool:
        """Whether writes bypass the page cache (``O_DIRECT``)."""
        return self._direct

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | _O_CLOEXEC
        if self._direct:
            try:
                return os.open(self._path, flags | _O_DIRECT, 0o600)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self._direct = False  # the file system refuses O_DIRECT
        return os.open(self._path, flags, 0o600)

    def _probe(self) -> None:
        """Some file systems take ``O_DIRECT`` at open and refuse its writes (``EINVAL``), or
        need a coarser alignment: try one now, rewriting the last page with the bytes it holds
        (the caller cuts the file back), and write through the page cache if it fails."""
        try:
            os.pwrite(self._fd, self._view[:PAGE], self._base)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            os.close(self._fd)
            self._fd = -1
            self._direct = False
            self._fd = self._open()

    def _load(self, end: int) -> None:
        """Point the buffer at ``end``: its page's bytes before ``end`` are read from the file."""
        self._base = end & ~_MASK
        self._fill = end - self._base
        self._pending = False
        if not self._fill:
            return
        got = os.preadv(self._fd, [self._view[:PAGE]], self._base)
        if got < self._fill:
            raise OSError(errno.EIO, f"{self._path} ends at {self._base + got}, before {end}")

    def write(self, pos: int, data: bytes) -> None:
        """Put ``data`` at ``pos``: the end of the bytes written so far, or before it (bytes from
        ``pos`` on were written by a transaction that rolled back, and are overwritten). Full
        buffers go to the file in the background; the rest waits for :meth:`sync`."""
        if self._base <= pos <= self._base + self._fill:
            self._fill = pos - self._base
        else:
            self._wait()  # the page at ``pos`` may be in flight
            self._load(pos)
        view = memoryview(data)
        while view:
            room = _STAGE - self._fill
            if not room:
                self._write_behind()
                continue
            n = min(room, len(view))
            self._view[self._fill : self._fill + n] = view[:n]
            self._fill += n
            self._pending = True
            view = view[n:]

    def _write_behind(self) -> None:
        """Hand the full buffer to the thread and go on in a spare one."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="mvds-segment-writer")
        job = self._executor.submit(_write_all, self._fd, self._view, _STAGE, self._base)
        self._in_flight.append(_InFlight(job, self._base, self._buffer, self._view))
        self._base += _STAGE
        self._fill = 0
        self._pending = False
        self._unsynced = True
        if self._spare:
            self._buffer, self._view = self._spare.pop()
        elif self._buffers < _BUFFERS:
            self._buffer = mmap.mmap(-1, _STAGE)
            self._view = memoryview(self._buffer)
            self._buffers += 1
        else:
            oldest = self._in_flight.popleft()
            self._buffer, self._view = oldest.buffer, oldest.view
            error = oldest.job.exception()
            if error is not None:
                self._wait_all()  # theirs come after this one: the caller rolls back anyway
                raise error

    def _wait_all(self) -> BaseException | None:
        """Wait for every background write; return the first error, if one failed."""
        error: BaseException | None = None
        while self._in_flight:
            done = self._in_flight.popleft()
            error = error or done.job.exception()
            self._spare.append((done.buffer, done.view))
        return error

    def _wait(self) -> None:
        """Wait for every background write; raise the first that failed."""
        error = self._wait_all()
        if error is not None:
            raise error

    def _write_out(self) -> None:
        """Write the buffer's pages to the file (the last one padded), and keep only the bytes
        of the last, partly filled page in the buffer."""
        length = (self._fill + _MASK) & ~_MASK
        _write_all(self._fd, self._view, length, self._base)
        if not self._direct and _fadvise is not None:
            # Start the writeback now, so the flush before the commit finds most of it done.
            with contextlib.suppress(OSError):
                _fadvise(self._fd, self._base, length, os.POSIX_FADV_DONTNEED)
        whole = self._fill & ~_MASK
        if whole:
            rest = self._fill - whole
            self._view[:rest] = self._view[whole : self._fill]
            self._base += whole
            self._fill = rest
        self._pending = False
        self._unsynced = True

    def sync(self) -> None:
        """Write out what the buffer holds, wait for the background writes, and flush the file
        to the disk."""
        if self._pending:
            self._write_out()
        self._wait()
        if self._unsynced:
            _fdatasync(self._fd)
            self._unsynced = False
            if not self._direct and _fadvise is not None:
                with contextlib.suppress(OSError):  # flushed: the cached pages may go
                    _fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def staged(self, pos: int, size: int) -> tuple[int, bytes]:
        """The bytes of [pos, pos + size) that may exist only in the buffer: (where they begin,
        the bytes); the caller reads the bytes before that from the file."""
        if self._in_flight and pos + size > self._in_flight[0].offset:
            self._wait()  # what the thread holds is in the file once it is done
        start = max(pos, self._base)
        end = min(pos + size, self._base + self._fill)
        if end <= start:
            return pos + size, b""
        return start, bytes(self._view[start - self._base : end - self._base])

    def close(self) -> None:
        """Close the file and free the buffers (bytes not synced are dropped). Idempotent."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._wait_all()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for buffer, view in [(self._buffer, self._view), *self._spare]:
            if not buffer.closed:
                view.release()
                buffer.close()
        self._spare.clear()


@dataclasses.dataclass(frozen=True, slots=True)
class _InFlight:
    job: Future[None]
    offset: int  # where in the file the buffer goes
    buffer: mmap.mmap
    view: memoryview


def _write_all(fd: int, view: memoryview, length: int, offset: int) -> None:
    written = 0
    while written < length:
        written += os.pwrite(fd, view[written:length], offset + written)
