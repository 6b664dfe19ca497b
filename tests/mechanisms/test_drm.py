"""DrM: its formulas, config checks, and each mechanism installed on a tiny DrQ-v2 agent (pixelrl.mechanisms.drm)."""

from __future__ import annotations

import copy
import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents.drqv2 import AuxInputs, DrQv2Agent, DrQv2Config
from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError
from pixelrl.mechanisms import drm
from pixelrl.mechanisms.dormant import dormant_tracker, shrink_perturb_
from pixelrl.mechanisms.drm import (
    DrMConfig,
    alpha_max_for,
    awakened_std,
    blend_lambda,
    expectile_loss,
)

from helpers import ACT_DIM, B, OBS_DIM, drqv2_state_agent, drqv2_state_batch

make_agent, make_batch = drqv2_state_agent, drqv2_state_batch


def tracker_of(agent):
    d = agent.cfg.drm
    return dormant_tracker(agent, threshold=d.dormant_threshold, mode=d.dormant_mode)  # the agent's shared one


def drm_hook(agent):
    return agent.update_hooks[-1]  # DrM appends its hook after the tracker's measurement


# ------------------------------------------------------------------ formulas and config


def test_awakened_std_formula():
    # DrM's agents/drm.py at its head: dormant_stddev = 1 / (1 + exp(-temp * (beta - beta_hat))), no 0.8 factor
    assert DrMConfig().awaken_std_max == 1.0
    assert awakened_std(0.2) == pytest.approx(0.5)
    assert awakened_std(1.0) == pytest.approx(1.0 / (1 + math.exp(-8)))
    assert awakened_std(0.0) == pytest.approx(1.0 / (1 + math.exp(2)))
    assert awakened_std(0.2, std_max=0.8) == pytest.approx(0.4)  # MENTOR's variant, one option away
    assert awakened_std(0.1) < awakened_std(0.3) < awakened_std(0.6)


def test_blend_lambda_formula():
    assert blend_lambda(0.2) == pytest.approx(0.3)
    assert blend_lambda(0.0) == pytest.approx(0.6 / (1 + math.exp(-10)))
    assert blend_lambda(1.0) < 1e-15
    assert blend_lambda(1.0, slope=1e6) == 0.0 and blend_lambda(0.0, slope=1e6) == 0.6  # no overflow
    assert blend_lambda(0.1) > blend_lambda(0.25)


def test_expectile_loss_is_asymmetric():
    v = torch.zeros(2, 1)
    q = torch.tensor([[1.0], [-1.0]])  # V under-estimates the first, over-estimates the second
    assert expectile_loss(v, q, 0.9).item() == pytest.approx((0.9 + 0.1) / 2)
    assert expectile_loss(v, q, 0.5).item() == pytest.approx(0.5)  # tau = 0.5: half the MSE (1.0)
    assert expectile_loss(v[:1], q[:1], 0.9).item() == pytest.approx(0.9)
    assert expectile_loss(v[1:], q[1:], 0.9).item() == pytest.approx(0.1)
    # the tau-expectile of {0, 1} is tau: the loss is smallest there
    qs = torch.tensor([[0.0], [1.0]])
    losses = {c: expectile_loss(torch.full((2, 1), c), qs, 0.9).item() for c in (0.85, 0.9, 0.95)}
    assert losses[0.9] < losses[0.85] and losses[0.9] < losses[0.95]


@pytest.mark.parametrize(
    "env_id, expected",
    # DrM's cfgs/task/<task>.yaml max_perturb_factor (dog_trot, humanoid_stand/walk and acrobot_swingup_sparse are
    # 0.9 in the files, not the paper's per-domain 0.6 / 1.0); tasks without a file fall back to the domain
    [("dmc/dog-run", 0.6), ("dmc/humanoid-run", 0.6), ("dmc/humanoid-walk", 0.9), ("dmc/humanoid-stand", 0.9),
     ("dmc/manipulator-bring_ball", 0.9), ("metaworld/assembly", 0.95), ("dmc/cheetah-run", 1.0),
     ("dmc/walker-walk", 1.0), ("", 1.0), ("DMC/Dog-Trot", 0.9), ("dmc/acrobot-swingup-sparse", 0.9),
     ("dmc/dog-fetch", 0.6), ("dmc/manipulator-insert-ball", 0.9)],
)
def test_alpha_max_for(env_id, expected):
    assert alpha_max_for(env_id) == expected


@pytest.mark.parametrize(
    "field, value, match",
    [("dormant_mode", "after", "dormant_mode"), ("perturb_interval", 0, "perturb_interval"),
     ("alpha_min", 0.7, "alpha_min"), ("alpha_max", 1.5, "alpha_max"), ("expectile", 1.0, "expectile"),
     ("lambda_const", 2.0, "lambda_const"), ("target_dormant_ratio", 0.0, "target_dormant_ratio"),
     ("awaken_std_max", 0.0, "awaken_std_max"), ("perturb_rate", -1.0, "perturb_rate")],
)
def test_bad_config_raises(field, value, match):
    cfg = {"alpha_max": 0.6} if field == "alpha_min" else {}
    cfg[field] = value
    with pytest.raises(ConfigError, match=match):
        DrMConfig(**cfg)


