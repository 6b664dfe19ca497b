"""PPO: the clipped objective at its boundaries, value clipping, normalisers against Gymnasium's wrappers, acting,
one update, checkpoints, config checks and presets."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents import agent_preset, agent_train_preset, get_spec
from pixelrl.agents.ppo import PPOAgent, PPOConfig, RunningMeanStd, clipped_policy_loss, value_loss
from pixelrl.data.rollout import RolloutBuffer
from pixelrl.errors import ConfigError


def _grad_of_policy_loss(ratio: float, adv: float, clip: float = 0.2) -> float:
    new = torch.tensor([np.log(ratio)], requires_grad=True)
    loss, _ = clipped_policy_loss(new, torch.zeros(1), torch.tensor([adv]), clip)
    loss.backward()
    return float(new.grad)


def test_clipped_loss_value_and_gradient_at_the_ratio_boundaries():
    # inside [1 - eps, 1 + eps] the loss is -A * r and its gradient in log r is -A * r
    assert _grad_of_policy_loss(1.1, 2.0) == pytest.approx(-2.0 * 1.1)
    assert _grad_of_policy_loss(0.9, -2.0) == pytest.approx(2.0 * 0.9)
    # past the clip in the direction the advantage pushes: no gradient
    assert _grad_of_policy_loss(1.3, 2.0) == 0.0
    assert _grad_of_policy_loss(0.7, -2.0) == 0.0
    # past the clip against the advantage: the unclipped (pessimistic) term keeps its gradient
    assert _grad_of_policy_loss(0.7, 2.0) == pytest.approx(-2.0 * 0.7)
    assert _grad_of_policy_loss(1.3, -2.0) == pytest.approx(2.0 * 1.3)
    # the loss value at the boundary: -A * (1 + eps) just past it
    loss, logratio = clipped_policy_loss(torch.tensor([np.log(1.5)]), torch.zeros(1), torch.tensor([1.0]), 0.2)
    assert float(loss) == pytest.approx(-1.2) and float(logratio) == pytest.approx(np.log(1.5))


def test_value_clipping_is_pessimistic_around_the_old_value():
    old, ret = torch.tensor([1.0]), torch.tensor([3.0])
    new = torch.tensor([2.0], requires_grad=True)  # moved 1.0 towards the return, clip 0.2
    loss = value_loss(new, old, ret, 0.2)
    # unclipped (2 - 3)^2 = 1, clipped (1.2 - 3)^2 = 3.24: the max, halved
    assert float(loss.detach()) == pytest.approx(0.5 * 3.24)
    loss.backward()
    assert float(new.grad) == 0.0  # the clipped branch has no gradient past the clip
    new2 = torch.tensor([2.0], requires_grad=True)
    value_loss(new2, old, ret, None).backward()
    assert float(new2.grad) == pytest.approx(2.0 - 3.0)
    assert float(value_loss(torch.tensor([1.1]), old, ret, 0.2)) == pytest.approx(0.5 * 1.9 ** 2)


def test_running_mean_std_matches_gymnasiums():
    from gymnasium.wrappers.utils import RunningMeanStd as GymRMS

    rng = np.random.default_rng(0)
    ours, theirs = RunningMeanStd((3,)), GymRMS(shape=(3,))
    for _ in range(20):
        x = rng.normal(2.0, 3.0, size=(int(rng.integers(1, 5)), 3))
        ours.update(x)
        theirs.update(x)
    np.testing.assert_allclose(ours.mean, theirs.mean)
    np.testing.assert_allclose(ours.var, theirs.var)
    assert ours.count == pytest.approx(theirs.count)


def _state_agent(**kw):
    obs = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    act = gym.spaces.Box(-1, 1, (2,), np.float32)
    cfg = PPOConfig(num_envs=1, rollout_steps=8, num_minibatches=2, update_epochs=2, **kw)
    return PPOAgent(obs, act, cfg)


def test_observation_normalisation_matches_gymnasiums_wrapper():
    env = gym.make("Pendulum-v1")
    ref = gym.wrappers.TransformObservation(gym.wrappers.NormalizeObservation(env), lambda o: np.clip(o, -10, 10),
                                            env.observation_space)
    agent = _state_agent(normalize_obs=True)
    o, _ = ref.reset(seed=0)
    raw_env = gym.make("Pendulum-v1")
    raw, _ = raw_env.reset(seed=0)
    np.testing.assert_allclose(agent.observe(raw[None], update=True).numpy()[0], o, rtol=1e-5, atol=1e-5)
    for t in range(50):
        a = np.array([np.sin(t)], np.float32)
        o, *_ = ref.step(a)
        raw, *_ = raw_env.step(a)
        np.testing.assert_allclose(agent.observe(raw[None], update=True).numpy()[0], o, rtol=1e-4, atol=1e-4)
    before = agent.obs_rms.state_dict()
    agent.act(raw, step=0, eval_mode=True)  # evaluation reads the statistics without changing them
    assert np.array_equal(agent.obs_rms.mean, before["mean"]) and agent.obs_rms.count == before["count"]


def test_reward_normalisation_divides_by_the_std_of_the_discounted_return():
    # gym 0.23's NormalizeReward (CleanRL's MuJoCo runs), SB3's VecNormalize: G = gamma * G + r, statistics
    # updated with G, r / sqrt(var + 1e-8), G zeroed after the step that ends the episode
    from gymnasium.wrappers.utils import RunningMeanStd as GymRMS

    agent = _state_agent(normalize_reward=True, clip_reward=1e9)
    rng = np.random.default_rng(1)
    g, ref = 0.0, GymRMS(shape=())
    for t in range(300):
        r = rng.normal(1.0, 1.0)
        done = t % 100 == 99
        out = agent.learn_rewards(np.array([r]), np.array([done]))
        g = 0.99 * g + r
        ref.update(np.array([g]))
        assert out[0] == pytest.approx(r / np.sqrt(ref.var + 1e-8), rel=1e-5)
        if done:
            g = 0.0
            assert agent.returns[0] == 0.0
    clipped = _state_agent(normalize_reward=True, clip_reward=0.5).learn_rewards(np.array([100.0]), np.array([False]))
    assert clipped[0] == 0.5
    signs = _state_agent(sign_reward=True).learn_rewards(np.array([3.0, -0.2, 0.0]), np.zeros(3, bool))
    assert signs.tolist() == [1.0, -1.0, 0.0]


def test_continuous_actions_are_clipped_for_the_env_and_eval_is_the_mean():
    agent = _state_agent()
    with torch.no_grad():
        agent.net.actor_logstd.fill_(3.0)  # std 20: samples leave [-1, 1]
    x = agent.observe(np.zeros((64, 3), np.float32), update=False)
    action, logprob, value = agent.policy_step(x)
    assert action.abs().max() > 1 and logprob.shape == (64,) and value.shape == (64,)
    env_a = agent.env_action(action)
    assert env_a.dtype == np.float32 and np.abs(env_a).max() <= 1.0
    mean = agent.net.actor(x[:1])[0].detach().numpy()
    np.testing.assert_allclose(agent.act(np.zeros(3, np.float32), step=0, eval_mode=True), np.clip(mean, -1, 1))


def _pixel_agent(**kw):
    obs = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    cfg = PPOConfig(num_envs=2, rollout_steps=8, num_minibatches=2, update_epochs=2, **kw)
    return PPOAgent(obs, gym.spaces.Discrete(4), cfg)


def test_pixel_network_follows_cleanrl_and_acts_discretely():
    agent = _pixel_agent()
    net = agent.net
    assert net.trunk.convnet[0].weight.shape == (32, 4, 8, 8) and net.trunk.fc[0].weight.shape == (512, 3136)
    # orthogonal init, gain 0.01 on the policy head, 1 on the value head, biases 0
    w = net.actor.weight.detach()
    np.testing.assert_allclose((w @ w.T).numpy(), 0.01 ** 2 * np.eye(4), atol=1e-7)
    v = net.critic.weight.detach()
    assert float((v @ v.T)[0, 0]) == pytest.approx(1.0, rel=1e-5) and float(net.critic.bias.detach().abs().sum()) == 0.0
    obs = np.random.default_rng(0).integers(0, 255, (4, 84, 84), dtype=np.uint8)
    a = agent.act(obs, step=0, eval_mode=True)
    assert isinstance(a, int) and 0 <= a < 4
    sampled = _pixel_agent(eval_sample=True)
    draws = [sampled.act(obs, step=5, eval_mode=True) for _ in range(40)]
    sampled2 = _pixel_agent(eval_sample=True)
    sampled2.net.load_state_dict(sampled.net.state_dict())
    state = torch.get_rng_state()
    assert [sampled2.act(obs, step=5, eval_mode=True) for _ in range(40)] == draws  # seeded by the step
    assert torch.equal(torch.get_rng_state(), state) and len(set(draws)) > 1  # training RNG untouched


def _filled_rollout(agent, T=8, N=2, seed=0):
    rng = np.random.default_rng(seed)
    ro = RolloutBuffer(T, N, agent.obs_shape, agent.obs_dtype, agent.action_shape,
                       torch.int64 if agent.discrete else torch.float32)
    for t in range(T):
        x = agent.observe(rng.integers(0, 255, (N, *agent.obs_shape), dtype=np.uint8), update=True)
        action, logprob, value = agent.policy_step(x)
        ro.add(x, action, logprob, value, rng.normal(size=N), rng.random(N) < 0.1, np.zeros(N, bool))
    ro.compute_returns(torch.zeros(N), gamma=0.99, gae_lambda=0.95)
    return ro


def test_update_reports_cleanrls_metrics_anneals_lr_and_changes_the_networks():
    torch.manual_seed(0)
    agent = _pixel_agent()
    ro = _filled_rollout(agent)
    before = [p.detach().clone() for p in agent.net.parameters()]
    m = agent.update(ro, step=16, progress=0.25)
    for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl", "clipfrac", "explained_variance"):
        assert k in m and np.isfinite(m[k]), k
    assert m["lr"] == pytest.approx(2.5e-4 * 0.75) and m["epochs"] == 2.0
    assert agent.opt.param_groups[0]["lr"] == pytest.approx(2.5e-4 * 0.75)
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.net.parameters()))
    m = _pixel_agent(anneal_lr=False).update(_filled_rollout(_pixel_agent()), step=0, progress=0.9)
    assert m["lr"] == pytest.approx(2.5e-4)


def test_channels_last_trunk_computes_what_the_contiguous_one_does():
    torch.manual_seed(0)
    cl, plain = _pixel_agent(), _pixel_agent(channels_last=False)
    assert cl.net.trunk.convnet[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.net.trunk.convnet[0].weight.is_contiguous()
    plain.net.load_state_dict(cl.net.state_dict())
    plain.opt.load_state_dict(cl.opt.state_dict())
    ro = _filled_rollout(cl)
    dist_a, v_a = cl.net(ro.obs[0])
    dist_b, v_b = plain.net(ro.obs[0])
    torch.testing.assert_close(dist_a.logits, dist_b.logits, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(v_a, v_b, atol=1e-6, rtol=1e-5)
    before = [p.detach().clone() for p in cl.net.parameters()]
    torch.manual_seed(3)
    ma = cl.update(ro, step=0, progress=0.0)
    torch.manual_seed(3)
    mb = plain.update(ro, step=0, progress=0.0)
    for k in ("policy_loss", "value_loss", "entropy", "approx_kl"):
        assert ma[k] == pytest.approx(mb[k], rel=1e-4, abs=1e-6), k
    for (name, p), q in zip(cl.net.named_parameters(), plain.net.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), atol=1e-5, rtol=1e-4, msg=name)
    assert any(not torch.equal(p, q) for p, q in zip(before, cl.net.parameters()))  # the update did move them


def test_bf16_runs_the_networks_in_bf16_and_keeps_the_losses_and_weights_fp32():
    torch.manual_seed(0)
    b16, f32 = _pixel_agent(precision="bf16"), _pixel_agent(precision="fp32")
    assert (b16.precision, b16.net.bf16, f32.net.bf16) == ("bf16", True, False)
    assert b16.precision_reason == "bf16: set in the config"
    f32.net.load_state_dict(b16.net.state_dict())
    ro = _filled_rollout(b16)
    dist_a, v_a = b16.net(ro.obs[0])
    dist_b, v_b = f32.net(ro.obs[0])
    assert dist_a.logits.dtype == v_a.dtype == torch.float32  # cast back before the distribution and the losses
    assert not torch.equal(v_a, v_b)  # the arithmetic did change ...
    torch.testing.assert_close(v_a, v_b, atol=0.05, rtol=0.05)  # ... to bf16 rounding, not to something else
    assert b16.value(ro.obs[0]).dtype == torch.float32
    m = b16.update(ro, step=0, progress=0.0)
    assert all(np.isfinite(m[k]) for k in ("policy_loss", "value_loss", "entropy"))
    assert all(p.dtype == torch.float32 for p in b16.net.parameters())


def test_auto_precision_is_fp32_without_native_bf16_and_for_state_networks(monkeypatch):
    import pixelrl.utils.precision as prec

    monkeypatch.delenv("PIXELRL_PRECISION", raising=False)
    monkeypatch.setattr(prec, "_CACHE", {})
    monkeypatch.setattr(prec, "cpu_flags", lambda: {"avx2"})
    agent = _pixel_agent(precision="auto")
    assert agent.precision == "fp32" and not agent.net.bf16 and "no avx512_bf16" in agent.precision_reason
    # with native bf16 claimed, the tiny state MLPs still resolve to fp32: the timed probe is below the floor
    monkeypatch.setattr(prec, "native_bf16", lambda device: (True, "claimed"))
    state = _state_agent(precision="auto")
    assert state.precision == "fp32" and "gain nothing" in state.precision_reason


def test_target_kl_stops_the_epochs_early():
    torch.manual_seed(0)
    agent = _pixel_agent(target_kl=1e-12, lr=1e-2)
    m = agent.update(_filled_rollout(agent), step=0, progress=0.0)
    assert m["epochs"] == 1.0


def test_state_dict_round_trip_restores_networks_optimizer_and_normalisers():
    from pixelrl.utils.checkpoint import flatten_state, unflatten_state

    torch.manual_seed(0)
    a = _state_agent(normalize_obs=True, normalize_reward=True)
    a.observe(np.random.default_rng(0).normal(size=(5, 3)), update=True)
    a.learn_rewards(np.array([2.0]), np.array([False]))
    ro = RolloutBuffer(8, 1, (3,), torch.float32, (2,), torch.float32)
    for t in range(8):
        x = a.observe(np.random.default_rng(t).normal(size=(1, 3)), update=True)
        ro.add(x, *a.policy_step(x), np.ones(1), np.zeros(1), np.zeros(1))
    ro.compute_returns(torch.zeros(1), gamma=0.99, gae_lambda=0.95)
    a.update(ro, step=8, progress=0.1)
    tensors, tree = flatten_state(a.state_dict())
    b = _state_agent(normalize_obs=True, normalize_reward=True)
    b.load_state_dict(unflatten_state(tree, tensors))
    for p, q in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(p, q)
    assert np.array_equal(a.obs_rms.mean, b.obs_rms.mean) and a.ret_rms.var == b.ret_rms.var
    assert np.array_equal(a.returns, b.returns) and b.num_updates == 1
    torch.manual_seed(3)
    ma = a.update(ro, step=16, progress=0.2)
    torch.manual_seed(3)
    mb = b.update(ro, step=16, progress=0.2)
    assert ma == mb  # same optimizer moments, same result
    with pytest.raises(ConfigError, match="ret_rms"):
        _state_agent(normalize_obs=True, normalize_reward=True).load_state_dict(
            _state_agent(normalize_obs=True).state_dict())


@pytest.mark.parametrize("kw, needle", [
    ({"num_envs": 3, "rollout_steps": 5, "num_minibatches": 4}, "15 rows does not split into num_minibatches = 4"),
    ({"lr": 0.0}, "lr must be"), ({"gamma": 1.5}, "gamma must be in"), ({"target_kl": -1.0}, "target_kl"),
    ({"hidden_sizes": ()}, "hidden_sizes"), ({"precision": "fp16"}, "precision must be 'auto', 'fp32' or 'bf16'"),
    ({"encoder": "slots", "slot_encoder": "x", "precision": "bf16"}, "bf16 does not apply to encoder=slots"),
    ({"channels_last": "yes"}, "channels_last must be true or false"),
])
def test_bad_config_is_one_config_error(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        PPOConfig(**kw)


def test_presets_atari_mujoco_cartpole():
    atari = agent_preset("ppo", "ale/Breakout")
    train = agent_train_preset("ppo", "ale/Breakout")
    assert atari == {"sign_reward": True, "life_loss_terminal": True, "eval_sample": True}
    assert train["frames"] == 40_000_000 and train["env_options"] == {
        "repeat_action_probability": 0.0, "fire_reset": True, "noop_max": 30}
    d = PPOConfig()
    assert (d.num_envs, d.rollout_steps, d.num_minibatches, d.update_epochs, d.lr, d.clip_coef, d.ent_coef) == (
        8, 128, 4, 4, 2.5e-4, 0.1, 0.01)
    mj = agent_preset("ppo", "gym/HalfCheetah-v5", "state")
    assert mj["num_envs"] == 1 and mj["rollout_steps"] == 2048 and mj["num_minibatches"] == 32
    assert mj["update_epochs"] == 10 and mj["lr"] == 3e-4 and mj["clip_coef"] == 0.2 and mj["ent_coef"] == 0.0
    assert mj["normalize_obs"] and mj["normalize_reward"]
    assert agent_train_preset("ppo", "gym/HalfCheetah-v5", "state")["frames"] == 1_000_000
    assert agent_preset("ppo", "gym/CartPole-v1", "state")["num_envs"] == 4
    spec = get_spec("ppo")
    assert spec.trainer == "on-policy" and set(spec.actions) == {"discrete", "continuous"} and not spec.cpu_fast


def test_dict_observations_are_refused():
    space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (3, 8, 8), np.uint8),
                             "state": gym.spaces.Box(-1, 1, (2,), np.float32)})
    with pytest.raises(ConfigError, match="not both"):
        PPOAgent(space, gym.spaces.Discrete(2), PPOConfig())
