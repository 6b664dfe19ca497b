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


def test_two_off_policy_learners_make_the_one_process_update_on_both_batches():
    """DrQ-v2 on states, exploration and target noise 0 (so no random draw matters): two learners, each updating on its
    own replay batch with gradients averaged before every optimizer step, end where one process updating on the two
    batches together does; the helper holds learner 0's state."""
    from pixelrl.data.batch import Batch
    from pixelrl.distributed.ddp import OffPolicyLearnerGroup
    from pixelrl.train.setup import build_config

    cfg = build_config("gym/Pendulum-v1", "drqv2", preset="none", obs="state", run_dir="unused",
                       agent={"batch_size": 8, "hidden_dim": 32, "feature_dim": 16, "stddev_schedule": "0.0",
                              "lr": 1e-2}).agent
    obs_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    torch.manual_seed(0)
    agent = make_agent("drqv2", obs_space, action_space, cfg, "cpu")
    single = copy.deepcopy(agent)
    gen = torch.Generator().manual_seed(3)

    def batch(n):
        return Batch(obs=torch.randn(n, 3, generator=gen), action=torch.rand(n, 1, generator=gen) * 2 - 1,
                     reward=torch.randn(n, 1, generator=gen), discount=torch.full((n, 1), 0.99),
                     next_obs=torch.randn(n, 3, generator=gen))

    b0, b1 = batch(8), batch(8)
    both = Batch(**{k: torch.cat([getattr(b0, k), getattr(b1, k)]) for k in ("obs", "action", "reward", "discount",
                                                                             "next_obs")})
    group = OffPolicyLearnerGroup(2, agent, "drqv2", obs_space, action_space, cfg)
    try:
        for step in (1000, 1001):  # two updates: the second also checks the optimizers' moments agree
            group.update([b0, b1], step=step)
            single.update(both, step=step)
        helper = group.helper_parameters(1)
    finally:
        group.close()
    flat_mine, flat_ref, flat_helper = _flat(agent.state_dict()), _flat(single.state_dict()), _flat(helper)
    floats = [k for k, v in flat_ref.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    assert len(floats) > 10 and any("actor" in k for k in floats) and any("critic" in k for k in floats)
    for k in floats:  # networks, target networks and Adam moments
        torch.testing.assert_close(flat_mine[k], flat_ref[k], rtol=1e-5, atol=1e-6, msg=k)
        torch.testing.assert_close(flat_helper[k], flat_mine[k], rtol=0, atol=0, msg=k)


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
