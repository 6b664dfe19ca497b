"""MENTOR: exploration std, snapshot store, task-oriented perturbation, and install on a tiny DrQ-v2 agent."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from pixelrl.agents.drqv2 import DrQv2Agent
from pixelrl.errors import ConfigError
from pixelrl.mechanisms.dormant import dormant_masks
from pixelrl.mechanisms.mentor import (
    ACTOR_GRAD_CLIP,
    MentorConfig,
    SnapshotStore,
    dormant_stddev,
    perturbable_params,
    task_perturb_,
)
from pixelrl.nets import Actor, Critic, MoE, MoEConfig
from pixelrl.utils.checkpoint import flatten_state, unflatten_state

from helpers import ACT_DIM, B, OBS_DIM, drqv2_state_agent, drqv2_state_batch

TINY_MOE = MoEConfig(num_experts=4, top_k=2, expert_hidden=8, gate_hidden=8)
make_batch = drqv2_state_batch


def make_agent(mentor: MentorConfig | None = None, **kw) -> DrQv2Agent:
    return drqv2_state_agent(**{"moe": "actor", "exploration": "dormant", "perturb": "task",
                                "mentor": mentor or MentorConfig(moe=TINY_MOE, snapshots=2, perturb_interval=2), **kw})


# ---------------------------------------------------------------- formulas and parts


def test_dormant_stddev_formula():
    assert dormant_stddev(0.2) == pytest.approx(0.4)
    assert dormant_stddev(1.0) == pytest.approx(0.8 / (1 + math.exp(-8)))
    assert dormant_stddev(0.0) == pytest.approx(0.8 / (1 + math.exp(2)))
    assert dormant_stddev(0.3) > dormant_stddev(0.1)
    assert ACTOR_GRAD_CLIP == 0.001


def _snap(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 3), value), "b": torch.arange(3.0) + value}


def test_snapshot_store_keeps_the_k_best_by_return():
    store = SnapshotStore(3)
    kept = [store.offer(r, _snap(r)) for r in (5.0, 1.0, 7.0, 3.0, 9.0, 2.0, 5.0)]
    assert kept == [True, True, True, True, True, False, False]  # the last 5.0 ties the worst stored (5.0): not kept
    assert store.count == 3
    assert sorted(store.returns.tolist()) == [5.0, 7.0, 9.0]
    # each slot holds the snapshot of its return
    for slot in range(3):
        assert torch.all(store.params["w"][slot] == store.returns[slot].float())
    stats = store.stats()
    vals = torch.tensor([5.0, 7.0, 9.0])
    torch.testing.assert_close(stats["w"][0], torch.full((2, 3), vals.mean()))
    torch.testing.assert_close(stats["w"][1], torch.full((2, 3), vals.std()))
    torch.testing.assert_close(stats["b"][0], torch.arange(3.0) + vals.mean())
    assert store.mean_return() == pytest.approx(7.0)


def test_snapshot_store_callable_only_called_when_kept_and_single_snapshot_std_zero():
    store = SnapshotStore(1)
    assert store.offer(1.0, _snap(1.0))
    mean, std = store.stats()["w"]
    assert torch.equal(std, torch.zeros(2, 3)) and torch.equal(mean, torch.ones(2, 3))

    def boom():
        raise AssertionError("must not copy weights of an episode that is not kept")

    assert not store.offer(0.5, boom)
    with pytest.raises(ConfigError):
        SnapshotStore(2).stats()


def test_snapshot_store_state_round_trip():
    store = SnapshotStore(3)
    for r in (4.0, 2.0):
        store.offer(r, _snap(r))
    other = SnapshotStore(3)
    other.load_state_dict(store.state_dict())
    assert other.count == 2 and torch.equal(other.returns, store.returns)
    for k in store.params:
        assert torch.equal(other.params[k], store.params[k])
    # both continue identically
    for s in (store, other):
        s.offer(3.0, _snap(3.0))
        s.offer(1.0, _snap(1.0))
    assert torch.equal(other.returns, store.returns)
    with pytest.raises(ConfigError):
        SnapshotStore(1).load_state_dict(store.state_dict())


def test_task_perturb_alpha_one_is_identity_and_zero_std_moves_to_mean():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    params = perturbable_params({"net": net})
    assert set(params) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}  # no LayerNorm
    store = SnapshotStore(3)
    target = {k: torch.randn_like(p) for k, p in params.items()}
    for r in (1.0, 2.0):  # identical snapshots: std 0
        store.offer(r, target)
    before = {k: p.detach().clone() for k, p in params.items()}
    ln_before = net[1].weight.detach().clone()

    task_perturb_(params, store, alpha=1.0)
    for k, p in params.items():
        assert torch.equal(p, before[k])

    task_perturb_(params, store, alpha=0.25)
    for k, p in params.items():
        torch.testing.assert_close(p, 0.25 * before[k] + 0.75 * target[k])

    task_perturb_(params, store, alpha=0.0)
    for k, p in params.items():
        torch.testing.assert_close(p, target[k])
    assert torch.equal(net[1].weight, ln_before)
    with pytest.raises(ConfigError):
        task_perturb_(params, store, alpha=1.5)


def test_task_perturb_samples_the_fitted_gaussian():
    w = torch.zeros(200, 50)
    params = {"w": nn.Parameter(w.clone())}
    store = SnapshotStore(4)
    g = torch.Generator().manual_seed(1)
    snaps = [torch.randn(200, 50, generator=g) * 0.5 + 2.0 for _ in range(4)]
    for i, s in enumerate(snaps):
        store.offer(float(i), {"w": s})
    mean, std = torch.stack(snaps).mean(0), torch.stack(snaps).std(0)
    torch.manual_seed(3)
    task_perturb_(params, store, alpha=0.0)
    z = (params["w"].detach() - mean) / std
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1.0) < 0.05  # standardised sample ~ N(0, 1)
    first = params["w"].detach().clone()
    params["w"].data.zero_()
    torch.manual_seed(3)
    task_perturb_(params, store, alpha=0.0)
    assert torch.equal(params["w"].detach(), first)  # deterministic under the global seed


def test_perturbable_params_cover_moe_and_ensemble_layers():
    actor = Actor(10, 2, feature_dim=4, hidden_dim=8, moe=TINY_MOE)
    critic = Critic(10, 2, feature_dim=4, hidden_dim=8, moe=TINY_MOE)
    names = set(perturbable_params({"actor": actor, "critic": critic}))
    assert {"actor.policy.2.experts.0.weight", "actor.policy.2.gate.3.bias", "critic.q.0.weight",
            "critic.q.2.experts.2.bias", "critic.q.2.gate.0.weight"} <= names
    assert not any(".trunk.1." in n for n in names)  # LayerNorm


def test_dormant_ratio_sees_every_expert_and_gate_layer():
    actor = Actor(10, 2, feature_dim=4, hidden_dim=8, moe=TINY_MOE)
    masks = dormant_masks(actor, torch.randn(32, 10))
    assert masks["policy.2.experts.0"].shape == (4, 8)  # [experts, expert_hidden]
    assert masks["policy.2.experts.2"].shape == (4, 8)  # [experts, out]
    assert set(masks) == {"trunk.0", "policy.0", "policy.2.experts.0", "policy.2.experts.2", "policy.2.gate.0",
                          "policy.2.gate.3", "policy.4"}


@pytest.mark.parametrize(
    "kw", [dict(snapshots=0), dict(perturb_interval=0), dict(alpha_min=0.5, alpha_max=0.4), dict(alpha_max=1.2),
           dict(stddev_scale=0.0), dict(dormant_mode="mean"), dict(perturb_nets=()),
           dict(perturb_nets=("actor", "actor")), dict(reset_optimizer="encoder")]
)
def test_config_errors(kw):
    with pytest.raises(ConfigError):
        MentorConfig(**kw)


def test_install_rejects_unknown_net():
    with pytest.raises(ConfigError, match="perturb_nets"):
        make_agent(MentorConfig(moe=TINY_MOE, perturb_nets=("actor", "value")))


# ---------------------------------------------------------------- installed on an agent


def test_install_moe_exploration_and_task_perturbation_on_agent():
    agent = make_agent()
    assert isinstance(agent.actor.policy[2], MoE)
    assert not any(isinstance(m, MoE) for m in agent.critic.modules())
    assert agent.stddev(0) == pytest.approx(dormant_stddev(1.0))  # beta starts at 1, no schedule

    m1 = agent.update(make_batch(0), step=10)
    assert {"moe_loss", "moe_load_var", "moe_gate_entropy", "dormant_ratio"} <= set(m1)
    assert m1["moe_loss"] == pytest.approx(m1["moe_load_var"] + m1["moe_gate_entropy"], rel=1e-5)
    assert "mentor_perturb_alpha" not in m1  # 1 update: not yet (interval 2)
    beta = m1["dormant_ratio"]
    assert agent.stddev(123) == pytest.approx(dormant_stddev(beta))

    # episodes: snapshots of the 2 best returns
    assert agent.observe_episode(5.0, 10)["mentor_snapshots"] == 1.0
    agent.observe_episode(3.0, 20)
    out = agent.observe_episode(1.0, 30)
    assert out == {"mentor_snapshots": 2.0, "mentor_snapshot_mean_return": 4.0}

    assert len(agent.actor_opt.state) > 0 and len(agent.critic_opt.state) > 0
    m2 = agent.update(make_batch(1), step=12)
    assert m2["mentor_perturbs"] == 1.0
    alpha = m2["mentor_perturb_alpha"]
    assert alpha == pytest.approx(min(max(0.2, 1 - 2 * m2["dormant_ratio"]), 1.0))
    # the authors' code resets every optimizer (encoder, actor, critic, value predictor) at a perturbation
    perturbed = perturbable_params({"actor": agent.actor, "critic": agent.critic})
    assert "actor.policy.2.experts.0.weight" in perturbed
    assert len(agent.actor_opt.state) == 0 and len(agent.critic_opt.state) == 0


def test_perturb_resets_all_optimizer_state_by_default():
    """MENTOR's perturb(): utils.perturb(..., optimizer) sets optimizer.state = defaultdict(dict) for the encoder,
    actor, critic and value-predictor optimizers -- not only the perturbed layers' moments."""
    assert MentorConfig().reset_optimizer == "all"
    agent = make_agent(MentorConfig(moe=TINY_MOE, snapshots=2, perturb_interval=2, perturb_nets=("actor",)),
                       value_blend="expectile")
    agent.update(make_batch(0), step=1)
    agent.observe_episode(1.0, 1)
    kept = [agent.actor.trunk[1].weight, *agent.encoder.parameters(), *agent.critic.parameters()]
    assert all(p in agent.actor_opt.state or p in agent.critic_opt.state for p in kept)
    hooks, agent.update_hooks = agent.update_hooks, []
    agent.update(make_batch(1), step=2)  # the update's own steps, then the perturbation by hand
    for h in hooks:
        h(agent, 2)
    assert len(agent.actor_opt.state) == 0 and len(agent.critic_opt.state) == 0


