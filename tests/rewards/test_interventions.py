"""Interventions (HIL-SERL, RLIF): the trigger rules, RLIF's -1, the intervention buffer holding exactly the expert's
transitions, the batch mix, logging, exact resume, the scripted expert's quality and bad input. The trainer runs
are tiny state-based cartpole runs with the scripted expert."""

from __future__ import annotations

import numpy as np
import pytest

from pixelrl.cli.main import main
from pixelrl.errors import ConfigError
from pixelrl.rewards.interventions import (InterventionConfig, Interventions, intervention_config_from_args)
from pixelrl.train.logger import TIMING_COLUMNS, read_rows
from helpers import INTERVENTION_RUN, load_run_buffer

pytest.importorskip("dm_control")



# ---------------------------------------------------------------------------------------------- the hook alone


class _Space:
    low = np.array([-1.0], np.float32)
    high = np.array([1.0], np.float32)
    shape = (1,)


class _Expert:
    """Acts +0.5 always; for the value trigger, Q(s, a) = -|a - 0.5| + 1 (its own action scores 1)."""

    def bind(self, *a, **k):
        pass

    def action(self, obs):
        return np.array([0.5], np.float32)

    def q_values(self, obs, actions):
        return np.array([1.0 - abs(float(a[0]) - 0.5) for a in actions])

    def wants(self, obs, agent_action):
        return None


class _Store:
    """Records what reaches it (a replay buffer's add_first / add)."""

    def __init__(self):
        self.log = []

    def add_first(self, obs):
        self.log.append(("first", obs))

    def add(self, action, reward, next_obs, terminated, truncated, **kw):
        self.log.append(("add", float(np.asarray(action).reshape(-1)[0]), reward, next_obs, terminated, truncated))


def _hook(**kw):
    expert = "policy:expert-run" if kw.get("trigger") == "value" else "scripted:cartpole"
    cfg = InterventionConfig(expert=expert, **kw)
    h = Interventions(cfg, _Expert(), seed=0, judge=_Expert() if cfg.trigger == "value" else None)
    h.action_space = _Space()
    return h


def _episode(hook, agent_actions, demo=True):
    """Run a fake episode: obs t = t, reward t = 10 + t, the last step truncated."""
    online, demo_store = _Store(), (_Store() if demo else None)
    store = hook.attach(online, demo_store)
    store.add_first(0)
    taken = []
    for t, a in enumerate(agent_actions):
        act = hook(t, np.array([a], np.float32), step=t)
        taken.append(float(act[0]))
        store.add(act, 10.0 + t, t + 1, False, t == len(agent_actions) - 1)
    return taken, online.log, (demo_store.log if demo else None), hook.episode_stats()