# ------------------------------------------------------------------ installed on an agent


def test_log_dormant_alone_only_measures():
    agent = make_agent(log_dormant=True)
    assert len(agent.update_hooks) == 1 and not agent.aux_losses
    assert agent.stddev(0) == 0.2  # the schedule is untouched
    metrics = agent.update(make_batch(), step=2)
    assert 0.0 <= metrics["dormant_ratio"] <= 1.0
    assert tracker_of(agent).beta == metrics["dormant_ratio"]
    assert set(agent.state_dict()["mech"]) == {"dormant"}


def test_awakened_std_schedule():
    agent = make_agent(exploration="awakened", stddev_schedule="linear(1.0,0.1,100)", num_seed_steps=20)
    tr, hook = tracker_of(agent), drm_hook(agent)
    assert agent.stddev(5) == pytest.approx(awakened_std(1.0))  # beta starts at 1: explore
    tr.beta = 0.5
    hook(agent, 10)
    assert agent.stddev(10) == pytest.approx(awakened_std(0.5))
    tr.beta = 0.1
    hook(agent, 20)  # within the seed steps: not awake yet
    assert agent.stddev(20) == pytest.approx(awakened_std(0.1))
    hook(agent, 50)  # awake: the schedule restarts from step 50
    assert agent.stddev(50) == pytest.approx(1.0)
    assert agent.stddev(100) == pytest.approx(0.55)
    assert agent.stddev(1000) == pytest.approx(max(awakened_std(0.1), 0.1))
    tr.beta = 0.6  # awake stays awake; a dormant actor raises the std again through the max
    hook(agent, 60)
    assert agent.stddev(1000) == pytest.approx(awakened_std(0.6))
    assert agent.state_dict()["mech"]["drm"]["awaken_step"] == 50


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_perturbation_mixes_actor_and_critics_keeps_encoder_and_resets_optimizers():
    # pixels, so the encoder has weights that must be kept
    cfg = dict(batch_size=4, feature_dim=8, hidden_dim=16, num_seed_steps=0, stddev_schedule="0.2",
               encoder_channels=(4,), encoder_strides=(2,), perturb="dormant", value_blend="expectile",
               drm=DrMConfig(perturb_interval=4))
    torch.manual_seed(0)
    agent = DrQv2Agent(gym.spaces.Box(0, 255, (3, 16, 16), np.uint8), gym.spaces.Box(-1, 1, (ACT_DIM,), np.float32),
                       DrQv2Config(**cfg))
    g = torch.Generator().manual_seed(0)
    px = lambda: torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=g)  # noqa: E731
    batch = Batch(obs=px(), action=torch.zeros(4, ACT_DIM), reward=torch.ones(4, 1),
                  discount=torch.full((4, 1), 0.99), next_obs=px())
    agent.update(batch, step=2)  # Adam moments exist now
    assert agent.actor_opt.state and agent.critic_opt.state
    tr, hook = tracker_of(agent), drm_hook(agent)
    vnet = next(e.module for e in agent.aux_losses if e.name == "drm_value")
    before = {n: _snapshot(m) for n, m in [("enc", agent.encoder), ("actor", agent.actor), ("critic", agent.critic),
                                          ("target", agent.target_critic), ("v", vnet)]}
    expected_actor = copy.deepcopy(agent.actor)
    tr.beta = 0.3  # alpha = clip(1 - 2 * 0.3, 0.2, 1.0) = 0.4
    torch.manual_seed(11)
    shrink_perturb_(expected_actor, 0.4)
    torch.manual_seed(11)
    out = hook(agent, 4)
    assert out["drm_perturb_alpha"] == pytest.approx(0.4)
    for k, v in agent.encoder.state_dict().items():
        assert torch.equal(v, before["enc"][k]), k
    for (k, v), w in zip(agent.actor.state_dict().items(), expected_actor.state_dict().values()):
        assert torch.equal(v, w), k  # the actor was perturbed first, with alpha 0.4
    for name, module in [("critic", agent.critic), ("target", agent.target_critic), ("v", vnet)]:
        sd = module.state_dict()
        assert not torch.equal(sd["trunk.0.weight"], before[name]["trunk.0.weight"]), name
        assert torch.equal(sd["trunk.1.weight"], before[name]["trunk.1.weight"]), name  # LayerNorm untouched
    # the target critic gets its own fresh draw (the authors' code), so it no longer equals the critic
    assert not torch.equal(agent.critic.q[0].weight, agent.target_critic.q[0].weight)
    assert not agent.actor_opt.state and not agent.critic_opt.state
    # the interval: nothing at 6, again at 8
    assert "drm_perturb_alpha" not in (hook(agent, 6) or {})
    assert "drm_perturb_alpha" in hook(agent, 8)
    assert agent.state_dict()["mech"]["drm"] == {"awaken_step": -1, "last_perturb_step": 8, "num_perturbs": 2}


