"""DrQ (Kostrikov et al. 2020) as its authors' code has it (denisyarats/drq): the TD target averaged over K = 2
augmentations of s' (each with its own a'), the critic loss summed over M = 2 augmentations of s, and the per-task
action repeats of its PlaNet-benchmark runs -- the ``drq`` agent. ``sac`` keeps one augmentation."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents.sac import DRQ_ACTION_REPEAT, SACAgent, SACConfig
from pixelrl.errors import ConfigError

from .conftest import ACTION_DIM, make_batch, pixel_space

torch.set_num_threads(1)

STATE_DIM = 5


def state_space():
    return gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)


def act_space():
    return gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def make(space, **kw) -> SACAgent:
    torch.manual_seed(0)
    cfg = SACConfig(**{**dict(batch_size=8, feature_dim=8, hidden_dim=32, encoder_channels=(8, 8),
                              encoder_strides=(2, 1), num_seed_steps=0, precision="fp32"), **kw})
    return SACAgent(space, act_space(), cfg)


def test_k_targets_are_averaged_and_m_losses_summed():
    """On states the augmentation is the identity, so the K / M copies differ only by their sampled a'."""
    agent = make(state_space(), target_augs=2, loss_augs=2)
    batch = make_batch(state_space(), n=8)
    std = torch.tensor(0.0)
    torch.manual_seed(5)
    loss, feat, metrics = agent._critic_loss(batch, std, 0)
    with torch.no_grad():
        next_feat = agent.encoder(batch.next_obs.float())
        torch.manual_seed(5)
        y1 = agent.critic_target(batch, next_feat, std)
        y2 = agent.critic_target(batch, next_feat, std)
        assert not torch.allclose(y1, y2)  # each copy samples its own a'
        target = (y1 + y2) / 2
        expected = 2 * agent.critic.head.loss(agent.critic(feat, batch.action), target)  # DrQ's code: a sum
    assert metrics["critic_target_q"].item() == pytest.approx(target.mean().item(), rel=1e-6)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_each_copy_is_augmented_independently_and_the_actor_sees_the_first():
    agent = make(pixel_space(), target_augs=2, loss_augs=2)
    batch = make_batch(pixel_space(), n=8)
    seen = {}
    augment = agent._augment

    def spy(obs, next_obs):
        out = augment(obs, next_obs)
        seen["obs"], seen["aug_obs"], seen["aug_next"] = obs, out[0].clone(), out[1].clone()
        return out

    agent._augment = spy
    _, feat, _ = agent._critic_loss(batch, torch.tensor(0.0), 0)
    assert seen["obs"].shape[0] == 16 and torch.equal(seen["obs"][:8], seen["obs"][8:])  # two copies of s
    assert not torch.equal(seen["aug_obs"][:8], seen["aug_obs"][8:])  # shifted independently
    assert not torch.equal(seen["aug_next"][:8], seen["aug_next"][8:])
    with torch.no_grad():
        assert torch.allclose(feat, agent.encoder(seen["aug_obs"][:8]), atol=1e-5)  # the actor's: the first copy
    m = agent.update(batch, step=0)
    assert math.isfinite(m["critic_loss"]) and math.isfinite(m["actor_loss"])


def test_one_augmentation_is_the_sac_default_and_the_core_path():
    cfg = SACConfig()
    assert (cfg.target_augs, cfg.loss_augs) == (1, 1)
    for kw in (dict(target_augs=0), dict(loss_augs=0)):
        with pytest.raises(ConfigError):
            SACConfig(**kw)
    a, b = make(pixel_space()), make(pixel_space(), target_augs=1, loss_augs=1)
    batch = make_batch(pixel_space(), n=8)
    torch.manual_seed(1)
    la, _, _ = a._critic_loss(batch, torch.tensor(0.0), 0)
    torch.manual_seed(1)
    lb, _, _ = b._critic_loss(batch, torch.tensor(0.0), 0)
    assert torch.equal(la, lb)


@pytest.mark.parametrize("env, repeat", [("dmc/cartpole-swingup", 8), ("dmc/cheetah-run", 4), ("dmc/reacher-easy", 4),
                                         ("dmc/cup-catch", 4), ("dmc/finger-spin", 2), ("dmc/walker-walk", 2)])
def test_drq_agent_preset(env, repeat):
    from pixelrl.train.config import TrainConfig
    from pixelrl.train.setup import build_config

    cfg = build_config(env, "drq", "paper", device="cpu", fill_run_dir=False)
    assert cfg.action_repeat == repeat
    a = cfg.agent
    assert (a.target_augs, a.loss_augs, a.batch_size, a.lr, a.init_temperature, a.nstep) == (2, 2, 512, 1e-3, 0.1, 1)
    assert (a.critic_target_tau, a.actor_update_every, a.target_update_every, a.feature_dim) == (0.01, 2, 2, 50)
    sac = build_config(env, "sac", "paper", device="cpu", fill_run_dir=False)
    assert (sac.agent.target_augs, sac.action_repeat) == (1, TrainConfig.action_repeat)
    assert build_config(env, "drq", "paper", device="cpu", fill_run_dir=False, action_repeat=1).action_repeat == 1


def test_drq_preset_outside_the_planet_tasks_and_on_states():
    from pixelrl.train.config import TrainConfig
    from pixelrl.train.setup import build_config

    assert set(DRQ_ACTION_REPEAT) >= {"cartpole_swingup", "reacher_easy", "cheetah_run", "finger_spin",
                                      "ball_in_cup_catch", "walker_walk"}
    other = build_config("dmc/hopper-hop", "drq", "paper", device="cpu", fill_run_dir=False)
    assert other.action_repeat == TrainConfig.action_repeat and other.agent.target_augs == 2
    st = build_config("dmc/cartpole-swingup", "drq", "paper", device="cpu", fill_run_dir=False, obs="state")
    assert st.agent.target_augs == 1 and st.agent.lr == 3e-4  # nothing to augment: state SAC's values


def test_drq_agent_from_the_registry():
    from pixelrl.agents import agent_preset, agent_train_preset, make_agent

    assert "action_repeat" not in agent_preset("drq", "dmc/cartpole-swingup")  # a trainer field, kept apart
    assert agent_train_preset("drq", "dmc/cartpole-swingup") == {"action_repeat": 8}
    agent = make_agent("drq", pixel_space(), act_space(), {"batch_size": 8, "hidden_dim": 16, "feature_dim": 8,
                                                            "precision": "fp32"})
    assert isinstance(agent, SACAgent) and (agent.cfg.target_augs, agent.cfg.loss_augs) == (2, 2)
