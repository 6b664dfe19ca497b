"""Fault injection for tests and the fault benchmark (``benchmarks/fault_matrix.py``): file objects that fail the
way a full disk does. Nothing in the library uses this module."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

__all__ = ["HalfWriter"]


class HalfWriter:
    """Wraps an open file: while ``armed()`` is true, ``write(data)`` writes the first half of ``data``, flushes it
    and raises ``OSError(ENOSPC)`` -- a disk filling up in the middle of a write. Otherwise it delegates."""

    def __init__(self, f: Any, armed: Callable[[], bool] = lambda: True) -> None:
        self.f = f
        self.armed = armed

    def write(self, data):
        if not self.armed():
            return self.f.write(data)
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def __enter__(self) -> "HalfWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.f.close()