def test_alpha_one_perturbation_changes_nothing_but_optimizer_state():
    agent = make_agent(perturb="dormant", drm=DrMConfig(perturb_interval=4, alpha_max=1.0))
    agent.update(make_batch(), step=2)
    actor = _snapshot(agent.actor)
    tracker_of(agent).beta = 0.0
    assert drm_hook(agent)(agent, 4)["drm_perturb_alpha"] == 1.0
    assert all(torch.equal(v, actor[k]) for k, v in agent.actor.state_dict().items())
    assert not agent.actor_opt.state


def test_value_blend_target_and_lambda():
    agent = make_agent(value_blend="expectile")
    tr, hook = tracker_of(agent), drm_hook(agent)
    vnet = next(e.module for e in agent.aux_losses if e.name == "drm_value")
    batch = make_batch()
    next_feat = agent.encoder(batch.next_obs)
    std = torch.tensor(0.2)
    tr.beta = 0.2
    assert hook(agent, 2)["drm_lambda"] == pytest.approx(0.3)
    with torch.no_grad():
        torch.manual_seed(5)
        y_base = DrQv2Agent.critic_target(agent, batch, next_feat, std)
        torch.manual_seed(5)
        y = agent.critic_target(batch, next_feat, std)
        y_v = batch.reward + batch.discount * vnet(next_feat)
    assert torch.allclose(y, 0.7 * y_base + 0.3 * y_v, atol=1e-6)
    assert not torch.allclose(y, y_base)
    tr.beta = 0.9  # very dormant: lambda ~ 0, the plain DrQ-v2 target
    hook(agent, 4)
    with torch.no_grad():
        torch.manual_seed(5)
        y = agent.critic_target(batch, next_feat, std)
    assert torch.allclose(y, y_base, atol=1e-6)


def test_constant_lambda_ignores_beta():
    agent = make_agent(value_blend="expectile", drm=DrMConfig(lambda_const=0.5))
    tracker_of(agent).beta = 0.9
    assert drm_hook(agent)(agent, 2)["drm_lambda"] == 0.5


def test_value_loss_trains_only_the_value_net():
    agent = make_agent(value_blend="expectile")
    entry = next(e for e in agent.aux_losses if e.name == "drm_value")
    batch = make_batch()
    feat = torch.randn(B, OBS_DIM, requires_grad=True)
    raw = agent.critic(feat, batch.action)
    inputs = AuxInputs(agent, batch, batch.obs, batch.next_obs, feat, feat.detach(), 2, raw)
    loss, metrics = entry.fn(inputs)
    loss.backward()
    assert feat.grad is None
    assert all(p.grad is None for p in agent.critic.parameters())
    assert all(p.grad is not None for p in entry.module.parameters())
    assert "v" in metrics
    # and the update steps it (its parameters are in the critic optimizer)
    v0 = _snapshot(entry.module)
    metrics = agent.update(batch, step=2)
    assert "drm_value_loss" in metrics
    assert any(not torch.equal(v, v0[k]) for k, v in entry.module.state_dict().items())


def test_blend_wraps_an_existing_target_transform():
    agent = make_agent()  # no DrM yet
    base = agent.critic_target
    agent.critic_target = lambda b, f, s: base(b, f, s) + 1.0  # another mechanism's transform
    agent.cfg = dataclasses.replace(agent.cfg, value_blend="expectile")
    drm.install(agent)
    tracker_of(agent).beta = 0.2
    drm_hook(agent)(agent, 2)
    vnet = agent.aux_losses[-1].module
    batch = make_batch()
    feat = agent.encoder(batch.next_obs)
    with torch.no_grad():
        torch.manual_seed(1)
        y0 = DrQv2Agent.critic_target(agent, batch, feat, torch.tensor(0.2))
        torch.manual_seed(1)
        y = agent.critic_target(batch, feat, torch.tensor(0.2))
        expected = 0.7 * (y0 + 1.0) + 0.3 * (batch.reward + batch.discount * vnet(feat))
    assert torch.allclose(y, expected, atol=1e-6)


def test_full_drm_update_and_exact_resume():
    kw = dict(exploration="awakened", perturb="dormant", value_blend="expectile", log_dormant=True,
              drm=DrMConfig(perturb_interval=4))
    a = make_agent(**kw)
    for step in (2, 4, 6):
        torch.manual_seed(step)
        metrics = a.update(make_batch(step), step=step)
    assert {"dormant_ratio", "drm_lambda", "drm_value_loss"} <= set(metrics)
    state = a.state_dict()
    assert set(state["mech"]) == {"dormant", "drm"}
    assert state["mech"]["drm"]["num_perturbs"] == 1
    b = make_agent(**kw)
    b.load_state_dict(state)
    assert tracker_of(b).beta == tracker_of(a).beta
    assert b.stddev(8) == a.stddev(8)
    assert b.state_dict()["mech"] == state["mech"]
    for step in (8, 10):
        torch.manual_seed(step)
        ma = a.update(make_batch(step), step=step)
        torch.manual_seed(step)
        mb = b.update(make_batch(step), step=step)
        assert ma == mb
