import math

import numpy as np
import pytest
import torch

import pixelrl.agents.iql as iql_mod
from pixelrl.agents.iql import (
    IQLAgent,
    IQLConfig,
    advantage_weights,
    awr_loss,
    cosine_lr,
    expectile_loss,
    preset,
)
from pixelrl.agents.presets import task_preset
from pixelrl.errors import ConfigError
from pixelrl.mechanisms.hl_gauss import HLGaussConfig

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


def make(space=None, seed=0, action_dim=2, **kw) -> IQLAgent:
    return tiny_agent(IQLAgent, IQLConfig, space, seed, action_dim, **kw)


# ---------------------------------------------------------------------------------------------------------- config


def test_every_config_field_documented():
    fields_documented(iql_mod, "IQLConfig")


def test_published_locomotion_defaults():
    c = IQLConfig()
    assert (c.expectile, c.beta, c.max_weight, c.dropout) == (0.7, 3.0, 100.0, 0.0)
    assert (c.lr, c.batch_size, c.hidden_dim, c.discount, c.critic_target_tau) == (3e-4, 256, 256, 0.99, 0.005)
    assert (c.log_std_min, c.log_std_max, c.actor_lr_schedule, c.lr_decay_steps) == (-5.0, 2.0, "cosine", 1_000_000)
    assert (c.nstep, c.num_seed_steps, c.obs_norm, c.state_trunk) == (1, 0, False, False)


@pytest.mark.parametrize("kw", [
    dict(expectile=1.0), dict(expectile=0.0), dict(beta=-1.0), dict(beta=float("inf")), dict(max_weight=0.0),
    dict(dropout=1.0), dict(log_std_min=2.0, log_std_max=-5.0), dict(actor_lr_schedule="linear"),
    dict(lr_decay_steps=0), dict(reward_scale=0.0), dict(reward_shift=float("nan")),
    dict(reward_shift=-1.0, nstep=3), dict(exploration="awakened"), dict(value_blend="expectile"),
    dict(perturb="dormant"), dict(moe="actor"),
])
def test_bad_config_raises(kw):
    with pytest.raises(ConfigError):
        IQLConfig(**kw)


def test_agent_refuses_another_config():
    from pixelrl.agents.drqv2 import DrQv2Config

    with pytest.raises(ConfigError, match="IQLConfig"):
        IQLAgent(state_space(), act_space(), DrQv2Config())


@pytest.mark.parametrize("env_id, expect", [
    ("gym/AntMaze_UMaze-v5", dict(expectile=0.9, beta=10.0, reward_shift=-1.0)),
    ("gym/FrankaKitchen-v1", dict(expectile=0.7, beta=0.5, dropout=0.1)),
    ("gym/AdroitHandDoor-v1", dict(expectile=0.7, beta=0.5, dropout=0.1)),
    ("gym/Hopper-v5", dict(expectile=0.7, beta=3.0, normalize_returns=True)),
    ("gym/HalfCheetah-v5", dict(normalize_returns=True)),
    ("dmc/walker-walk", dict(nstep=1, batch_size=256)),  # re-asserts what DrQ-v2's walker preset changes
    ("metaworld/door-open", dict(dropout=IQLConfig.dropout, beta=IQLConfig.beta)),  # not Adroit's door
])
def test_preset_by_domain(env_id, expect):
    over = preset(env_id, "state")
    task = {k: v for k, v in task_preset(env_id).items() if k != "frames"}  # 'frames' is the trainer's
    cfg = IQLConfig(**{**task, **over})  # the order the trainer applies them in
    for k, v in expect.items():
        assert getattr(cfg, k) == v, k


# ---------------------------------------------------------------------------------------------------------- math


