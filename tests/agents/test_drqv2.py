import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents import AGENTS, make_agent
from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.errors import ConfigError

from .conftest import ACTION_DIM, SIZE, action_space, make_batch, pixel_space, tiny_cfg


def test_every_config_field_documented():
    import ast
    import inspect

    import pixelrl.agents.drqv2 as mod

    tree = ast.parse(inspect.getsource(mod))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DrQv2Config")
    documented = set()
    for a, b in zip(cls.body, cls.body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            documented.add(a.target.id)
    assert documented == {f.name for f in dataclasses.fields(DrQv2Config)}


def test_published_defaults():
    c = DrQv2Config()
    assert (c.lr, c.batch_size, c.feature_dim, c.hidden_dim, c.critic_target_tau, c.nstep) == (
        1e-4, 256, 50, 1024, 0.01, 3,
    )
    assert (c.stddev_clip, c.num_seed_steps, c.update_every_steps, c.augment_pad) == (0.3, 2000, 2, 4)


def test_config_errors():
    with pytest.raises(ConfigError, match="precision"):
        DrQv2Config(precision="fp16")
    with pytest.raises(ConfigError, match="schedule"):
        DrQv2Config(stddev_schedule="cosine(1)")
    with pytest.raises(ConfigError, match="equal length"):
        DrQv2Config(encoder_channels=(32, 32), encoder_strides=(2,))
    with pytest.raises(ConfigError):
        DrQv2Agent(pixel_space(), gym.spaces.Discrete(3), tiny_cfg())
    with pytest.raises(ConfigError, match="unknown field"):
        make_agent("drqv2", pixel_space(), action_space(), {"lrr": 1})
    with pytest.raises(ConfigError, match="unknown agent"):
        make_agent("drqv3", pixel_space(), action_space())


def test_registry():
    assert AGENTS["drqv2"][:2] == (DrQv2Config, DrQv2Agent)
    agent = make_agent("drqv2", pixel_space(), action_space(), tiny_cfg())
    assert isinstance(agent, DrQv2Agent)


def test_stddev_schedule():
    agent = DrQv2Agent(pixel_space(), action_space(), tiny_cfg(stddev_schedule="linear(1.0,0.1,100)"))
    assert agent.stddev(0) == pytest.approx(1.0)
    assert agent.stddev(50) == pytest.approx(0.55)
    assert agent.stddev(10_000) == pytest.approx(0.1)


def test_act_shapes_range_and_eval_determinism(agent_factory):
    agent = agent_factory(num_seed_steps=10, stddev_schedule="2.0")
    obs = np.random.default_rng(0).integers(0, 256, (6, SIZE, SIZE), dtype=np.uint8)
    for step, eval_mode in [(0, False), (100, False), (100, True)]:
        a = agent.act(obs, step=step, eval_mode=eval_mode)
        assert a.shape == (ACTION_DIM,) and a.dtype == np.float32
        assert np.all(a >= -1) and np.all(a <= 1)
    a1 = agent.act(obs, step=100, eval_mode=True)
    a2 = agent.act(obs, step=100, eval_mode=True)
    assert np.array_equal(a1, a2)
    assert not np.array_equal(agent.act(obs, step=100, eval_mode=False), agent.act(obs, step=100, eval_mode=False))


def test_repeated_updates_lower_critic_loss(agent_factory):
    agent = agent_factory()
    batch = make_batch(agent.observation_space)
    losses = [agent.update(batch, step=1000)["critic_loss"] for _ in range(50)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert agent.num_updates == 50


def test_metrics_are_floats(agent_factory):
    agent = agent_factory()
    m = agent.update(make_batch(agent.observation_space), step=0)
    for k in ("critic_loss", "critic_q1", "critic_q2", "critic_target_q", "actor_loss", "batch_reward", "actor_std"):
        assert isinstance(m[k], float) and np.isfinite(m[k])


def test_target_ema_moves_by_tau(agent_factory):
    tau = 0.05
    agent = agent_factory(critic_target_tau=tau)
    target_before = [p.detach().clone() for p in agent.target_critic.parameters()]
    agent.update(make_batch(agent.observation_space), step=0)
    for tb, p, tp in zip(target_before, agent.critic.parameters(), agent.target_critic.parameters()):
        torch.testing.assert_close(tp, (1 - tau) * tb + tau * p, atol=1e-6, rtol=1e-5)
    assert any(not torch.equal(tb, tp) for tb, tp in zip(target_before, agent.target_critic.parameters()))


def test_encoder_gets_no_gradient_from_actor_loss(agent_factory):
    agent = agent_factory()
    batch = make_batch(agent.observation_space)
    std = torch.tensor(0.2)
    _, feat, _ = agent._critic_loss(batch, std, 0)
    for p in list(agent.encoder.parameters()) + list(agent.critic.parameters()):
        p.grad = None
    loss, _ = agent._actor_loss(feat, std)
    loss.backward(inputs=agent._actor_params)
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert all(p.grad is None for p in agent.critic.parameters())
    assert all(p.grad is not None for p in agent.actor.parameters())
    # and the whole update leaves the encoder unchanged when the critic learning rate is zero for it
    agent2 = agent_factory()
    agent2.critic_opt.param_groups[0]["lr"] = 0.0
    enc_before = [p.detach().clone() for p in agent2.encoder.parameters()]
    agent2.update(batch, step=0)
    assert all(torch.equal(a, b) for a, b in zip(enc_before, agent2.encoder.parameters()))


def _changed(before: dict, agent) -> set[str]:
    """Names (attribute prefix) of the agent's tensors that differ from ``before`` (:func:`helpers.everything`)."""
    from helpers import everything

    after = everything(agent)
    return {k.split(".")[0] for k in before.keys() | after.keys()
            if k not in before or k not in after or not torch.equal(before[k], after[k])}


def test_actor_update_changes_only_actor_and_critic(agent_factory):
    """The actor step changes the actor (and its optimizer) and nothing else; a whole update changes the actor, the
    critic with the encoder it trains, and the target critic (and their optimizers), and nothing else."""
    from helpers import everything

    agent = agent_factory()
    batch = make_batch(agent.observation_space)
    std = torch.tensor(0.2)
    _, feat, _ = agent._critic_loss(batch, std, 0)
    before = {k: v.clone() for k, v in everything(agent).items()}
    agent._actor_step(feat, std, 0)
    assert _changed(before, agent) == {"actor", "actor_opt"}
    agent = agent_factory()
    before = {k: v.clone() for k, v in everything(agent).items()}
    agent.update(batch, step=0)
    assert _changed(before, agent) == {"actor", "actor_opt", "critic", "critic_opt", "encoder", "target_critic"}


def _params(agent):
    return torch.cat([p.detach().flatten() for m in (agent.encoder, agent.actor, agent.critic) for p in m.parameters()])


def test_same_seed_same_parameters(agent_factory):
    runs = []
    for _ in range(2):
        agent = agent_factory()
        batch = make_batch(agent.observation_space)
        torch.manual_seed(123)
        for i in range(5):
            agent.update(batch, step=i)
        runs.append(_params(agent))
    assert torch.equal(runs[0], runs[1])


def test_state_dict_round_trip(agent_factory):
    agent = agent_factory()
    batch = make_batch(agent.observation_space)
    for i in range(3):
        agent.update(batch, step=i)
    state = agent.state_dict()
    # JSON-able scalars and contiguous tensors only (the trainer writes safetensors + JSON)
    assert state["counters"] == {"num_updates": 3}

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, torch.Tensor):
            assert x.is_contiguous()
        else:
            assert isinstance(x, (int, float, str, bool, type(None)))

    walk(state)
    state = {k: v for k, v in state.items()}  # shallow copy, like a reload from disk
    other = agent_factory()
    torch.manual_seed(999)
    other.update(make_batch(other.observation_space, seed=5), step=0)  # diverge first
    other.load_state_dict(state)
    assert other.num_updates == 3
    obs = batch.obs[0].numpy()
    assert np.array_equal(agent.act(obs, step=10, eval_mode=True), other.act(obs, step=10, eval_mode=True))
    outs = []
    for a in (agent, other):
        torch.manual_seed(7)
        m = a.update(batch, step=3)
        outs.append((m, _params(a)))
    assert outs[0][0] == outs[1][0]
    assert torch.equal(outs[0][1], outs[1][1])


def test_load_state_dict_rejects_other_state(agent_factory):
    with pytest.raises(ConfigError, match="missing"):
        agent_factory().load_state_dict({"actor": {}})


def test_dict_obs_variant():
    space = gym.spaces.Dict(
        {"pixels": gym.spaces.Box(0, 255, (3, SIZE, SIZE), np.uint8), "state": gym.spaces.Box(-1, 1, (5,), np.float32)}
    )
    torch.manual_seed(0)
    agent = DrQv2Agent(space, action_space(), tiny_cfg())
    assert agent.encoder.repr_dim == agent.encoder.conv.repr_dim + 5
    m = agent.update(make_batch(space), step=0)
    assert np.isfinite(m["critic_loss"])
    obs = {"pixels": np.zeros((3, SIZE, SIZE), np.uint8), "state": np.zeros(5, np.float32)}
    assert agent.act(obs, step=0, eval_mode=True).shape == (ACTION_DIM,)


def test_state_obs_variant():
    space = gym.spaces.Box(-np.inf, np.inf, (7,), np.float32)
    torch.manual_seed(0)
    agent = DrQv2Agent(space, action_space(), tiny_cfg())
    assert agent.encoder.repr_dim == 7 and agent.obs_kind == "state"
    batch = make_batch(space)
    losses = [agent.update(batch, step=0)["critic_loss"] for _ in range(20)]
    assert losses[-1] < losses[0]
    assert agent.act(np.zeros(7, np.float32), step=0, eval_mode=False).shape == (ACTION_DIM,)


def _updated(agent, batch, n=3, seed=11):
    metrics = []
    for i in range(n):
        torch.manual_seed(seed + i)
        metrics.append(agent.update(batch, step=i))
    return metrics, _params(agent)


@pytest.mark.parametrize("kw", [{"augment_impl": "grid_sample", "channels_last": False},
                                {"augment_impl": "grid_sample"}, {"channels_last": False}])
def test_grid_sample_augmentation_and_no_channels_last_match_the_default(agent_factory, kw):
    """The reference's bilinear grid_sample shift and the exact index shift give the same images (up to float
    rounding), and channels_last is only a memory layout: the same updates as the default agent."""
    batch = make_batch(pixel_space())
    m_ref, p_ref = _updated(agent_factory(), batch)
    m, p = _updated(agent_factory(**kw), batch)
    torch.testing.assert_close(p, p_ref, atol=1e-4, rtol=1e-4)
    for a, b in zip(m, m_ref):
        assert a["critic_loss"] == pytest.approx(b["critic_loss"], rel=1e-4, abs=1e-6)


def test_bf16_path_runs(agent_factory):
    agent = agent_factory(precision="bf16")
    batch = make_batch(agent.observation_space)
    losses = [agent.update(batch, step=0)["critic_loss"] for _ in range(30)]
    assert all(np.isfinite(losses)) and np.mean(losses[-5:]) < np.mean(losses[:5])
    assert all(p.dtype == torch.float32 for p in agent.actor.parameters())
    a = agent.act(batch.obs[0].numpy(), step=0, eval_mode=True)
    assert a.dtype == np.float32


def test_bf16_matches_fp32_within_tolerance(agent_factory):
    """bf16 autocast computes the same losses, Q values and actions as fp32 up to bf16 rounding (8 bits of
    mantissa: ~1e-2 relative), from the same weights and random draws."""
    batch = make_batch(pixel_space())
    fp32, bf16 = agent_factory(precision="fp32"), agent_factory(precision="bf16")
    obs = batch.obs[0].numpy()
    np.testing.assert_allclose(bf16.act(obs, step=0, eval_mode=True), fp32.act(obs, step=0, eval_mode=True),
                               atol=3e-2)
    (m32,), _ = _updated(fp32, batch, n=1)
    (m16,), _ = _updated(bf16, batch, n=1)
    for k in ("critic_loss", "critic_q1", "critic_target_q", "actor_loss"):
        assert m16[k] == pytest.approx(m32[k], rel=5e-2, abs=5e-3), k


@pytest.mark.slow  # ~30-60 s of inductor compilation on 2 cores
def test_compile_tiny(agent_factory, monkeypatch):
    """The compiled update computes what the eager one does (inductor's random numbers replaced by eager's, so both
    draw the same noise): the same metrics and parameters after 3 updates, up to kernel-fusion rounding."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "fallback_random", True)
    batch = make_batch(pixel_space())
    m_c, p_c = _updated(agent_factory(compile=True), batch)
    m_e, p_e = _updated(agent_factory(), batch)
    torch.testing.assert_close(p_c, p_e, atol=1e-4, rtol=1e-4)
    for a, b in zip(m_c, m_e):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k


def test_hooks(agent_factory):
    agent = agent_factory()
    base = agent.stddev
    agent.stddev = lambda step: base(step) + 1.0  # compose
    calls = []

    def aux(inp):
        calls.append(inp.feat.requires_grad)
        return inp.feat.pow(2).mean() * 0.0 + head.weight.sum() * 0.0, {"zero": torch.tensor(0.0)}

    head = torch.nn.Linear(3, 1)
    agent.add_aux_loss(aux, module=head, name="dummy")
    agent.update_hooks.append(lambda ag, step: {"hooked": float(step)})
    m = agent.update(make_batch(agent.observation_space), step=4)
    assert m["actor_std"] == pytest.approx(1.2)
    assert calls == [True] and m["dummy_loss"] == 0.0 and m["dummy_zero"] == 0.0 and m["hooked"] == 4.0
    assert "aux" in agent.state_dict() and "dummy" in agent.state_dict()["aux"]
    agent.reset_optimizer_state("actor")
    assert not agent.actor_opt.state


def test_critic_target_override(agent_factory):
    class ZeroTarget(DrQv2Agent):
        def critic_target(self, batch, next_feat, std):
            return torch.zeros_like(batch.reward)

    torch.manual_seed(0)
    agent = ZeroTarget(pixel_space(), action_space(), tiny_cfg())
    m = agent.update(make_batch(agent.observation_space), step=0)
    assert m["critic_target_q"] == 0.0


def test_target_min_over_a_random_subset_of_q_heads():
    """RLPD's ensemble target: min over a random subset of heads, drawn anew each call; 0 = all heads."""
    obs = gym.spaces.Box(-1, 1, (3,), np.float32)
    act = gym.spaces.Box(-1, 1, (1,), np.float32)
    q = torch.arange(10, dtype=torch.float32).reshape(10, 1, 1).expand(10, 4, 1)  # head i predicts i
    full = DrQv2Agent(obs, act, DrQv2Config(num_q=10, hidden_dim=8, feature_dim=4))
    assert torch.equal(full._target_min(q), torch.zeros(4, 1))
    sub = DrQv2Agent(obs, act, DrQv2Config(num_q=10, target_q_subset=2, hidden_dim=8, feature_dim=4))
    torch.manual_seed(0)
    mins = [float(sub._target_min(q)[0, 0]) for _ in range(300)]
    # the min of 2 of 10 distinct heads: P(min = j) = (9 - j) / 45, so 0 appears ~20% of the time, 9 never
    assert 0.1 < mins.count(0.0) / 300 < 0.3 and 9.0 not in mins and len(set(mins)) >= 6
    with pytest.raises(ConfigError, match="target_q_subset"):
        DrQv2Config(num_q=2, target_q_subset=3)
