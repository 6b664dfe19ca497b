"""The offline trainer: offline runs with evaluation, offline->online (shared buffer and exact ratio), demo mixing
in online runs, exact resume in both phases, and clear errors. Tiny datasets are collected in the tests from
random episodes of dmc/cartpole-swingup (states, or 32x32 pixels at action repeat 8)."""

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest
import torch

from pixelrl.data.dataset import DatasetWriter, load_dataset
from pixelrl.envs import make
from pixelrl.errors import ConfigError
from pixelrl.train.logger import TIMING_COLUMNS, read_rows
from pixelrl.train.offline import OfflineConfig, OfflineTrainer, dataset_state_stats, dataset_train_defaults
from pixelrl.train.setup import build_config

pytest.importorskip("dm_control")

ENV = "dmc/cartpole-swingup"
STATE_KW = {"obs": "state", "action_repeat": 8}
PIXEL_KW = {"obs": "pixels", "size": 32, "action_repeat": 8, "fast_render": True}
TINY_AGENT = {"batch_size": 32, "hidden_dim": 32, "feature_dim": 16, "encoder_channels": (8, 8, 8, 8),
              "encoder_strides": (2, 2, 1, 1), "nstep": 1, "num_seed_steps": 0, "update_every_steps": 1,
              "replay_capacity": 5000}
EP_STEPS = 125  # 1000 frames at action repeat 8


def collect(path, episodes, env_kw, seed=0):
    """Random-policy episodes written with the dataset writer (as ``pixelrl collect --policy random``)."""
    env = make(ENV, seed=seed, **env_kw)
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, env.observation_space, env.action_space, env_id=ENV,
                       frame_stack=int(env.get_wrapper_attr("frame_stack")), metadata={"env_kwargs": env_kw}) as w:
        for e in range(episodes):
            obs, _ = env.reset(seed=seed * 1000 + e)
            observations, actions, rewards, terms, truncs = [obs], [], [], [], []
            done = False
            while not done:
                a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
                obs, r, term, trunc, _ = env.step(a)
                observations.append(obs)
                actions.append(a)
                rewards.append(r)
                terms.append(term)
                truncs.append(trunc)
                done = term or trunc
            w.add_episode(observations, np.stack(actions), rewards, terms, truncs)
    env.close()
    return path


@pytest.fixture(scope="module")
def state_data(tmp_path_factory):
    return str(collect(tmp_path_factory.mktemp("data") / "cartpole-state", 3, STATE_KW))


def config(run_dir, env_kw=STATE_KW, agent="drqv2", agent_over=None, **over):
    kw = dict(env_kw)
    train = dict(seed=3, eval_episodes=1, eval_every_frames=1000, threads=1, async_env=False, progress=False,
                 video=False, tensorboard=False, run_dir=str(run_dir), frames=1000)
    train.update(over)
    return build_config(ENV, agent, preset="none", device="cpu", agent={**TINY_AGENT, **(agent_over or {})},
                        **kw, **train)


class Recorder:
    """Wraps ``agent.update`` to record, per update, the rows each source gave (and optionally crash)."""

    def __init__(self, trainer, crash_at=None):
        self.trainer, self.crash_at = trainer, crash_at
        self.calls = []
        self._update = trainer.agent.update
        trainer.agent.update = self

    def __call__(self, batch, *, step):
        if self.crash_at is not None and len(self.calls) == self.crash_at:
            raise RuntimeError("simulated crash")
        c = Counter(batch.extras["source"].tolist())
        self.calls.append((self.trainer.counters["phase"], step, [c.get(i, 0) for i in range(3)]))
        return self._update(batch, step=step)


