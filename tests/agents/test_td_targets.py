"""Every agent bootstraps with ``batch.discount`` (gamma^n and the termination mask, folded in by the replay), never
with its config's gamma: targets checked against the formula on batches whose discounts (0 and 0.99^3) differ from
``cfg.discount``, and whole updates checked to ignore the next observation of terminal rows."""

import copy

import pytest
import torch

from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.agents.iql import IQLAgent, IQLConfig
from pixelrl.agents.sac import SACAgent, SACConfig
from pixelrl.agents.td3bc import TD3BCAgent, TD3BCConfig

from helpers import MIXED_DISCOUNTS, mixed_discount_batch, state_space, tiny_agent

AGENTS = {
    "drqv2": (DrQv2Agent, DrQv2Config, {"stddev_schedule": "0.0", "num_seed_steps": 0}),
    "sac": (SACAgent, SACConfig, {"num_seed_steps": 0, "actor_update_every": 1, "target_update_every": 1}),
    "iql": (IQLAgent, IQLConfig, {}),
    "td3bc": (TD3BCAgent, TD3BCConfig, {"stddev_schedule": "0.0", "actor_update_every": 1}),
}


def make(name, seed=0):
    agent_cls, cfg_cls, kw = AGENTS[name]
    return tiny_agent(agent_cls, cfg_cls, state_space(), seed, **kw)


def _next_value(name, agent, batch, feat):
    """The bootstrapped value of ``s'`` by each method's formula (random draws replayed with the same seed)."""
    if name == "iql":
        return agent.value(feat).float()
    if name == "sac":
        a, logp = agent.actor.sample(feat)
        return agent.target_critic.values(feat, a).min(0).values - agent.alpha * logp
    actor = agent.target_actor if name == "td3bc" and agent.cfg.target_actor else agent.actor
    return agent.target_critic.values(feat, actor(feat)).min(0).values


@pytest.mark.parametrize("name", list(AGENTS))
def test_td_target_bootstraps_with_the_batch_discount(name):
    agent = make(name)
    assert agent.cfg.discount not in MIXED_DISCOUNTS
    batch = mixed_discount_batch(state_space(), n=8)
    feat = batch.next_obs.float()
    with torch.no_grad():
        torch.manual_seed(3)
        y = agent.critic_target(batch, feat, torch.zeros(()))
        torch.manual_seed(3)
        v = _next_value(name, agent, batch, feat)
    expected = batch.reward + batch.discount * v
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-6)
    terminal = batch.discount[:, 0] == 0
    torch.testing.assert_close(y[terminal], batch.reward[terminal])  # no bootstrap past a termination
    wrong = batch.reward + agent.cfg.discount * v  # what bootstrapping with cfg.discount would give
    assert not torch.allclose(y[terminal], wrong[terminal], atol=1e-4, rtol=0)  # the mask is in batch.discount
    assert not torch.allclose(y[~terminal], wrong[~terminal], atol=1e-7, rtol=0)  # so is gamma^3


@pytest.mark.parametrize("name", list(AGENTS))
def test_update_ignores_the_next_observation_of_terminal_rows(name):
    """With ``discount = 0`` a row's target is its reward: replacing its ``s'`` changes nothing in the update, while
    replacing the ``s'`` of a gamma^3 row does."""
    batch = mixed_discount_batch(state_space(), n=8)
    terminal = batch.discount[:, 0] == 0

    def update_with(next_obs):
        agent = make(name)
        b = copy.copy(batch)
        b.next_obs = next_obs
        torch.manual_seed(5)
        agent.update(b, step=0)
        return [t.detach().clone() for t in agent.critic.parameters()]

    base = update_with(batch.next_obs)
    noise = torch.randn_like(batch.next_obs) * 3
    moved_terminal = batch.next_obs.clone()
    moved_terminal[terminal] += noise[terminal]
    moved_bootstrap = batch.next_obs.clone()
    moved_bootstrap[~terminal] += noise[~terminal]
    assert all(torch.equal(a, b) for a, b in zip(base, update_with(moved_terminal)))
    assert not all(torch.equal(a, b) for a, b in zip(base, update_with(moved_bootstrap)))
