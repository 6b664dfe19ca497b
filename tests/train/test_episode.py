"""The training episode and the evaluation / checkpoint cadence both trainers share (pixelrl.train.episode), on
fakes: the order of warm-up, acting and updates, the step the agent sees, counters, metrics, and the schedule."""

import gymnasium as gym
import numpy as np
import pytest

from pixelrl.train.episode import EpisodeResult, train_episode, train_until, warmup_action

LENGTH, REPEAT = 5, 8


class FakeEnv:
    """Episodes of LENGTH steps (truncated); the last step reports 6 env frames, the others none."""

    def __init__(self):
        self.reset_seeds, self.actions, self.t = [], [], 0

    def reset(self, seed):
        self.reset_seeds.append(seed)
        self.t = 0
        return np.zeros(3, np.float32)

    def step_async(self, action):
        self.actions.append(action)

    def step_wait(self):
        self.t += 1
        last = self.t == LENGTH
        return np.full(3, self.t, np.float32), 1.5, False, last, 6 if last else None


class FakeAgent:
    def __init__(self):
        self.acted, self.updated, self.observed = [], [], []

    def act(self, obs, *, step, eval_mode):
        assert not eval_mode
        self.acted.append(step)
        return np.full(2, 0.5, np.float32)

    def update(self, batch, *, step):
        assert batch == "batch"
        self.updated.append(step)
        return {"loss": float(step)}

    def observe_episode(self, ret, step):
        self.observed.append((ret, step))
        return {"episode_metric": 7.0}


class FakeReplay:
    def __init__(self):
        self.first, self.added = [], []

    def add_first(self, obs):
        self.first.append(obs)

    def add(self, action, reward, obs, terminated, truncated):
        self.added.append((reward, truncated))


class FakeProgress:
    def __init__(self):
        self.counts = []

    def update(self, count, *, env_s, act_s, update_s):
        self.counts.append(count)


def test_episode_warm_up_updates_step_offset_and_counters():
    env, agent, replay, progress = FakeEnv(), FakeAgent(), FakeReplay(), FakeProgress()
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    counters = {"agent_steps": 0, "frames": 0, "episodes": 3}
    ep = train_episode(env, agent, replay, lambda: "batch", counters=counters, reset_seed=42, seed_steps=2,
                       update_every=2, updates_per_step=2, warmup_rng=np.random.default_rng(0), action_space=space,
                       action_repeat=REPEAT, progress=progress, step_offset=100,
                       batch_extras=lambda: {"frac_x": 0.25})
    assert env.reset_seeds == [42] and len(replay.first) == 1 and len(replay.added) == LENGTH
    # two warm-up actions from the generator, then the agent acts at step = offset + agent steps
    rng = np.random.default_rng(0)
    for got in env.actions[:2]:
        np.testing.assert_array_equal(got, warmup_action(rng, space))
    assert agent.acted == [102, 103, 104]
    assert agent.updated == [102, 102, 104, 104]  # after the warm-up, 2 updates every 2 agent steps
    assert agent.observed == [(LENGTH * 1.5, 105)]
    assert counters == {"agent_steps": LENGTH, "frames": (LENGTH - 1) * REPEAT + 6, "episodes": 4}
    assert isinstance(ep, EpisodeResult)
    assert (ep.episode_length, ep.frames, ep.updates) == (LENGTH, (LENGTH - 1) * REPEAT + 6, 4)
    assert ep.stats() == {"episode_return": LENGTH * 1.5, "episode_length": LENGTH, "frac_x": 0.25,
                          "loss": 103.0, "episode_metric": 7.0}
    assert list(ep.timing()) == ["fps", "env_s", "act_s", "update_s"]
    assert progress.counts == [counters["frames"]]  # at the episode's end (and every 25 steps)


def test_warmup_action_of_a_discrete_space():
    a = warmup_action(np.random.default_rng(0), gym.spaces.Discrete(4))
    assert isinstance(a, np.int64) and 0 <= a < 4


def _cadence(counters, total, checkpoint_every, frames_per_episode=400, **keys):
    events = []

    def episode():
        counters["frames"] += frames_per_episode
        events.append("ep")

    train_until(counters, total, eval_every=500, checkpoint_every=checkpoint_every,
                evaluate=lambda: events.append(f"E{counters['frames']}"),
                checkpoint=lambda: events.append(f"C{counters['frames']}"), episode=episode, **keys)
    return events


def _counters(last_eval="last_eval_frames", last_checkpoint="last_checkpoint_frames"):
    return {"frames": 0, "next_eval": 0, "next_checkpoint": 0, last_eval: -1, last_checkpoint: -1}


@pytest.mark.parametrize("checkpoint_every, expected", [
    (None, ["E0", "C0", "ep", "ep", "E800", "C800", "ep", "E1200", "C1200"]),
    (300, ["E0", "C0", "ep", "C400", "ep", "E800", "C800", "ep", "E1200", "C1200"]),
])
def test_evaluation_and_checkpoint_cadence(checkpoint_every, expected):
    c = _counters()
    assert _cadence(c, 1000, checkpoint_every) == expected
    # the schedule is in the counters: run again (as a resumed finished run) and nothing is repeated
    assert _cadence(c, 1000, checkpoint_every) == []
    # a larger budget continues from there, without evaluating frame 1200 again
    more = _cadence(c, 1500, checkpoint_every)
    assert more[-3:] == ["ep", "E1600", "C1600"] and "E1200" not in more


def test_cadence_with_other_counter_names():
    c = _counters("last_eval", "last_checkpoint")
    assert _cadence(c, 400, None, last_eval_key="last_eval", last_checkpoint_key="last_checkpoint") == [
        "E0", "C0", "ep", "E400", "C400"]
    assert c["last_eval"] == c["last_checkpoint"] == 400 and "last_eval_frames" not in c


def test_stop_ends_the_run_at_a_boundary_with_final_eval_and_checkpoint():
    """A wall-clock budget (``stop``) ends the run like reaching the frame budget: at the next episode boundary,
    with one final evaluation and checkpoint, and nothing after."""
    c = _counters()
    checks = []

    def stop():
        checks.append(c["frames"])
        return c["frames"] >= 800

    events = _cadence(c, 10_000, None, stop=stop)
    assert events == ["E0", "C0", "ep", "ep", "E800", "C800"]
    assert checks == [0, 400, 800]  # asked once per boundary


def test_where_to_resume_names_the_checkpoint_or_the_seed_runs(tmp_path):
    from pixelrl.train.episode import where_to_resume
    from pixelrl.utils.checkpoint import save_checkpoint

    run = tmp_path / "run"
    assert where_to_resume(run, diverged=False) == "No checkpoint was written yet; start a new run."
    ckpt = save_checkpoint(run / "checkpoints", "frames_000000000100", {"x": np.zeros(2)})
    msg = where_to_resume(run, diverged=True)
    assert str(ckpt) in msg and f"pixelrl resume {run}" in msg and "config.json" in msg
    # a --seeds run: the checkpoints live in the seed folders, the resume command names the batch folder
    seeds = [run / "s1", run / "s2"]
    assert where_to_resume(run, diverged=False, seed_dirs=seeds).startswith("No checkpoint")
    save_checkpoint(seeds[1] / "checkpoints", "frames_000000000100", {"x": np.zeros(2)})
    msg = where_to_resume(run, diverged=True, seed_dirs=seeds)
    assert "one per seed" in msg and "each seed's config.json" in msg and msg.endswith(f"`pixelrl resume {run}`.")