def comparable(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


# ------------------------------------------------------------------------------------------------ offline

def test_offline_run_on_pixels_evaluates_logs_and_checkpoints(tmp_path):
    data = collect(tmp_path / "pixels", 2, PIXEL_KW)
    run = tmp_path / "run"
    cfg = config(run, PIXEL_KW, video=True, tensorboard=True)
    off = OfflineConfig(dataset=str(data), offline_steps=200, eval_every_steps=100, log_every_steps=50)
    trainer = OfflineTrainer(cfg, off)
    rec = Recorder(trainer)
    assert trainer.train_env is None  # offline only: no training env
    summary = trainer.run()

    evals = read_rows(run, "eval")
    assert [(r["phase"], r["updates"], r["step"], r["frames"]) for r in evals] == [
        ("offline", 0, 0, 0), ("offline", 100, 100, 0), ("offline", 200, 200, 0)]
    assert "random_return" in evals[0] and all(np.isfinite(r["eval_return"]) for r in evals)
    train = read_rows(run, "train")
    assert [r["updates"] for r in train] == [50, 100, 150, 200]
    assert all(r["phase"] == "offline" and r["frac_offline"] == 1.0 and np.isfinite(r["critic_loss"]) for r in train)
    # 200 updates, each on a batch of 32 dataset rows, with the update index as the step
    assert [s for _, s, _ in rec.calls] == list(range(200))
    assert all(c == [32, 0, 0] for _, _, c in rec.calls)
    assert trainer.buffers["offline"].num_sampleable() == 2 * EP_STEPS and set(trainer.buffers) == {"offline"}
    for name in ("config.json", "metrics.jsonl", "eval.csv", "train.csv", "curve.png", "summary.json",
                 "checkpoints/latest.json"):
        assert (run / name).exists(), name
    assert list((run / "videos").glob("eval_offline_step_*.mp4")) and list((run / "tb").iterdir())
    saved = json.loads((run / "config.json").read_text())
    assert saved["offline"]["dataset"] == str(data) and saved["offline"]["offline_steps"] == 200
    assert summary["offline_updates"] == 200 and summary["frames"] == 0
    assert summary["data"]["offline"]["transitions"] == 2 * EP_STEPS
    assert json.loads((run / "checkpoints/latest.json").read_text())["name"] == "offline_000000000200"


_REFERENCE_ROWS = {}


def reference_rows(tmp_path_factory, off):
    """Rows of an uninterrupted run with ``off`` (run once per module)."""
    if off not in _REFERENCE_ROWS:
        ref = tmp_path_factory.mktemp("ref")
        OfflineTrainer(config(ref), off).run()
        _REFERENCE_ROWS[off] = read_rows(ref)
    return _REFERENCE_ROWS[off]


@pytest.mark.parametrize("crash_at", [70, 100])  # mid-way between checkpoints, and right at an eval boundary
def test_offline_resume_continues_exactly(tmp_path, tmp_path_factory, state_data, crash_at):
    off = OfflineConfig(dataset=state_data, offline_steps=120, eval_every_steps=40, log_every_steps=15)
    ref_rows = reference_rows(tmp_path_factory, off)

    run = tmp_path / "run"
    trainer = OfflineTrainer(config(run), off)
    Recorder(trainer, crash_at=crash_at)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.run()
    assert len(read_rows(run)) < len(ref_rows)
    OfflineTrainer(config(run), off, resume=True).run()
    assert comparable(read_rows(run)) == comparable(ref_rows)


# ------------------------------------------------------------------------------------------ offline->online

def test_offline_to_online_with_an_exact_ratio(tmp_path, state_data):
    run = tmp_path / "run"
    off = OfflineConfig(dataset=state_data, offline_steps=40, eval_every_steps=20, online_frames=2000,
                        offline_ratio=0.25)
    trainer = OfflineTrainer(config(run), off)
    rec = Recorder(trainer)
    summary = trainer.run()

    # both phases logged, the final offline eval stands for the online phase's frame 0
    evals = read_rows(run, "eval")
    assert [(r["phase"], r["step"], r["frames"]) for r in evals] == [
        ("offline", 0, 0), ("offline", 20, 0), ("offline", 40, 0), ("online", 40 + EP_STEPS, 1000),
        ("online", 40 + 2 * EP_STEPS, 2000)]
    online_rows = [r for r in read_rows(run, "train") if r["phase"] == "online"]
    assert [r["episode"] for r in online_rows] == [1, 2]
    assert [r["online_transitions"] for r in online_rows] == [EP_STEPS, 2 * EP_STEPS]
    # online transitions went to their own buffer; the offline data is unchanged
    assert len(trainer.buffers["online"]) == 2 * EP_STEPS
    assert len(trainer.buffers["offline"]) == 3 * EP_STEPS
    # every online batch: 8 offline + 24 online rows, except the first (no online transition yet)
    online = [(s, c) for phase, s, c in rec.calls if phase == "online"]
    assert [s for s, _ in online] == list(range(40, 40 + 2 * EP_STEPS))  # one update per agent step, step continues
    assert online[0][1] == [32, 0, 0]
    assert all(c == [8, 24, 0] for _, c in online[1:])
    assert online_rows[1]["frac_offline"] == 0.25 and online_rows[1]["frac_online"] == 0.75
    assert online_rows[0]["frac_offline"] == pytest.approx((1.0 + (EP_STEPS - 1) * 0.25) / EP_STEPS)
    assert summary["frames"] == 2000 and summary["offline_updates"] == 40 and summary["updates"] == 40 + 2 * EP_STEPS


def test_offline_to_online_shared_buffer_is_d5rl(tmp_path, state_data):
    run = tmp_path / "run"
    off = OfflineConfig(dataset=state_data, offline_steps=20, eval_every_steps=20, online_frames=1000)
    trainer = OfflineTrainer(config(run, agent_over={"replay_capacity": 100_000}), off)
    rec = Recorder(trainer)
    trainer.run()
    assert set(trainer.buffers) == {"offline"}
    assert len(trainer.buffers["offline"]) == 3 * EP_STEPS + EP_STEPS  # new episodes appended to the offline data
    assert trainer.buffers["offline"].capacity >= 3 * EP_STEPS + 3 + 100_000
    online = [c for phase, _, c in rec.calls if phase == "online"]
    assert len(online) == EP_STEPS and all(c == [32, 0, 0] for c in online)
    row = [r for r in read_rows(run, "train") if r["phase"] == "online"][0]
    assert row["frac_offline+online"] == 1.0


@pytest.mark.parametrize("kind", ["demos", "prior-data"])
def test_online_run_with_demos_mixes_every_batch(tmp_path, state_data, kind):
    """SERL: an online run with demos; RLPD: a dataset as prior data, no offline phase, 50/50 batches."""
    run = tmp_path / "run"
    if kind == "demos":
        off = OfflineConfig(demos=state_data, demo_ratio=0.5)
    else:
        off = OfflineConfig(dataset=state_data, offline_steps=0, online_frames=1000, offline_ratio=0.5)
    trainer = OfflineTrainer(config(run, agent="sac", agent_over={"num_seed_steps": 10}, frames=1000), off)
    rec = Recorder(trainer)
    trainer.run()
    assert trainer.offline_steps == 0 and trainer.online_frames == 1000  # TrainConfig.frames is the budget
    evals = read_rows(run, "eval")
    assert [(r["phase"], r["frames"]) for r in evals] == [("online", 0), ("online", 1000)]
    # warm-up of the agent's num_seed_steps, then one update per step, each batch exactly 16 online + 16 demo rows
    assert [s for _, s, _ in rec.calls] == list(range(10, EP_STEPS))
    assert all(c == [16, 16, 0] for _, _, c in rec.calls)
    prior = "demos" if kind == "demos" else "offline"
    assert len(trainer.buffers["online"]) == EP_STEPS and len(trainer.buffers[prior]) == 3 * EP_STEPS
    row = read_rows(run, "train")[-1]
    assert row[f"frac_{prior}"] == 0.5 and row["frac_online"] == 0.5


@pytest.mark.parametrize("ratio", [0.5, None], ids=["separate", "shared"])
def test_offline_to_online_resume_continues_exactly(tmp_path, tmp_path_factory, state_data, ratio):
    off = OfflineConfig(dataset=state_data, offline_steps=30, eval_every_steps=15, log_every_steps=10,
                        online_frames=2000, offline_ratio=ratio)
    ref_rows = reference_rows(tmp_path_factory, off)

    run = tmp_path / "run"
    trainer = OfflineTrainer(config(run), off)
    Recorder(trainer, crash_at=30 + EP_STEPS + 60)  # in the second online episode, after the checkpoint at 1000
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.run()
    assert json.loads((run / "checkpoints/latest.json").read_text())["name"] == "online_000000001000"
    resumed = OfflineTrainer(config(run), off, resume=True)
    # the buffer receiving online data is restored as it was at the checkpoint (after one online episode)
    if ratio is None:
        assert len(resumed.buffers["offline"]) == 3 * EP_STEPS + EP_STEPS
    else:
        assert len(resumed.buffers["online"]) == EP_STEPS
    resumed.run()
    assert comparable(read_rows(run)) == comparable(ref_rows)


# ------------------------------------------------------------------------------------------------ helpers

def test_dataset_state_stats_and_train_defaults(state_data):
    ds = load_dataset(state_data)
    mean, std = dataset_state_stats(ds)
    x = np.concatenate([ep["observations"][:-1] for ep in ds.iter_episodes()]).astype(np.float64)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(std, x.std(0), rtol=1e-10, atol=1e-12)
    assert dataset_train_defaults(state_data) == {"env": ENV, **STATE_KW}


@pytest.fixture
def offline_agents():
    """The offline agents, which must be in the registry (they used to be registered here when missing, which hid an
    agent dropping out of it)."""
    from pixelrl.agents import AGENTS, BCAgent, IQLAgent, TD3BCAgent

    for name, cls in {"bc": BCAgent, "iql": IQLAgent, "td3bc": TD3BCAgent}.items():
        assert name in AGENTS and AGENTS[name].agent_cls is cls, name


OFFLINE_AGENT_OVER = {
    "bc": {"obs_norm": True},
    "iql": {"obs_norm": True, "normalize_returns": True, "actor_lr_schedule": "constant"},
    "td3bc": {"obs_norm": True},
}


@pytest.mark.parametrize("agent", ["iql", "td3bc", "bc"])
def test_offline_agents_train_offline_then_online(tmp_path, state_data, offline_agents, agent):
    off = OfflineConfig(dataset=state_data, offline_steps=10, eval_every_steps=10, online_frames=1000,
                        offline_ratio=0.5)
    trainer = OfflineTrainer(config(tmp_path / "run", agent=agent, agent_over=OFFLINE_AGENT_OVER[agent]), off)
    ds = load_dataset(state_data)
    mean, std = dataset_state_stats(ds)
    # the agent got the dataset's state statistics (and IQL its return range) before the first update
    torch.testing.assert_close(trainer.agent.obs_normalizer.mean, torch.as_tensor(mean, dtype=torch.float32))
    torch.testing.assert_close(trainer.agent.obs_normalizer.std, torch.as_tensor(std + 1e-3, dtype=torch.float32))
    if agent == "iql":
        r = ds.episode_returns()
        assert trainer.agent.return_scale == pytest.approx(1000.0 / (r.max() - r.min()))
    rec = Recorder(trainer)
    trainer.run()
    phases = Counter(p for p, _, _ in rec.calls)
    assert phases == {"offline": 10, "online": EP_STEPS}
    assert all(c == [16, 16, 0] for p, _, c in rec.calls[11:])
    assert [r["phase"] for r in read_rows(tmp_path / "run", "eval")] == ["offline", "offline", "online"]


def test_cosine_actor_schedule_that_ends_offline_is_warned_about(tmp_path, state_data, offline_agents):
    off = OfflineConfig(dataset=state_data, offline_steps=10, online_frames=1000)
    with pytest.warns(UserWarning, match="actor-lr-schedule constant"):
        OfflineTrainer(config(tmp_path / "run", agent="iql", agent_over={"lr_decay_steps": 10}), off)


# ------------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, match", [
    ({"dataset": "d", "offline_ratio": 1.5}, "--offline-ratio must be a fraction"),
    ({"demos": "d", "offline_ratio": 0.5}, "no dataset is given"),
    ({"dataset": "d", "demos": "e", "offline_ratio": 0.7, "demo_ratio": 0.5}, "exceed 1"),
    ({"dataset": "d", "offline_steps": -1}, "--offline-steps must be an integer >= 0"),
    ({"dataset": "d", "eval_every_steps": 0}, "--eval-every-steps must be an integer >= 1"),
    ({"dataset": "d", "online_frames": 1.5}, "--online-frames must be an integer"),
    ({"demos": "d", "demo_ratio": float("nan")}, "--demo-ratio must be a fraction"),
])
def test_bad_offline_config_is_one_clear_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        OfflineConfig(**kwargs)


