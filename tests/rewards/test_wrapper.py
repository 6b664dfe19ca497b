"""RewardedReplay, what the trainer's episode loop adds to under ``--reward``: when rewards are computed (every
``batch_size`` steps, at each episode's end, and when the agent asks for a batch of an empty replay), what is stored,
and the per-episode sums it logs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from pixelrl.data.replay import ReplayBuffer
from pixelrl.rewards.wrapper import RewardedReplay

SPACE = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (6, 4, 4), np.uint8),
                         "state": gym.spaces.Box(-10, 10, (2,), np.float32)})
ACT = gym.spaces.Box(-1, 1, (1,), np.float32)


class Counter:
    """Reward = the state's first entry of next_obs + 10 * that of obs + the action; records each call's size."""

    needs = frozenset({"obs", "actions", "next_obs"})

    def __init__(self, mode="replace", scale=1.0, batch_size=4):
        self.mode, self.scale, self.batch_size, self.calls = mode, scale, batch_size, []

    def __call__(self, obs, *, actions=None, next_obs=None):
        self.calls.append(len(actions))
        return (next_obs["state"][:, 0] + 10 * obs["state"][:, 0] + actions[:, 0]).astype(np.float32)


def _obs(t: int) -> dict:
    return {"pixels": np.full((6, 4, 4), t, np.uint8), "state": np.array([t, 0], np.float32)}


def _run(store, steps: int, start: int = 0, **kw):
    store.add_first(_obs(start))
    for t in range(start + 1, start + steps + 1):
        store.add(np.array([0.5], np.float32), 100.0, _obs(t), t == start + steps, False, **kw)


@pytest.mark.parametrize("mode, expected_offset", [("replace", 0.0), ("add", 100.0)])
def test_steps_are_stored_with_the_models_rewards_in_batches(mode, expected_offset):
    replay = ReplayBuffer(SPACE, ACT, 100, frame_stack=2, nstep=1, discount=0.9)
    model = Counter(mode=mode, scale=2.0)
    store = RewardedReplay(replay, model)
    store.add_first(_obs(0))
    for t in range(1, 6):
        store.add(np.array([0.5], np.float32), 100.0, _obs(t), False, False)
        assert store.pending == t % 4  # a full batch of 4 goes to the replay at once
    assert len(replay) == 4
    store.add(np.array([0.5], np.float32), 100.0, _obs(6), True, False)  # the episode's end flushes the rest
    assert store.pending == 0 and len(replay) == 6 and model.calls == [4, 2]
    a = replay.state_dict()["arrays"]
    t = np.arange(1, 7)
    np.testing.assert_allclose(a["reward"][~a["first"]], expected_offset + 2.0 * (t + 10 * (t - 1) + 0.5))
    stats = store.episode_stats()
    assert stats["reward_model_return"] == pytest.approx(float(np.sum(t + 10 * (t - 1) + 0.5)))
    assert stats["learn_return"] == pytest.approx(float(np.sum(a["reward"][~a["first"]])))
    assert store.episode_stats()["reward_model_return"] == 0.0  # reset after each call


def test_sampling_an_empty_replay_computes_the_waiting_rewards_first():
    replay = ReplayBuffer(SPACE, ACT, 100, frame_stack=2, nstep=1, discount=0.9, seed=3)
    store = RewardedReplay(replay, Counter(batch_size=64))
    store.add_first(_obs(0))
    for t in range(1, 4):
        store.add(np.array([0.5], np.float32), 0.0, _obs(t), False, False)
    assert replay.num_sampleable() == 0 and store.pending == 3
    batch = store.sample(5)
    assert store.pending == 0 and batch.reward.shape == (5, 1)


def test_keywords_reach_the_replay_and_episodes_that_end_without_a_flag_keep_their_steps():
    replay = ReplayBuffer(SPACE, ACT, 100, frame_stack=2, nstep=3, discount=0.9)
    store = RewardedReplay(replay, Counter(batch_size=64))
    store.add_first(_obs(0))
    store.add(np.array([0.5], np.float32), 0.0, _obs(1), False, False, learner_terminal=True)
    store.add(np.array([0.5], np.float32), 0.0, _obs(2), False, False)
    _run(store, 3, start=10)  # add_first of a new episode stores the cut one's waiting steps first
    a = replay.state_dict()["arrays"]
    assert len(replay) == 5 and a["terminated"][1] and not a["terminated"][2]  # learner_terminal forwarded
    assert np.array_equal(a["first"], [True, False, False, True, False, False, False])
