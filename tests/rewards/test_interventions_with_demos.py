"""Interventions with prior demonstrations (HIL-SERL: the demo buffer starts with the offline demos and the intervened
transitions join it; every batch is half from it): ``--demos PATH`` with ``--intervention.*`` seeds the intervention
buffer, the mix is exact from the first update, a resumed run continues exactly, and the combinations that make no
sense are one line. Tiny state-based cartpole runs, demos recorded from the scripted expert."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pixelrl.cli.main import main
from pixelrl.errors import ConfigError
from pixelrl.train.logger import TIMING_COLUMNS, read_rows
from helpers import INTERVENTION_RUN, load_run_buffer

pytest.importorskip("dm_control")

DEMO_EPISODES = 2


def _record_demos(path, episodes=DEMO_EPISODES, seed=7):
    """The scripted cartpole controller's episodes on the tiny runs' env, as a pixelrl dataset."""
    from pixelrl.data.dataset import DatasetWriter
    from pixelrl.envs import make
    from pixelrl.rewards.interventions import cartpole_controller, env_state

    env = make("dmc/cartpole-swingup", seed=seed, obs="state", action_repeat=8)
    with DatasetWriter(path, env.observation_space, env.action_space, env_id="dmc/cartpole-swingup",
                       frame_stack=int(env.get_wrapper_attr("frame_stack"))) as w:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed * 100 + ep)
            obs_l, acts, rews, terms, truncs = [obs], [], [], [], []
            done = False
            while not done:
                a = np.asarray(cartpole_controller(env_state(env)), np.float32)
                obs, r, te, tr, _ = env.step(a)
                obs_l.append(obs), acts.append(a), rews.append(r), terms.append(te), truncs.append(tr)
                done = te or tr
            w.add_episode(np.stack(obs_l), np.stack(acts), np.array(rews), np.array(terms), np.array(truncs))
    env.close()
    return path


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    return _record_demos(tmp_path_factory.mktemp("demos") / "expert")


def _arrays(run):
    """The intervention buffer's arrays and how many slots it filled (a slot per step, plus one per episode start)."""
    state = load_run_buffer(run, "interventions", frame_stack=1).state_dict()
    assert state["meta"]["lo"] == 0
    return state["arrays"], int(state["meta"]["hi"])


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


ALWAYS = ["--intervention.expert", "scripted:cartpole", "--intervention.trigger", "always"]


@pytest.fixture(scope="module")
def always_run(tmp_path_factory, demos):
    run = tmp_path_factory.mktemp("hil") / "run"
    assert main(["train", *INTERVENTION_RUN, "--frames", "2000", "--run-dir", str(run), "--demos", str(demos),
                 *ALWAYS]) == 0
    return run


@pytest.mark.slow
def test_demos_seed_the_intervention_buffer_and_intervened_steps_join_them(always_run, demos):
    from pixelrl.data.dataset import load_dataset

    ds = load_dataset(demos)
    n_demo = int(ds.num_transitions)
    rows = read_rows(always_run, "train")
    assert rows and all(r["intervention_rate"] == 1.0 for r in rows)  # the expert acted on every step
    # every batch is exactly half from the demo + intervention buffer, from the first update (the demos are there)
    assert all(r["frac_interventions"] == pytest.approx(0.5) for r in rows)
    arr, size = _arrays(always_run)
    first = arr["first"][:size]
    intervened = sum(int(r["intervened_steps"]) for r in rows)
    # the buffer holds the demos' transitions, then every intervened step (one slot per step plus one per segment)
    assert int((~first).sum()) == n_demo + intervened
    # its first slots are the demo episodes, in order, with their actions and rewards
    eps = list(ds.iter_episodes())
    t, slot = 0, 0
    for ep in eps:
        assert first[slot] and np.allclose(arr["obs_0"][slot], ep["observations"][0])
        steps = len(ep["rewards"])
        assert np.allclose(arr["action"][slot + 1:slot + 1 + steps], ep["actions"])
        assert np.allclose(arr["reward"][slot + 1:slot + 1 + steps], ep["rewards"])
        assert np.allclose(arr["obs_0"][slot + 1:slot + 1 + steps], ep["observations"][1:])
        slot += steps + 1
        t += steps
    assert t == n_demo
    # after the demos: the run's own (all intervened) transitions, the same as the online replay's
    online = load_run_buffer(always_run, "replay", frame_stack=1).state_dict()["arrays"]
    rest = arr["action"][slot:size][~first[slot:size]]
    assert len(rest) == intervened
    o_first = online["first"][:len(rest) + 100]
    assert np.allclose(rest, online["action"][:len(o_first)][~o_first][:len(rest)])
    cfg = json.loads((always_run / "config.json").read_text())
    assert cfg["offline"]["demos"] == str(demos) and cfg["intervention"]["trigger"] == "always"


