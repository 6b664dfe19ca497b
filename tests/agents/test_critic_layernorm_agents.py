"""``critic_layernorm`` (RLPD's LayerNorm critic) reaches the critic of every agent with a Q critic, trains, and
survives a checkpoint round trip."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.agents.iql import IQLAgent, IQLConfig
from pixelrl.agents.sac import SACAgent, SACConfig
from pixelrl.agents.td3bc import TD3BCAgent, TD3BCConfig
from pixelrl.mechanisms.hl_gauss import HLGaussConfig
from pixelrl.mechanisms.mentor import MentorConfig
from pixelrl.nets.layers import EnsembleLayerNorm
from pixelrl.data.batch import Batch
from pixelrl.nets.moe import MoE, MoEConfig
from pixelrl.utils.checkpoint import flatten_state, unflatten_state

TINY = dict(batch_size=8, feature_dim=8, hidden_dim=32, encoder_channels=(8, 8), encoder_strides=(2, 1), lr=1e-3)


def state_space():
    return gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)


def pixel_space():
    return gym.spaces.Box(0, 255, (6, 16, 16), np.uint8)


def act_space():
    return gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def random_batch(space, n: int = 8, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)

    def obs():
        if len(space.shape) == 3:
            return torch.randint(0, 256, (n, *space.shape), dtype=torch.uint8, generator=g)
        return torch.randn(n, *space.shape, generator=g)

    return Batch(obs=obs(), action=torch.rand(n, 2, generator=g) * 2 - 1, reward=torch.rand(n, 1, generator=g),
                 discount=torch.full((n, 1), 0.99), next_obs=obs())


def through_checkpoint(state: dict) -> dict:
    """The agent state after the checkpoint format's tensor / JSON split (no pickle)."""
    tensors, tree = flatten_state(state)
    return unflatten_state(tree, tensors)


HL = {"critic": "hl-gauss", "hl_gauss": HLGaussConfig(num_bins=11, v_min=-5.0, v_max=5.0)}
MOE = {"moe": "actor+critic", "mentor": MentorConfig(moe=MoEConfig(num_experts=3, top_k=2, expert_hidden=8,
                                                                   gate_hidden=8))}

# name -> (agent class, config class, observation space, extra config, LayerNorms per critic)
CASES = {
    "drqv2-pixels": (DrQv2Agent, DrQv2Config, pixel_space, {}, 2),
    "drqv2-hl-gauss": (DrQv2Agent, DrQv2Config, pixel_space, HL, 2),
    "drqv2-moe-critic": (DrQv2Agent, DrQv2Config, pixel_space, MOE, 1),
    "sac-state": (SACAgent, SACConfig, state_space, {}, 2),
    "iql-state": (IQLAgent, IQLConfig, state_space, {}, 2),  # rebuild_plain_critic
    "iql-pixels": (IQLAgent, IQLConfig, pixel_space, {}, 2),
    "td3bc-state": (TD3BCAgent, TD3BCConfig, state_space, {}, 2),  # rebuild_plain_critic
}


def _make(case, seed=0, **kw):
    agent_cls, cfg_cls, space, extra, _ = CASES[case]
    torch.manual_seed(seed)
    return agent_cls(space(), act_space(), cfg_cls(**{**TINY, "num_q": 3, **extra, **kw}))


def _norms(critic):
    return [m for m in critic.modules() if isinstance(m, EnsembleLayerNorm)]


def test_default_is_off():
    assert DrQv2Config().critic_layernorm is False
    assert not _norms(_make("drqv2-pixels").critic)


@pytest.mark.parametrize("case", sorted(CASES))
def test_flag_reaches_the_critic_and_its_target(case):
    agent = _make(case, critic_layernorm=True)
    expected = CASES[case][4]
    for critic in (agent.critic, agent.target_critic):
        norms = _norms(critic)
        assert len(norms) == expected and all(n.ensemble_size == 3 for n in norms)
    if case == "drqv2-moe-critic":
        assert isinstance(agent.critic.q[agent.critic.middle_index], MoE)
    # the LayerNorm parameters are trained by the critic optimizer
    opt_params = {id(p) for g in agent.critic_opt.param_groups for p in g["params"]}
    assert all(id(p) in opt_params for n in _norms(agent.critic) for p in n.parameters())


@pytest.mark.parametrize("case", sorted(CASES))
def test_tiny_update_trains_the_layernorms(case):
    agent = _make(case, critic_layernorm=True)
    space = CASES[case][2]()
    before = [p.detach().clone() for n in _norms(agent.critic) for p in n.parameters()]
    for i in range(3):
        metrics = agent.update(random_batch(space, seed=i), step=i)
    assert all(math.isfinite(v) for v in metrics.values())
    after = [p for n in _norms(agent.critic) for p in n.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_flag_changes_the_q_values():
    plain, ln = _make("drqv2-pixels"), _make("drqv2-pixels", critic_layernorm=True)
    batch = random_batch(pixel_space())
    with torch.no_grad():
        obs = batch.obs.float()
        q_plain = plain.critic.values(plain.encoder(obs), batch.action)
        q_ln = ln.critic.values(ln.encoder(obs), batch.action)
    assert q_plain.shape == q_ln.shape == (3, 8, 1)
    assert not torch.allclose(q_plain, q_ln)


@pytest.mark.parametrize("case", ["drqv2-pixels", "iql-state"])
def test_checkpoint_round_trip_gives_identical_updates(case):
    a = _make(case, critic_layernorm=True)
    space = CASES[case][2]()
    for i in range(2):
        a.update(random_batch(space, seed=i), step=i)
    state = through_checkpoint(a.state_dict())
    b = _make(case, seed=5, critic_layernorm=True)
    b.load_state_dict(state)
    for x, y in zip(_norms(a.critic) + _norms(a.target_critic), _norms(b.critic) + _norms(b.target_critic)):
        assert torch.equal(x.weight, y.weight) and torch.equal(x.bias, y.bias)
    batch = random_batch(space, seed=9)
    torch.manual_seed(123)  # the update draws augmentation shifts and policy noise from torch's global RNG
    ma = a.update(batch, step=2)
    torch.manual_seed(123)
    assert ma == b.update(batch, step=2)
    with pytest.raises(RuntimeError, match="critic|key"):  # a LayerNorm critic does not load into a plain one
        _make(case).load_state_dict(state)


def test_bc_refuses_critic_layernorm():
    from pixelrl.agents.bc import BCConfig
    from pixelrl.errors import ConfigError

    with pytest.raises(ConfigError, match="BC has no critic"):
        BCConfig(critic_layernorm=True)