def test_perturbation_mixes_towards_the_snapshots():
    """alpha_min = alpha_max = 0.2 forces alpha = 0.2; two identical snapshots (std 0) of the initial weights:
    after the perturbation, weights = 0.2 * trained + 0.8 * initial."""
    agent = make_agent(MentorConfig(moe=TINY_MOE, snapshots=2, perturb_interval=2, alpha_max=0.2))
    snap = {k: p.detach().clone() for k, p in perturbable_params({"actor": agent.actor}).items()}
    agent.observe_episode(1.0, 1)  # snapshot of the initial weights (twice: std 0)
    agent.observe_episode(2.0, 2)
    agent.update(make_batch(0), step=1)
    # capture the weights right before the perturbation: run the second update's hooks by hand
    hooks, agent.update_hooks = agent.update_hooks, []
    agent.update(make_batch(1), step=2)
    trained = {k: p.detach().clone() for k, p in perturbable_params({"actor": agent.actor}).items()}
    out = {}
    for h in hooks:
        out.update(h(agent, 2) or {})
    assert out["mentor_perturb_alpha"] == pytest.approx(0.2)
    for k, p in perturbable_params({"actor": agent.actor}).items():
        torch.testing.assert_close(p.detach(), 0.2 * trained[k] + 0.8 * snap[k])


