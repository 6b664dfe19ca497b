"""``builtin/<name>``: pixelrl's own simulators (no external simulator needed).

Each entry of :data:`BUILTIN_ENVS` names the module and function that build it, imported only when the env is made,
and the kind of its action space (read without building it). A maker is called as ``maker(seed=..., size=...,
obs=..., action_repeat=..., frame_stack=..., **options)`` and returns a ``gymnasium.Env`` that follows the family
conventions of :func:`pixelrl.envs.make` (``get_wrapper_attr`` gives ``env_id``, ``action_repeat``, ``frame_stack``;
step infos carry ``"frames"``).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple


class BuiltinEnv(NamedTuple):
    """A registered built-in env: ``"module:function"`` of its maker, its action kind and a one-line summary."""

    maker: str
    action_kind: str
    summary: str = ""


BUILTIN_ENVS: dict[str, BuiltinEnv] = {
    # "name": BuiltinEnv("pixelrl.envs.builtin.<module>:<maker>", "continuous" | "discrete", "summary"),
    "quadrotor-hover": BuiltinEnv("pixelrl.envs.builtin.quadrotor:make_hover", "continuous",
                                  "Crazyflie 2.1 hover from random starts (Learning to Fly in Seconds)"),
}
"""name (the part after ``builtin/``) -> :class:`BuiltinEnv`: pixelrl's own envs are listed here (their modules are
imported only when one is made); other code may add envs with :func:`register`."""


def register(name: str, maker: str, action_kind: str, summary: str = "") -> None:
    """Add ``builtin/<name>``; ``maker`` is ``"pixelrl.envs.builtin.<module>:<function>"``."""
    if action_kind not in ("continuous", "discrete"):
        raise ValueError(f"action_kind must be 'continuous' or 'discrete', got {action_kind!r}")
    BUILTIN_ENVS[name] = BuiltinEnv(maker, action_kind, summary)


def maker(name: str) -> Callable[..., Any]:
    module, func = BUILTIN_ENVS[name].maker.split(":")
    return getattr(importlib.import_module(module), func)


__all__ = ["BUILTIN_ENVS", "BuiltinEnv", "maker", "register"]
