"""RLPD's learner as the authors' code has it (ikostrikov/rlpd): the actor maximises the MEAN of the Q heads (min
only in the TD target), one UTD cycle is G critic updates then one actor and one temperature update, pixel RLPD
has no entropy term in the TD target, and the ``rlpd`` agent preset sets all of it."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.agents.sac import SACAgent, SACConfig
from pixelrl.errors import ConfigError

from .conftest import ACTION_DIM, make_batch, pixel_space, tiny_cfg

torch.set_num_threads(1)

STATE_DIM = 5
SMALL = dict(batch_size=8, feature_dim=8, hidden_dim=32, encoder_channels=(8, 8), encoder_strides=(2, 1),
             num_seed_steps=0, lr=1e-3, precision="fp32")


def state_space():
    return gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)


def act_space():
    return gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def sac(**kw) -> SACAgent:
    torch.manual_seed(0)
    return SACAgent(state_space(), act_space(), SACConfig(**{**SMALL, "actor_update_every": 1,
                                                             "target_update_every": 1, **kw}))


def drqv2(**kw) -> DrQv2Agent:
    torch.manual_seed(0)
    return DrQv2Agent(state_space(), act_space(), tiny_cfg(precision="fp32", **kw))


def residual(learner: str, **kw):
    from pixelrl.agents.bc import BCAgent, BCConfig
    from pixelrl.agents.residual import ResidualAgent, ResidualConfig

    torch.manual_seed(0)
    bc = BCAgent(state_space(), act_space(), BCConfig(hidden_dim=16, batch_size=8))
    bc.set_obs_normalizer(np.zeros(STATE_DIM), np.ones(STATE_DIM))
    cfg = ResidualConfig(**{**SMALL, "learner": learner, "residual_init_scale": 0.1, **kw})
    return ResidualAgent(state_space(), act_space(), cfg, base_policy=bc)


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


# ------------------------------------------------------------------------------------------- actor objective


def recorded_actor_q(agent, batch):
    """The actor loss and the ``[num_q, B, 1]`` Q values its objective was computed from."""
    seen = []
    values = agent.critic.values

    def spy(*a, **k):
        q = values(*a, **k)
        seen.append(q.detach())
        return q

    agent.critic.values = spy
    feat = agent.encoder(batch.obs.float()).detach()
    if hasattr(agent, "base"):  # the residual reads the batch's base actions, set by the critic target
        agent._batch_base_actions(batch)
    loss, metrics = agent._actor_loss(feat, torch.tensor(0.2), 0)
    agent.critic.values = values
    (q,) = seen
    return loss, metrics, q


MAKERS = {
    "drqv2": drqv2,
    "sac": sac,
    "residual-sac": lambda **kw: residual("sac", **kw),
    "residual-drqv2": lambda **kw: residual("drqv2", stddev_schedule="0.2", **kw),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("reduce", ["min", "mean"])
def test_actor_objective_over_ten_heads(name, reduce):
    kw = {"num_q": 10, "target_q_subset": 2}
    if reduce == "mean":
        kw["actor_q"] = "mean"
    agent = MAKERS[name](**kw)
    assert agent.cfg.actor_q == reduce  # min is the default (DrQ-v2, DrQ, SAC)
    loss, metrics, q = recorded_actor_q(agent, make_batch(state_space(), n=8))
    assert q.shape[0] == 10
    objective = q.mean(dim=0) if reduce == "mean" else q.min(dim=0).values
    other = q.min(dim=0).values if reduce == "mean" else q.mean(dim=0)
    entropy_term = 0.0
    if "actor_entropy" in metrics:  # SAC: alpha log pi - Q
        entropy_term = -(agent.alpha * metrics["actor_entropy"]).item()
    assert loss.item() == pytest.approx(entropy_term - objective.mean().item(), rel=1e-5, abs=1e-6)
    assert loss.item() != pytest.approx(entropy_term - other.mean().item(), rel=1e-5, abs=1e-6)


def test_actor_q_is_validated_and_refused_where_it_has_no_meaning():
    with pytest.raises(ConfigError, match="actor_q"):
        DrQv2Config(actor_q="max")
    from pixelrl.agents.iql import IQLConfig
    from pixelrl.agents.td3bc import TD3BCConfig

    for cls in (IQLConfig, TD3BCConfig):
        with pytest.raises(ConfigError, match="actor_q"):
            cls(actor_q="mean")
        with pytest.raises(ConfigError, match="utd_cycle"):
            cls(utd_cycle=True)


# ------------------------------------------------------------------------------------------- UTD cycle


@pytest.mark.parametrize("cycle", [False, True])
def test_drqv2_utd_cycle_runs_g_critic_updates_then_one_actor_update(cycle):
    agent = drqv2(updates_per_step=3, utd_cycle=cycle)
    assert DrQv2Config().utd_cycle is False  # DrQ-v2's default: every update is a whole update
    actor_moved = []
    for i in range(6):
        actor0, critic0, target0 = snapshot(agent.actor), snapshot(agent.critic), snapshot(agent.target_critic)
        m = agent.update(make_batch(state_space(), n=8, seed=i), step=i)
        assert changed(critic0, agent.critic) and changed(target0, agent.target_critic)  # every update
        actor_moved.append(changed(actor0, agent.actor))
        assert ("actor_loss" in m) == actor_moved[-1]
    assert actor_moved == ([False, False, True] * 2 if cycle else [True] * 6)


def test_sac_utd_cycle_updates_actor_and_temperature_after_the_last_critic_update():
    agent = sac(updates_per_step=4, utd_cycle=True)
    moved = []
    for i in range(8):
        actor0, alpha0, target0 = snapshot(agent.actor), agent.alpha.item(), snapshot(agent.target_critic)
        m = agent.update(make_batch(state_space(), n=8, seed=i), step=i)
        assert changed(target0, agent.target_critic)  # the target EMA follows every critic update (RLPD)
        moved.append((changed(actor0, agent.actor), agent.alpha.item() != alpha0, "alpha_loss" in m))
    assert moved == [(False, False, False)] * 3 + [(True, True, True)] + [(False, False, False)] * 3 + [(True,) * 3]
    with pytest.raises(ConfigError, match="actor-update-every 1"):
        SACConfig(utd_cycle=True, updates_per_step=4, actor_update_every=2)


def test_utd_cycle_survives_a_checkpoint_round_trip():
    a = sac(updates_per_step=3, utd_cycle=True)
    for i in range(2):
        a.update(make_batch(state_space(), n=8, seed=i), step=i)
    b = sac(updates_per_step=3, utd_cycle=True)
    b.load_state_dict(a.state_dict())
    actor0 = snapshot(b.actor)
    b.update(make_batch(state_space(), n=8, seed=2), step=2)  # the third update of the cycle: the actor's turn
    assert changed(actor0, b.actor)


# ------------------------------------------------------------------------------------------- backup entropy


@pytest.mark.parametrize("backup", [True, False])
def test_backup_entropy(backup):
    agent = sac(backup_entropy=backup, init_temperature=0.5)
    assert SACConfig().backup_entropy is True
    batch = make_batch(state_space(), n=8)
    next_feat = agent.encoder(batch.next_obs.float())
    torch.manual_seed(3)
    with torch.no_grad():
        y = agent.critic_target(batch, next_feat, torch.tensor(0.0))
        torch.manual_seed(3)
        a, logp = agent.actor.sample(next_feat)
        q = agent.target_critic.values(next_feat, a).min(0).values
    entropy = -agent.alpha * logp if backup else 0.0
    assert torch.allclose(y, batch.reward + batch.discount * (q + entropy), atol=1e-6)


# ------------------------------------------------------------------------------------------- the rlpd agent


def test_rlpd_preset_on_pixels_and_states():
    from pixelrl.train.setup import build_config

    px = build_config("dmc/cartpole-swingup", "rlpd", "paper", device="cpu", fill_run_dir=False)
    a = px.agent
    assert (a.num_q, a.target_q_subset, a.critic_layernorm, a.actor_q, a.utd_cycle) == (10, 1, True, "mean", True)
    assert (a.backup_entropy, a.init_temperature, a.target_entropy_scale, a.lr, a.critic_target_tau) == (
        False, 0.1, 0.5, 3e-4, 0.005)
    assert (a.actor_update_every, a.target_update_every, a.hidden_dim, a.batch_size) == (1, 1, 256, 256)
    assert (a.encoder_channels, a.encoder_strides) == ((32, 64, 128, 256), (2, 2, 2, 2))
    assert (px.size, px.action_repeat) == (64, 8)  # rlpd's pixel script: 64x64, PlaNet's repeat for cartpole
    st = build_config("dmc/cartpole-swingup", "rlpd", "paper", device="cpu", fill_run_dir=False, obs="state")
    assert (st.agent.target_q_subset, st.agent.backup_entropy, st.agent.init_temperature) == (2, True, 1.0)
    assert st.action_repeat == build_config("dmc/cartpole-swingup", "sac", "paper", device="cpu",
                                            fill_run_dir=False).action_repeat  # states: no pixel settings
    # the user's flags still win
    mine = build_config("dmc/cartpole-swingup", "rlpd", "paper", device="cpu", fill_run_dir=False, action_repeat=2,
                        agent={"actor_q": "min"})
    assert mine.action_repeat == 2 and mine.agent.actor_q == "min"


def test_rlpd_agent_updates_with_its_preset():
    from pixelrl.agents import make_agent

    agent = make_agent("rlpd", pixel_space(), act_space(), {"batch_size": 8, "hidden_dim": 16, "feature_dim": 8,
                                                             "updates_per_step": 2, "precision": "fp32"})
    assert isinstance(agent, SACAgent) and agent.target_entropy == -ACTION_DIM / 2
    batch = make_batch(pixel_space(), n=8)
    m0 = agent.update(batch, step=0)
    m1 = agent.update(batch, step=1)
    assert "actor_loss" not in m0 and math.isfinite(m1["actor_loss"]) and math.isfinite(m1["critic_loss"])