def test_perturb_resets_only_the_perturbed_nets_optimizer_state_when_asked():
    agent = make_agent(MentorConfig(moe=TINY_MOE, snapshots=2, perturb_interval=2, perturb_nets=("actor",),
                                    reset_optimizer="perturbed"))
    agent.update(make_batch(0), step=1)
    agent.observe_episode(1.0, 1)
    critic_state = {p: s["exp_avg"].clone() for p, s in agent.critic_opt.state.items()}
    agent.update(make_batch(1), step=2)
    assert agent.actor.policy[0].weight not in agent.actor_opt.state
    assert set(agent.critic_opt.state) == set(critic_state)  # the critic kept its moments (and stepped)


def test_perturb_skipped_without_snapshots_and_schedule_exploration_kept():
    agent = make_agent(exploration="schedule", stddev_schedule="0.3")
    assert agent.stddev(5) == pytest.approx(0.3)
    agent.update(make_batch(0), step=1)
    w = agent.actor.policy[0].weight.detach().clone()
    m = agent.update(make_batch(1), step=2)
    assert m["mentor_perturb_skipped"] == 1.0
    assert "dormant_ratio" in m  # measured for alpha even without dormant exploration
    assert agent.stddev(5) == pytest.approx(0.3)
    assert not torch.equal(agent.actor.policy[0].weight, w)  # the update itself ran


