"""dm_control suite tasks as Gymnasium envs (``dmc/<domain>-<task>``).

:class:`DMCEnv` is the base env: one ``step`` is one control step of the suite (one *env frame*), the
observation is the flattened proprioceptive state, and ``render()`` gives the ``size``x``size`` RGB view
of the configured camera. Pixels, action scaling, action repeat and frame stacking are wrappers added by
:func:`pixelrl.envs.make`, so pixels are rendered once per agent step, not once per frame.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pixelrl.envs._gl import ensure_mujoco_gl, first_render
from pixelrl.errors import ConfigError, MissingExtraError

#: Camera used for pixels per domain (DrQ-v2 convention: quadruped looks through camera 2, others camera 0).
DEFAULT_CAMERA = {"quadruped": 2}

#: Short domain names accepted in ids.
DOMAIN_ALIASES = {"cup": "ball_in_cup"}

#: dm_control 1.0.49 ``suite.ALL_TASKS``; used for id suggestions when dm_control is not installed.
STATIC_TASKS: tuple[tuple[str, str], ...] = (
    ("acrobot", "swingup"), ("acrobot", "swingup_sparse"), ("ball_in_cup", "catch"),
    ("cartpole", "balance"), ("cartpole", "balance_sparse"), ("cartpole", "swingup"),
    ("cartpole", "swingup_sparse"), ("cartpole", "two_poles"), ("cartpole", "three_poles"),
    ("cheetah", "run"), ("dog", "stand"), ("dog", "walk"), ("dog", "trot"), ("dog", "run"), ("dog", "fetch"),
    ("finger", "spin"), ("finger", "turn_easy"), ("finger", "turn_hard"), ("fish", "upright"),
    ("fish", "swim"), ("hopper", "stand"), ("hopper", "hop"), ("humanoid", "stand"), ("humanoid", "walk"),
    ("humanoid", "run"), ("humanoid", "run_pure_state"), ("humanoid_CMU", "stand"), ("humanoid_CMU", "walk"),
    ("humanoid_CMU", "run"), ("lqr", "lqr_2_1"), ("lqr", "lqr_6_2"), ("manipulator", "bring_ball"),
    ("manipulator", "bring_peg"), ("manipulator", "insert_ball"), ("manipulator", "insert_peg"),
    ("pendulum", "swingup"), ("point_mass", "easy"), ("point_mass", "hard"), ("quadruped", "walk"),
    ("quadruped", "run"), ("quadruped", "escape"), ("quadruped", "fetch"), ("reacher", "easy"),
    ("reacher", "hard"), ("stacker", "stack_2"), ("stacker", "stack_4"), ("swimmer", "swimmer6"),
    ("swimmer", "swimmer15"), ("walker", "stand"), ("walker", "walk"), ("walker", "run"),
)


def _import_suite():
    ensure_mujoco_gl()
    try:
        from dm_control import suite
    except ImportError as e:
        raise MissingExtraError("dm_control", "dmc", "dmc/ environments") from e
    return suite


def all_tasks() -> tuple[tuple[str, str], ...]:
    """(domain, task) pairs: dm_control's ``suite.ALL_TASKS`` if installed, else the static list."""
    try:
        import dm_control  # noqa: F401  (cheap check before the heavier suite import)
    except ImportError:
        return STATIC_TASKS
    try:
        return tuple(_import_suite().ALL_TASKS)
    except Exception:  # a broken GL/mujoco install must not break id suggestions
        return STATIC_TASKS


def canonical_id(domain: str, task: str) -> str:
    return f"dmc/{domain}-{task}"


def resolve(name: str, tasks: tuple[tuple[str, str], ...]) -> tuple[str, str] | None:
    """Map the part after ``dmc/`` to (domain, task), or None.

    Accepts ``cartpole-swingup``, ``cartpole_swingup`` (DrQ-v2 style), ``cartpole-balance-sparse``,
    ``ball_in_cup-catch`` and the alias ``cup-catch``. Joining domain and task with ``_`` is unambiguous over
    the suite (checked in tests), so every separator is normalised to ``_`` and looked up.
    """
    key = name.replace("-", "_")
    for alias, domain in DOMAIN_ALIASES.items():
        if key.startswith(alias + "_"):
            key = domain + key[len(alias):]
            break
    table = {f"{d}_{t}": (d, t) for d, t in tasks}
    if key in table:
        return table[key]
    lowered = {k.lower(): v for k, v in table.items()}  # humanoid_CMU
    return lowered.get(key.lower())


