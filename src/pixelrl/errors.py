"""Exceptions raised by pixelrl. Every message says what was wrong and what to do about it."""

from __future__ import annotations


class PixelRLError(Exception):
    """Base class of every error pixelrl raises on purpose."""


class ConfigError(PixelRLError, ValueError):
    """A configuration value is invalid or inconsistent."""


class UnknownEnvError(PixelRLError, ValueError):
    """An environment id that matches no known environment."""


class MissingExtraError(PixelRLError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str = "") -> None:
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"{package} is not installed{what}. Install it with: pip install 'pixelrl[{extra}]'"
        )
        self.package = package
        self.extra = extra


class CorruptFileError(PixelRLError, OSError):
    """A checkpoint, replay or dataset file is truncated, corrupt or inconsistent; nothing was loaded."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}. The file is corrupt or incomplete; nothing was loaded from it.")
        self.path = path
        self.reason = reason


class NotFoundError(PixelRLError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class StorageError(PixelRLError, OSError):
    """The disk is full or read-only (or a quota is reached) while writing run files. The temporary file of the
    write was removed; what was complete before (the last checkpoint) is intact."""

    def __init__(self, path: object, err: OSError, needed: int | None = None) -> None:
        import errno
        import shutil

        self.path, self.errno_value, self.needed = path, err.errno, needed
        try:
            free = shutil.disk_usage(_existing_parent(path)).free
        except OSError:
            free = None
        self.free = free
        if err.errno == errno.EROFS:
            what = "the file system is read-only"
            todo = "remount it read-write (or move the run folder to writable storage)"
        elif err.errno in (errno.EACCES, errno.EPERM):
            what = "permission denied"
            todo = "make the folder writable"
        else:
            what = "no space left on the device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
            need = f"at least {_size(needed)}" if needed else "more space"
            have = f" ({_size(free)} free now)" if free is not None else ""
            todo = f"free disk space: the write needs {need}{have}"
        run, has_checkpoint = _run_folder_of(path)
        if run is not None and not has_checkpoint:
            after = (f"Nothing half-written was left; {run} has no checkpoint yet, so there is nothing to resume. "
                     f"To continue: {todo}, then delete {run} and start the run again")
        else:
            where = f"`pixelrl resume {run}`" if run is not None else "`pixelrl resume <run folder>`"
            after = (f"Nothing half-written was left; the last complete checkpoint is intact. To continue: {todo}, "
                     f"then {where}")
        super().__init__(f"cannot write {path}: {what}. {after}")


def _run_folder_of(path: object):
    """``(run folder, whether it has a finished checkpoint)`` for a path inside a run folder (one holding
    ``config.json`` or ``checkpoints/``), or ``(None, False)`` when the path is not inside one."""
    from pathlib import Path

    try:
        p = Path(str(path)).resolve()
    except (OSError, RuntimeError):
        return None, False
    for d in (p, *p.parents):
        if (d / "config.json").is_file() or (d / "checkpoints").is_dir():
            return d, (d / "checkpoints" / "latest.json").is_file()
    return None, False


def _existing_parent(path: object):
    from pathlib import Path

    p = Path(str(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class DivergenceError(PixelRLError, FloatingPointError):
    """Training produced a non-finite loss, parameter or action; the run stopped before it could save it."""


class EnvStepError(PixelRLError, RuntimeError):
    """The environment raised while stepping (the message names the env, the step and the action)."""


class RunInUseError(PixelRLError, RuntimeError):
    """Another live process holds the run folder's lock."""


class Interrupted(PixelRLError):
    """The user stopped the run (Ctrl-C); the message says where the last checkpoint is."""


class DivergenceWarning(UserWarning):
    """A loss grew by orders of magnitude while still finite: the training is likely diverging."""
