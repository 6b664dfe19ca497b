"""Relabelling with a reward model: a replay buffer in place (every step's reward, nothing else, and the next save
writes the new rewards), and a dataset on disk into a new dataset (everything but the rewards bit-identical, the
source untouched, nothing left at the destination when interrupted), also through ``pixelrl dataset relabel``."""

from __future__ import annotations

import hashlib
import json

import gymnasium as gym
import numpy as np
import pytest

from pixelrl.data.dataset import DatasetWriter, load_dataset, stack_frames
from pixelrl.data.replay import ReplayBuffer
from pixelrl.errors import ConfigError
from pixelrl.rewards import RewardConfig, build_reward_model
from pixelrl.rewards.relabel import relabel_dataset, relabel_replay

pytest.importorskip("h5py", reason="h5py not installed (pip install 'pixelrl[offline]')")

STACK, SIZE = 3, 32
PIX = gym.spaces.Box(0, 255, (3 * STACK, SIZE, SIZE), np.uint8)
ACT = gym.spaces.Box(-1, 1, (2,), np.float32)


class Probe:
    """A cheap, exact reward model reading all three inputs: mean of the newest frame of next_obs, minus half that
    of obs, plus the action sum."""

    needs = frozenset({"obs", "actions", "next_obs"})

    def __init__(self, mode: str = "replace", scale: float = 1.0, batch_size: int = 5) -> None:
        self.mode, self.scale, self.batch_size, self.calls = mode, scale, batch_size, []

    def bind(self, space, frame_stack):
        assert frame_stack == STACK

    def __call__(self, obs, *, actions=None, next_obs=None):
        self.calls.append(len(next_obs))
        return self.reward(obs, actions, next_obs)

    @staticmethod
    def reward(obs, actions, next_obs):
        newest = lambda o: np.asarray(o, np.float64)[:, -3:].mean(axis=(1, 2, 3))  # noqa: E731
        return (newest(next_obs) - 0.5 * newest(obs) + np.asarray(actions, np.float64).sum(-1)).astype(np.float32)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def episodes(n: int, steps: int = 7, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for e in range(n):
        t = steps + e  # different lengths
        frames = rng.integers(0, 256, (t + 1, 3, SIZE, SIZE), dtype=np.uint8)
        out.append({"observations": stack_frames(frames, STACK),
                    "actions": rng.uniform(-1, 1, (t, 2)).astype(np.float32),
                    "rewards": rng.normal(size=t),
                    "terminations": np.r_[np.zeros(t - 1, bool), e % 2 == 0],
                    "truncations": np.r_[np.zeros(t - 1, bool), e % 2 == 1]})
    return out


def fill(replay: ReplayBuffer, eps: list[dict]) -> list[tuple]:
    """Feed episodes as a trainer does; returns every step as (obs, action, next_obs, env reward)."""
    steps = []
    for ep in eps:
        obs = ep["observations"]
        replay.add_first(obs[0])
        for t in range(len(ep["rewards"])):
            replay.add(ep["actions"][t], ep["rewards"][t], obs[t + 1], ep["terminations"][t], ep["truncations"][t])
            steps.append((obs[t], ep["actions"][t], obs[t + 1], np.float32(ep["rewards"][t])))
    return steps


def stored_rewards(replay: ReplayBuffer) -> np.ndarray:
    a = replay.state_dict()["arrays"]
    return a["reward"][~a["first"]]


# ------------------------------------------------------------------------------------------- replay


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_replay_relabelling_sets_every_steps_reward_and_nothing_else(tmp_path, mode):
    replay = ReplayBuffer(PIX, ACT, 500, frame_stack=STACK, nstep=3, discount=0.9, seed=1)
    steps = fill(replay, episodes(3))
    replay.save(tmp_path / "replay")  # a save before the relabel: its chunks hold the old rewards
    replay.sample(4)
    before = replay.state_dict()
    model = Probe(mode=mode, scale=0.5)
    info = relabel_replay(replay, model)
    assert info["steps"] == len(steps) == 7 + 8 + 9
    assert max(model.calls) <= model.batch_size
    env = np.array([s[3] for s in steps], np.float32)
    expected = np.float32(0.5) * Probe.reward(*(np.stack([s[i] for s in steps]) for i in range(3)))
    if mode == "add":
        expected = env + expected
    np.testing.assert_allclose(stored_rewards(replay), expected, rtol=0, atol=1e-6)
    after = replay.state_dict()
    assert after["meta"] == before["meta"]  # counters, ring pointers, sampler RNG state
    for name, arr in before["arrays"].items():
        if name != "reward":
            assert np.array_equal(after["arrays"][name], arr), name
    # the next save writes the new rewards (no stale chunk), and a loaded copy samples them
    replay.save(tmp_path / "replay")
    again = ReplayBuffer(PIX, ACT, 500, frame_stack=STACK, nstep=3, discount=0.9, seed=7)
    again.load(tmp_path / "replay")
    np.testing.assert_array_equal(stored_rewards(again), stored_rewards(replay))
    b1, b2 = replay.sample(8), again.sample(8)
    assert np.array_equal(b1.reward.numpy(), b2.reward.numpy())


def test_replay_relabelling_after_the_ring_wrapped_and_with_a_real_clip(tiny_clip):
    replay = ReplayBuffer(PIX, ACT, 20, frame_stack=STACK, nstep=2, discount=0.9, seed=1)  # 24 steps in 21 slots
    steps = fill(replay, episodes(3))
    model = build_reward_model(RewardConfig("vlm:a pole standing upright", baseline="a cartpole",
                                            model=str(tiny_clip), batch_size=4))
    relabel_replay(replay, model)
    kept = stored_rewards(replay)
    live = [s for s in steps][-len(kept):]  # the newest steps are the live ones
    expected = model(next_obs=np.stack([s[2] for s in live]))
    np.testing.assert_allclose(kept, expected, atol=1e-5)
    assert replay.num_sampleable() > 0 and np.isfinite(replay.sample(4).reward.numpy()).all()


# ------------------------------------------------------------------------------------------- dataset


def _sha(path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((path / "data").iterdir())}


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "src"
    with DatasetWriter(path, PIX, ACT, env_id="dmc/cartpole-swingup", frame_stack=STACK,
                       metadata={"env_kwargs": {"size": SIZE}, "note": "kept"}) as w:
        for i, ep in enumerate(episodes(3, seed=5)):
            w.add_episode(**ep, seed=100 + i)
    return path


def test_dataset_relabelling_keeps_everything_but_the_rewards_bit_identical(dataset, tmp_path, tiny_clip):
    import h5py

    src_files = _sha(dataset)
    cfg = RewardConfig("vlm:a pole standing upright", baseline="a cartpole", model=str(tiny_clip), batch_size=4)
    model = build_reward_model(cfg)
    out = tmp_path / "out"
    summary = relabel_dataset(dataset, out, model, spec={"spec": cfg.spec})
    assert _sha(dataset) == src_files  # the source is only read
    src, new = load_dataset(dataset), load_dataset(out)  # the new dataset verifies (checksums)
    assert summary["episodes"] == src.num_episodes == new.num_episodes == 3
    assert (new.env_id, new.frame_stack, new.observation_space, new.action_space) == \
        (src.env_id, src.frame_stack, src.observation_space, src.action_space)
    assert new.metadata["note"] == "kept" and new.env_kwargs == {"size": SIZE}
    assert new.metadata["relabel"]["source"] == str(dataset.resolve())
    for a, b in zip(src.iter_episodes(stacked=False), new.iter_episodes(stacked=False)):
        for key in ("observations", "actions", "terminations", "truncations"):
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
        assert b["rewards"].dtype == np.float64
        expected = model(next_obs=stack_frames(a["observations"], STACK)[1:])  # the frame after each step
        np.testing.assert_array_equal(b["rewards"], expected.astype(np.float64))
        assert not np.allclose(a["rewards"], b["rewards"])
    with h5py.File(src.file) as f, h5py.File(new.file) as g:
        assert [g[f"episode_{i}"].attrs["seed"] for i in range(3)] == [100, 101, 102]
        assert [f[f"episode_{i}"].attrs["seed"] for i in range(3)] == [100, 101, 102]


def test_add_mode_adds_to_the_stored_reward(dataset, tmp_path):
    out = relabel_dataset(dataset, tmp_path / "out", Probe(mode="add", scale=2.0))["out"]
    for a, b in zip(load_dataset(dataset).iter_episodes(), load_dataset(out).iter_episodes()):
        obs = a["observations"]
        r = Probe.reward(obs[:-1], a["actions"], obs[1:])
        np.testing.assert_allclose(b["rewards"], a["rewards"] + 2.0 * r.astype(np.float64), atol=1e-5)


def test_an_interrupted_relabel_leaves_nothing_and_an_existing_destination_is_refused(dataset, tmp_path):
    class Breaks(Probe):
        def __call__(self, obs, *, actions=None, next_obs=None):
            if len(self.calls) >= 3:
                raise KeyboardInterrupt
            return super().__call__(obs, actions=actions, next_obs=next_obs)

    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(KeyboardInterrupt):
        relabel_dataset(dataset, tmp_path / "out", Breaks())
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no dataset, no hidden partial folder
    with pytest.raises(ConfigError, match="already exists"):
        relabel_dataset(dataset, dataset, Probe())


def test_cli_relabel_end_to_end(dataset, tmp_path, tiny_clip, capsys):
    from pixelrl.cli.main import main

    out = tmp_path / "relabelled"
    rc = main(["dataset", "relabel", str(dataset), "--out", str(out), "--reward", "vlm:a pole standing upright",
               "--reward.baseline", "a cartpole", "--reward.model", str(tiny_clip), "--reward.batch-size", "4",
               "--device", "cpu", "--no-progress"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0, lines
    s = json.loads(lines[-1])
    assert s["episodes"] == 3 and s["out"] == str(out)
    relabel = load_dataset(out).metadata["relabel"]
    assert relabel["reward"]["spec"] == "vlm:a pole standing upright" and relabel["reward"]["alpha"] == 0.5


def test_cli_refuses_a_dataset_without_frames_before_loading_a_model(tmp_path, capsys, monkeypatch):
    from pixelrl.cli.main import main
    from pixelrl.rewards import base

    state = gym.spaces.Box(-1, 1, (4,), np.float32)
    with DatasetWriter(tmp_path / "states", state, ACT, env_id="gym/x", frame_stack=1) as w:
        w.add_episode(np.zeros((3, 4), np.float32), np.zeros((2, 2), np.float32), [0.0, 1.0], [False, True],
                      [False, False])
    monkeypatch.setattr(base, "build_reward_model", lambda *a, **k: pytest.fail("the model was loaded"))
    rc = main(["dataset", "relabel", str(tmp_path / "states"), "--out", str(tmp_path / "o"), "--reward",
               "vlm:a pole", "--reward.model", "/nowhere"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1 and "not uint8 [C, H, W] images" in err[0], err
