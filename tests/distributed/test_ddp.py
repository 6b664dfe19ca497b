"""The data-parallel PPO learner (pixelrl.distributed.ddp) on CPU with gloo, world size 2: after one update the
parameters of both learners equal those of one process updating on the whole rollout with the same minibatches (the
union of the learners' parts), to float tolerance; metrics are the global ones."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents import make_agent
from pixelrl.agents.ppo import PPOConfig
from pixelrl.data.rollout import RolloutBuffer
from pixelrl.distributed.ddp import LearnerGroup, draw_perms, global_minibatches


class _Whole:
    """The whole rollout for one process, with the minibatches the learners' shards make together."""

    def __init__(self, ro: RolloutBuffer, batches: list[list[torch.Tensor]]) -> None:
        self.ro, self.batches, self.values, self.returns = ro, batches, ro.values, ro.returns
        self._epoch = 0

    def minibatches(self, num_minibatches):
        flat = self.ro.flat()
        for idx in self.batches[self._epoch]:
            yield {k: v[idx] for k, v in flat.items()}
        self._epoch += 1


def _rollout(agent, obs_space, T, N, gen):
    ro = RolloutBuffer(T, N, tuple(obs_space.shape), agent.obs_dtype, agent.action_shape,
                       torch.int64 if agent.discrete else torch.float32)
    for _ in range(T):
        x = torch.randn(N, *obs_space.shape, generator=gen)
        action, logprob, value = agent.policy_step(x)
        ro.add(x, action, logprob, value, torch.randn(N, generator=gen).numpy(),
               (torch.rand(N, generator=gen) < 0.05).numpy(), np.zeros(N, bool))
    ro.compute_returns(agent.value(torch.randn(N, *obs_space.shape, generator=gen)), gamma=0.99, gae_lambda=0.95)
    return ro


@pytest.mark.parametrize("discrete", [True, False])
def test_two_learners_make_the_one_process_update(discrete):
    obs_space = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    action_space = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    cfg = PPOConfig(num_envs=4, rollout_steps=16, num_minibatches=2, update_epochs=3, lr=3e-3, clip_coef=0.2)
    torch.manual_seed(0)
    agent = make_agent("ppo", obs_space, action_space, cfg, "cpu")
    ro = _rollout(agent, obs_space, 16, 4, torch.Generator().manual_seed(1))
    single = copy.deepcopy(agent)
    before = copy.deepcopy(agent.net.state_dict())
    group = LearnerGroup(2, agent, "ppo", obs_space, action_space, cfg)
    try:
        torch.manual_seed(5)
        metrics = group.update(ro, step=64, progress=0.25)
        torch.manual_seed(5)  # the same permutations, drawn the same way
        perms = draw_perms(2, ro.batch_size // 2, cfg.update_epochs)
        expected = single.update(_Whole(ro, global_minibatches(perms, cfg.num_minibatches)), step=64, progress=0.25)
        helper = group.helper_parameters(1)
    finally:
        group.close()
    mine = agent.net.state_dict()
    assert all(not torch.equal(mine[k], before[k]) for k in mine)  # every weight moved
    for k, v in single.net.state_dict().items():
        torch.testing.assert_close(mine[k], v, rtol=1e-5, atol=1e-6, msg=f"learner 0: {k}")
        torch.testing.assert_close(helper[k], mine[k], rtol=0, atol=0, msg=f"learner 1: {k}")
    for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance"):
        assert metrics[k] == pytest.approx(expected[k], rel=1e-4, abs=1e-6), k
    assert metrics["epochs"] == expected["epochs"] == 3