def test_value_trigger_rlif_rule_with_steps_and_the_rest_step():
    # agent actions far from the expert's (Q = 1 - 1.5 < 0.99 * 1) at t = 2; close elsewhere
    acts = [0.5, 0.5, -1.0, 0.5, 0.5, 0.5, 0.5, -1.0, 0.5, 0.5]
    taken, online, demo, stats = _episode(_hook(trigger="value", flip=0.0, steps=3, reward="rlif"), acts)
    # expert from t = 2 for 3 steps; t = 5 is the agent's without a check; t = 7 triggers again
    assert taken == [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert stats["interventions"] == 2 and stats["intervened_steps"] == 6
    assert stats["intervention_rate"] == pytest.approx(0.6)
    rewards = [r[2] for r in online if r[0] == "add"]
    # RLIF: 0 everywhere, -1 on the agent's transition that led into the state where an intervention started
    assert rewards == [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0]
    assert stats["rlif_penalties"] == 2
    # the intervention buffer holds each intervention as its own segment, cut (truncated) where it ends
    assert [e[0] for e in demo] == ["first", "add", "add", "add", "first", "add", "add", "add"]
    assert [e[1] for e in demo if e[0] == "first"] == [2, 7]
    adds = [e for e in demo if e[0] == "add"]
    assert [e[3] for e in adds] == [3, 4, 5, 8, 9, 10]  # next observations of the intervened steps
    assert [e[5] for e in adds] == [False, False, True, False, False, True]


def test_action_distance_and_flip_and_quality_knobs():
    acts = [0.5, -0.5, 0.45, 1.0]
    taken, _, _, stats = _episode(_hook(trigger="action-distance", bound=0.5, flip=0.0, steps=1), acts)
    # |(-0.5) - 0.5| = 1 > 0.5: the expert at t = 1; t = 2 is the agent's (the rest step); |1 - 0.5| = 0.5: no
    assert taken == pytest.approx([0.5, 0.5, 0.45, 1.0])
    assert stats["interventions"] == 1
    # flip = 1 inverts every decision
    taken, _, _, _ = _episode(_hook(trigger="action-distance", bound=0.5, flip=1.0, steps=1), [0.5, 0.5, 0.5])
    assert taken == [0.5, 0.5, 0.5]  # t = 0 flips to intervening, t = 1 rests, t = 2 flips again
    # expert noise makes the expert's actions differ from its clean ones, reproducibly by seed
    noisy = [_episode(_hook(trigger="always", expert_noise=0.3), [0.0] * 6)[0] for _ in range(2)]
    assert noisy[0] == noisy[1] and any(abs(a - 0.5) > 1e-6 for a in noisy[0])
    never, _, demo, stats = _episode(_hook(trigger="never"), [0.1] * 5)
    assert never == pytest.approx([0.1] * 5) and demo == [] and stats["intervention_rate"] == 0


def test_always_intervening_gives_a_demo_buffer_equal_to_the_expert_transitions():
    taken, online, demo, stats = _episode(_hook(trigger="always", steps=1), [0.0] * 7)
    assert stats["intervention_rate"] == 1.0
    # every action taken is the expert's, and the demo buffer holds exactly the online buffer's transitions
    assert taken == [0.5] * 7
    assert demo[0] == online[0]
    adds_d = [e for e in demo if e[0] == "add"]
    adds_o = [e for e in online if e[0] == "add"]
    assert [e[:4] for e in adds_d] == [e[:4] for e in adds_o]
    assert [e[4:] for e in adds_o] == [(False, False)] * 6 + [(False, True)]


def test_intervention_segments_keep_the_real_frame_stacks():
    """A segment starts mid-episode: its first observations must stack the frames before the takeover (as the online
    replay's do), not copies of the segment's first frame, or a pixel learner sees no velocity there."""
    import gymnasium as gym

    from pixelrl.data.replay import ReplayBuffer

    space = gym.spaces.Box(0, 255, (3, 2, 2), np.uint8)  # frame stack 3 of one-channel 2x2 frames
    act = gym.spaces.Box(-1, 1, (1,), np.float32)
    online = ReplayBuffer(space, act, 100, frame_stack=3, nstep=3, discount=0.9, seed=0)
    hook = _hook(trigger="value", flip=0.0, steps=3)
    store, sampler = hook.setup_buffers(online, online, capacity=100, seed=0)
    frames = [np.full((1, 2, 2), 10 * t, np.uint8) for t in range(12)]

    def stacked(t):
        return np.concatenate([frames[max(t - k, 0)] for k in (2, 1, 0)])

    store.add_first(stacked(0))
    acts = [0.5, 0.5, 0.5, -1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]  # the expert takes over at t = 3 for 3 steps
    for t, a in enumerate(acts):
        taken = hook(stacked(t), np.array([a], np.float32), step=t)
        store.add(taken, float(t), stacked(t + 1), False, t == len(acts) - 1)
    demo = hook.demo_replay
    assert len(demo) == 3
    b = demo.sample(64)
    firsts = {int(o[-1, 0, 0]) // 10: o.numpy() for o in b.obs}
    assert sorted(firsts) == [3, 4, 5]
    for t, o in firsts.items():  # the real history, e.g. frames 1, 2, 3 at the takeover t = 3
        assert np.array_equal(o, stacked(t)), t
    assert b.action.numpy().ravel().tolist() == [0.5] * 64
    # the same transitions, stacks and returns as in the online replay (segment cut at t = 6: truncated, bootstraps)
    ob = online.sample(512)
    on = {int(o[-1, 0, 0]) // 10: o.numpy() for o in ob.obs}
    assert all(np.array_equal(on[t], firsts[t]) for t in firsts)
    mixed = sampler.sample(64)  # HIL-SERL: half of every batch from the intervention buffer
    assert sampler.last_counts == {"online": 32, "interventions": 32} and mixed.obs.shape == (64, 3, 2, 2)


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="not an expert spec"):
        InterventionConfig(expert="robot")
    with pytest.raises(ConfigError, match="no scripted expert"):
        InterventionConfig(expert="scripted:walker")
    with pytest.raises(ConfigError, match="needs a critic"):
        InterventionConfig(expert="scripted:cartpole", trigger="value")
    with pytest.raises(ConfigError, match="flip must be a number in"):
        InterventionConfig(expert="scripted:cartpole", flip=2.0)
    with pytest.raises(ConfigError, match="steps must be an integer"):
        InterventionConfig(expert="scripted:cartpole", steps=0)
    assert InterventionConfig(expert="scripted:cartpole").trigger == "action-distance"
    argv = ["--x", "1", "--intervention.expert", "scripted:cartpole", "--intervention.steps=2",
            "--intervention.no-in-warmup"]
    cfg = intervention_config_from_args(argv)
    assert argv == ["--x", "1"] and cfg.steps == 2 and cfg.in_warmup is False
    with pytest.raises(ConfigError, match="unknown option --intervention.stepz"):
        intervention_config_from_args(["--intervention.stepz", "2"])
    with pytest.raises(ConfigError, match="need --intervention.expert"):
        intervention_config_from_args(["--intervention.steps", "2"])


def test_scripted_cartpole_solves_swingup():
    from pixelrl.envs import make
    from pixelrl.rewards.interventions import cartpole_controller, env_state

    env = make("dmc/cartpole-swingup", seed=0, obs="state", action_repeat=8)
    obs, _ = env.reset(seed=3)
    assert np.allclose(env_state(env), obs)  # the state the expert reads is what --obs state observes
    ret, done = 0.0, False
    while not done:
        obs, r, te, tr, _ = env.step(cartpole_controller(env_state(env)))
        ret, done = ret + r, te or tr
    env.close()
    assert ret > 700  # a random policy gets about 30


# ---------------------------------------------------------------------------------------------- in the trainer


def _demo_buffer(run):
    return load_run_buffer(run, "interventions", frame_stack=1)


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("interv") / "run"
    assert main(["train", *INTERVENTION_RUN, "--frames", "3000", "--run-dir", str(run), "--intervention.expert",
                 "scripted:cartpole", "--intervention.bound", "0.8", "--intervention.reward", "rlif"]) == 0
    return run


@pytest.mark.slow
def test_trainer_mixes_the_intervention_buffer_and_logs_the_rate(straight):
    rows = read_rows(straight, "train")
    assert len(rows) == 3
    for r in rows:
        assert 0 < r["intervention_rate"] < 1 and r["interventions"] >= 1
        assert r["rlif_penalties"] == r["interventions"] or r["rlif_penalties"] == r["interventions"] - 1
    assert 0 < rows[-1]["frac_interventions"] <= 0.5 + 1e-9
    demo = _demo_buffer(straight).state_dict()["arrays"]
    steps = int((~demo["first"][:len(demo["reward"])]).sum())
    assert steps == sum(int(r["intervened_steps"]) for r in rows)
    assert set(np.unique(demo["reward"])) <= {0.0}  # RLIF: expert steps carry 0


@pytest.mark.slow
def test_resume_with_interventions_is_exact(straight, tmp_path):
    run = tmp_path / "run"
    args = ["--intervention.expert", "scripted:cartpole", "--intervention.bound", "0.8", "--intervention.reward",
            "rlif"]
    assert main(["train", *INTERVENTION_RUN, "--frames", "2000", "--run-dir", str(run), *args]) == 0
    assert main(["resume", str(run), "--frames", "3000"]) == 0
    for kind in ("train", "eval"):
        assert _comparable(read_rows(run, kind)) == _comparable(read_rows(straight, kind)), kind
    a, b = _demo_buffer(run).state_dict()["arrays"], _demo_buffer(straight).state_dict()["arrays"]
    assert np.array_equal(a["reward"], b["reward"]) and np.array_equal(a["obs_0"], b["obs_0"])


def test_bad_intervention_options_are_one_line_before_anything_starts(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", *INTERVENTION_RUN, "--frames", "1000", "--run-dir", str(run), "--intervention.expert",
               "policy:" + str(tmp_path / "nope")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1 and "not a pixelrl run folder" in err[0], err
    assert not run.exists()
    rc = main(["train", *INTERVENTION_RUN, "--frames", "1000", "--run-dir", str(run), "--intervention.expert",
               "scripted:cartpole", "--seeds", "1-2"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1 and "single-seed trainer" in err[0], err


@pytest.mark.slow
def test_policy_expert_with_rlifs_value_trigger(tmp_path):
    """A (briefly) trained state run is the expert and judge: its critic's Q decides, its actor acts."""
    from pixelrl.rewards.interventions import PolicyExpert

    expert = tmp_path / "expert"
    assert main(["train", *INTERVENTION_RUN, "--frames", "1000", "--run-dir", str(expert)]) == 0
    pe = PolicyExpert(str(expert))
    obs = np.zeros(5, np.float32)
    q = pe.q_values(obs, [np.array([0.3], np.float32), pe.action(obs)])
    assert q.shape == (2,) and np.isfinite(q).all()
    run = tmp_path / "run"
    assert main(["train", *INTERVENTION_RUN, "--frames", "1000", "--run-dir", str(run), "--intervention.expert",
                 f"policy:{expert}", "--intervention.threshold", "0.99"]) == 0
    rows = read_rows(run, "train")
    assert rows and all(0 <= r["intervention_rate"] <= 1 for r in rows)
    import json

    assert json.loads((run / "config.json").read_text())["intervention"]["trigger"] == "value"
