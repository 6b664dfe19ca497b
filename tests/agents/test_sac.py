import ast
import dataclasses
import inspect
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents.sac import STATE_OVERRIDES, SACAgent, SACConfig
from pixelrl.errors import ConfigError
from pixelrl.mechanisms.hl_gauss import HLGaussConfig, HLGaussHead
from pixelrl.nets.gaussian_actor import GaussianActor, tanh_gaussian_log_prob
from pixelrl.utils.checkpoint import flatten_state, unflatten_state

from .conftest import ACTION_DIM, make_batch, pixel_space

STATE_DIM = 5


def state_space():
    return gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)


def act_space():
    return gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def tiny_sac(**kw) -> SACConfig:
    base = dict(batch_size=8, feature_dim=8, hidden_dim=32, encoder_channels=(8, 8), encoder_strides=(2, 1),
                num_seed_steps=0, lr=1e-3, temperature_lr=1e-2, actor_update_every=1, target_update_every=1)
    base.update(kw)
    return SACConfig(**base)


def make_sac(obs_space=None, seed=0, **kw) -> SACAgent:
    torch.manual_seed(seed)
    return SACAgent(obs_space if obs_space is not None else state_space(), act_space(), tiny_sac(**kw))


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


# ---------------------------------------------------------------------------------------------------------- config


def test_every_config_field_documented():
    import pixelrl.agents.sac as mod

    tree = ast.parse(inspect.getsource(mod))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SACConfig")
    own = {
        a.target.id
        for a, b in zip(cls.body, cls.body[1:])
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)
    }
    declared = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}
    assert own == declared  # every field SAC adds or re-defaults has its own docstring


def test_drq_defaults():
    cfg = SACConfig()
    assert (cfg.lr, cfg.batch_size, cfg.nstep, cfg.update_every_steps, cfg.num_seed_steps) == (1e-3, 512, 1, 1, 1000)
    assert (cfg.init_temperature, cfg.temperature_lr, cfg.target_entropy) == (0.1, 1e-3, None)
    assert (cfg.log_std_min, cfg.log_std_max, cfg.actor_update_every, cfg.target_update_every) == (-10.0, 2.0, 2, 2)
    assert (cfg.critic_target_tau, cfg.hidden_dim, cfg.feature_dim, cfg.replay_capacity) == (0.01, 1024, 50, 100_000)
    state = SACConfig(**STATE_OVERRIDES)  # the state-SAC overrides are valid config values
    assert (state.lr, state.batch_size, state.hidden_dim, state.critic_target_tau) == (3e-4, 256, 256, 0.005)


@pytest.mark.parametrize(
    "kw",
    [dict(init_temperature=0.0), dict(temperature_lr=0.0), dict(log_std_min=2.0, log_std_max=-1.0),
     dict(actor_update_every=0), dict(target_update_every=0), dict(target_entropy=float("inf")),
     dict(exploration="awakened"), dict(exploration="dormant")],
)
def test_bad_config_raises(kw):
    with pytest.raises(ConfigError):
        SACConfig(**kw)


def test_agent_refuses_a_drqv2_config():
    from pixelrl.agents.drqv2 import DrQv2Config

    with pytest.raises(ConfigError, match="SACConfig"):
        SACAgent(state_space(), act_space(), DrQv2Config())


# ---------------------------------------------------------------------------------------------------------- policy


def test_log_prob_matches_brute_force_reference():
    torch.manual_seed(0)
    mean = torch.randn(64, 3, dtype=torch.float64)
    log_std = torch.empty(64, 3, dtype=torch.float64).uniform_(-2.0, 0.5)
    eps = torch.randn(64, 3, dtype=torch.float64)
    u = mean + log_std.exp() * eps
    ours = tanh_gaussian_log_prob(eps, log_std, u)
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(u) - torch.log(1 - torch.tanh(u) ** 2 + 1e-6)
    ref = ref.sum(-1, keepdim=True)
    # the reference's eps biases it by at most 3 * 1e-6 / min(1 - tanh^2); exact otherwise
    bound = 3 * 1e-6 / (1 - torch.tanh(u) ** 2).min() + 1e-9
    assert ours.shape == (64, 1)
    assert (ours - ref).abs().max() <= bound
    exact = torch.distributions.Normal(mean, log_std.exp()).log_prob(u) - torch.log(1 - torch.tanh(u) ** 2)
    assert torch.allclose(ours, exact.sum(-1, keepdim=True), atol=1e-9)


