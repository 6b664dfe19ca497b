"""The SQIRL trainer end to end: the run folder, k at which a tabular MDP is solved = its k-QVI-solvability, CartPole
learned, exact resume after an interruption, the replay's frame storage, and clear errors."""

import json
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents.sqirl import qvi_min_k
from pixelrl.errors import ConfigError, Interrupted
from pixelrl.train.logger import TIMING_COLUMNS, read_rows
from pixelrl.train.setup import build_config, trainer_class
from pixelrl.train.sqirl import SegmentReplay, SQIRLTrainer, mc_returns
from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint

# The two-step MDP (as tests/agents/test_sqirl.py): s0 --a0--> A (a0: r = 1, a1: r = 0); s0 --a1--> B (r = 0.6).
# Greedy on the random policy's Q (k = 1) takes B and returns 0.6; k = 2 is optimal (1.0).
P = np.zeros((4, 2, 4))
P[0, 0, 1] = P[0, 1, 2] = 1
P[1:, :, 3] = 1
R = np.zeros((4, 2))
R[1, 0], R[2, :] = 1.0, 0.6


class TwoStepMDP(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}
    observation_space = gym.spaces.Box(0, 1, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.s = 0

    def _obs(self):
        x = np.zeros(4, np.float32)
        x[self.s] = 1
        return x

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = 0
        return self._obs(), {}

    def step(self, a):
        r = float(R[self.s, int(a)])
        self.s = int(np.argmax(P[self.s, int(a)]))
        return self._obs(), r, self.s == 3, False, {}


ENV_ID = "PixelrlSqirlTwoStep-v0"
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=TwoStepMDP)

TIMING = set(TIMING_COLUMNS)


def _cfg(tmp_path, env, name, frames, agent, **kw):
    base = dict(obs="state", frames=frames, eval_every_frames=max(frames // 3, 1), eval_episodes=3, threads=1,
                progress=False, tensorboard=False, video=False, seed=1, run_dir=str(tmp_path / name))
    base.update(kw)
    return build_config(env=env, agent_name="sqirl", preset="none", device="cpu", agent=agent, **base)


def _tabular_agent(k):
    return {"planning_depth": k, "episodes_per_timestep": 16, "discount": 1.0, "lr": 1e-2, "n_epochs": 400,
            "idle_iterations": 0}


def test_sqirl_solves_the_two_step_mdp_exactly_at_its_qvi_depth(tmp_path):
    assert qvi_min_k(P, R, horizon=2) == 2
    out = {}
    for k in (1, 2):
        cfg = _cfg(tmp_path, f"gym/{ENV_ID}", f"k{k}", 10_000, _tabular_agent(k))
        assert trainer_class(cfg) is SQIRLTrainer
        out[k] = SQIRLTrainer(cfg).run()
    assert out[1]["final_eval_return"] == pytest.approx(0.6)  # greedy on Q^1: the myopic branch
    assert out[2]["final_eval_return"] == pytest.approx(1.0)  # greedy on Q^2: optimal
    s = out[2]
    assert s["ended_by"] == "horizon_covered"  # episodes end at timestep 2: nothing left to learn
    eh = s["effective_horizon"]
    assert eh["k"] == 2 and eh["m"] == 16 and eh["num_actions"] == 2 and eh["timesteps_learned"] == 2
    assert eh["estimate_if_solved"] == pytest.approx(4.0)  # max(k, log_2 16)
    run = tmp_path / "k2"
    for name in ("config.json", "train.csv", "eval.csv", "metrics.jsonl", "curve.png", "summary.json",
                 "checkpoints/latest.json"):
        assert (run / name).exists(), name
    assert json.loads((run / "summary.json").read_text())["effective_horizon"] == eh
    train = read_rows(run, "train")
    assert [r["horizon_step"] for r in train] == [0, 1]
    assert train[0]["explore_fraction"] == 1.0 and train[1]["explore_fraction"] == pytest.approx(0.5)
    assert all(r["frames"] > 0 and r["agent_steps"] > 0 for r in train)
    cfg_json = json.loads((run / "config.json").read_text())
    assert cfg_json["decisions"]["sqirl_envs"]["num_envs"] == 8


def test_sqirl_learns_cartpole(tmp_path):
    """k = 1, m = 16 (lr 1e-3: see docs/agents/sqirl.md) on CartPole-v1 from states: the random policy scores ~20."""
    t0 = time.perf_counter()
    cfg = _cfg(tmp_path, "gym/CartPole-v1", "cartpole", 60_000,
               {"planning_depth": 1, "episodes_per_timestep": 16, "lr": 1e-3}, eval_every_frames=60_000,
               eval_episodes=10)
    s = SQIRLTrainer(cfg).run()
    assert s["random_return"] < 40
    assert s["final_eval_return"] >= 195, s  # CartPole-v0's "solved" return; the maximum is 500
    assert time.perf_counter() - t0 < 60


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_resume_after_interruption_is_exact(tmp_path):
    agent = {"planning_depth": 2, "episodes_per_timestep": 3, "lr": 1e-3, "num_envs": 2}
    kw = dict(eval_every_frames=150, eval_episodes=2)
    full = SQIRLTrainer(_cfg(tmp_path, "gym/CartPole-v1", "full", 600, agent, **kw))
    full.run()
    cfg = _cfg(tmp_path, "gym/CartPole-v1", "cut", 600, agent, **kw)
    tr = SQIRLTrainer(cfg)
    real = tr._horizon_step
    calls = {"n": 0}

    def step_then_die(progress):
        calls["n"] += 1
        if calls["n"] == 5:
            real(progress)  # the fifth step is done but never checkpointed: the resume redoes it
            raise KeyboardInterrupt
        real(progress)

    tr._horizon_step = step_then_die
    with pytest.raises(Interrupted, match="pixelrl resume"):
        tr.run()
    resumed = SQIRLTrainer(cfg, resume=True)
    assert resumed.counters["horizon_step"] == 4
    resumed.run()
    for kind in ("train", "eval"):
        assert _comparable(read_rows(tmp_path / "cut", kind)) == _comparable(read_rows(tmp_path / "full", kind))
    a = load_checkpoint(latest_checkpoint(tmp_path / "full" / "checkpoints"))["agent"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "cut" / "checkpoints"))["agent"]
    assert a["horizon"] == b["horizon"] > 5
    for name in a["q"]:
        assert torch.equal(a["q"][name], b["q"][name])
    for name in a["policies"]:
        assert torch.equal(a["policies"][name], b["policies"][name])


