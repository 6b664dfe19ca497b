"""`collect`: random and trained policies on a tiny dmc/cartpole-swingup, deterministic per seed, clear errors."""

import json
import os

import numpy as np
import pytest

from pixelrl.data.dataset import load_dataset
from pixelrl.errors import ConfigError

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("dm_control")
pytest.importorskip("h5py")

ENV = "dmc/cartpole-swingup"
TINY_ENV = dict(size=32, action_repeat=8, fast_render=True)


def _episodes(ds):
    return list(ds.iter_episodes(stacked=False))


def _same(a, b):
    for x, y in zip(_episodes(a), _episodes(b)):
        for k in ("observations", "actions", "rewards", "terminations", "truncations"):
            if not np.array_equal(x[k], y[k]):
                return False
    return True


def test_random_collect_is_loadable_and_deterministic(tmp_path):
    from pixelrl.envs import make
    from pixelrl.train.collect import collect

    s = collect(ENV, "random", 2, tmp_path / "a", seed=3, **TINY_ENV)
    ds = load_dataset(tmp_path / "a")
    assert s["episodes"] == ds.num_episodes == 2
    assert s["transitions"] == ds.num_transitions == 250  # 1000 frames / action repeat 8, per episode
    assert s["frames"] == 2000
    env = make(ENV, **TINY_ENV)
    assert ds.observation_space == env.observation_space and ds.action_space == env.action_space
    assert ds.env_id == ENV and ds.frame_stack == 3
    assert ds.env_kwargs == {"size": 32, "fast_render": True, "obs": "pixels", "action_repeat": 8, "frame_stack": 3}
    np.testing.assert_allclose(ds.episode_returns(), s["returns"])
    assert ds.metadata["collect"]["policy"] == "random"
    collect(ENV, "random", 2, tmp_path / "b", seed=3, **TINY_ENV)
    collect(ENV, "random", 1, tmp_path / "c", seed=4, **TINY_ENV)
    assert _same(ds, load_dataset(tmp_path / "b"))
    assert not _same(ds, load_dataset(tmp_path / "c"))
    with pytest.raises(ConfigError, match="already exists"):
        collect(ENV, "random", 1, tmp_path / "a", **TINY_ENV)


def _fake_run(tmp_path):
    """A run folder as `pixelrl train` leaves it: config.json and one checkpoint of a tiny DrQ-v2."""
    from pixelrl.agents import make_agent
    from pixelrl.envs import make
    from pixelrl.utils.checkpoint import save_checkpoint
    from pixelrl.train.setup import build_config
    from pixelrl.utils.dataclass_io import to_dict

    run = tmp_path / "run"
    cfg = build_config(ENV, "drqv2", "none", "cpu", size=32, action_repeat=8, fast_render=True,
                       run_dir=str(run), agent={"hidden_dim": 16, "feature_dim": 8,
                                                "encoder_channels": (4, 4, 4, 4)})
    run.mkdir()
    (run / "config.json").write_text(json.dumps(to_dict(cfg)))
    env = make(ENV, **cfg.env_kwargs())
    agent = make_agent("drqv2", env.observation_space, env.action_space, cfg.agent, "cpu")
    save_checkpoint(run / "checkpoints", "frames_000000000800",
                    {"agent": agent.state_dict(), "trainer": {"agent_steps": 100, "frames": 800}})
    return run


