"""Meta-World v3 tasks as Gymnasium envs (``metaworld/<task>-v3``), seen the way DrM and MENTOR see them.

:class:`MetaWorldEnv` is the base env: one ``step`` is one Meta-World step (one *env frame*: 5 physics steps), the
observation is Meta-World's 39-d state (goal observable) as ``float32``, and ``render()`` gives the ``size`` x ``size``
RGB view of the ``corner2`` camera moved to ``(0.75, 0.075, 0.7)`` -- the camera of the DrM and MENTOR Meta-World
wrappers (``metaworld_env.py`` in both repositories: 84x84 pixels, action repeat 2, 3 stacked frames, 250 agent steps
= Meta-World's 500-step episode, a new random object and goal position at every reset). Pixels, action repeat and frame
stacking are the wrappers :func:`pixelrl.envs.make` adds, as for every other family.

Success: every step's info carries Meta-World's ``success`` (this frame) and ``is_success`` -- whether the episode has
succeeded at any frame so far. The trainers' evaluation reads ``is_success`` at the last step, so an eval row's
``success_rate`` is the fraction of episodes that succeeded at some step: the episode success of DrM's and MENTOR's
``eval()`` (``episode_sr = episode_sr or time_step.success``). Episodes never end on success (Meta-World's own rule).

Frames are flipped vertically after rendering, as the authors' frames were: they rendered with mujoco-py, whose
offscreen images come out bottom row first, and Meta-World's corner cameras are defined upside down for it (their up
axis points down), so the flip is what makes the table stand upright in the picture, as in the DrM and MENTOR frames.

Deviations from the authors' wrappers, each for a reason:

* Meta-World v3 (``pip install --no-deps metaworld``: the v3 tasks, Gymnasium 1.x and the MuJoCo bindings) instead
  of the authors' bundled fork of v2 on mujoco-py, which no longer installs; v3 keeps the v2 tasks and reward
  functions (``reward_function_version="v2"``).
* ``reset(seed=s)`` seeds the object and goal positions from ``s`` (the authors drew them from NumPy's global
  generator, so their runs were not reproducible).
"""

from __future__ import annotations

import weakref
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pixelrl.envs._gl import ensure_mujoco_gl, first_render
from pixelrl.errors import ConfigError, MissingExtraError

#: Camera of DrM's and MENTOR's Meta-World pixels, and where they move it (``model.cam_pos[corner2]``) at reset.
CAMERA = "corner2"
CAMERA_POS = (0.75, 0.075, 0.7)

#: Meta-World v3's 50 task names (``metaworld.env_dict.ALL_V3_ENVIRONMENTS``): ids and suggestions without the package.
STATIC_TASKS = (
    "assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3", "button-press-topdown-v3",
    "button-press-topdown-wall-v3", "button-press-v3", "button-press-wall-v3", "coffee-button-v3", "coffee-pull-v3",
    "coffee-push-v3", "dial-turn-v3", "disassemble-v3", "door-close-v3", "door-lock-v3", "door-open-v3",
    "door-unlock-v3", "hand-insert-v3", "drawer-close-v3", "drawer-open-v3", "faucet-open-v3", "faucet-close-v3",
    "hammer-v3", "handle-press-side-v3", "handle-press-v3", "handle-pull-side-v3", "handle-pull-v3", "lever-pull-v3",
    "pick-place-wall-v3", "pick-out-of-hole-v3", "pick-place-v3", "plate-slide-v3", "plate-slide-side-v3",
    "plate-slide-back-v3", "plate-slide-back-side-v3", "peg-insert-side-v3", "peg-unplug-side-v3", "soccer-v3",
    "stick-push-v3", "stick-pull-v3", "push-v3", "push-wall-v3", "push-back-v3", "reach-v3", "reach-wall-v3",
    "shelf-place-v3", "sweep-into-v3", "sweep-v3", "window-open-v3", "window-close-v3",
)

INSTALL = "pip install 'pixelrl[metaworld]' && pip install --no-deps metaworld==3.1.1"
"""How Meta-World is installed: --no-deps, because it pins an older MuJoCo than pixelrl's (scripts/setup.sh does both
when PIXELRL_EXTRAS names metaworld)."""


def _import_metaworld():
    ensure_mujoco_gl()
    try:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
    except ImportError as e:
        err = MissingExtraError("metaworld", "metaworld", "metaworld/ environments")
        err.msg = (f"metaworld is not installed (needed for metaworld/ environments). Install it with: {INSTALL} "
                   "(--no-deps: Meta-World pins an older MuJoCo than pixelrl's)")  # ImportError's message
        err.args = (err.msg,)
        raise err from e
    return ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE


def all_tasks() -> tuple[str, ...]:
    """Task names (``assembly-v3``, ...): the installed Meta-World's, else the static list."""
    try:
        import metaworld  # noqa: F401
    except ImportError:
        return STATIC_TASKS
    try:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    except Exception:  # a broken install must not break id suggestions
        return STATIC_TASKS
    return tuple(ALL_V3_ENVIRONMENTS)


def resolve(name: str, tasks: tuple[str, ...]) -> str | None:
    """The part after ``metaworld/`` -> a task name, or None. ``assembly-v3``, ``assembly`` (as DrM's and MENTOR's
    task files name them) and ``assembly_v3`` all give ``assembly-v3``."""
    key = name.strip().lower().replace("_", "-")
    if not key.endswith("-v3"):
        key += "-v3"
    return key if key in tasks else None


class MetaWorldEnv(gym.Env):
    """One Meta-World v3 task, goal observable; one ``step`` = one Meta-World step (one env frame).

    Observation: Meta-World's 39-d state, ``float32``. Action: ``float32[4]`` in [-1, 1] (xyz of the hand, gripper).
    ``truncated`` after ``max_path_length`` (500) steps; never ``terminated``. Info: ``success`` (this step) and
    ``is_success`` (any step of this episode so far), plus Meta-World's reward terms.

    Args:
        task: a task name of :func:`all_tasks` (``assembly-v3``).
        size: height and width of rendered frames.
        camera: camera id for ``render()``; None = ``corner2`` at DrM's and MENTOR's position.
        fast_render: no shadows, no reflections, no multisample anti-aliasing (visual change, faster).
        seed: seed of the first ``reset()`` (object and goal positions).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}
    render_channels = 3

    def __init__(self, task: str, *, size: int = 84, camera: int | None = None, fast_render: bool = False,
                 seed: int | None = None, render_mode: str = "rgb_array") -> None:
        envs = _import_metaworld()
        import mujoco

        from pixelrl.envs.dmc import apply_fast_render

        self.task = task
        self.render_mode = render_mode
        self._env = envs[f"{task}-goal-observable"](seed=seed)
        self._env._freeze_rand_vec = False  # a new object / goal position every reset, as in the authors' wrapper
        self._env.seeded_rand_vec = True  # ... drawn from the env's seeded generator (see reset)
        model = self._env.model
        self._corner = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA)
        self.camera = self._corner if camera is None else int(camera)
        if not 0 <= self.camera < model.ncam:
            raise ConfigError(f"camera {camera} does not exist in metaworld/{task} (it has {model.ncam} cameras: "
                              f"0..{model.ncam - 1}; default {self._corner} = {CAMERA})")
        if camera is None:
            model.cam_pos[self._corner][:] = CAMERA_POS
        if fast_render:
            apply_fast_render(model)
        self.size = int(size)
        vis = model.vis.global_
        vis.offwidth = max(int(vis.offwidth), self.size)
        vis.offheight = max(int(vis.offheight), self.size)
        self._renderer = None
        self._rendered = False
        self.max_path_length = int(self._env.max_path_length)
        self.action_space = spaces.Box(-1.0, 1.0, shape=self._env.action_space.shape, dtype=np.float32)
        obs_space = self._env.observation_space
        self.observation_space = spaces.Box(obs_space.low.astype(np.float32), obs_space.high.astype(np.float32),
                                            dtype=np.float32)
        self._succeeded = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.seed(int(seed))  # the generator of the object / goal positions
        obs, _ = self._env.reset()
        self._succeeded = False
        return obs.astype(np.float32), {"success": 0.0, "is_success": False}

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self._env.step(np.asarray(action, dtype=np.float32))
        info = dict(info)
        success = bool(info.get("success", 0.0))
        self._succeeded = self._succeeded or success
        info["success"] = float(success)
        info["is_success"] = self._succeeded
        truncated = bool(truncated) or self._env.curr_path_length >= self.max_path_length
        return obs.astype(np.float32), float(reward), bool(terminated), truncated, info

    def render(self) -> np.ndarray:
        import mujoco

        with first_render(self, f"metaworld/{self.task}"):
            if self._renderer is None:
                self._renderer = mujoco.Renderer(self._env.model, height=self.size, width=self.size)
                # freed at close() or, for an env never closed, at exit while EGL can still free it
                self._free = weakref.finalize(self, self._renderer.close)
            self._renderer.update_scene(self._env.data, camera=self.camera)
            return self._renderer.render()[::-1].copy()  # mujoco-py's row order, as the authors' frames (above)

    def close(self) -> None:
        if self._renderer is not None:
            self._free()
            self._renderer = None
        try:
            self._env.close()
        except Exception:
            pass
        super().close()