def test_actor_sample_uses_the_formula_and_bounds():
    torch.manual_seed(0)
    actor = GaussianActor(repr_dim=6, action_dim=3, feature_dim=8, hidden_dim=16, log_std_min=-5.0, log_std_max=2.0)
    feat = torch.randn(10, 6)
    eps = torch.randn(10, 3)
    a, logp = actor.sample(feat, noise=eps)
    mean, log_std = actor.dist_params(feat)
    assert (log_std >= -5.0).all() and (log_std <= 2.0).all()
    u = mean + log_std.exp() * eps
    assert torch.allclose(a, torch.tanh(u))
    assert torch.allclose(logp, tanh_gaussian_log_prob(eps, log_std, u))
    assert torch.allclose(actor(feat), torch.tanh(mean))  # forward = deterministic evaluation action


def test_log_prob_finite_at_saturation():
    eps = torch.zeros(4, 2)
    log_std = torch.full((4, 2), -10.0)
    u = torch.tensor([[20.0, -20.0], [50.0, 9.5], [-80.0, 12.0], [15.0, -15.0]], requires_grad=True)
    logp = tanh_gaussian_log_prob(eps, log_std, u)
    assert torch.isfinite(logp).all()
    # exact asymptote: log(1 - tanh(u)^2) -> 2 (log 2 - |u|)
    expected = (-log_std - 0.5 * math.log(2 * math.pi) - 2 * (math.log(2) - u.detach().abs())).sum(-1, keepdim=True)
    assert torch.allclose(logp.detach(), expected, atol=1e-4)
    logp.sum().backward()
    assert torch.isfinite(u.grad).all()
    # in float32 tanh saturates to exactly 1, where the textbook form clips at log(eps): ours does not
    naive = torch.log(1 - torch.tanh(torch.tensor(20.0)) ** 2 + 1e-6)
    assert naive == pytest.approx(math.log(1e-6), abs=1e-3)


def test_actions_in_bounds():
    torch.manual_seed(0)
    actor = GaussianActor(repr_dim=6, action_dim=3, feature_dim=8, hidden_dim=16)
    with torch.no_grad():
        actor.policy[-1].bias.fill_(30.0)  # push means and stds to the extremes
    a, logp = actor.sample(torch.randn(100, 6) * 10)
    assert (a.abs() <= 1.0).all() and torch.isfinite(logp).all()
    agent = make_sac()
    for step, eval_mode in [(0, False), (10, False), (10, True)]:
        act = agent.act(np.random.randn(STATE_DIM).astype(np.float32), step=step, eval_mode=eval_mode)
        assert act.shape == (ACTION_DIM,) and act.dtype == np.float32 and np.all(np.abs(act) <= 1.0)


def test_act_seed_steps_sampling_and_eval():
    agent = make_sac(num_seed_steps=5)
    obs = np.random.randn(STATE_DIM).astype(np.float32)
    # eval: deterministic tanh(mean)
    e1, e2 = agent.act(obs, step=0, eval_mode=True), agent.act(obs, step=0, eval_mode=True)
    np.testing.assert_array_equal(e1, e2)
    feat = agent.encoder(torch.as_tensor(obs).unsqueeze(0))
    np.testing.assert_allclose(e1, agent.actor(feat)[0].detach().numpy(), rtol=1e-6)
    # training after the seed steps: a sample of pi around the mean (different draws)
    torch.manual_seed(1)
    s = np.stack([agent.act(obs, step=10, eval_mode=False) for _ in range(50)])
    assert s.std(0).min() > 1e-3
    # seed steps: uniform in [-1, 1], independent of the policy
    torch.manual_seed(2)
    u = np.stack([agent.act(obs, step=0, eval_mode=False) for _ in range(400)])
    assert abs(u.mean()) < 0.1 and u.std() == pytest.approx(1 / math.sqrt(3), abs=0.05)


# ---------------------------------------------------------------------------------------------------------- update


def test_target_is_soft_bellman_backup():
    agent = make_sac()
    batch = make_batch(state_space(), n=8)
    next_feat = agent.encoder(batch.next_obs.float())
    torch.manual_seed(3)
    with torch.no_grad():
        y = agent.critic_target(batch, next_feat, torch.tensor(0.0))
    torch.manual_seed(3)
    with torch.no_grad():
        a, logp = agent.actor.sample(next_feat)
        q = agent.target_critic.values(next_feat, a).min(0).values
    expected = batch.reward + batch.discount * (q - agent.alpha * logp)
    assert torch.allclose(y, expected, atol=1e-6)
    assert not torch.allclose(y, batch.reward + batch.discount * q)  # the entropy term is there


