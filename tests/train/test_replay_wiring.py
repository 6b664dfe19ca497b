"""The trainers build their replay buffers with the agent's own n-step and discount (the replay folds gamma^n and the
termination mask into ``batch.discount``, which is all the agents bootstrap with), never with a default."""

import os

import pytest

import pixelrl.train.loop as loop_mod
import pixelrl.train.offline as offline_mod
from pixelrl.data.replay import ReplayBuffer
from pixelrl.train.setup import build_config

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("dm_control")

ENV = "dmc/cartpole-swingup"
AGENT = {"batch_size": 8, "hidden_dim": 16, "feature_dim": 8, "num_seed_steps": 0, "replay_capacity": 1000,
         "nstep": 2, "discount": 0.9}  # both differ from every agent's default


class Stop(Exception):
    pass


def _recording(monkeypatch, module, seen):
    class Recording(ReplayBuffer):
        def __init__(self, *args, nstep=1, discount=0.99, **kwargs):
            seen.append((nstep, discount))
            raise Stop

    monkeypatch.setattr(module, "ReplayBuffer", Recording)


def _config(tmp_path, **over):
    return build_config(ENV, "drqv2", preset="none", device="cpu", agent=dict(AGENT), obs="state", action_repeat=8,
                        seed=1, eval_episodes=1, threads=1, async_env=False, progress=False, video=False,
                        tensorboard=False, run_dir=str(tmp_path / "run"), frames=1000, **over)


def test_online_trainer_gives_the_replay_the_agents_nstep_and_discount(tmp_path, monkeypatch):
    seen = []
    _recording(monkeypatch, loop_mod, seen)
    with pytest.raises(Stop):
        loop_mod.Trainer(_config(tmp_path))
    assert seen == [(2, 0.9)]


def test_offline_trainer_gives_every_buffer_the_agents_nstep_and_discount(tmp_path, monkeypatch):
    import numpy as np

    from pixelrl.data.dataset import DatasetWriter
    from pixelrl.envs import make
    from pixelrl.train.config import OfflineConfig

    env = make(ENV, seed=0, obs="state", action_repeat=8)
    data = tmp_path / "data"
    with DatasetWriter(data, env.observation_space, env.action_space, env_id=ENV, frame_stack=1) as w:
        obs, _ = env.reset(seed=0)
        observations, actions = [obs], []
        for _ in range(5):
            a = np.zeros(env.action_space.shape, np.float32)
            obs, *_ = env.step(a)
            observations.append(obs)
            actions.append(a)
        w.add_episode(observations, np.stack(actions), [0.0] * 5, [False] * 4 + [True], [False] * 5)
    env.close()
    seen = []
    _recording(monkeypatch, offline_mod, seen)
    with pytest.raises(Stop):
        offline_mod.OfflineTrainer(_config(tmp_path), OfflineConfig(dataset=str(data), offline_steps=10,
                                                                     online_frames=80, offline_ratio=0.5))
    assert seen and set(seen) == {(2, 0.9)}