def test_expectile_loss_by_hand():
    v = torch.zeros(4, 1)
    q = torch.tensor([[1.0], [-1.0], [2.0], [-2.0]])
    # u = q - v: weights tau where u > 0, 1 - tau where u < 0
    expected = (0.7 * 1 + 0.3 * 1 + 0.7 * 4 + 0.3 * 4) / 4
    assert expectile_loss(v, q, 0.7).item() == pytest.approx(expected)
    assert expectile_loss(v, q, 0.5).item() == pytest.approx(0.5 * (1 + 1 + 4 + 4) / 4)  # tau 0.5: half the MSE
    # tau > 0.5 pulls V above the mean of Q: the minimiser of the loss over a constant V
    grid = torch.linspace(-2, 2, 4001)
    losses = torch.stack([expectile_loss(torch.full((4, 1), float(c)), q, 0.9) for c in grid])
    assert grid[losses.argmin()] > q.mean()


def test_advantage_weights_by_hand_and_clipped_at_100():
    q = torch.tensor([[0.0], [1.0], [-1.0], [5.0], [1e4]])
    v = torch.zeros(5, 1)
    w = advantage_weights(q, v, beta=3.0, max_weight=100.0)
    assert torch.allclose(w, torch.tensor([[1.0], [math.exp(3.0)], [math.exp(-3.0)], [100.0], [100.0]]))
    assert torch.isfinite(w).all()  # exp(3e4) never materialises
    assert torch.equal(advantage_weights(q, v, beta=0.0), torch.ones(5, 1))  # beta 0: behaviour cloning
    logp = torch.tensor([[-1.0], [-2.0]], requires_grad=True)
    weights = torch.tensor([[2.0], [100.0]], requires_grad=True)
    loss = awr_loss(logp, weights)
    assert loss.item() == pytest.approx((2 * 1 + 100 * 2) / 2)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-1.0], [-50.0]])) and weights.grad is None


def test_cosine_lr_matches_optax_cosine_decay():
    assert cosine_lr(3e-4, 0, 100) == pytest.approx(3e-4)
    assert cosine_lr(3e-4, 50, 100) == pytest.approx(1.5e-4)
    assert cosine_lr(3e-4, 100, 100) == pytest.approx(0.0) and cosine_lr(3e-4, 500, 100) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------------------- update


