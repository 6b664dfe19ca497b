"""The preference reward model's opt-in inputs (our deviations from RL-VLM-F's single newest frame): the newest K
frames of the observation stack (``--reward.pref-frames K``) and the action (``--reward.pref-actions``). K frames
are exactly the stack's last K (hand-made stacks, and the online loop's replay rows against the env's stacks); a net
with actions learns a reward that depends on the action; the wrapper, the replay relabel and the dataset relabel
hand each step's action to the same slot; bad K and paths without actions are one line; checkpoints and model
folders keep both knobs."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from pixelrl.data.replay import ReplayBuffer
from pixelrl.errors import ConfigError
from pixelrl.rewards import RewardConfig, build_reward_model
from pixelrl.rewards.base import bind_model, reward_config_from_args
from pixelrl.rewards.oracles import ScriptedOracle
from pixelrl.rewards.preference import (InputSpec, OnlinePreferenceLoop, PairQuery, PreferenceRewardModel, Schedule,
                                        extract_inputs, load_preference_model, stack_slots)
from pixelrl.rewards.relabel import relabel_replay
from pixelrl.rewards.wrapper import RewardedReplay

H = 48  # RL-VLM-F's CNN needs at least 47 px
GREY3 = spaces.Box(0, 255, (3, H, H), np.uint8)  # 3 stacked grey frames
ACT = spaces.Box(-1, 1, (1,), np.float32)


def grey(v) -> np.ndarray:
    """One grey frame [1, H, H] filled with ``v``."""
    return np.full((1, H, H), int(v) % 256, np.uint8)


def test_k_frames_are_exactly_the_newest_k_frames_of_the_stack_oldest_first():
    rgb = spaces.Box(0, 255, (9, H, H), np.uint8)  # 3 RGB frames
    stack = np.concatenate([np.full((1, 3, H, H), v, np.uint8) for v in (10, 20, 30)], axis=1)  # oldest first
    stack[0, 3] = 21  # the middle frame's red channel differs from its other two
    for k, want in ((1, [30, 30, 30]), (2, [21, 20, 20, 30, 30, 30]), (3, [10, 10, 10, 21, 20, 20, 30, 30, 30])):
        m = PreferenceRewardModel(frames=k, seed=0)
        m.bind(rgb, 3)
        assert m.spec.net_shape == (3 * k, H, H) and m.members[0].conv[0].in_channels == 3 * k
        x = extract_inputs(stack, m.spec)
        assert x.shape == (1, 3 * k, H, H) and x[0, :, 0, 0].tolist() == want
        assert np.array_equal(x[0], stack[0, -3 * k:])
        # the VLM / person sees the newest frame of each side
        q = PairQuery(x[:, None], x[:, None], channels=3)
        assert np.all(q.frames()[0] == 30)
        assert m(next_obs=stack).shape == (1,)


def test_stacked_replay_rows_are_the_stacks_the_env_gave_clamped_at_the_reset_frame():
    # slots: episode A = rows 0 (reset) .. 4, episode B = rows 5 (reset) .. 7; frame value = row
    frames = np.stack([grey(10 * r) for r in range(8)])
    floor = np.array([0, 0, 0, 0, 0, 5, 5, 5])
    x = stack_slots(frames, np.array([[1, 4], [5, 7]]), floor, 3)
    assert x.shape == (2, 2, 3, H, H)
    assert x[..., 0, 0].tolist() == [[[0, 0, 10], [20, 30, 40]], [[50, 50, 50], [50, 60, 70]]]


class Recording:
    def __init__(self) -> None:
        self.inner = ScriptedOracle(seed=0)
        self.queries: list[PairQuery] = []

    def label(self, query: PairQuery) -> np.ndarray:
        self.queries.append(query)
        return self.inner.label(query)


def _online(frames: int, actions: bool, segment: int = 1, lengths=(6, 4, 7), seed: int = 0):
    """Episodes through a RewardedReplay whose model learns online (a round at every step). Frame g shows the value
    of absolute slot g, the action of the step into slot g is g / 100 and its env reward sin(g)."""
    replay = ReplayBuffer(GREY3, ACT, 100, frame_stack=3, nstep=1)
    model = PreferenceRewardModel(seed=seed, frames=frames, actions=actions, segment=segment, epochs=1,
                                  batch_size=4)
    oracle = Recording()
    model.online = OnlinePreferenceLoop(model, oracle, Schedule(query_batch=6, query_every=1, max_queries=10 ** 6,
                                                                first_query=1), seed=seed)
    bind_model(model, GREY3, 3, ACT)
    store = RewardedReplay(replay, model)
    g, hist = 0, []  # hist: the frames of the current episode, as the env's frame stack holds them
    starts = {}
    for length in lengths:
        hist = [grey(g)] * 3
        store.add_first(np.concatenate(hist))
        g0 = g
        g += 1
        for t in range(length):
            starts[g] = g0
            hist = hist[1:] + [grey(g)]
            store.add(np.array([g / 100], np.float32), float(np.sin(g)), np.concatenate(hist), False,
                      t == length - 1)
            g += 1
    return replay, model, oracle, starts


@pytest.mark.parametrize("frames,actions,segment", [(2, False, 1), (3, True, 2)])
def test_the_online_loop_hands_the_oracle_and_the_fit_the_last_k_frames_and_the_slots_actions(frames, actions,
                                                                                           segment):
    replay, model, oracle, starts = _online(frames, actions, segment)
    assert len(oracle.queries) > 5
    for q in oracle.queries:
        for x, acts in ((q.first, q.actions_first), (q.second, q.actions_second)):
            assert x.shape[1:] == (segment, frames, H, H)
            g = x[:, :, -1, 0, 0].astype(np.int64)  # the newest frame shows the slot
            for i, j in np.ndindex(g.shape):
                want = [max(g[i, j] - frames + 1 + d, starts[g[i, j]]) for d in range(frames)]
                assert x[i, j, :, 0, 0].tolist() == want  # the env's stack of that step, reset frame repeated
            if actions:
                np.testing.assert_allclose(acts[..., 0], g / 100, rtol=1e-6)  # the action that led to the slot
            else:
                assert acts is None
    assert model.num_labels == sum(len(q) for q in oracle.queries)
    if actions:
        la = np.concatenate(model.labels_act_a)
        assert la.shape == (model.num_labels, segment, 1)


def _episode_stacks(values) -> np.ndarray:
    """The env's 3-frame stacks [T+1, 3, H, H] of an episode whose frames show ``values`` (the reset frame first,
    repeated at the start as a frame stack does)."""
    hist, out = [grey(values[0])] * 3, []
    for v in values:
        hist = hist[1:] + [grey(v)] if out else hist
        out.append(np.concatenate(hist))
    return np.stack(out)


def test_wrapper_replay_relabel_and_dataset_relabel_give_each_step_its_own_action(tmp_path):
    """A fitted model reading 2 frames and actions: the wrapper stores for each step the model's reward of (the
    stack after the step, the step's action); relabelling the replay recomputes exactly those rewards; relabelling
    a dataset gives the same rewards for the same steps."""
    _, model, _, _ = _online(2, True, lengths=(5, 9))
    model.online = None  # frozen from here
    rng = np.random.default_rng(7)
    replay = ReplayBuffer(GREY3, ACT, 100, frame_stack=3, nstep=1)
    store = RewardedReplay(replay, model)
    episodes, want = [], []
    for length in (7, 11):
        stacks = _episode_stacks(rng.integers(0, 255, length + 1))
        acts = rng.uniform(-1, 1, (length, 1)).astype(np.float32)
        episodes.append((stacks, acts))
        store.add_first(stacks[0])
        for t in range(length):
            store.add(acts[t], 0.0, stacks[t + 1], False, t == length - 1)
            want.append(model(next_obs=stacks[t + 1][None], actions=acts[t][None])[0])  # one step alone
    a = replay.state_dict()["arrays"]
    steps = np.flatnonzero(~a["first"])
    np.testing.assert_allclose(a["reward"][steps], want, atol=1e-6)
    relabel_replay(replay, model)
    np.testing.assert_allclose(replay.state_dict()["arrays"]["reward"][steps], want, atol=1e-6)
    # the actions matter: the same frames with other actions score differently
    stacks, acts = episodes[0]
    assert not np.allclose(model(next_obs=stacks[1:], actions=-acts + 0.5), want[:len(acts)], atol=1e-4)
    with pytest.raises(ConfigError, match="reads actions"):
        model(next_obs=stacks[1:])

    pytest.importorskip("h5py", reason="h5py not installed (pip install 'pixelrl[offline]')")
    from pixelrl.data.dataset import DatasetWriter, load_dataset
    from pixelrl.rewards.relabel import relabel_dataset

    with DatasetWriter(tmp_path / "ds", GREY3, ACT, env_id="dmc/cartpole-swingup", frame_stack=3) as w:
        for stacks, acts in episodes:
            w.add_episode(stacks, acts, np.zeros(len(acts)), [False] * len(acts), [False] * (len(acts) - 1) + [True])
    relabel_dataset(tmp_path / "ds", tmp_path / "out", model)
    got = np.concatenate([ep["rewards"] for ep in load_dataset(tmp_path / "out").iter_episodes()])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_net_with_actions_learns_a_reward_that_depends_on_the_action():
    """A few frames, each seen with many actions, reward = the action: after a fit the held-out pairs are ordered
    far above chance, and on every frame a larger action scores higher; a net without actions gives one reward
    per frame whatever the action."""
    rng = np.random.default_rng(0)
    img = spaces.Box(0, 255, (3, H, H), np.uint8)
    bank = rng.integers(0, 255, (4, 1, H, H), dtype=np.uint8)

    def pairs(n):
        f = bank[rng.integers(0, len(bank), (2, n))]
        a = rng.uniform(-1, 1, (2, n, 1)).astype(np.float32)
        return f[0], f[1], a[0], a[1], (a[0, :, 0] < a[1, :, 0]).astype(np.int64)

    m = PreferenceRewardModel(seed=0, actions=True, epochs=30, frames=1)
    bind_model(m, img, 3, ACT)
    fa, fb, aa, ab, y = pairs(400)
    m.add_labels(fa, fb, y, actions_first=aa, actions_second=ab)
    fit = m.fit()
    ta, tb, qa, qb, ty = pairs(400)
    assert m.accuracy(ta, tb, ty, actions_first=qa, actions_second=qb) > 0.8, fit  # chance: 0.5
    acts = np.array([[-0.9], [0.0], [0.9]], np.float32)
    for f in bank:
        r = m(next_obs=np.repeat(np.repeat(f[None], 3, 1), 3, 0), actions=acts)  # the same frame, 3 actions
        assert r[0] < r[1] < r[2], r
    plain = PreferenceRewardModel(seed=0)
    plain.bind(img, 3)
    assert np.ptp(plain(next_obs=np.repeat(np.repeat(bank[:1], 3, 1), 3, 0), actions=acts)) == 0


def test_bad_k_and_paths_without_actions_are_one_line_before_training():
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="pref-frames must be an integer >= 1") as e:
            RewardConfig("prefs:scripted", pref_frames=bad)
        assert "\n" not in str(e.value)
    argv = ["--reward", "prefs:scripted", "--reward.pref-frames", "4", "--reward.pref-actions"]
    cfg = reward_config_from_args(argv)
    assert argv == [] and cfg.pref_frames == 4 and cfg.pref_actions is True
    model = build_reward_model(cfg)
    with pytest.raises(ConfigError, match="more frames than the observation stacks") as e:
        bind_model(model, GREY3, 3, ACT, where="the trainer")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="stacks frames, but these observations are states"):
        PreferenceRewardModel(frames=2).bind(spaces.Box(-1, 1, (4,), np.float32), 1)
    with pytest.raises(ConfigError, match="the dataset gives none") as e:  # a caller without actions
        bind_model(PreferenceRewardModel(actions=True), GREY3, 3, None, where="the dataset")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="Box"):
        bind_model(PreferenceRewardModel(actions=True), GREY3, 3, spaces.Discrete(3))
    with pytest.raises(ConfigError, match="prefs:person labels single frames"):
        RewardConfig("prefs:person", queue="/tmp/q", pref_frames=2)


def test_checkpoints_and_model_folders_keep_frames_and_actions(tmp_path):
    replay, a, _, _ = _online(3, True, segment=2, seed=3)
    b = PreferenceRewardModel(seed=3, frames=3, actions=True, segment=2, epochs=1, batch_size=4)
    b.online = OnlinePreferenceLoop(b, Recording(), Schedule(query_batch=6, query_every=1, max_queries=10 ** 6,
                                                             first_query=1), seed=3)
    bind_model(b, GREY3, 3, ACT)
    b.online.attach(replay)
    b.load_state_dict(a.state_dict())
    assert b.num_labels == a.num_labels and np.array_equal(np.concatenate(b.labels_act_b),
                                                           np.concatenate(a.labels_act_b))
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (8, 3, H, H), dtype=np.uint8)
    act = rng.uniform(-1, 1, (8, 1)).astype(np.float32)
    np.testing.assert_array_equal(a(next_obs=x, actions=act), b(next_obs=x, actions=act))
    for m in (a, b):  # one more fit continues identically
        m.fit()
    np.testing.assert_array_equal(a(next_obs=x, actions=act), b(next_obs=x, actions=act))
    # a checkpoint of a model reading other inputs is refused
    c = PreferenceRewardModel(seed=3, frames=2, actions=True, segment=2)
    bind_model(c, GREY3, 3, ACT)
    with pytest.raises(ConfigError, match="reads"):
        c.load_state_dict(a.state_dict())
    # a model folder keeps both; loading it through prefs:DIR and binding without actions is one line
    a.save(tmp_path / "rm")
    loaded = load_preference_model(tmp_path / "rm")
    assert loaded.spec == InputSpec(None, True, (1, H, H), 3, 1) and loaded.needs == {"next_obs", "actions"}
    # a default spec's JSON is what it was before the knobs (label queues written then still match)
    assert InputSpec(None, True, (3, H, H)).to_json() == {"key": None, "pixel": True, "shape": [3, H, H]}
    assert InputSpec.from_json(a.spec.to_json()) == a.spec
    bind_model(loaded, GREY3, 3, ACT)
    np.testing.assert_array_equal(loaded(next_obs=x, actions=act), a(next_obs=x, actions=act))
    spec_model = build_reward_model(RewardConfig(f"prefs:{tmp_path / 'rm'}"))
    with pytest.raises(ConfigError, match="gives none"):
        bind_model(spec_model, GREY3, 3, None, where="this path")


@pytest.mark.slow
def test_through_the_trainer_frames_and_actions_resume_exactly(tmp_path):
    """``pixelrl train --reward prefs:scripted --reward.pref-frames 2 --reward.pref-actions``: the trainer binds the
    model with the env's action space, rounds fit on stacked frames and actions, and a run stopped between rounds
    and resumed writes the same rows and stores the same rewards as one never interrupted."""
    pytest.importorskip("dm_control")
    from pixelrl.cli.main import main
    from pixelrl.train.logger import TIMING_COLUMNS, read_rows
    from helpers import PREFERENCE_RUN, load_run_buffer

    args = [*PREFERENCE_RUN, "--reward.pref-frames", "2", "--reward.pref-actions"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", *args, "--frames", "3000", "--run-dir", str(full)]) == 0
    assert main(["train", *args, "--frames", "2000", "--run-dir", str(cut)]) == 0
    assert main(["resume", str(cut), "--frames", "3000"]) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]  # noqa: E731
    for kind in ("train", "eval"):
        assert strip(read_rows(cut, kind)) == strip(read_rows(full, kind)), kind
    assert read_rows(full, "train")[-1]["pref_labels"] > 0
    a, b = load_run_buffer(cut).state_dict()["arrays"], load_run_buffer(full).state_dict()["arrays"]
    assert np.array_equal(a["reward"], b["reward"])
    model = load_preference_model(full)
    assert model.spec.frames == 2 and model.spec.action_dim == 1 and model.needs == {"next_obs", "actions"}
    # the stored rewards are the final model's on (2 newest frames, action) of each slot
    replay = load_run_buffer(full)
    rows = np.flatnonzero(~b["first"])
    x = stack_slots(b["obs_0"], rows, np.maximum(b["ep_start"] - replay.state_dict()["meta"]["lo"], 0), 2)
    np.testing.assert_allclose(b["reward"][rows], model.rewards(x, b["action"][rows]), atol=1e-5)