@pytest.mark.parametrize("obs", ["state", "pixels"])
def test_update_changes_actor_critic_and_alpha(obs):
    space = state_space() if obs == "state" else pixel_space()
    agent = make_sac(space)
    actor0, critic0, enc0 = snapshot(agent.actor), snapshot(agent.critic), snapshot(agent.encoder)
    alpha0 = agent.alpha.item()
    m = agent.update(make_batch(space, n=8), step=0)
    for k in ("critic_loss", "actor_loss", "actor_entropy", "alpha", "alpha_loss"):
        assert math.isfinite(m[k]), k
    assert changed(actor0, agent.actor) and changed(critic0, agent.critic)
    assert agent.alpha.item() != alpha0
    if obs == "pixels":
        assert changed(enc0, agent.encoder)


def test_actor_and_target_update_intervals():
    agent = make_sac(actor_update_every=2, target_update_every=2)
    batch = make_batch(state_space(), n=8)
    agent.update(batch, step=0)  # update 0: critic, actor, alpha, target
    actor1, target1, alpha1 = snapshot(agent.actor), snapshot(agent.target_critic), agent.alpha.item()
    critic1 = snapshot(agent.critic)
    m = agent.update(batch, step=1)  # update 1: critic only
    assert changed(critic1, agent.critic)
    assert not changed(actor1, agent.actor) and not changed(target1, agent.target_critic)
    assert agent.alpha.item() == alpha1 and "actor_loss" not in m
    m = agent.update(batch, step=2)  # update 2: everything again
    assert changed(actor1, agent.actor) and changed(target1, agent.target_critic) and "actor_loss" in m


@pytest.mark.parametrize("target_entropy, grows", [(10.0, True), (-100.0, False)])
def test_temperature_moves_toward_the_entropy_target(target_entropy, grows):
    """Entropy below the target -> alpha grows; above -> alpha shrinks."""
    agent = make_sac(target_entropy=target_entropy, init_temperature=0.5)
    batch = make_batch(state_space(), n=8)
    alphas = [agent.alpha.item()]
    for i in range(5):
        agent.update(batch, step=i)
        alphas.append(agent.alpha.item())
    diffs = np.diff(alphas)
    assert (diffs > 0).all() if grows else (diffs < 0).all()


def test_temperature_loss_gradient_sign():
    agent = make_sac(target_entropy=-2.0)
    for entropy, sign in [(-5.0, -1.0), (3.0, 1.0)]:
        agent.alpha_opt.zero_grad()
        agent._temperature_loss(torch.tensor(entropy)).backward()
        assert math.copysign(1.0, agent.log_alpha.grad.item()) == sign


def test_default_target_entropy_is_minus_action_dim():
    assert make_sac().target_entropy == -float(ACTION_DIM)
    assert make_sac(target_entropy=-0.5).target_entropy == -0.5


# ---------------------------------------------------------------------------------------------------------- checkpoint


def test_state_dict_round_trip_resumes_exactly():
    batch = make_batch(state_space(), n=8)
    a = make_sac(seed=0, actor_update_every=2, target_update_every=2)
    for i in range(3):
        a.update(batch, step=i)
    tensors, tree = flatten_state(a.state_dict())  # through the checkpoint format (no pickle)
    state = unflatten_state(tree, tensors)
    assert "sac" in state["mech"]

    b = make_sac(seed=123, actor_update_every=2, target_update_every=2)
    assert not torch.equal(b.log_alpha, a.log_alpha)  # a's alpha has moved away from init_temperature
    b.load_state_dict(state)
    assert torch.equal(b.log_alpha, a.log_alpha) and b.num_updates == a.num_updates
    assert b.alpha_opt.state_dict()["state"][0]["exp_avg"].equal(a.alpha_opt.state_dict()["state"][0]["exp_avg"])

    torch.manual_seed(7)
    ma = a.update(batch, step=3)
    torch.manual_seed(7)
    mb = b.update(batch, step=3)
    assert ma == mb
    for x, y in zip(a.actor.parameters(), b.actor.parameters()):
        assert torch.equal(x, y)
    assert torch.equal(a.log_alpha, b.log_alpha)


# ---------------------------------------------------------------------------------------------------------- composition


def test_sac_with_hl_gauss_critic():
    cfg_kw = dict(critic="hl-gauss", hl_gauss=HLGaussConfig(num_bins=21, v_min=-10.0, v_max=210.0))
    agent = make_sac(**cfg_kw)
    assert isinstance(agent.critic.head, HLGaussHead) and isinstance(agent.actor, GaussianActor)
    batch = make_batch(state_space(), n=8)
    critic0 = snapshot(agent.critic)
    losses = [agent.update(batch, step=i)["critic_loss"] for i in range(10)]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert changed(critic0, agent.critic)
    q = agent.critic.values(agent.encoder(batch.obs), batch.action)
    assert q.shape == (2, 8, 1) and ((q >= -10) & (q <= 210)).all()


def test_sac_bf16_update_runs():
    agent = make_sac(pixel_space(), precision="bf16")
    m = agent.update(make_batch(pixel_space(), n=8), step=0)
    assert all(math.isfinite(v) for v in m.values())