def _set_value_constant(agent: IQLAgent, c: float) -> None:
    last = agent.value.v[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(c)


def test_q_target_uses_v_of_next_state_not_q():
    agent = make()
    batch = random_batch(state_space(), n=8)
    _set_value_constant(agent, 7.0)
    feat = batch.next_obs.float()
    with torch.no_grad():
        y = agent.critic_target(batch, feat, torch.zeros(()))
        for p in agent.target_critic.parameters():  # the target critic and the actor play no part
            p.add_(torch.randn_like(p))
        for p in agent.actor.parameters():
            p.add_(torch.randn_like(p))
        y2 = agent.critic_target(batch, feat, torch.zeros(()))
    assert torch.allclose(y, batch.reward + batch.discount * 7.0) and torch.equal(y, y2)
    # the update regresses Q on exactly that target (Q steps before V moves)
    m = agent.update(batch, step=0)
    assert m["critic_target_q"] == pytest.approx((batch.reward + 0.99 * 7.0).mean().item(), rel=1e-6)


def test_value_step_regresses_the_expectile_of_the_target_critic_min():
    agent = make(expectile=0.8)
    batch = random_batch(state_space(), n=16)
    feat = batch.obs.float()
    q = agent._target_q(feat, batch.action)
    qs = agent.target_critic.values(feat, batch.action)
    assert torch.equal(q, qs.min(dim=0).values)  # min over the ensemble of the *target* critic
    loss, _ = agent._value_loss(feat, q)
    assert loss.item() == pytest.approx(expectile_loss(agent.value(feat), q, 0.8).item())


def _two_pass_update(agent, batch, step):
    """The update with separate critic and value backward passes (the core's critic step, then V's)."""
    batch = agent._transform_reward(batch)
    feat, _ = agent._critic_step(batch, agent._zero, step)
    q = agent._target_q(feat, batch.action)
    loss, _ = agent._value_loss(feat, q)
    agent.value_opt.zero_grad(set_to_none=True)
    loss.backward()
    agent.value_opt.step()
    agent._policy_step(feat, batch.action, q, step)
    agent._target_step()
    agent.num_updates += 1


@pytest.mark.parametrize("space", [state_space, pixel_space])
def test_shared_critic_value_backward_equals_two_passes(space):
    joint, ref = make(space(), seed=3, reward_scale=2.0), make(space(), seed=3, reward_scale=2.0)
    for t in range(4):
        batch = random_batch(space(), n=16, seed=t)
        torch.manual_seed(t)  # the same augmentation draws for both
        joint.update(batch, step=t)
        torch.manual_seed(t)
        _two_pass_update(ref, batch, t)
    for name in ("encoder", "critic", "target_critic", "value", "actor"):
        assert same(params(getattr(ref, name)), getattr(joint, name)), name
    assert sum(p.abs().sum() for p in joint.value.parameters()) != sum(
        p.abs().sum() for p in make(space(), seed=3).value.parameters())  # V did move


def test_actor_cosine_schedule_and_constant():
    agent = make(lr_decay_steps=3)
    batch = random_batch(state_space())
    lrs = [agent.update(batch, step=i)["actor_lr"] for i in range(5)]
    assert lrs == pytest.approx([cosine_lr(1e-3, t, 3) for t in range(5)])
    before = params(agent.actor)
    agent.update(batch, step=5)  # lr 0: the policy is frozen
    assert same(before, agent.actor)
    const = make(actor_lr_schedule="constant")
    assert [const.update(batch, step=i)["actor_lr"] for i in range(3)] == pytest.approx([1e-3] * 3)


def test_reward_shift_and_return_normalisation():
    batch = random_batch(state_space())
    a = make(reward_shift=-1.0)
    _set_value_constant(a, 0.0)
    assert a.update(batch, step=0)["batch_reward"] == pytest.approx((batch.reward - 1).mean().item(), rel=1e-6)

    b = make(normalize_returns=True)
    with pytest.raises(ConfigError, match="set_dataset_returns"):
        b.update(batch, step=0)
    for bad in ([100.0], [3.0, 3.0], [0.0, float("nan")]):
        with pytest.raises(ConfigError):
            b.set_dataset_returns(bad)
    b.set_dataset_returns([10.0, 510.0, 260.0])  # range 500: rewards x 1000 / 500
    assert b.return_scale == pytest.approx(2.0)
    assert b.update(batch, step=0)["batch_reward"] == pytest.approx(2 * batch.reward.mean().item(), rel=1e-6)


def test_plain_mlps_on_states_and_trunk_on_pixels():
    s = make()
    for net in (s.critic, s.target_critic, s.value, s.actor):
        assert isinstance(net.trunk, torch.nn.Identity)
    assert s.critic.q[0].in_features == 3 + 2  # [state, action] straight into the MLP, as the authors
    t = make(state_trunk=True)
    assert isinstance(t.critic.trunk[1], torch.nn.LayerNorm) and isinstance(t.value.trunk[1], torch.nn.LayerNorm)
    p = make(pixel_space())
    assert isinstance(p.critic.trunk[1], torch.nn.LayerNorm) and isinstance(p.actor.trunk[1], torch.nn.LayerNorm)
    # the optimizer trains the rebuilt critic (not the discarded one)
    opt_params = {id(q) for g in s.critic_opt.param_groups for q in g["params"]}
    assert all(id(q) in opt_params for q in s.critic.parameters())
    assert not any(q.requires_grad for q in s.target_critic.parameters())


def test_learns_the_better_action_on_a_bandit():
    bandit = Bandit()
    torch.manual_seed(0)
    agent = IQLAgent(state_space(), act_space(1), IQLConfig(hidden_dim=64, lr=1e-3, batch_size=128,
                                                            actor_lr_schedule="constant"))
    for k in range(500):
        agent.update(bandit.sample(), step=k)
    picked = bandit.policy_action(agent)
    data_mean = bandit.action.mean().item()
    # the dataset's mean action is ~0 (reward 0); IQL moves towards the best action 0.5 (reward 1)
    assert abs(picked - 0.5) < abs(data_mean - 0.5) - 0.25, picked


@pytest.mark.parametrize("space_fn", [pixel_space, dict_space])
def test_pixel_update_with_augmentation(space_fn):
    space = space_fn()
    batch = random_batch(space)

    def run(seed, pad):
        agent = make(space, augment_pad=pad)
        before_enc = params(agent.encoder)
        torch.manual_seed(seed)
        m = agent.update(batch, step=0)
        assert not same(before_enc, agent.encoder)  # the critic loss trains the encoder
        return m["critic_loss"], m["value_loss"], m["actor_loss"]

    # without augmentation the update has no randomness; with it, the random shifts change every loss
    assert run(1, 0) == run(2, 0)
    assert run(1, 4) != run(2, 4)
    assert run(1, 4) == run(1, 4)


def test_state_dict_round_trip_gives_identical_updates():
    a = make(normalize_returns=True, obs_norm=True)
    a.set_dataset_returns([0.0, 100.0])
    a.set_obs_normalizer(np.full(3, 0.5), np.full(3, 2.0))
    batch = random_batch(state_space())
    for i in range(3):
        a.update(batch, step=i)
    state = through_checkpoint(a.state_dict())
    assert {"iql", "obs_norm"} <= set(state["mech"])

    b = make(seed=123, normalize_returns=True, obs_norm=True)
    b.load_state_dict(state)
    assert b.return_scale == a.return_scale and b.num_updates == a.num_updates
    torch.manual_seed(7)
    ma = a.update(batch, step=3)
    torch.manual_seed(7)
    mb = b.update(batch, step=3)
    assert ma == mb
    for na, nb in ((a.actor, b.actor), (a.critic, b.critic), (a.value, b.value), (a.target_critic, b.target_critic)):
        assert all(torch.equal(x, y) for x, y in zip(na.parameters(), nb.parameters()))
    obs = np.ones(3, np.float32)
    assert np.array_equal(a.act(obs, step=0, eval_mode=True), b.act(obs, step=0, eval_mode=True))


def test_act_eval_mean_train_samples_and_seed_steps():
    agent = make(dropout=0.5)
    obs = np.zeros(3, np.float32)
    e1, e2 = (agent.act(obs, step=0, eval_mode=True) for _ in range(2))
    assert np.array_equal(e1, e2)  # the mean, no dropout at acting time
    with torch.no_grad():
        assert np.allclose(e1, agent.actor(torch.zeros(1, 3))[0].numpy(), atol=1e-6)
    samples = np.stack([agent.act(obs, step=0, eval_mode=False) for _ in range(200)])
    assert samples.std(axis=0).min() > 0.3 and (np.abs(samples) <= 1).all()  # std exp(0) = 1, clipped
    seeded = make(num_seed_steps=10)
    torch.manual_seed(0)
    uniform = np.stack([seeded.act(obs, step=3, eval_mode=False) for _ in range(200)])
    assert uniform.min() < -0.8 and uniform.max() > 0.8


def test_hl_gauss_critic_composes():
    agent = make(critic="hl-gauss", hl_gauss=HLGaussConfig(v_min=-10.0, v_max=10.0, num_bins=21))
    batch = random_batch(state_space())
    m = [agent.update(batch, step=i) for i in range(3)][-1]
    assert agent.critic.head.out_dim == 21 and math.isfinite(m["critic_loss"]) and math.isfinite(m["value_loss"])


def test_taco_aux_loss_composes_on_pixels():
    agent = make(pixel_space(), aux=("taco",), nstep=3)
    assert agent.batch_extras == {"action_seq"}
    batch = random_batch(pixel_space())
    batch.extras.update(action_seq=torch.rand(8, 3, 2) * 2 - 1, seq_mask=torch.ones(8, 3))
    m = agent.update(batch, step=0)
    assert math.isfinite(m["taco_loss"]) and math.isfinite(m["value_loss"])


@pytest.mark.parametrize("space_fn", [state_space, pixel_space])
def test_bf16_update_is_finite(space_fn):
    agent = make(space_fn(), precision="bf16")
    batch = random_batch(space_fn())
    for i in range(3):
        m = agent.update(batch, step=i)
    assert all(math.isfinite(v) for v in m.values())
    assert agent.actor.log_std.dtype == torch.float32 and agent.value.v[0].weight.dtype == torch.float32
