"""l2f (Learning to Fly in Seconds): the NumPy networks against torch autograd, TD3's updates, the schedule, the
curriculum, checkpoints, and the trainer end to end."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from pixelrl.agents.l2f import Adam, L2FAgent, L2FConfig, MLPStack, curriculum_weights
from pixelrl.envs.builtin import quadrotor as Q
from pixelrl.errors import ConfigError


def _torch_mlp(net: MLPStack, m: int, flat=None):
    flat = net.flat if flat is None else flat
    return [(torch.tensor(w[m], dtype=torch.float64, requires_grad=True),
             torch.tensor(b[m, 0], dtype=torch.float64, requires_grad=True)) for w, b in net.views(flat)]


def _torch_forward(params, x, out_tanh):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1 or out_tanh:
            h = torch.tanh(h)
    return h


@pytest.mark.parametrize("out_tanh", [True, False])
def test_mlp_backward_matches_autograd(out_tanh):
    rng = np.random.default_rng(0)
    net = MLPStack(3, (7, 5, 5, 2), out_tanh, rng)
    x = rng.standard_normal((3, 4, 7)).astype(np.float32)
    dy = rng.standard_normal((3, 4, 2)).astype(np.float32)
    y, acts = net.forward(x, cache=True)
    dx = net.backward(dy, acts, need_dx=True)
    for m in range(3):
        params = _torch_mlp(net, m)
        xt = torch.tensor(x[m], dtype=torch.float64, requires_grad=True)
        yt = _torch_forward(params, xt, out_tanh)
        np.testing.assert_allclose(y[m], yt.detach().numpy(), rtol=1e-5, atol=1e-6)
        (yt * torch.tensor(dy[m], dtype=torch.float64)).sum().backward()
        for (gw, gb), (w, b) in zip(net.views(net.grad), params):
            np.testing.assert_allclose(gw[m], w.grad.numpy(), rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(gb[m, 0], b.grad.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(dx[m], xt.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_adam_matches_torch_and_decays_weights_only():
    rng = np.random.default_rng(1)
    cfg = L2FConfig(weight_decay=0.0)
    net = MLPStack(1, (3, 4, 2), False, rng)
    start = net.flat.copy()
    ref = torch.tensor(start[0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([ref], lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    adam = Adam(net, cfg)
    for _ in range(5):
        g = rng.standard_normal(net.flat.shape).astype(np.float32)
        net.grad[...] = g
        adam.step()
        ref.grad = torch.tensor(g[0], dtype=torch.float64)
        opt.step()
    np.testing.assert_allclose(net.flat[0], ref.detach().numpy(), rtol=1e-4, atol=1e-6)
    net2 = MLPStack(1, (3, 4, 2), False, np.random.default_rng(1))
    adam2 = Adam(net2, L2FConfig(weight_decay=5e-5))
    before = net2.flat.copy()
    net2.grad[...] = 0.0
    adam2.step()  # zero gradient: only the decay moves parameters
    moved = net2.flat != before
    np.testing.assert_array_equal(moved[0], net2.weight_mask.astype(bool) & (before[0] != 0))
    np.testing.assert_allclose(net2.flat[moved], before[moved] * (1 - 5e-5), rtol=1e-6)


def _filled_agent(k=2, n=600, seed=0, **over):
    cfg = L2FConfig(seeds=k, batch_size=16, hidden=8, **over)
    agent = L2FAgent(None, None, cfg, capacity=n + 10, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for _ in range(n):
        agent.add(rng.standard_normal((k, 146)).astype(np.float32) * 0.3,
                  rng.standard_normal((k, 28)).astype(np.float32) * 0.3,
                  rng.uniform(-1, 1, (k, 4)).astype(np.float32), rng.standard_normal((k, 18)).astype(np.float32) * 0.3,
                  rng.standard_normal((k, 28)).astype(np.float32) * 0.3, rng.random(k) < 0.1)
    agent.flush_rewards()
    return agent


def test_critic_update_matches_torch():
    agent = _filled_agent()
    c, k, bs = agent.cfg, agent.k, agent.cfg.batch_size
    rng = copy.deepcopy(agent.rng)
    idx = rng.integers(0, agent.size, (2, k, bs))
    b = agent.buf
    crit = [[_torch_mlp(agent.critic, j * k + s) for s in range(k)] for j in range(2)]
    crit_t = [[_torch_mlp(agent.critic, j * k + s, agent.critic_target) for s in range(k)] for j in range(2)]
    actor_t = [_torch_mlp(agent.actor, s, agent.actor_target) for s in range(k)]
    next_a = np.zeros((2, k, bs, 4))
    for j in range(2):
        for s in range(k):
            i = idx[j, s]
            nxt = np.concatenate([b["anext"][s, i], b["aobs"][s, i, 22:], b["action"][s, i]], -1)
            next_a[j, s] = _torch_forward(actor_t[s], torch.tensor(nxt, dtype=torch.float64), True).detach().numpy()
    noise = np.clip(rng.normal(0, c.target_noise, next_a.shape), -c.target_noise_clip, c.target_noise_clip)
    next_a = np.clip(next_a + noise, -1, 1)
    grads, losses = [], []
    for j in range(2):
        for s in range(k):
            i = idx[j, s]
            xn = torch.tensor(np.concatenate([b["cnext"][s, i], next_a[j, s]], -1), dtype=torch.float64)
            qn = torch.minimum(_torch_forward(crit_t[0][s], xn, False), _torch_forward(crit_t[1][s], xn, False))[:, 0]
            y = torch.tensor(b["reward"][s, i], dtype=torch.float64) + c.gamma * torch.tensor(
                ~b["term"][s, i], dtype=torch.float64) * qn.detach()
            x = torch.tensor(np.concatenate([b["cobs"][s, i], b["action"][s, i]], -1), dtype=torch.float64)
            loss = ((_torch_forward(crit[j][s], x, False)[:, 0] - y) ** 2).mean()
            loss.backward()
            grads.append([(w.grad.numpy(), bb.grad.numpy()) for w, bb in crit[j][s]])
            losses.append(loss.item())
    agent.critic_opt.step = lambda: None  # keep the gradient buffer for comparison
    m = agent.update_critics()
    assert m["critic_loss"] == pytest.approx(np.mean(losses), rel=1e-4)
    for model, g in enumerate(grads):
        for (gw, gb), (tw, tb) in zip(agent.critic.views(agent.critic.grad), g):
            np.testing.assert_allclose(gw[model], tw, rtol=2e-3, atol=1e-6)
            np.testing.assert_allclose(gb[model, 0], tb, rtol=2e-3, atol=1e-6)


def test_actor_update_matches_torch_and_leaves_critics():
    agent = _filled_agent()
    k, bs = agent.k, agent.cfg.batch_size
    idx = copy.deepcopy(agent.rng).integers(0, agent.size, (k, bs))
    critic_before = agent.critic.flat.copy()
    expected = []
    for s in range(k):
        actor = _torch_mlp(agent.actor, s)
        q1 = _torch_mlp(agent.critic, s)  # critic 1 of seed s
        a = _torch_forward(actor, torch.tensor(agent.buf["aobs"][s, idx[s]], dtype=torch.float64), True)
        x = torch.cat([torch.tensor(agent.buf["cobs"][s, idx[s]], dtype=torch.float64), a], -1)
        (-_torch_forward(q1, x, False).mean()).backward()
        expected.append([(w.grad.numpy(), b.grad.numpy()) for w, b in actor])
    agent.actor_opt.step = lambda: None
    agent.update_actor()
    for s, g in enumerate(expected):
        for (gw, gb), (tw, tb) in zip(agent.actor.views(agent.actor.grad), g):
            np.testing.assert_allclose(gw[s], tw, rtol=2e-3, atol=1e-7)
            np.testing.assert_allclose(gb[s, 0], tb, rtol=2e-3, atol=1e-7)
    np.testing.assert_array_equal(agent.critic.flat, critic_before)


def test_schedule_counts_and_curriculum():
    cfg = L2FConfig()
    critic = sum(1 for t in range(1, 300_001) if t > cfg.critic_start and t % cfg.critic_every == 0)
    actor = sum(1 for t in range(1, 300_001) if t > cfg.actor_start and t % cfg.actor_every == 0)
    assert (critic, actor) == (28_500, 13_500)
    agent = _filled_agent(k=1, n=50, critic_start=20, critic_every=10, actor_start=30, actor_every=20,
                          curriculum_steps=(40,))
    r0 = agent.buf["reward"][0, :50].copy()
    for t in range(1, 61):
        agent.train_step(t)
    assert agent.updates == {"critic": 4, "actor": 2}  # critic at 30, 40, 50, 60; actor at 40, 60
    assert agent.weights.position == pytest.approx(6.0)
    assert not np.allclose(agent.buf["reward"][0, :50], r0)  # rewards recomputed with the new weights
    assert (agent.buf["reward"][0, :50][agent.buf["term"][0, :50]] == 0).all()
    w = curriculum_weights(cfg, 300_000)
    assert (w.position, w.orientation, w.linear_velocity, w.action) == pytest.approx((7.2, 5, 0.0196, 0.0196))
    w = curriculum_weights(cfg, 150_000)
    assert (w.position, w.linear_velocity) == pytest.approx((6.0, 0.014))


def test_reward_recomputed_from_stored_state_matches_env_reward():
    sim = Q.QuadrotorBatch(3)
    sim.reset(np.random.default_rng(2))
    cobs = sim.critic_obs().astype(np.float32)
    a = np.random.default_rng(3).uniform(-1, 1, (3, 4))
    agent = L2FAgent(None, None, L2FConfig(seeds=3, hidden=8), capacity=4)
    agent.add(np.zeros((3, 146), np.float32), cobs, a, np.zeros((3, 18), np.float32), cobs, np.zeros(3, bool))
    agent.flush_rewards()  # rewards are computed in batches, on demand
    s = sim.state
    expected = Q.reward(Q.TRAIN_START_WEIGHTS, s[:, 0:3], s[:, 6], s[:, 3:6], a, np.zeros(3, bool))
    np.testing.assert_allclose(agent.buf["reward"][:, 0], expected, rtol=1e-5)


def test_state_dict_round_trip_continues_identically():
    a = _filled_agent(k=1, n=100)
    for t in range(1, 3):
        a.update_critics(), a.update_actor()
    b = L2FAgent(None, None, a.cfg, capacity=110, seed=99)
    b.load_state_dict(a.state_dict())
    for agent in (a, b):
        agent.update_critics(), agent.update_actor()
    np.testing.assert_array_equal(a.actor.flat, b.actor.flat)
    np.testing.assert_array_equal(a.critic_target, b.critic_target)
    with pytest.raises(ConfigError, match="shape"):
        L2FAgent(None, None, L2FConfig(seeds=2, hidden=8, batch_size=16), capacity=110).load_state_dict(
            a.state_dict())


def test_config_errors():
    with pytest.raises(ConfigError, match="batch_size"):
        L2FConfig(batch_size=0)
    with pytest.raises(ConfigError, match="quadrotor"):
        import gymnasium as gym

        L2FAgent(gym.spaces.Box(-1, 1, (5,)), gym.spaces.Box(-1, 1, (4,)), L2FConfig())


def _train_cfg(tmp_path, name, frames, **kw):
    from pixelrl.train.setup import build_config

    agent = {"critic_start": 300, "actor_start": 600, "curriculum_steps": (1500,), "hidden": 16, "batch_size": 32}
    return build_config("builtin/quadrotor-hover", "l2f", device="cpu", run_dir=str(tmp_path / name), progress=False,
                        tensorboard=False, threads=1, frames=frames, eval_every_frames=2000, eval_episodes=4,
                        checkpoint_every_frames=2000, agent=agent, **kw)


def test_collector_stores_consistent_histories_next_states_and_returns():
    """The collector's transitions: each stored observation's history is the episode's last 32 executed actions
    (zeros before its start), its state part is the previous transition's next state, and a finished episode's
    logged return is the sum of its rewards."""
    from pixelrl.train.l2f import HoverCollector

    cfg = L2FConfig(seeds=2, hidden=8, critic_start=10**6, actor_start=10**6)
    agent = L2FAgent(None, None, cfg, capacity=400, seed=3)
    col = HoverCollector(agent, 7)
    col.run(300)
    agent.flush_rewards()
    b = agent.buf
    assert col.finished, "an untrained actor crashes within 300 steps"
    for seed in range(2):
        start = 0
        for _, ret, length, _ in [f for f in col.finished if f[0] == seed]:
            for t in range(start, start + length):
                hist = b["aobs"][seed, t, 18:].reshape(32, 4)
                past = b["action"][seed, max(start, t - 32):t]
                np.testing.assert_array_equal(hist[32 - len(past):], past)
                assert not hist[:32 - len(past)].any()
                if t > start:
                    np.testing.assert_array_equal(b["aobs"][seed, t, :18], b["anext"][seed, t - 1])
            assert ret == pytest.approx(float(b["reward"][seed, start:start + length].sum()), rel=1e-5)
            start += length


def test_trainer_runs_evaluates_and_resumes_exactly(tmp_path):
    from pixelrl.train.l2f import L2FTrainer
    from pixelrl.train.logger import read_rows
    from pixelrl.train.setup import trainer_class

    cfg = _train_cfg(tmp_path, "a", 4000, video=True)
    assert trainer_class(cfg) is L2FTrainer and cfg.obs == "state"
    summary = trainer_class(cfg)(cfg).run()
    assert summary["frames"] == 4000
    evals = read_rows(tmp_path / "a", "eval")
    assert [e["frames"] for e in evals] == [0, 2000, 4000]
    assert all(0.0 <= e["success_rate"] <= 1.0 and "seeds_passing" in e for e in evals)
    assert list((tmp_path / "a" / "videos").glob("*.mp4"))
    train = read_rows(tmp_path / "a", "train")
    assert train[-1]["critic_updates"] == sum(1 for t in range(1, 4001) if t > 300 and t % 10 == 0)
    assert train[-1]["actor_updates"] == sum(1 for t in range(1, 4001) if t > 600 and t % 20 == 0)
    # stopped at 2000, resumed to 4000: the same rows (timing columns aside)
    cfg_b = _train_cfg(tmp_path, "b", 2000, video=False)
    trainer_class(cfg_b)(cfg_b).run()
    import dataclasses

    resumed = L2FTrainer(dataclasses.replace(cfg_b, frames=4000), resume=True)
    resumed.run()
    timing = {"fps", "update_s", "wall_s", "eval_s"}
    strip = [{k: v for k, v in r.items() if k not in timing} for r in read_rows(tmp_path / "b", "train")]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in train]
    ev_b = read_rows(tmp_path / "b", "eval")
    assert [e["eval_return"] for e in ev_b] == [e["eval_return"] for e in evals]


def test_pixelrl_eval_reports_success_rate(tmp_path):
    import json
    import subprocess
    import sys

    cfg = _train_cfg(tmp_path, "e", 1000, video=False)
    from pixelrl.train.setup import trainer_class

    trainer_class(cfg)(cfg).run()
    p = subprocess.run([sys.executable, "-m", "pixelrl.cli.main", "eval", str(tmp_path / "e"), "--episodes", "2"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert "success_rate" in out and 0.0 <= out["success_rate"] <= 1.0


def test_batched_rewards_match_per_step_rewards_across_the_ring_wrap():
    """Rewards computed in one call per flush (also across the ring buffer's wrap) equal the per-transition ones, and
    an episode's return is the sum of its stored rewards."""
    agent = L2FAgent(None, None, L2FConfig(seeds=2, hidden=8, replay_capacity=500), capacity=500)
    rng = np.random.default_rng(4)
    cobs = rng.standard_normal((730, 2, 28)).astype(np.float32) * 0.3
    act = rng.uniform(-1, 1, (730, 2, 4)).astype(np.float32)
    term = rng.random((730, 2)) < 0.05
    for t in range(730):
        agent.add(np.zeros((2, 146), np.float32), cobs[t], act[t], np.zeros((2, 18), np.float32), cobs[t], term[t])
        if t in (100, 480, 650):  # flushes before, at and after the wrap (ptr 230 at the end)
            agent.flush_rewards()
    agent.flush_rewards()
    expected = agent._reward(cobs, act, term)  # [730, 2]
    slots = np.arange(730) % 500
    np.testing.assert_allclose(agent.buf["reward"][:, slots[-500:]], expected[-500:].T, rtol=1e-6)
    assert agent.recent_return(1, 40) == pytest.approx(float(expected[-40:, 1].sum()), rel=1e-5)


def test_curriculum_follows_the_authors_rule_for_the_run_length():
    """learning-to-fly src/steps/curriculum.h: every 100k steps, not at the run's last step; a list replaces it."""
    from pixelrl.agents.l2f import curriculum_schedule

    cfg = L2FConfig()
    assert curriculum_schedule(cfg, 300_000) == (100_000, 200_000)
    assert curriculum_schedule(cfg, 1_000_000) == tuple(range(100_000, 1_000_000, 100_000))
    assert curriculum_schedule(cfg, 100_000) == ()
    assert curriculum_schedule(L2FConfig(curriculum_steps=(100_000, 200_000)), 1_000_000) == (100_000, 200_000)
    agent = L2FAgent(None, None, L2FConfig(seeds=1, hidden=8), capacity=1_000_001)
    assert agent.curriculum == tuple(range(100_000, 1_000_000, 100_000))
    w = curriculum_weights(cfg, 1_000_000, 1_000_000)
    assert (w.position, w.linear_velocity, w.action) == pytest.approx((5 * 1.2 ** 9, 0.01 * 1.4 ** 9, 0.01 * 1.4 ** 9))


def test_noise_decays_after_500k_as_in_the_authors_code():
    """EXPLORATION_NOISE_DECAY: at step % 100k == 0 and step >= 500k, exploration σ, target σ and clip x0.9."""
    from pixelrl.agents.l2f import noise_scale

    cfg = L2FConfig()
    assert noise_scale(cfg, 499_999) == 1.0
    assert noise_scale(cfg, 500_000) == pytest.approx(0.9)
    assert noise_scale(cfg, 699_999) == pytest.approx(0.9 ** 2)
    assert noise_scale(cfg, 1_000_000) == pytest.approx(0.9 ** 6)
    assert noise_scale(L2FConfig(exploration_decay=1.0), 1_000_000) == 1.0
    agent = _filled_agent(k=1, n=50, critic_start=10**7, actor_start=10**7, exploration_decay_start=200,
                          curriculum_every=100)
    agent.train_step(199)
    assert agent.exploration_sigma == pytest.approx(0.1)
    assert agent.train_step(200)["noise_scale"] == pytest.approx(0.9)
    agent.train_step(300)
    assert agent.exploration_sigma == pytest.approx(0.1 * 0.81)
    fresh = _filled_agent(k=1, n=50, exploration_decay_start=200, curriculum_every=100)
    fresh.set_step(350)  # a resume restores it
    assert fresh.noise_scale == pytest.approx(0.81)
    # the target-policy smoothing noise shrinks with it
    drawn = []

    class Spy:
        def __init__(self, rng):
            self.rng = rng

        def normal(self, loc, scale, size=None):
            drawn.append(scale)
            return self.rng.normal(loc, scale, size)

        def __getattr__(self, name):
            return getattr(self.rng, name)

    fresh.rng = Spy(fresh.rng)
    fresh.update_critics()
    assert drawn == [pytest.approx(0.2 * 0.81)]
    with pytest.raises(ConfigError, match="exploration_decay"):
        L2FConfig(exploration_decay=0.0)


def test_offset_diagnostics_separate_the_policy_bias_from_the_force_response():
    """With disturbances off, the same starts and noise; a policy's final positions split into a bias and a slope
    against the episode's force."""
    from pixelrl.train.l2f import evaluate_hover, offset_diagnostics

    agent = L2FAgent(None, None, L2FConfig(seeds=2, hidden=8), capacity=10, seed=5)
    res = evaluate_hover(agent, 6, 3)
    calm = evaluate_hover(agent, 6, 3, disturbance_scale=0.0)
    assert res["final_position"].shape == (2, 6, 3) and not calm["disturbance"].any()
    assert res["disturbance"].any()
    np.testing.assert_allclose(np.linalg.norm(res["final_position"], axis=-1), res["final_distance"])
    rows = offset_diagnostics(agent, 6, 3)
    assert len(rows) == 2 and {"success_rate", "success_rate_no_disturbance", "bias"} <= set(rows[0])
    assert rows[0]["success_rate"] == float(res["success"][0].mean())
