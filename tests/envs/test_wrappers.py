"""Wrappers alone, on a tiny simulator-free env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from pixelrl.envs.wrappers import (
    ActionRepeat,
    ActionScale,
    ChannelFirst,
    EnvInfo,
    FrameStack,
    PixelObservation,
    StateFloat32,
)
from pixelrl.errors import ConfigError


class CountEnv(gym.Env):
    """Counter env: state = step count t; reward t+1 per step; image filled with t; terminates at `length`."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, length: int = 10, low=(-2.0, 0.0), high=(2.0, 10.0), truncate: bool = False):
        self.length = length
        self.truncate = truncate
        self.action_space = spaces.Box(np.array(low, np.float32), np.array(high, np.float32), dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.render_mode = "rgb_array"
        self.t = 0
        self.actions: list[np.ndarray] = []

    def _obs(self):
        return np.array([self.t, -self.t], dtype=np.float64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.seed_seen = seed
        return self._obs(), {}

    def step(self, action):
        self.actions.append(np.asarray(action))
        self.t += 1
        done = self.t >= self.length
        return self._obs(), float(self.t), done and not self.truncate, done and self.truncate, {}

    def render(self):
        return np.full((6, 5, 3), self.t, dtype=np.uint8)


def test_action_scale_maps_unit_box_to_env_bounds():
    base = CountEnv()
    env = ActionScale(base)
    assert env.action_space.low.tolist() == [-1, -1] and env.action_space.high.tolist() == [1, 1]
    assert env.action_space.dtype == np.float32
    env.reset()
    for a, want in [([-1, -1], [-2, 0]), ([1, 1], [2, 10]), ([0, 0], [0, 5]), ([0.5, -0.5], [1, 2.5])]:
        env.step(np.array(a, np.float32))
        np.testing.assert_allclose(base.actions[-1], want, atol=1e-6)
    env.step(np.array([3.0, -7.0]))  # out of range is clipped
    np.testing.assert_allclose(base.actions[-1], [2, 0])


def test_action_scale_rejects_discrete():
    class D(CountEnv):
        def __init__(self):
            super().__init__()
            self.action_space = spaces.Discrete(3)

    with pytest.raises(ConfigError):
        ActionScale(D())


def test_action_repeat_sums_rewards_and_counts_frames():
    env = ActionRepeat(CountEnv(length=100), 3)
    env.reset()
    _, r, term, trunc, info = env.step(np.zeros(2, np.float32))
    assert r == 1 + 2 + 3 and info["frames"] == 3 and not term and not trunc
    _, r, *_ = env.step(np.zeros(2, np.float32))
    assert r == 4 + 5 + 6
    assert env.get_wrapper_attr("action_repeat") == 3


@pytest.mark.parametrize("truncate", [False, True])
def test_action_repeat_stops_at_episode_end(truncate):
    base = CountEnv(length=5, truncate=truncate)
    env = ActionRepeat(base, 4)
    env.reset()
    env.step(np.zeros(2, np.float32))  # t = 4
    _, r, term, trunc, info = env.step(np.zeros(2, np.float32))
    assert base.t == 5, "must not step past the end of the episode"
    assert r == 5 and info["frames"] == 1
    assert (term, trunc) == ((False, True) if truncate else (True, False))


def test_action_repeat_rejects_zero():
    with pytest.raises(ConfigError):
        ActionRepeat(CountEnv(), 0)


def test_pixel_observation_channels_first_and_dict():
    env = PixelObservation(CountEnv(), size=(6, 5))
    assert env.observation_space.shape == (3, 6, 5) and env.observation_space.dtype == np.uint8
    obs, _ = env.reset()
    assert obs.shape == (3, 6, 5) and obs.dtype == np.uint8 and obs.flags.c_contiguous
    obs, *_ = env.step(np.zeros(2, np.float32))
    assert (obs == 1).all()

    env = PixelObservation(CountEnv(), mode="pixels+state", size=(4, 4))  # resized
    obs, _ = env.reset()
    assert set(obs) == {"pixels", "state"} and obs["pixels"].shape == (3, 4, 4)
    assert env.observation_space["pixels"].shape == (3, 4, 4)
    np.testing.assert_array_equal(obs["state"], [0, 0])


def test_frame_stack_reset_fills_with_first_frame_then_rolls_oldest_first():
    env = FrameStack(PixelObservation(CountEnv(), size=(6, 5)), 3)
    assert env.observation_space.shape == (9, 6, 5)
    obs, _ = env.reset()
    assert obs.shape == (9, 6, 5) and (obs == 0).all()
    a = np.zeros(2, np.float32)
    obs, *_ = env.step(a)
    assert [int(obs[3 * i, 0, 0]) for i in range(3)] == [0, 0, 1]
    env.step(a)
    obs, *_ = env.step(a)
    assert [int(obs[3 * i, 0, 0]) for i in range(3)] == [1, 2, 3]
    obs, _ = env.reset()
    assert (obs == 0).all(), "reset must clear the old frames"


def test_frame_stack_dict_stacks_pixels_only():
    env = FrameStack(PixelObservation(CountEnv(), mode="pixels+state", size=(6, 5)), 2)
    assert env.observation_space["pixels"].shape == (6, 6, 5)
    assert env.observation_space["state"].shape == (2,)
    env.reset()
    obs, *_ = env.step(np.zeros(2, np.float32))
    assert obs["pixels"].shape == (6, 6, 5) and obs["state"].shape == (2,)
    assert [int(obs["pixels"][3 * i, 0, 0]) for i in range(2)] == [0, 1]
    np.testing.assert_array_equal(obs["state"], [1, -1])


def test_channel_first_grayscale():
    class Gray(CountEnv):
        def __init__(self):
            super().__init__()
            self.observation_space = spaces.Box(0, 255, (7, 8), np.uint8)

        def _obs(self):
            return np.full((7, 8), self.t, np.uint8)

    env = ChannelFirst(Gray())
    assert env.observation_space.shape == (1, 7, 8)
    obs, _ = env.reset()
    assert obs.shape == (1, 7, 8)


def test_state_float32():
    env = StateFloat32(CountEnv())
    obs, _ = env.reset()
    assert obs.dtype == np.float32 and env.observation_space.dtype == np.float32


def test_env_info_seeds_first_reset_only_and_reports_frames():
    base = CountEnv()
    env = EnvInfo(base, env_id="toy/count", action_repeat=2, frame_stack=1, seed=7)
    env.reset()
    assert base.seed_seen == 7
    env.reset()
    assert base.seed_seen is None
    env.reset(seed=3)
    assert base.seed_seen == 3
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert info["frames"] == 2
    assert env.get_wrapper_attr("env_id") == "toy/count"
    assert env.get_wrapper_attr("frame_stack") == 1