def test_data_that_does_not_fit_the_env_is_refused(tmp_path, state_data):
    assert not OfflineConfig().active
    with pytest.raises(ConfigError, match="nothing to learn from"):
        OfflineTrainer(config(tmp_path / "z"), OfflineConfig())
    with pytest.raises(ConfigError, match="does not exist"):
        OfflineTrainer(config(tmp_path / "a"), OfflineConfig(dataset=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="does not fit env.*--obs, --size"):
        OfflineTrainer(config(tmp_path / "b", PIXEL_KW), OfflineConfig(dataset=state_data))
    with pytest.raises(ConfigError, match="collected on dmc/cartpole-swingup.*--env"):
        cfg = dataclasses.replace(config(tmp_path / "c"), env="dmc/cartpole-balance")
        OfflineTrainer(cfg, OfflineConfig(dataset=state_data))
    with pytest.raises(ConfigError, match="nothing to do"):
        OfflineTrainer(config(tmp_path / "d"), OfflineConfig(dataset=state_data, offline_steps=0))
    run = tmp_path / "e"
    OfflineTrainer(config(run), OfflineConfig(dataset=state_data, offline_steps=2, eval_every_steps=2)).run()
    with pytest.raises(ConfigError, match="already holds a run"):
        OfflineTrainer(config(run), OfflineConfig(dataset=state_data, offline_steps=2))