def test_mc_returns():
    assert np.allclose(mc_returns(np.array([1.0, 0.0, 2.0]), 0.5), [1 + 0.25 * 2, 0.5 * 2, 2.0])


def test_segment_replay_stores_frames_once_and_rebuilds_stacks(tmp_path):
    space = gym.spaces.Box(0, 255, (3, 2, 2), np.uint8)  # frame stack 3 of 1-channel 2x2 frames
    frames = [np.full((1, 2, 2), v, np.uint8) for v in range(20)]

    def obs(t):  # the stack ending at frame t (oldest first), padded with frame 0 like FrameStack after reset
        return np.concatenate([frames[max(t - 2 + j, 0)] for j in range(3)])

    rb = SegmentReplay(space, frame_stack=3, capacity=12, seed=0)
    o = [obs(t) for t in range(2, 8)]  # a segment starting at timestep 2: 5 transitions
    rb.add_segment(o, np.arange(5), np.ones(5), np.array([0.9] * 4 + [0.0]), np.arange(5.0), first_timestep=2)
    assert len(rb) == 5 and rb.f_hi == 3 + 5  # 3 frames of the first stack, then one per step
    b = rb.sample(64, torch.device("cpu"))
    for x, nx, a in zip(b.obs.numpy(), b.next_obs.numpy(), b.action.numpy()):
        assert np.array_equal(x, o[a]) and np.array_equal(nx, o[a + 1])
    manifest = rb.save(tmp_path)
    o2 = [obs(t) for t in range(10, 16)]
    rb.add_segment(o2, np.arange(5), np.zeros(5), np.zeros(5), np.zeros(5), first_timestep=0)
    assert rb.f_hi == 16 and rb.f_lo == 4 and len(rb) == 5 + 1  # frames 0..3 evicted: 4 old transitions gone
    # a replay loaded from the first manifest equals the replay as it was then
    again = SegmentReplay(space, frame_stack=3, capacity=12, seed=0)
    again.load(tmp_path, manifest)
    assert len(again) == 5
    b2 = again.sample(64, torch.device("cpu"))
    for x, a in zip(b2.obs.numpy(), b2.action.numpy()):
        assert np.array_equal(x, o[a])
    bad = [obs(2), obs(5)]  # not a sliding stack
    with pytest.raises(ConfigError, match="sliding frame stack"):
        rb.add_segment(bad, np.arange(1), np.ones(1), np.zeros(1), np.ones(1), first_timestep=0)


def test_continuous_env_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(ConfigError, match="sqirl"):
        build_config(env="gym/Pendulum-v1", agent_name="sqirl", preset="none", device="cpu", obs="state",
                     run_dir=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
