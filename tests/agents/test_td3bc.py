import numpy as np
import pytest
import torch

import pixelrl.agents.td3bc as td3bc_mod
from pixelrl.agents.presets import task_preset
from pixelrl.agents.td3bc import TD3BCAgent, TD3BCConfig, preset, td3bc_actor_loss
from pixelrl.errors import ConfigError

from helpers import (
    Bandit,
    act_space,
    dict_space,
    fields_documented,
    params,
    pixel_space,
    random_batch,
    same,
    state_space,
    through_checkpoint,
    tiny_agent,
)


def make(space=None, seed=0, **kw) -> TD3BCAgent:
    return tiny_agent(TD3BCAgent, TD3BCConfig, space, seed, **kw)


# ---------------------------------------------------------------------------------------------------------- config


def test_every_config_field_documented():
    fields_documented(td3bc_mod, "TD3BCConfig")


def test_published_defaults():
    c = TD3BCConfig()
    assert (c.alpha, c.actor_update_every, c.stddev_schedule, c.stddev_clip) == (2.5, 2, "0.2", 0.5)
    assert (c.lr, c.batch_size, c.hidden_dim, c.discount, c.critic_target_tau) == (3e-4, 256, 256, 0.99, 0.005)
    assert (c.obs_norm, c.target_actor, c.expl_noise, c.num_seed_steps, c.nstep) == (True, True, 0.1, 0, 1)


@pytest.mark.parametrize("kw", [dict(alpha=0.0), dict(alpha=float("nan")), dict(actor_update_every=0),
                                dict(expl_noise=-0.1), dict(exploration="awakened"), dict(perturb="task")])
def test_bad_config_raises(kw):
    with pytest.raises(ConfigError):
        TD3BCConfig(**kw)


def test_preset_undoes_drqv2_task_preset():
    task = {k: v for k, v in task_preset("dmc/walker-walk").items() if k != "frames"}
    cfg = TD3BCConfig(**{**task, **preset("dmc/walker-walk")})
    assert (cfg.stddev_schedule, cfg.nstep, cfg.batch_size, cfg.lr) == ("0.2", 1, 256, 3e-4)


# ---------------------------------------------------------------------------------------------------------- math


def test_lambda_normalisation_by_hand():
    q = torch.tensor([[1.0], [-3.0]], requires_grad=True)
    pi = torch.tensor([[0.5], [0.0]], requires_grad=True)
    a = torch.zeros(2, 1)
    loss, lam = td3bc_actor_loss(q, pi, a, alpha=2.5)
    assert lam.item() == pytest.approx(2.5 / 2.0)  # alpha / mean|Q|
    assert loss.item() == pytest.approx(-1.25 * -1.0 + (0.25 + 0.0) / 2)
    loss.backward()
    # lambda is a constant: dL/dq = -lambda / B for every sample (no gradient through mean|Q|)
    assert torch.allclose(q.grad, torch.full((2, 1), -1.25 / 2))
    assert torch.allclose(pi.grad, torch.tensor([[0.5], [0.0]]))  # d mean((pi - a)^2) / d pi = 2 (pi - a) / B
    # scale-free: multiplying Q by 100 leaves the Q term's value unchanged
    loss100, _ = td3bc_actor_loss(100 * q.detach(), pi.detach(), a, alpha=2.5)
    assert loss100.item() == pytest.approx(loss.item())


# ---------------------------------------------------------------------------------------------------------- update


def test_policy_delay_and_target_nets():
    agent = make()
    batch = random_batch(state_space())
    actor0, target_actor0, target_critic0 = params(agent.actor), params(agent.target_actor), params(agent.target_critic)
    m1 = agent.update(batch, step=0)  # TD3: the first update is a critic-only one
    assert "actor_loss" not in m1 and same(actor0, agent.actor) and same(target_critic0, agent.target_critic)
    m2 = agent.update(batch, step=1)
    assert {"actor_loss", "lambda", "bc_mse"} <= set(m2) and not same(actor0, agent.actor)
    # target actor moved by tau towards the updated actor
    for t0, t, p in zip(target_actor0, agent.target_actor.parameters(), agent.actor.parameters()):
        assert torch.allclose(t, t0 + 0.005 * (p - t0), atol=1e-7)
    assert not same(target_critic0, agent.target_critic)