def test_moe_on_actor_and_critic_and_moe_alone():
    agent = make_agent(moe="actor+critic", exploration="schedule", perturb="none")
    assert isinstance(agent.critic.q[2], MoE) and isinstance(agent.target_critic.q[2], MoE)
    assert agent.critic.q[2].num_members == agent.cfg.num_q
    m = agent.update(make_batch(0), step=1)
    assert {"moe_loss", "moe_critic_loss", "moe_critic_load_var"} <= set(m)
    assert "dormant_ratio" not in m and agent.stddev(0) == pytest.approx(0.2)
    assert all(math.isfinite(v) for v in m.values())


def test_moe_aux_loss_trains_the_gate():
    """The actor's gate gets gradient from the entropy term: with aux_weight 0 vs 1 its update differs."""
    grads = []
    for w in (0.0, 1.0):
        moe_cfg = MoEConfig(num_experts=4, top_k=2, expert_hidden=8, gate_hidden=8, gate_dropout=0.0, aux_weight=w)
        agent = make_agent(MentorConfig(moe=moe_cfg), exploration="schedule", perturb="none")
        agent.update(make_batch(0), step=1)
        grads.append(agent.actor.policy[2].gate[3].weight.detach().clone())
    assert not torch.equal(grads[0], grads[1])


def test_state_dict_round_trip_resumes_exactly():
    agent = make_agent()
    agent.update(make_batch(0), step=1)
    agent.observe_episode(2.0, 1)
    agent.observe_episode(4.0, 2)
    state = agent.state_dict()
    assert state["mech"]["mentor_task_perturb"]["store"]["count"] == 2

    # through the checkpoint format (tensors + JSON tree), as a resumed run reads it
    tensors, tree = flatten_state(state)
    state = unflatten_state(json.loads(json.dumps(tree)), tensors)
    clone = make_agent()
    clone.load_state_dict(state)
    assert clone.stddev(0) == pytest.approx(agent.stddev(0))
    for a in (agent, clone):
        torch.manual_seed(7)
        a.update(make_batch(1), step=2)  # perturbs (interval 2) from the restored snapshots
        a.observe_episode(3.0, 3)
        a.update(make_batch(2), step=3)
    for (n, p), q in zip(agent.actor.named_parameters(), clone.actor.parameters()):
        assert torch.equal(p, q), n
    for p, q in zip(agent.critic.parameters(), clone.critic.parameters()):
        assert torch.equal(p, q)
    s1, s2 = agent.state_dict()["mech"], clone.state_dict()["mech"]
    assert s1["mentor_task_perturb"]["perturbs"] == s2["mentor_task_perturb"]["perturbs"] == 1
    assert torch.equal(s1["mentor_task_perturb"]["store"]["returns"], s2["mentor_task_perturb"]["store"]["returns"])


def test_mentor_preset_shares_the_dormant_tracker_with_drm_and_perturbs_its_value_net():
    from pixelrl.agents import make_agent as make_registered
    from pixelrl.mechanisms.dormant import DormantTracker

    overrides = dict(batch_size=B, feature_dim=8, hidden_dim=16, num_seed_steps=0, lr=1e-3, value_blend="expectile",
                     mentor=MentorConfig(moe=TINY_MOE, snapshots=2, perturb_interval=2))
    torch.manual_seed(0)
    agent = make_registered("mentor", gym.spaces.Box(-1, 1, (OBS_DIM,), np.float32),
                            gym.spaces.Box(-1, 1, (ACT_DIM,), np.float32), overrides)
    cfg = agent.cfg
    assert (cfg.moe, cfg.exploration, cfg.perturb, cfg.actor_grad_clip) == ("actor", "dormant", "task", 0.001)
    trackers = [h for h in agent.update_hooks if isinstance(getattr(h, "__self__", None), DormantTracker)]
    assert len(trackers) == 1  # DrM's log_dormant / value blend and MENTOR read the same measurement
    agent.observe_episode(1.0, 1)
    store = agent.state_dict()["mech"]["mentor_task_perturb"]["store"]
    assert any(k.startswith("drm_value.") for k in store["params"])
    agent.update(make_batch(0), step=1)
    m = agent.update(make_batch(1), step=2)
    assert m["mentor_perturbs"] == 1.0 and "drm_lambda" in m
    assert agent.stddev(0) == pytest.approx(dormant_stddev(m["dormant_ratio"]))


def test_eval_actions_are_deterministic_with_moe():
    agent = make_agent()
    obs = np.linspace(-1, 1, OBS_DIM).astype(np.float32)
    a1, a2 = (agent.act(obs, step=100, eval_mode=True) for _ in range(2))
    assert np.array_equal(a1, a2)