def _flatten_state(observation: dict[str, Any]) -> np.ndarray:
    parts = [np.asarray(v, dtype=np.float32).reshape(-1) for v in observation.values()]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


class DMCEnv(gym.Env):
    """One dm_control suite task; one ``step`` = one control step (one env frame).

    Observation: flattened proprio state, ``float32[d]`` (keys in the suite's order). Action: the suite's
    bounded action spec as a float32 Box (wrap with :class:`~pixelrl.envs.wrappers.ActionScale` for [-1, 1]).
    ``terminated`` is True when the task ends with discount 0; ``truncated`` when the time limit is hit.
    ``reset(seed=s)`` replaces the task's ``np.random.RandomState`` by ``RandomState(s)`` -- the same
    initial states as DrQ-v2's ``task_kwargs={"random": s}``.

    Args:
        domain, task: suite names.
        size: height and width of rendered frames.
        camera: camera id for ``render()``; None = domain default (:data:`DEFAULT_CAMERA`, else 0).
        fast_render: no shadows, no reflections, no multisample anti-aliasing (visual change, faster).
        seed: initial random state of the task (used until a ``reset(seed=...)``).
        time_limit: episode length in seconds (suite default when None; 1000 frames for most tasks).
        environment_kwargs: passed to the suite's ``control.Environment`` (e.g. ``flat_observation``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    render_channels = 3

    def __init__(
        self,
        domain: str,
        task: str,
        *,
        size: int = 84,
        camera: int | None = None,
        fast_render: bool = False,
        seed: int | None = None,
        time_limit: float | None = None,
        environment_kwargs: dict | None = None,
        render_mode: str = "rgb_array",
    ) -> None:
        suite = _import_suite()
        self.domain, self.task = domain, task
        self.render_mode = render_mode
        task_kwargs: dict[str, Any] = {"random": seed}
        if time_limit is not None:
            task_kwargs["time_limit"] = float(time_limit)
        self._env = suite.load(domain, task, task_kwargs=task_kwargs, environment_kwargs=environment_kwargs)
        self.physics = self._env.physics
        self.size = int(size)
        self.camera = DEFAULT_CAMERA.get(domain, 0) if camera is None else int(camera)
        if self.camera >= self.physics.model.ncam:
            raise ConfigError(
                f"camera {self.camera} does not exist in dmc/{domain}-{task} "
                f"(it has {self.physics.model.ncam} cameras: 0..{self.physics.model.ncam - 1})"
            )
        if fast_render:
            apply_fast_render(self.physics.model)
        # A frame rendered larger than the model's offscreen buffer fails; grow it if needed.
        vis = self.physics.model.vis.global_
        vis.offwidth = max(int(vis.offwidth), self.size)
        vis.offheight = max(int(vis.offheight), self.size)

        spec = self._env.action_spec()
        self.action_space = spaces.Box(
            np.asarray(spec.minimum, np.float32) * np.ones(spec.shape, np.float32),
            np.asarray(spec.maximum, np.float32) * np.ones(spec.shape, np.float32),
            shape=spec.shape,
            dtype=np.float32,
        )
        dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)
        self._rendered = False

    @property
    def dm_env(self):
        """The wrapped ``dm_control.rl.control.Environment``."""
        return self._env

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.task._random = np.random.RandomState(seed)
        ts = self._env.reset()
        return _flatten_state(ts.observation), {}

    def step(self, action: Any):
        ts = self._env.step(np.asarray(action, dtype=np.float64))
        reward = 0.0 if ts.reward is None else float(ts.reward)
        terminated = truncated = False
        if ts.last():
            if ts.discount is not None and float(ts.discount) == 0.0:
                terminated = True
            else:
                truncated = True
        info = {"discount": 1.0 if ts.discount is None else float(ts.discount)}
        return _flatten_state(ts.observation), reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        with first_render(self, f"dmc/{self.domain}-{self.task}"):
            return self.physics.render(height=self.size, width=self.size, camera_id=self.camera)

    def close(self) -> None:
        try:
            self._env.close()
        except Exception:
            pass
        super().close()


def apply_fast_render(model: Any) -> None:
    """Turn off shadows, reflections and multisample anti-aliasing on a MuJoCo model (visual only).

    Must run before the first render (the offscreen buffer's sample count is fixed when the GL context
    is made). Physics is unaffected: only light/material/visual fields change.
    """
    model.vis.quality.offsamples = 0
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0.0