@pytest.mark.parametrize("use_target", [True, False])
def test_td_target_uses_the_target_actor(use_target):
    agent = make(target_actor=use_target, stddev_schedule="0.0")
    batch = random_batch(state_space())
    feat = batch.next_obs.float()
    with torch.no_grad():
        y = agent.critic_target(batch, feat, torch.zeros(()))
        for p in agent.actor.parameters():
            p.add_(torch.randn_like(p))
        y2 = agent.critic_target(batch, feat, torch.zeros(()))
        a_next = (agent.target_actor if use_target else agent.actor)(feat)
        expected = batch.reward + batch.discount * agent.target_critic.values(feat, a_next).min(dim=0).values
    assert torch.equal(y, y2) == use_target
    assert torch.allclose(y2, expected, atol=1e-6)


def test_learns_the_better_action_on_a_bandit():
    bandit = Bandit()
    torch.manual_seed(0)
    agent = TD3BCAgent(state_space(), act_space(1), TD3BCConfig(hidden_dim=64, lr=1e-3, batch_size=128))
    for k in range(500):
        agent.update(bandit.sample(), step=k)
    picked = bandit.policy_action(agent)
    data_mean = bandit.action.mean().item()
    # dataset mean ~0 (reward 0); the Q term pulls towards 0.5 (reward 1), the BC term back towards the data
    assert abs(picked - 0.5) < abs(data_mean - 0.5) - 0.25, picked


def test_obs_norm_applies_to_states_in_update_and_act():
    agent = make()
    mean, std = np.array([1.0, -2.0, 3.0]), np.array([2.0, 0.5, 1.0])
    agent.set_obs_normalizer(mean, std)
    batch = random_batch(state_space())
    obs, _ = agent._augment(batch.obs, batch.next_obs)
    expected = (batch.obs - torch.tensor(mean).float()) / (torch.tensor(std).float() + 1e-3)
    assert torch.allclose(obs, expected)
    raw = np.array([3.0, -1.0, 5.0], np.float32)
    normed = (torch.tensor(raw) - torch.tensor(mean).float()) / (torch.tensor(std).float() + 1e-3)
    with torch.no_grad():
        direct = agent.actor(normed[None])
    assert np.allclose(agent.act(raw, step=0, eval_mode=True), direct[0].numpy(), atol=1e-6)
    off = make(obs_norm=False)
    off.set_obs_normalizer(mean, std)  # stored, but obs_norm=False leaves states as they are
    assert torch.equal(off._augment(batch.obs, batch.next_obs)[0], batch.obs)


@pytest.mark.parametrize("space_fn", [pixel_space, dict_space])
def test_pixel_update_with_augmentation(space_fn):
    space = space_fn()
    batch = random_batch(space)

    def run(seed, pad):
        agent = make(space, augment_pad=pad, stddev_schedule="0.0", actor_update_every=1)
        enc = params(agent.encoder)
        torch.manual_seed(seed)
        m = agent.update(batch, step=0)
        assert not same(enc, agent.encoder)
        return m["critic_loss"], m["actor_loss"]

    assert run(1, 0) == run(2, 0)
    assert run(1, 4) != run(2, 4)


def test_state_dict_round_trip_gives_identical_updates():
    a = make()
    a.set_obs_normalizer(np.full(3, 0.5), np.full(3, 2.0))
    batch = random_batch(state_space())
    for i in range(3):
        a.update(batch, step=i)
    state = through_checkpoint(a.state_dict())
    assert {"td3bc", "obs_norm"} <= set(state["mech"])
    b = make(seed=99)
    b.load_state_dict(state)
    for i in (3, 4):  # a critic-only update, then an actor + target one
        torch.manual_seed(i)
        ma = a.update(batch, step=i)
        torch.manual_seed(i)
        mb = b.update(batch, step=i)
        assert ma == mb
    for na, nb in ((a.actor, b.actor), (a.target_actor, b.target_actor), (a.critic, b.critic)):
        assert all(torch.equal(x, y) for x, y in zip(na.parameters(), nb.parameters()))


def test_act_exploration_noise_and_seed_steps():
    agent = make()
    obs = np.zeros(3, np.float32)
    mu = agent.act(obs, step=0, eval_mode=True)
    torch.manual_seed(0)
    noisy = np.stack([agent.act(obs, step=0, eval_mode=False) for _ in range(2000)])
    assert np.allclose(noisy.mean(0), mu, atol=0.02) and np.allclose(noisy.std(0), 0.1, atol=0.01)
    seeded = make(num_seed_steps=5)
    uniform = np.stack([seeded.act(obs, step=4, eval_mode=False) for _ in range(200)])
    assert uniform.min() < -0.8 and uniform.max() > 0.8
    assert np.array_equal(seeded.act(obs, step=4, eval_mode=True), seeded.act(obs, step=4, eval_mode=True))
