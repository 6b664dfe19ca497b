"""The hook API shared by the DrQ-v2 core and the DQN family (agents/hooks.py): auxiliary losses (their modules in the
agent's optimizer and checkpoint, their metrics), mechanism state in checkpoints, episode hooks, and a refused
checkpoint that loads nothing."""

from __future__ import annotations

import contextlib
import inspect

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from pixelrl.agents.dqn import DQNAgent, DQNConfig
from pixelrl.agents.drqv2 import DrQv2Agent
from pixelrl.agents.hooks import AuxEntry, MechanismHooks
from pixelrl.errors import ConfigError

from helpers import drqv2_state_agent, drqv2_state_batch, through_checkpoint


class _Tiny(MechanismHooks):
    """The smallest agent on the hooks: one linear net, one optimizer, fp32."""

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.net = nn.Linear(2, 1)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1)
        self._init_hooks()

    def _aux_optimizer(self):
        return self.opt

    def _autocast(self):
        return contextlib.nullcontext()

    def state_dict(self) -> dict:
        state = {"net": self.net.state_dict()}
        self._save_aux(state)
        self._save_mech(state)
        return state

    def load_state_dict(self, state: dict) -> None:
        self._check_hook_state(state)
        self.net.load_state_dict(state["net"])
        self._load_aux(state)
        self._load_mech(state)


def test_aux_losses_are_named_summed_and_trained_by_the_agents_optimizer():
    agent = _Tiny()
    extra = nn.Linear(2, 1)
    agent.add_aux_loss(lambda x: extra(x).pow(2).mean(), module=extra, name="probe")
    agent.add_aux_loss(lambda x: (x.sum() * 0 + 2.0, {"seen": x.mean()}))  # no module, default name
    assert [e.name for e in agent.aux_losses] == ["probe", "aux1"]
    assert isinstance(agent.aux_losses[0], AuxEntry) and agent.aux_losses[1].module is None
    assert any(p is extra.weight for g in agent.opt.param_groups for p in g["params"])
    with pytest.raises(ConfigError, match="'probe' is already registered"):
        agent.add_aux_loss(lambda x: x.sum(), name="probe")

    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    metrics: dict = {}
    loss = agent._add_aux(agent.aux_losses, x, torch.tensor(1.0), metrics)
    probe = extra(x).pow(2).mean()
    assert loss.item() == pytest.approx(1.0 + probe.item() + 2.0)
    assert set(metrics) == {"probe_loss", "aux1_loss", "aux1_seen"}
    assert metrics["aux1_seen"].item() == pytest.approx(x.mean().item()) and not metrics["probe_loss"].requires_grad
    w0 = extra.weight.clone()
    loss.backward()
    agent.opt.step()
    assert not torch.equal(w0, extra.weight)  # the module joined the agent's optimizer


def test_mechanism_state_and_aux_modules_round_trip_and_a_mismatched_checkpoint_loads_nothing():
    def build(seed):
        torch.manual_seed(seed)
        agent = _Tiny()
        box = {"n": seed, "t": torch.full((3,), float(seed))}
        agent.add_aux_loss(lambda x: x.sum(), module=nn.Linear(2, 2), name="m")
        agent.register_state("counter", lambda: dict(box), lambda s: box.update(n=int(s["n"]), t=s["t"].clone()))
        return agent, box

    a, box_a = build(1)
    state = through_checkpoint(a.state_dict())
    assert list(state) == ["net", "aux", "mech"] and set(state["aux"]) == {"m"} and set(state["mech"]) == {"counter"}
    b, box_b = build(2)
    b.load_state_dict(state)
    assert box_b["n"] == 1 and torch.equal(box_b["t"], box_a["t"])
    assert torch.equal(b.aux_losses[0].module.weight, a.aux_losses[0].module.weight)
    assert torch.equal(b.net.weight, a.net.weight)
    with pytest.raises(ConfigError, match="'counter' is already registered"):
        b.register_state("counter", dict, print)

    c, box_c = build(3)
    before = c.net.weight.clone()
    for broken in ({k: v for k, v in state.items() if k != "mech"}, {k: v for k, v in state.items() if k != "aux"}):
        with pytest.raises(ConfigError, match="checkpoint has no state for"):
            c.load_state_dict(broken)
        assert torch.equal(c.net.weight, before) and box_c["n"] == 3  # nothing half-loaded
    assert _Tiny().state_dict().keys() == {"net"}  # no hooks registered: no "aux" / "mech" keys


