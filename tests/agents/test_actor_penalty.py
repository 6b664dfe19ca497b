"""``actor_pre_tanh_penalty``: the actor loss gains ``w * mean(u^2)`` of the pre-tanh mean action ``u`` (DrQ-v2's
deterministic actor and SAC's pre-squash mean), it pulls a saturated actor back, and the cpu-fast preset sets it for
the DDPG-style agents only."""

import dataclasses

import pytest
import torch

from helpers import act_space, state_space
from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.agents.sac import SACAgent, SACConfig
from pixelrl.errors import ConfigError
from pixelrl.train.setup import build_config

TINY = dict(batch_size=8, feature_dim=8, hidden_dim=32, lr=1e-3)


def _pair(agent_cls, cfg_cls, w):
    torch.manual_seed(0)
    plain = agent_cls(state_space(), act_space(), cfg_cls(**TINY))
    torch.manual_seed(0)
    pen = agent_cls(state_space(), act_space(), cfg_cls(**TINY, actor_pre_tanh_penalty=w))
    return plain, pen


def test_pre_tanh_is_forward_before_tanh():
    agent = DrQv2Agent(state_space(), act_space(), DrQv2Config(**TINY))
    feat = torch.randn(5, agent.encoder.repr_dim)
    torch.testing.assert_close(torch.tanh(agent.actor.pre_tanh(feat)), agent.actor(feat))


@pytest.mark.parametrize("kind", ["drqv2", "sac"])
def test_loss_adds_weighted_mean_square(kind):
    w = 0.25
    agent_cls, cfg_cls = (DrQv2Agent, DrQv2Config) if kind == "drqv2" else (SACAgent, SACConfig)
    plain, pen = _pair(agent_cls, cfg_cls, w)
    feat = torch.randn(6, plain.encoder.repr_dim)
    std = torch.tensor(0.3)
    torch.manual_seed(1)
    base, m0 = plain._actor_loss(feat, std)
    torch.manual_seed(1)
    loss, m1 = pen._actor_loss(feat, std)
    u = pen.actor.pre_tanh(feat) if kind == "drqv2" else pen.actor.dist_params(feat)[0]
    expected = w * u.pow(2).mean()
    torch.testing.assert_close(loss - base, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m1["actor_pre_tanh_sq"], u.pow(2).mean().detach())
    assert "actor_pre_tanh_sq" not in m0


def test_penalty_pulls_a_saturated_actor_back():
    """A critic indifferent to the action (zero last layer) leaves only the penalty: pre-tanh means shrink."""
    agent = DrQv2Agent(state_space(), act_space(), DrQv2Config(**TINY, actor_pre_tanh_penalty=1.0))
    with torch.no_grad():
        agent.actor.policy[-1].bias.fill_(6.0)  # tanh(6) ~ 1: saturated
        agent.critic.q[-1].weight.zero_()
    feat = torch.randn(16, agent.encoder.repr_dim)
    before = agent.actor.pre_tanh(feat).abs().mean().item()
    for _ in range(50):
        agent._actor_step(feat, torch.tensor(0.1), 0)
    after = agent.actor.pre_tanh(feat).abs().mean().item()
    assert after < before - 0.04, (before, after)
    # without the penalty the same setting gives the actor no gradient at all
    agent2 = DrQv2Agent(state_space(), act_space(), DrQv2Config(**TINY))
    with torch.no_grad():
        agent2.actor.policy[-1].bias.fill_(6.0)
        agent2.critic.q[-1].weight.zero_()
    before2 = agent2.actor.pre_tanh(feat).detach().clone()
    for _ in range(5):
        agent2._actor_step(feat, torch.tensor(0.1), 0)
    torch.testing.assert_close(agent2.actor.pre_tanh(feat), before2)


@pytest.mark.parametrize("bad", [-1e-3, float("nan"), float("inf")])
def test_bad_weight_is_refused(bad):
    with pytest.raises(ConfigError, match="actor_pre_tanh_penalty"):
        DrQv2Config(actor_pre_tanh_penalty=bad)


@pytest.mark.parametrize("agent,expected", [("drqv2", 1e-3), ("drm", 1e-3), ("mentor", 1e-3), ("taco", 1e-3),
                                            ("sac", 0.0), ("residual", 0.0)])
def test_cpu_fast_sets_it_for_ddpg_style_agents(agent, expected):
    cfg = build_config("dmc/cartpole-swingup", agent, preset="cpu-fast", device="cpu", fill_run_dir=False)
    assert cfg.agent.actor_pre_tanh_penalty == expected
    paper = build_config("dmc/cartpole-swingup", agent, preset="paper", device="cpu", fill_run_dir=False)
    assert paper.agent.actor_pre_tanh_penalty == 0.0


def test_residual_refuses_it():
    from pixelrl.agents.residual import ResidualConfig

    with pytest.raises(ConfigError, match="residual"):
        dataclasses.replace(ResidualConfig(), actor_pre_tanh_penalty=1e-3)
