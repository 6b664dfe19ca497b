"""Environments: ``make(env_id, ...)`` for ``dmc/``, ``gym/`` and ``ale/`` ids, wrappers, vector envs.

Importing this package needs none of the optional simulators; they are imported when an env is made.
On Linux ``MUJOCO_GL`` defaults to ``egl`` if unset (see :mod:`pixelrl.envs._gl` and ``docs/envs.md``).
"""

from pixelrl.envs._gl import ensure_mujoco_gl as _ensure_mujoco_gl
from pixelrl.envs.factory import action_kind, list_envs, make, make_vector
from pixelrl.envs.snapshot import SnapshotBank, SnapshotResetWrapper, collect_snapshots  # noqa: F401
from pixelrl.envs.wrappers import (
    ActionRepeat,
    ActionScale,
    ChannelFirst,
    EnvInfo,
    FrameStack,
    PixelObservation,
    StateFloat32,
)

_ensure_mujoco_gl()

__all__ = [
    "action_kind",
    "ActionRepeat",
    "ActionScale",
    "ChannelFirst",
    "EnvInfo",
    "FrameStack",
    "PixelObservation",
    "SnapshotBank",
    "SnapshotResetWrapper",
    "StateFloat32",
    "collect_snapshots",
    "list_envs",
    "make",
    "make_vector",
]
