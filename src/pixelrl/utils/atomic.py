"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

Every write of a run's files goes through :func:`storage_errors` (directly or via :func:`write_bytes_atomic`): a
full disk, a read-only remount or a quota turns into one :class:`~pixelrl.errors.StorageError` naming the path and
the free space needed, after the temporary file of the write is removed. :func:`ensure_free_space` checks a write
of known size before it starts. :class:`RunLock` is the exclusive lock a process holds on a run folder while it
writes there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from pixelrl.errors import RunInUseError, StorageError

STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG})


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except OSError:
        pass


@contextlib.contextmanager
def storage_errors(path: str | os.PathLike, *, cleanup: tuple[str | os.PathLike, ...] = (),
                   needed: int | None = None) -> Iterator[None]:
    """Turn a storage ``OSError`` (disk full, read-only, quota, permission) raised inside into a
    :class:`StorageError` naming ``path``, after removing the temporary files or folders in ``cleanup``."""
    try:
        yield
    except StorageError:
        for p in cleanup:
            _remove(Path(p))
        raise
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS:
            raise
        for p in cleanup:
            _remove(Path(p))
        raise StorageError(path, e, needed) from None


def ensure_free_space(directory: str | os.PathLike, needed: int, *, margin: float = 1.1) -> None:
    """Raise :class:`StorageError` (ENOSPC) before writing ``needed`` bytes under ``directory`` if the device has
    less than ``margin * needed`` free."""
    from pixelrl.errors import _existing_parent

    try:
        free = shutil.disk_usage(_existing_parent(directory)).free
    except OSError:
        return
    if free < margin * needed:
        raise StorageError(directory, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), int(margin * needed))


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry (after a rename) to disk; a no-op where the OS does not support it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename (storage errors: see the module)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with storage_errors(path, cleanup=(tmp,), needed=len(data)):
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=1) + "\n").encode())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_HELD: dict[str, list[int]] = {}  # lock file -> [fd, holders in this process]


class RunLock:
    """An exclusive lock on a run folder (``<run>/.lock``, ``flock``) for as long as a process writes there.

    The OS releases it when the process ends, however it ends (kill -9 included), so a stale lock never blocks a
    resume. Another process trying to take it gets :class:`RunInUseError` naming the holder's pid; within one
    process the lock is shared (a trainer resumed in the process that ran it, as tests do). Locking is skipped where
    the file system does not support it."""

    NAME = ".lock"

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self._key: str | None = None
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no locking
            return
        self.path = Path(run_dir) / self.NAME
        key = str(self.path.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            self._key = key
            return
        with storage_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)  # no locking on this file system
                return
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise RunInUseError(f"{Path(run_dir)} is in use by another pixelrl process (pid {holder}); wait for it "
                                "to finish or stop it, then try again") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        _HELD[key] = [fd, 1]
        self._key = key

    def release(self) -> None:
        key, self._key = getattr(self, "_key", None), None
        if key is None or key not in _HELD:
            return
        _HELD[key][1] -= 1
        if _HELD[key][1] <= 0:
            fd = _HELD.pop(key)[0]
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()