def test_observe_episode_runs_episode_hooks_and_merges_their_metrics():
    agent = _Tiny()
    seen = []
    agent.episode_hooks.append(lambda ag, ret, step: seen.append((ag, ret, step)) or {"a": 1.0})
    agent.episode_hooks.append(lambda ag, ret, step: None)
    agent.episode_hooks.append(lambda ag, ret, step: {"b": ret * 2})
    out = agent.observe_episode(np.float32(1.5), np.int64(7))
    assert out == {"a": 1.0, "b": 3.0}
    assert seen == [(agent, 1.5, 7)] and type(seen[0][1]) is float and type(seen[0][2]) is int
    assert _Tiny().observe_episode(0.0, 0) == {}


def test_both_agents_use_the_shared_hooks_and_keep_their_own_differences():
    for name in ("add_aux_loss", "register_state", "observe_episode", "_add_aux", "_save_aux", "_load_mech"):
        assert getattr(DrQv2Agent, name) is getattr(MechanismHooks, name) is getattr(DQNAgent, name), name
    assert list(inspect.signature(DrQv2Agent.reset_optimizer_state).parameters) == ["self", "which"]
    assert list(inspect.signature(DQNAgent.reset_optimizer_state).parameters) == ["self"]
    assert list(inspect.signature(MechanismHooks.add_aux_loss).parameters) == ["self", "fn", "module", "name"]

    drq = drqv2_state_agent()
    extra = nn.Linear(drq.encoder.repr_dim, 1)
    drq.add_aux_loss(lambda inp: extra(inp.feat.float()).pow(2).mean(), module=extra, name="probe")
    critic_params = {id(p) for g in drq.critic_opt.param_groups for p in g["params"]}
    actor_params = {id(p) for g in drq.actor_opt.param_groups for p in g["params"]}
    assert id(extra.weight) in critic_params and id(extra.weight) not in actor_params  # the critic/encoder loss's
    m = drq.update(drqv2_state_batch(), step=0)
    assert "probe_loss" in m and drq.last_feat is not None and drq.metric_hooks == []

    dqn = DQNAgent(gym.spaces.Box(-1, 1, (2,), np.float32), gym.spaces.Discrete(2),
                   DQNConfig(num_seed_steps=0, mlp_hidden=(8,)))
    head = nn.Linear(dqn.q_net.repr_dim, 1)
    dqn.add_aux_loss(lambda inp: head(inp.feat).pow(2).mean(), module=head)
    assert dqn.aux_losses[0].name == "aux0"
    assert any(p is head.weight for g in dqn.optimizer.param_groups for p in g["params"])
    assert not hasattr(dqn, "metric_hooks") and dqn.batch_extras == set() and dqn.last_feat is None


def test_drqv2_refuses_a_checkpoint_without_a_mechanisms_state_before_loading_anything():
    """The shared check runs before any network is loaded (the DQN agent did so already; DrQ-v2 used to load its
    networks first and then refuse, leaving a half-loaded agent)."""
    src = drqv2_state_agent()
    src.update(drqv2_state_batch(), step=0)  # weights now differ from a fresh agent's
    state = through_checkpoint(src.state_dict())
    dst = drqv2_state_agent()
    dst.register_state("extra", lambda: {"n": 1}, lambda s: None)
    before = [p.clone() for p in dst.encoder.parameters()] + [p.clone() for p in dst.critic.parameters()]
    with pytest.raises(ConfigError, match=r"no state for mechanism\(s\) \['extra'\]"):
        dst.load_state_dict(state)
    after = list(dst.encoder.parameters()) + list(dst.critic.parameters())
    assert all(torch.equal(x, y) for x, y in zip(before, after))
