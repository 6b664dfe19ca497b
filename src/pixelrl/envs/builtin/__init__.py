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
    "quadrotor-waypoints": BuiltinEnv("pixelrl.envs.builtin.quadrotor:make_waypoints", "continuous",
                                      "the hover task with a target stepping through waypoints"),
    **{name: BuiltinEnv(f"pixelrl.envs.builtin.shapes:make_{name[7:].replace('-', '_')}", "discrete", summary)
       for name, summary in (  # the object-centric benchmark of Yoon et al. 2023 (pixelrl.envs.builtin.shapes)
           ("shapes-object-goal", "reach the blue square among 4 objects (object-centric benchmark)"),
           ("shapes-object-interaction", "push the blue square onto the corner goal (object-centric benchmark)"),
           ("shapes-object-comparison", "reach the odd one out, others identical (object-centric benchmark)"),
           ("shapes-property-comparison", "reach the object with a unique colour or shape (object-centric benchmark)"),
           ("shapes-object-comparison-ood-seen-color", "object comparison, OOD colour seen in pretraining only"),
           ("shapes-object-comparison-ood-unseen-color", "object comparison, OOD colour unseen in pretraining"),
           ("shapes-property-comparison-pairing-train", "property comparison, blue/yellow pairing held out"),
           ("shapes-property-comparison-pairing-test", "property comparison, only the held-out blue/yellow pairing"),
       )},
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