def test_collect_from_a_run_with_noise(tmp_path):
    from pixelrl.train.collect import collect

    run = _fake_run(tmp_path)
    s = collect(None, str(run), 1, tmp_path / "det", seed=0, device="cpu")
    assert s["env"] == ENV and s["transitions"] == 125
    det = load_dataset(tmp_path / "det")
    assert det.metadata["collect"]["checkpoint"] == "frames_000000000800"
    assert det.metadata["collect"]["agent_steps"] == 100
    assert det.env_kwargs["size"] == 32 and det.env_kwargs["action_repeat"] == 8
    collect(None, str(run), 1, tmp_path / "noisy", seed=0, noise_std=0.5, device="cpu")
    collect(None, str(run), 1, tmp_path / "noisy2", seed=0, noise_std=0.5, device="cpu")
    noisy = load_dataset(tmp_path / "noisy")
    a_det, a_noisy = det.get_episode(0)["actions"], noisy.get_episode(0)["actions"]
    assert np.all(np.abs(a_noisy) <= 1.0)  # clipped to the action bounds
    # same env seed: the first observation is the same, so the first action differs only by the noise
    assert not np.allclose(a_det[0], a_noisy[0])
    assert _same(noisy, load_dataset(tmp_path / "noisy2"))
    with pytest.raises(ConfigError, match="size=32"):
        collect(None, str(run), 1, tmp_path / "x", size=64, device="cpu")
    with pytest.raises(ConfigError, match="trained on"):
        collect("dmc/walker-walk", str(run), 1, tmp_path / "x", device="cpu")
    with pytest.raises(ConfigError, match="random' or a run folder"):
        collect(ENV, str(tmp_path / "nowhere"), 1, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_collect_cli_pixels_state(tmp_path, capsys):
    from pixelrl.cli.dataset import cmd_collect

    assert cmd_collect(["--env", ENV, "--out", str(tmp_path / "d"), "--episodes", "1", "--size", "32",
                        "--action-repeat", "8", "--fast-render", "True", "--obs", "pixels+state", "--epsilon", "0.5",
                        "--no-progress", "--seed", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ds = load_dataset(tmp_path / "d")
    assert out["transitions"] == ds.num_transitions == 125 and out["dataset_id"] == ds.dataset_id == "pixelrl/d-v0"
    assert set(ds.observation_keys) == {"pixels", "state"}
    with pytest.raises(ConfigError, match="--env is required"):
        cmd_collect(["--out", str(tmp_path / "e")])


def test_a_damaged_run_is_one_named_line_for_collect_and_snapshots(tmp_path, capsys):
    """collect and snapshots collect read a run as eval does (load_run_config, resolve_checkpoint, load_agent_state):
    a corrupt config.json, a checkpoint that is not there, or an edited shape is one line, and nothing is written."""
    from pixelrl.cli.main import main

    run = _fake_run(tmp_path)

    def one_line(*args):
        capsys.readouterr()
        assert main(list(args)) == 1
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "Traceback" not in err[0], err
        return err[0]

    collect_cmd = ["collect", "--policy", str(run), "--episodes", "1", "--no-progress", "--device", "cpu"]
    snap_cmd = ["snapshots", "collect", "--policy", str(run), "--episodes", "1", "--no-progress", "--device", "cpu"]
    for cmd in (collect_cmd, snap_cmd):
        line = one_line(*cmd, "--out", str(tmp_path / "o"), "--checkpoint", "frames_123")
        assert "not found" in line and "frames_000000000800" in line
    ckpts = run / "checkpoints"
    (ckpts / "latest.json").rename(ckpts / "latest.moved")
    for cmd in (collect_cmd, snap_cmd):
        assert "has no checkpoint yet" in one_line(*cmd, "--out", str(tmp_path / "o"))
    (ckpts / "latest.moved").rename(ckpts / "latest.json")

    cfg = run / "config.json"
    good = cfg.read_text()
    doc = json.loads(good)
    doc["agent"]["hidden_dim"] = 24  # an edited shape: the checkpoint no longer fits
    cfg.write_text(json.dumps(doc))
    for cmd in (collect_cmd, snap_cmd):
        line = one_line(*cmd, "--out", str(tmp_path / "o"))
        assert "config.json" in line and "hidden_dim" in line
    cfg.write_text(good[: len(good) // 2])  # truncated
    for cmd in (collect_cmd, snap_cmd):
        line = one_line(*cmd, "--out", str(tmp_path / "o"))
        assert str(cfg) in line and "not valid JSON" in line
    assert not (tmp_path / "o").exists()

    cfg.write_text(good)  # a name is accepted as eval accepts it
    assert main([*collect_cmd, "--out", str(tmp_path / "o"), "--checkpoint", "frames_000000000800"]) == 0