@pytest.mark.slow
def test_resume_with_demos_and_interventions_is_exact(tmp_path, demos):
    args = ["--demos", str(demos), "--intervention.expert", "scripted:cartpole", "--intervention.bound", "0.8"]
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert main(["train", *INTERVENTION_RUN, "--frames", "3000", "--run-dir", str(straight), *args]) == 0
    assert main(["train", *INTERVENTION_RUN, "--frames", "2000", "--run-dir", str(run), *args]) == 0
    assert main(["resume", str(run), "--frames", "3000"]) == 0
    for kind in ("train", "eval"):
        assert _comparable(read_rows(run, kind)) == _comparable(read_rows(straight, kind)), kind
    rows = read_rows(run, "train")
    assert 0 < sum(r["intervened_steps"] for r in rows) < sum(r["episode_length"] for r in rows)
    (a, na), (b, nb) = _arrays(run), _arrays(straight)
    assert na == nb
    for k in ("reward", "action", "obs_0", "first"):
        assert np.array_equal(a[k][:na], b[k][:nb]), k


def test_rlif_reward_stores_the_demos_with_reward_zero(demos):
    """RLIF puts a reward-zeroed copy of its prior data in the replay: under ``--intervention.reward rlif`` the demos
    seed the intervention buffer with reward 0 (the env's reward would mix two reward scales in one batch)."""
    from pixelrl.data.dataset import load_dataset
    from pixelrl.data.replay import ReplayBuffer
    from pixelrl.rewards.interventions import InterventionConfig, Interventions, ScriptedCartpole

    ds = load_dataset(demos)
    for reward, zero in (("rlif", True), ("env", False)):
        h = Interventions(InterventionConfig(expert="scripted:cartpole", reward=reward), ScriptedCartpole(), seed=0)
        replay = ReplayBuffer(ds.observation_space, ds.action_space, 1000, frame_stack=1, nstep=1, discount=0.99)
        h.setup_buffers(replay, replay, capacity=1000, seed=0)
        assert h.add_demos(ds) == ds.num_transitions
        r = h.demo_replay.state_dict()["arrays"]["reward"][:len(h.demo_replay)]
        assert (np.all(r == 0) if zero else np.any(r > 0)), reward
    h = Interventions(InterventionConfig(expert="scripted:cartpole"), ScriptedCartpole(), seed=0)
    replay = ReplayBuffer(ds.observation_space, ds.action_space, 100, frame_stack=1, nstep=1, discount=0.99)
    h.setup_buffers(replay, replay, capacity=100, seed=0)
    with pytest.raises(ConfigError, match="do not fit the intervention buffer"):
        h.add_demos(ds)  # 2 episodes x 125 steps > 100 slots


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "DEMOS"], "does not combine with --dataset"),
    (["--demos", "DEMOS", "--demo-ratio", "0.3"], "--demo-ratio 0.3 and --intervention.demo-ratio 0.5 differ"),
    (["--demos", "DEMOS", "--intervention.demo-ratio", "0", "--demo-ratio", "0"], "--intervention.demo-ratio 0 keeps"),
    (["--demos", "DEMOS", "--offline-ratio", "0.5"], "offline_ratio mixes the offline dataset"),
    (["--demos", "DEMOS", "--online-seed-steps", "10"], "--online-seed-steps configure the offline trainer"),
])
def test_bad_combinations_are_one_line_before_anything_starts(tmp_path, capsys, demos, extra, message):
    run = tmp_path / "run"
    extra = [str(demos) if a == "DEMOS" else a for a in extra]
    rc = main(["train", *INTERVENTION_RUN, "--frames", "1000", "--run-dir", str(run), *extra, *ALWAYS])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1 and message in err[0], err
    assert not run.exists()


def test_demos_that_do_not_fit_the_env_are_one_line(tmp_path, capsys, demos):
    run = tmp_path / "run"
    rc = main(["train", *[a if a != "state" else "pixels" for a in INTERVENTION_RUN], "--size", "32",
               "--frames", "1000", "--run-dir", str(run), "--demos", str(demos), *ALWAYS])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1 and "does not fit env" in err[0], err


def test_the_offline_trainer_refuses_interventions(demos):
    import dataclasses

    from pixelrl.rewards.interventions import InterventionConfig
    from pixelrl.train.config import OfflineConfig, TrainConfig
    from pixelrl.train.offline import OfflineTrainer
    from pixelrl.train.setup import build_config, trainer_class
    from pixelrl.train.loop import Trainer

    cfg = build_config("dmc/cartpole-swingup", "drqv2", "none", "cpu", fill_run_dir=False, obs="state")
    cfg = dataclasses.replace(cfg, run_dir="unused", offline=OfflineConfig(demos=str(demos)),
                              intervention=InterventionConfig(expert="scripted:cartpole"))
    assert isinstance(cfg, TrainConfig) and trainer_class(cfg) is Trainer
    with pytest.raises(ConfigError, match="runs in the online trainer"):
        OfflineTrainer(cfg)