def test_registry_builds_sac():
    from pixelrl.agents import AGENTS, make_agent

    assert "sac" in AGENTS  # an agent dropping out of the registry fails here, not as a skip
    agent = make_agent("sac", state_space(), act_space(), {"batch_size": 8, "hidden_dim": 16, "feature_dim": 8})
    assert isinstance(agent, SACAgent) and isinstance(agent.actor, GaussianActor)


def test_sac_with_mentor_moe_actor():
    from pixelrl.nets.moe import MoE

    agent = make_sac(moe="actor")
    assert any(isinstance(m, MoE) for m in agent.actor.modules())
    actor0 = snapshot(agent.actor)
    m = agent.update(make_batch(state_space(), n=8), step=0)
    assert changed(actor0, agent.actor)
    assert any(k.startswith("moe") for k in m), sorted(m)  # MENTOR's MoE auxiliary loss joined the actor loss
    assert all(math.isfinite(v) for v in m.values())


@pytest.mark.parametrize("kw", [dict(value_blend="expectile", log_dormant=True), dict(perturb="dormant")])
def test_sac_with_drm_mechanisms(kw):
    """DrM's pieces act through the core's hooks, so they wrap SAC's soft target / perturb its Gaussian actor."""
    agent = make_sac(**kw)
    batch = make_batch(state_space(), n=8)
    for i in range(2):
        m = agent.update(batch, step=i)
    assert "dormant_ratio" in m and all(math.isfinite(v) for v in m.values())
    other = make_sac(seed=5, **kw)
    other.load_state_dict(agent.state_dict())
    assert torch.equal(other.log_alpha, agent.log_alpha)


def test_sac_with_drm_value_blend_uses_the_formula():
    """SAC + DrM's expectile value blend: ``y = (1 - lambda) y_soft + lambda (r + d V(s'))`` with SAC's soft target
    ``y_soft`` (entropy term included) and lambda from the dormant ratio, on mixed discounts (0, 0.99^3)."""
    from pixelrl.mechanisms.dormant import dormant_tracker

    from helpers import mixed_discount_batch

    agent = make_sac(value_blend="expectile", log_dormant=True)
    d = agent.cfg.drm
    dormant_tracker(agent, threshold=d.dormant_threshold, mode=d.dormant_mode).beta = 0.2  # lambda = 0.3
    assert agent.update_hooks[-1](agent, 2)["drm_lambda"] == pytest.approx(0.3)
    vnet = next(e.module for e in agent.aux_losses if e.name == "drm_value")
    batch = mixed_discount_batch(state_space(), n=8)
    next_feat = agent.encoder(batch.next_obs.float())
    with torch.no_grad():
        torch.manual_seed(5)
        y = agent.critic_target(batch, next_feat, torch.tensor(0.0))
        torch.manual_seed(5)
        y_soft = SACAgent.critic_target(agent, batch, next_feat, torch.tensor(0.0))
        torch.manual_seed(5)
        a, logp = agent.actor.sample(next_feat)
        soft = batch.reward + batch.discount * (agent.target_critic.values(next_feat, a).min(0).values
                                                - agent.alpha * logp)
        y_v = batch.reward + batch.discount * vnet(next_feat)
    torch.testing.assert_close(y_soft, soft, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(y, 0.7 * soft + 0.3 * y_v, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(y, soft)


def test_learns_a_continuous_bandit():
    """One-step task (discount 0), reward 1 - (a - 0.5)^2: the evaluation action moves to the optimum."""
    from pixelrl.data.batch import Batch

    torch.manual_seed(0)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    agent = SACAgent(obs_space, gym.spaces.Box(-1.0, 1.0, (1,), np.float32),
                     tiny_sac(batch_size=64, hidden_dim=32, lr=3e-3, temperature_lr=3e-3))
    rng = np.random.default_rng(0)
    before = agent.act(rng.standard_normal(2).astype(np.float32), step=0, eval_mode=True)[0]
    for i in range(300):
        obs = torch.randn(64, 2)
        with torch.no_grad():
            a, _ = agent.actor.sample(agent.encoder(obs))
        a = torch.where(torch.rand(64, 1) < 0.5, torch.rand(64, 1) * 2 - 1, a)  # half the data uniform
        agent.update(Batch(obs, a, 1 - (a - 0.5) ** 2, torch.zeros(64, 1), torch.randn(64, 2)), step=i)
    after = [agent.act(rng.standard_normal(2).astype(np.float32), step=0, eval_mode=True)[0] for _ in range(20)]
    assert abs(before - 0.5) > 0.3
    assert abs(np.mean(after) - 0.5) < 0.15
