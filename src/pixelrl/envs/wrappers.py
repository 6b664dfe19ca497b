"""Small Gymnasium wrappers used by :func:`pixelrl.envs.make`.

Each wrapper does one thing and is tested alone (``tests/envs/test_wrappers.py``). Composition order used by
``make`` for continuous-control envs (innermost first)::

    base env (state obs, render() gives HxWx3 uint8)
    -> ActionScale        actions in [-1, 1]
    -> ActionRepeat       k simulator frames per step, rewards summed, info["frames"]
    -> PixelObservation   render once per agent step, channels-first (optionally with the state)
    -> FrameStack         k last frames concatenated on the channel axis, oldest first
    -> EnvInfo            env_id / action_repeat / frame_stack attributes, seed of the first reset
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pixelrl.errors import ConfigError

__all__ = [
    "ActionRepeat",
    "ActionScale",
    "ChannelFirst",
    "EnvInfo",
    "FrameStack",
    "PixelObservation",
    "StateFloat32",
]


class ActionScale(gym.ActionWrapper):
    """Expose a Box action space as ``[low, high]`` (default [-1, 1]) and map linearly to the env's bounds.

    Incoming actions are clipped to ``[low, high]`` first, so a slightly out-of-range action (e.g. from
    float error) cannot drive the simulator past its limits.
    """

    def __init__(self, env: gym.Env, low: float = -1.0, high: float = 1.0) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, spaces.Box):
            raise ConfigError(f"ActionScale needs a Box action space, got {space}")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ConfigError(f"ActionScale needs finite action bounds, got {space}")
        self._low, self._high = float(low), float(high)
        self._env_low = space.low.astype(np.float64)
        self._env_high = space.high.astype(np.float64)
        self._env_dtype = space.dtype
        self.action_space = spaces.Box(low, high, shape=space.shape, dtype=np.float32)

    def action(self, action: Any) -> np.ndarray:
        a = np.clip(np.asarray(action, dtype=np.float64), self._low, self._high)
        frac = (a - self._low) / (self._high - self._low)
        return (self._env_low + frac * (self._env_high - self._env_low)).astype(self._env_dtype)


class ActionRepeat(gym.Wrapper):
    """Repeat each action ``repeat`` times, summing rewards; stop early when the episode ends.

    ``info["frames"]`` is the number of simulator frames actually executed (``< repeat`` only when the
    episode ended inside the repeat). The info of the last inner step is returned.
    """

    def __init__(self, env: gym.Env, repeat: int) -> None:
        super().__init__(env)
        if int(repeat) < 1:
            raise ConfigError(f"action_repeat must be >= 1, got {repeat}")
        self.action_repeat = int(repeat)

    def step(self, action: Any):
        total = 0.0
        frames = 0
        obs, terminated, truncated, info = None, False, False, {}
        for _ in range(self.action_repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            frames += 1
            if terminated or truncated:
                break
        info = dict(info)
        info["frames"] = frames
        return obs, total, terminated, truncated, info


def _to_chw(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """HxW or HxWxC uint8 -> CxHxW uint8, resized to ``size`` (h, w) if given and different."""
    frame = np.asarray(frame)
    if size is not None and frame.shape[:2] != tuple(size):
        frame = _resize(frame, size)
    if frame.ndim == 2:
        return frame[None].copy()
    return np.ascontiguousarray(frame.transpose(2, 0, 1))


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    try:
        import cv2

        return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    except ImportError:  # nearest neighbour fallback, no extra dependency
        ys = (np.arange(h) * frame.shape[0] / h).astype(int)
        xs = (np.arange(w) * frame.shape[1] / w).astype(int)
        return frame[ys][:, xs]


class PixelObservation(gym.ObservationWrapper):
    """Replace the observation by ``env.render()`` as channels-first uint8 (rendered once per step).

    ``mode="pixels"`` gives ``uint8[C, H, W]``; ``mode="pixels+state"`` gives
    ``{"pixels": uint8[C, H, W], "state": <wrapped observation>}``. The wrapped env must have
    ``render_mode="rgb_array"``. ``size`` (h, w) resizes the rendered frame if it differs.
    """

    def __init__(self, env: gym.Env, mode: str = "pixels", size: tuple[int, int] | None = None) -> None:
        super().__init__(env)
        if mode not in ("pixels", "pixels+state"):
            raise ConfigError(f"PixelObservation mode must be 'pixels' or 'pixels+state', got {mode!r}")
        self._mode = mode
        self._size = tuple(size) if size is not None else None
        if self._size is not None:
            h, w = self._size
            c = getattr(env.unwrapped, "render_channels", 3)
        else:  # learn the shape from one render
            env.reset()
            shape = _to_chw(env.render(), None).shape
            c, h, w = shape
        pixels = spaces.Box(0, 255, shape=(c, h, w), dtype=np.uint8)
        if mode == "pixels":
            self.observation_space = pixels
        else:
            self.observation_space = spaces.Dict({"pixels": pixels, "state": env.observation_space})

    def observation(self, observation: Any):
        pixels = _to_chw(self.env.render(), self._size)
        if self._mode == "pixels":
            return pixels
        return {"pixels": pixels, "state": observation}


class ChannelFirst(gym.ObservationWrapper):
    """HxW (grayscale) or HxWxC uint8 observations -> CxHxW (C = 1 for grayscale)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) not in (2, 3):
            raise ConfigError(f"ChannelFirst needs an image Box observation space, got {space}")
        shape = (1, *space.shape) if len(space.shape) == 2 else (space.shape[2], space.shape[0], space.shape[1])
        self.observation_space = spaces.Box(0, 255, shape=shape, dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return _to_chw(observation, None)


class FrameStack(gym.Wrapper):
    """Concatenate the last ``k`` channels-first frames on the channel axis (oldest first).

    At reset the stack is filled with copies of the first frame. For a ``Dict`` observation only the
    ``"pixels"`` key is stacked; other keys are the current step's values. ``k == 1`` is a no-op copy.
    """

    def __init__(self, env: gym.Env, k: int, key: str = "pixels") -> None:
        super().__init__(env)
        if int(k) < 1:
            raise ConfigError(f"frame_stack must be >= 1, got {k}")
        self.frame_stack = int(k)
        self._key = key
        self._frames: deque[np.ndarray] = deque(maxlen=self.frame_stack)
        space = env.observation_space
        self._is_dict = isinstance(space, spaces.Dict)
        pix = space[key] if self._is_dict else space
        if not isinstance(pix, spaces.Box) or len(pix.shape) != 3:
            raise ConfigError(f"FrameStack needs channels-first image observations, got {pix}")
        c, h, w = pix.shape
        low = np.concatenate([pix.low] * self.frame_stack, axis=0)
        high = np.concatenate([pix.high] * self.frame_stack, axis=0)
        stacked = spaces.Box(low, high, shape=(c * self.frame_stack, h, w), dtype=pix.dtype)
        if self._is_dict:
            self.observation_space = spaces.Dict({**space.spaces, key: stacked})
        else:
            self.observation_space = stacked

    def _pixels(self, obs: Any) -> np.ndarray:
        return obs[self._key] if self._is_dict else obs

    def _stacked(self, obs: Any) -> Any:
        pixels = np.concatenate(list(self._frames), axis=0)
        if self._is_dict:
            return {**obs, self._key: pixels}
        return pixels

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        frame = self._pixels(obs)
        self._frames.clear()
        for _ in range(self.frame_stack):
            self._frames.append(frame)
        return self._stacked(obs), info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._frames.append(self._pixels(obs))
        return self._stacked(obs), reward, terminated, truncated, info


class StateFloat32(gym.ObservationWrapper):
    """Cast a float Box observation (e.g. Gymnasium MuJoCo's float64 vectors) to float32."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Box):
            raise ConfigError(f"StateFloat32 needs a Box observation space, got {space}")
        self.observation_space = spaces.Box(
            space.low.astype(np.float32), space.high.astype(np.float32), shape=space.shape, dtype=np.float32
        )

    def observation(self, observation: Any) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32)


class EnvInfo(gym.Wrapper):
    """Outermost wrapper of every env from ``make``: names it, and seeds its first reset.

    Attributes (read with ``env.get_wrapper_attr(name)``): ``env_id`` (canonical id), ``action_repeat``
    (simulator frames per ``step``), ``frame_stack``. The first ``reset()`` without an explicit seed uses
    ``seed``; later resets without a seed continue the env's random stream. ``info["frames"]`` is always
    present in step infos (``action_repeat`` if no inner wrapper set it).
    """

    def __init__(
        self, env: gym.Env, *, env_id: str, action_repeat: int, frame_stack: int, seed: int | None
    ) -> None:
        super().__init__(env)
        self.env_id = env_id
        self.action_repeat = int(action_repeat)
        self.frame_stack = int(frame_stack)
        self._first_seed = seed
        if seed is not None:
            self.action_space.seed(seed)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None:
            seed = self._first_seed
        self._first_seed = None
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "frames" not in info:
            info = dict(info)
            info["frames"] = self.action_repeat
        return obs, float(reward), bool(terminated), bool(truncated), info
