"""The on-policy trainer with PPO: CartPole learns, the pixel / discrete / episodic-life path on Breakout, the
continuous path with normalisers and truncation bootstrap on Pendulum, exact resume after kill -9, config errors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pixelrl.errors import ConfigError
from pixelrl.train.logger import TIMING_COLUMNS, read_rows
from pixelrl.train.setup import build_config, trainer_class


def _cfg(env, tmp_path, name="run", **kw):
    base = dict(preset="paper", device="cpu", run_dir=str(tmp_path / name), progress=False, video=False,
                tensorboard=False, threads=1)
    base.update(kw)
    return build_config(env, "ppo", **base)


def test_cartpole_learns_within_a_minute(tmp_path):
    # Measured (seed 1, 1 thread, 2-core CPU, ~20 s): the stochastic policy's training returns go from ~23 in the
    # first rollouts to ~280 by 30k frames; final greedy eval 400 at 30k. Asserted with a margin.
    cfg = _cfg("gym/CartPole-v1", tmp_path, obs="state", frames=40_000, eval_every_frames=20_000, eval_episodes=5)
    trainer = trainer_class(cfg)(cfg)
    assert type(trainer).__name__ == "OnPolicyTrainer"
    t0 = time.perf_counter()
    summary = trainer.run()
    assert time.perf_counter() - t0 < 60
    train = read_rows(tmp_path / "run", "train")
    early = [r["episode_return"] for r in train[:2] if "episode_return" in r]
    late = [r["episode_return"] for r in train[-6:] if "episode_return" in r]
    assert np.mean(early) < 50, early
    assert np.mean(late) >= 150, late
    assert summary["final_eval_return"] >= 150
    evals = read_rows(tmp_path / "run", "eval")
    assert evals[0]["random_return"] < 50 and evals[-1]["frames"] == summary["frames"] >= 40_000
    for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance", "lr", "fps"):
        assert k in train[-1], k
    assert train[-1]["lr"] < train[0]["lr"] == pytest.approx(2.5e-3)  # annealed over the frame budget
    # every finished episode is counted once: the row's episode counters add up
    assert train[-1]["episodes"] == sum(r["episodes_finished"] for r in train)
    assert (tmp_path / "run" / "curve.png").exists() and (tmp_path / "run" / "summary.json").exists()
    cfg_saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "in-process" in cfg_saved["decisions"]["vector_env"] and cfg_saved["agent"]["num_envs"] == 4


def test_breakout_pixels_discrete_and_episodic_life(tmp_path):
    pytest.importorskip("ale_py")
    cfg = _cfg("ale/Breakout", tmp_path, frames=1000, eval_every_frames=100_000, eval_episodes=1,
               agent={"num_envs": 2, "rollout_steps": 128, "num_minibatches": 2, "update_epochs": 1})
    assert cfg.env_options == {"repeat_action_probability": 0.0, "fire_reset": True, "noop_max": 30}
    assert cfg.agent.sign_reward and cfg.agent.life_loss_terminal and cfg.agent.eval_sample
    trainer = trainer_class(cfg)(cfg)
    summary = trainer.run()
    rows = read_rows(tmp_path / "run", "train")
    assert len(rows) == 1 and rows[0]["agent_steps"] == 256 and 0 < rows[0]["frames"] <= 1024
    ro = trainer.rollout
    assert ro.obs.dtype.is_floating_point is False and tuple(ro.obs.shape) == (128, 2, 4, 84, 84)
    # a lost life ends the learner's return while the game goes on: more terminations than games over
    assert int(ro.terminations.sum()) > rows[0]["episodes_finished"]
    assert set(ro.rewards.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert summary["final_eval_return"] is not None
    assert "subprocesses" in json.loads((tmp_path / "run" / "config.json").read_text())["decisions"]["vector_env"]


def test_pendulum_continuous_normalises_and_bootstraps_truncations(tmp_path):
    cfg = _cfg("gym/Pendulum-v1", tmp_path, obs="state", frames=1024, eval_every_frames=100_000, eval_episodes=1,
               agent={"rollout_steps": 256, "num_minibatches": 4, "update_epochs": 2})
    assert cfg.agent.normalize_obs and cfg.agent.normalize_reward and cfg.agent.num_envs == 1
    trainer = trainer_class(cfg)(cfg)
    trainer.run()
    rows = read_rows(tmp_path / "run", "train")
    assert len(rows) == 4 and rows[-1]["frames"] == 1024
    assert sum(r["episodes_finished"] for r in rows) == 5  # Pendulum's 200-step time limit
    ro = trainer.rollout
    # the episodes truncated in the last rollout (at frames 800 and 1000) are bootstrapped by the value of their final
    # observations
    assert int(ro.truncations.sum()) == 2 and int(ro.terminations.sum()) == 0
    assert float(ro.bootstrap_values[ro.truncations.bool()].abs().sum()) > 0
    assert ro.actions.dtype.is_floating_point and ro.actions.shape == (256, 1, 1)
    assert trainer.agent.obs_rms.count > 1000  # every observation the env returned updated the statistics
    r = trainer.agent.ret_rms
    assert r.count > 1000 and r.var > 1


def _env():
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONHASHSEED"] = "0"
    env["OMP_NUM_THREADS"] = "1"
    return env


RESUME = ["--env", "gym/CartPole-v1", "--agent", "ppo", "--obs", "state", "--preset", "paper", "--frames", "16000",
          "--eval-every-frames", "4000", "--eval-episodes", "2", "--device", "cpu", "--threads", "1",
          "--no-progress", "--no-video", "--no-tensorboard"]


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def test_resume_after_kill_gives_identical_rows(tmp_path):
    ref = tmp_path / "ref"
    p = subprocess.run([sys.executable, "-m", "pixelrl.cli.main", "train", *RESUME, "--run-dir", str(ref)],
                       env=_env(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pixelrl.cli.main", "train", *RESUME, "--run-dir", str(run)],
                            env=_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120

    def wait_for(what, done):
        while not done():
            if proc.poll() is not None:
                pytest.fail(f"training exited before {what}: {proc.stderr.read()[-2000:]}")
            if time.time() > deadline:
                pytest.fail(f"no {what} within 120 s")
            time.sleep(0.005)

    latest = run / "checkpoints" / "latest.json"

    def second_checkpoint():
        try:
            return json.loads(latest.read_text())["name"] != "frames_000000000000"
        except (FileNotFoundError, ValueError):
            return False

    wait_for("second checkpoint", second_checkpoint)
    # a train row after the checkpoint: the log is ahead of it, and the envs are mid-episode
    wait_for("train row after it", lambda: any(r["frames"] > 4608 for r in read_rows(run, "train")))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists(), "the run finished before it could be killed"
    r = subprocess.run([sys.executable, "-m", "pixelrl.cli.main", "resume", str(run)], env=_env(),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    got, want = _comparable(read_rows(run)), _comparable(read_rows(ref))
    assert len(want) > 10 and got == want


def test_rollout_that_does_not_split_into_minibatches_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not split into num_minibatches"):
        _cfg("gym/CartPole-v1", tmp_path, obs="state", agent={"num_envs": 3, "rollout_steps": 10})
    p = subprocess.run([sys.executable, "-m", "pixelrl.cli.main", "train", "--env", "gym/CartPole-v1", "--agent",
                        "ppo", "--obs", "state", "--agent.num-envs", "3", "--agent.rollout-steps", "10",
                        "--run-dir", str(tmp_path / "bad")], env=_env(), capture_output=True, text=True)
    assert p.returncode != 0 and "does not split into num_minibatches" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "bad").exists()
