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
