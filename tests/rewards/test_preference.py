"""Preference reward models: Bradley-Terry against hand computations, a fit that recovers a synthetic reward's
ordering (states and pixels), the scripted oracle's noise / equal statistics, the VLM oracle's parsing and dropping
with a fake VLM, pair sampling within episodes, model folders and ``prefs:`` specs, and the online loop through the
real trainer (query budget, relabelled replay, exact resume)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from gymnasium import spaces
from scipy.stats import spearmanr

from pixelrl.errors import ConfigError
from pixelrl.rewards import RewardConfig, build_reward_model
from pixelrl.rewards.oracles import ScriptedOracle, VLMOracle, parse_vlm_label
from helpers import PREFERENCE_RUN, load_run_buffer, load_script
from pixelrl.rewards.preference import (EQUAL, SKIP, PairQuery, PreferenceRewardModel, bradley_terry_loss,
                                        sample_segment_starts, segment_rows)

H = 48  # the smallest frames RL-VLM-F's four valid convolutions take are 47 px


def true_state_reward(x):
    return np.sin(x @ np.array([1.0, -0.5, 0.3, 0.0]))


def square_frames(pos: np.ndarray, size: int = H) -> np.ndarray:
    """uint8 [n, 3, size, size] frames with a white square whose horizontal position is ``pos`` in [0, 1]."""
    f = np.zeros((len(pos), 3, size, size), np.uint8)
    for i, p in enumerate(pos):
        c = int(p * (size - 8))
        f[i, :, 20:28, c:c + 8] = 255
    return f


def state_model(**kw):
    m = PreferenceRewardModel(seed=kw.pop("seed", 0), **kw)
    m.bind(spaces.Box(-2, 2, (4,), np.float32), 1)
    return m


# ------------------------------------------------------------------------------------------- the loss


def test_bradley_terry_loss_is_the_cross_entropy_of_the_segment_scores():
    r1, r2 = torch.tensor([1.0, 0.5, -0.2]), torch.tensor([2.0, -0.5, -0.2])
    loss, correct = bradley_terry_loss(r1, r2, torch.tensor([1, 0, 1]))
    p_label = [math.exp(2) / (math.exp(1) + math.exp(2)), math.exp(0.5) / (math.exp(0.5) + math.exp(-0.5)), 0.5]
    assert float(loss) == pytest.approx(-np.mean(np.log(p_label)), rel=1e-6)
    assert int(correct) == 2  # a tie predicts class 0 (torch.max picks the first), as RL-VLM-F counts it
    # equal='half': an EQUAL label is the soft target (1/2, 1/2): its loss is log 2 at equal scores
    loss, _ = bradley_terry_loss(torch.tensor([0.3]), torch.tensor([0.3]), torch.tensor([EQUAL]), equal="half")
    assert float(loss) == pytest.approx(math.log(2), rel=1e-6)


# ------------------------------------------------------------------------------------------- fitting


def _fit_states(n_pairs, seed=0, **kw):
    rng = np.random.default_rng(seed)
    m = state_model(seed=seed, **kw)
    a, b = (rng.uniform(-2, 2, (n_pairs, 4)).astype(np.float32) for _ in range(2))
    q = PairQuery(a[:, None], b[:, None], true_state_reward(a), true_state_reward(b), pixel=False)
    m.add_labels(q.first, q.second, ScriptedOracle(seed=seed).label(q))
    return m, m.fit(), rng


def test_bradley_terry_recovers_the_ordering_of_a_synthetic_state_reward():
    m, fit, rng = _fit_states(500)
    x = rng.uniform(-2, 2, (2000, 4)).astype(np.float32)
    rho = spearmanr(m.rewards(x), true_state_reward(x)).statistic
    assert rho > 0.85, rho
    assert fit["labels"] == 500 and fit["acc"] > 0.75
    # an untrained ensemble orders nothing: the fit is what did it
    fresh = state_model(seed=0)
    assert abs(spearmanr(fresh.rewards(x), true_state_reward(x)).statistic) < 0.6
    # the reward is the ensemble mean and lies in [-1, 1] (tanh)
    per = m.member_rewards(x[:10])
    assert per.shape == (3, 10) and np.allclose(per.mean(0), m.rewards(x[:10]), atol=1e-6)
    assert np.abs(per).max() <= 1.0


def test_bradley_terry_recovers_the_ordering_of_a_pixel_reward():
    rng = np.random.default_rng(1)
    m = PreferenceRewardModel(seed=1, epochs=15)
    m.bind(spaces.Box(0, 255, (9, H, H), np.uint8), 3)  # 3 stacked RGB frames: the net reads the newest
    pa, pb = rng.random(256), rng.random(256)
    q = PairQuery(square_frames(pa)[:, None], square_frames(pb)[:, None], pa, pb)
    m.add_labels(q.first, q.second, ScriptedOracle(seed=1).label(q))
    m.fit()
    pt = rng.random(200)
    stacks = np.concatenate([np.zeros((200, 6, H, H), np.uint8), square_frames(pt)], axis=1)
    rho = spearmanr(m(next_obs=stacks), pt).statistic
    assert rho > 0.8, rho


def test_a_fit_stops_once_training_accuracy_exceeds_the_target():
    rng = np.random.default_rng(2)
    m = state_model(seed=2, epochs=200, target_acc=0.8)
    a = rng.uniform(-2, 2, (200, 4)).astype(np.float32)
    b = rng.uniform(-2, 2, (200, 4)).astype(np.float32)
    r = lambda x: x[:, 0]  # noqa: E731 -- linear and noiseless: well above 0.8 within a few passes
    m.add_labels(a, b, (r(a) < r(b)).astype(int))
    fit = m.fit()
    assert fit["acc"] > 0.8 and fit["epochs"] < 200
    capped = state_model(seed=2, epochs=3, target_acc=1.0)
    capped.add_labels(a, b, (r(a) < r(b)).astype(int))
    assert capped.fit()["epochs"] == 3


def test_skips_and_equal_answers_are_dropped_or_kept_as_half():
    m = state_model()
    a, b = np.zeros((4, 4), np.float32), np.ones((4, 4), np.float32)
    assert m.add_labels(a, b, [0, 1, EQUAL, SKIP]) == 2 and m.num_labels == 2
    half = state_model(equal="half")
    assert half.add_labels(a, b, [0, 1, EQUAL, SKIP]) == 3
    with pytest.raises(ConfigError, match="labels must be"):
        m.add_labels(a, b, [0, 1, 2, 0])


def test_too_small_frames_are_one_line():
    m = PreferenceRewardModel()
    with pytest.raises(ConfigError, match="at least 47x47"):
        m.bind(spaces.Box(0, 255, (9, 32, 32), np.uint8), 3)


# ------------------------------------------------------------------------------------------- oracles


def test_the_scripted_oracle_flips_and_answers_equal_at_the_configured_rates():
    rng = np.random.default_rng(3)
    n = 20000
    r1, r2 = rng.normal(size=n), rng.normal(size=n)
    truth = (r1 < r2).astype(int)
    q = PairQuery(np.zeros((n, 1, 1)), np.zeros((n, 1, 1)), r1, r2, pixel=False)
    assert np.array_equal(ScriptedOracle(seed=0).label(q), truth)
    labels = ScriptedOracle(noise=0.2, equal_rate=0.1, seed=0).label(q)
    equal = labels == EQUAL
    flipped = (labels != truth) & ~equal
    sd = lambda p: math.sqrt(p * (1 - p) / n)  # noqa: E731
    assert abs(equal.mean() - 0.1) < 4 * sd(0.1)
    assert abs(flipped[~equal].mean() - 0.2) < 4 * sd(0.2) * 1.1
    # ties go to the first, as PEBBLE's 1 * (r1 < r2) does
    tie = PairQuery(np.zeros((2, 1, 1)), np.zeros((2, 1, 1)), np.array([1.0, 0.0]), np.array([1.0, 0.0]), pixel=False)
    assert ScriptedOracle().label(tie).tolist() == [0, 0]
    with pytest.raises(ConfigError, match="probability"):
        ScriptedOracle(noise=1.5)


@pytest.mark.parametrize("reply, expected", [("0", 0), ("1", 1), ("-1", -1), (" 1 \nbecause the pole is up", 1),
                                              ("2", None), ("Image 1", None), ("", None), ("0.5", None),
                                              (None, None), (-1, None)])
def test_vlm_replies_are_parsed_as_rl_vlm_f_does(reply, expected):
    assert parse_vlm_label(reply) == expected


class FakeVLM:
    """Stage 1: 'brighter: 1|2' from the images; stage 2: a reply chosen by the test from the analysis."""

    def __init__(self, replies):
        self.calls, self.replies = [], replies

    def __call__(self, images, prompt):
        self.calls.append((len(images), prompt))
        if images:
            return f"brighter: {1 if images[0].mean() > images[1].mean() else 2}"
        return self.replies.pop(0)


def test_the_vlm_oracle_queries_in_two_stages_and_drops_what_it_cannot_use():
    dark, mid, bright = (np.full((1, 1, 3, H, H), v, np.uint8) for v in (10, 100, 200))
    first = np.concatenate([bright, dark, mid, mid, dark])
    second = np.concatenate([dark, bright, mid, bright, mid])  # pair 2: identical images
    vlm = FakeVLM(["0", "1", "I cannot tell", "-1"])
    oracle = VLMOracle(vlm, "to make the image bright")
    labels = oracle.label(PairQuery(first, second))
    assert labels.tolist() == [0, 1, SKIP, SKIP, EQUAL]
    assert oracle.counts == {"answered": 2, "equal": 1, "dropped": 1, "identical": 1}
    assert len(vlm.calls) == 8  # two stages for each of the 4 different pairs; none for the identical one
    stage1, stage2 = vlm.calls[0], vlm.calls[1]
    assert stage1[0] == 2 and "The goal is to make the image bright" in stage1[1] and "Image 2" in stage1[1]
    assert stage2[0] == 0 and "brighter: 1" in stage2[1] and "Reply -1 if the text is unsure" in stage2[1]
    m = PreferenceRewardModel(seed=0)
    m.bind(spaces.Box(0, 255, (3, H, H), np.uint8), 1)
    assert m.add_labels(first, second, labels) == 2  # unparsable, identical and equal are not trained on
    with pytest.raises(ConfigError, match="goal"):
        VLMOracle(vlm, " ")


# ------------------------------------------------------------------------------------------- sampling


def test_segments_are_sampled_within_one_episode_and_never_start_at_a_first_observation():
    # two episodes of 5 and 3 steps, then an open one of 2: first rows 0, 6, 10
    first = np.zeros(13, bool)
    first[[0, 6, 10]] = True
    ep_start = np.array([0] * 6 + [6] * 4 + [10] * 3)
    rng = np.random.default_rng(0)
    s1 = sample_segment_starts(first, ep_start, 2000, 1, rng)
    assert set(s1.tolist()) == {1, 2, 3, 4, 5, 7, 8, 9, 11, 12}
    s3 = sample_segment_starts(first, ep_start, 2000, 3, rng)
    assert set(s3.tolist()) == {1, 2, 3, 7}
    rows = segment_rows(s3, 3)
    assert (ep_start[rows] == ep_start[rows[:, :1]]).all() and not first[rows].any()
    assert sample_segment_starts(first, ep_start, 5, 4, rng).size == 5
    assert sample_segment_starts(first, ep_start, 5, 6, rng).size == 0


# ------------------------------------------------------------------------------------------- folders and specs


def test_a_model_folder_round_trips_and_loads_through_the_prefs_spec(tmp_path):
    m, _, rng = _fit_states(200)
    m.save(tmp_path / "rm")
    meta = json.loads((tmp_path / "rm" / "preference_model.json").read_text())
    assert meta["labels"] == 200 and meta["spec"]["shape"] == [4]
    x = rng.uniform(-2, 2, (50, 4)).astype(np.float32)
    cfg = RewardConfig(f"prefs:{tmp_path / 'rm'}", mode="add", scale=2.0)
    loaded = build_reward_model(cfg)
    loaded.bind(spaces.Box(-2, 2, (4,), np.float32), 1)
    np.testing.assert_array_equal(loaded(next_obs=x), m(next_obs=x))
    assert loaded.mode == "add" and loaded.scale == 2.0 and loaded.online is None
    with pytest.raises(ConfigError, match="reads 4-d states"):
        loaded.bind(spaces.Box(-2, 2, (5,), np.float32), 1)
    with pytest.raises(ConfigError, match="does not exist"):
        RewardConfig(f"prefs:{tmp_path / 'nothing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds neither"):
        RewardConfig(f"prefs:{tmp_path / 'empty'}")
    with pytest.raises(ConfigError, match="--reward.queue"):
        RewardConfig("prefs:person")
    with pytest.raises(ConfigError, match="--reward.goal"):
        RewardConfig("prefs:vlm")
    with pytest.raises(ConfigError, match="query-batch"):
        RewardConfig("prefs:scripted", query_batch=0)


def test_state_dict_continues_a_fit_exactly():
    a, _, _ = _fit_states(100, seed=4, epochs=3)
    b = state_model(seed=4, epochs=3)
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(5).uniform(-2, 2, (64, 4)).astype(np.float32)
    ya = (true_state_reward(x[:32]) < true_state_reward(x[32:])).astype(int)
    for m in (a, b):
        m.add_labels(x[:32], x[32:], ya)
        m.fit()
    np.testing.assert_array_equal(a.rewards(x), b.rewards(x))


# ------------------------------------------------------------------------------------------- online, through the trainer
# (the run's arguments: tests/helpers.py PREFERENCE_RUN)


def _replay(run):
    return load_run_buffer(run)


@pytest.fixture(scope="module")
def online_run(tmp_path_factory):
    pytest.importorskip("dm_control")
    from pixelrl.cli.main import main

    run = tmp_path_factory.mktemp("prefs") / "run"
    assert main(["train", *PREFERENCE_RUN, "--frames", "3000", "--run-dir", str(run)]) == 0
    return run


@pytest.mark.slow
def test_the_online_loop_queries_on_schedule_fits_and_relabels_the_replay(online_run):
    from pixelrl.train.logger import read_rows

    rows = read_rows(online_run, "train")
    # rounds after the 60 warm-up steps, then every 100 agent steps: steps 60, 160, 260 (20 + 20 + the last 10)
    assert [r["pref_sent"] for r in rows] == [20, 40, 50] and [r["pref_rounds"] for r in rows] == [1, 2, 3]
    assert all(0.5 <= r["pref_labels"] <= r["pref_sent"] for r in rows) and rows[-1]["pref_labels"] == 50
    assert "critic_loss" in rows[0] and rows[0]["learn_return"] == pytest.approx(rows[0]["reward_model_return"])
    # the model of the run (loaded from the run folder through the prefs: spec) gives every stored reward: the
    # replay was relabelled after the last fit and later steps were scored by the same model
    model = build_reward_model(RewardConfig(f"prefs:{online_run}"))
    replay = _replay(online_run)
    model.bind(replay.observation_space, 3)
    a = replay.state_dict()["arrays"]
    steps = ~a["first"]
    np.testing.assert_allclose(a["reward"][steps], model.rewards(a["obs_0"][steps]), atol=1e-6)
    assert len(model.history) == 3 and model.history[-1]["labels"] == 50


@pytest.mark.slow
def test_resume_with_the_preference_loop_continues_exactly(online_run, tmp_path):
    from pixelrl.cli.main import main
    from pixelrl.train.logger import TIMING_COLUMNS, read_rows

    run = tmp_path / "run"
    assert main(["train", *PREFERENCE_RUN, "--frames", "2000", "--run-dir", str(run)]) == 0  # stops between rounds 2 and 3
    assert main(["resume", str(run), "--frames", "3000"]) == 0
    for kind in ("train", "eval"):
        strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]  # noqa: E731
        assert strip(read_rows(run, kind)) == strip(read_rows(online_run, kind)), kind
    a, b = _replay(run).state_dict()["arrays"], _replay(online_run).state_dict()["arrays"]
    assert np.array_equal(a["reward"], b["reward"]) and np.array_equal(a["obs_0"], b["obs_0"])


# ------------------------------------------------------------------------------------------- offline and a person


def _square_dataset(path, episodes=6, steps=30, seed=0):
    """Frames with a square moving at random; the reward of a step is the square's position in its next frame."""
    pytest.importorskip("h5py", reason="h5py not installed (pip install 'pixelrl[offline]')")
    from pixelrl.data.dataset import DatasetWriter

    rng = np.random.default_rng(seed)
    space = spaces.Box(0, 255, (3, H, H), np.uint8)
    with DatasetWriter(path, space, spaces.Box(-1, 1, (1,), np.float32), env_id="dmc/cartpole-swingup",
                       frame_stack=1) as w:
        for _ in range(episodes):
            pos = rng.random(steps + 1)
            w.add_episode(square_frames(pos), rng.uniform(-1, 1, (steps, 1)).astype(np.float32), pos[1:],
                          [False] * steps, [False] * (steps - 1) + [True])
    return path


def _square_position(frames: np.ndarray) -> np.ndarray:
    """The square's position back from frames [n, 3, H, H] (its left column / (H - 8))."""
    return np.argmax(frames[:, 0, 24] > 0, axis=1) / (H - 8)


def test_offline_a_person_labels_a_dataset_the_fit_model_relabels_it(tmp_path, capsys):
    from pixelrl.cli.main import main
    from pixelrl.data.dataset import load_dataset
    from pixelrl.rewards.queue import LabelQueue

    ds = _square_dataset(tmp_path / "data")
    q = tmp_path / "queue"
    assert main(["label", str(q), "--dataset", str(ds), "--pairs", "200", "--goal", "square to the right",
                 "--fit", str(tmp_path / "rm"), "--epochs", "1"]) == 1  # nothing labelled yet: refused
    assert "no left/right answers yet" in capsys.readouterr().err
    queue = LabelQueue(q)
    first, second, ids = queue.pairs()
    with queue.writer():  # the person: prefers the square further right
        for i, a, b in zip(ids, first[:, 0], second[:, 0]):
            pa, pb = _square_position(a[None])[0], _square_position(b[None])[0]
            queue.append_label(i, "equal" if pa == pb else ("right" if pb > pa else "left"))
    assert main(["label", str(q), "--fit", str(tmp_path / "rm"), "--epochs", "15"]) == 0
    fit = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert fit["answers"] == 200 and fit["labels"] <= 200 and fit["acc"] > 0.7
    assert main(["dataset", "relabel", str(ds), "--out", str(tmp_path / "relabelled"), "--reward",
                 f"prefs:{tmp_path / 'rm'}", "--device", "cpu", "--no-progress"]) == 0
    new, old = load_dataset(tmp_path / "relabelled"), load_dataset(ds)
    r_new = np.concatenate([e["rewards"] for e in new.iter_episodes()])
    r_old = np.concatenate([e["rewards"] for e in old.iter_episodes()])
    assert spearmanr(r_new, r_old).statistic > 0.8  # the true reward's ordering, learned from the labels alone


def test_the_person_oracle_waits_for_the_queue_and_a_resumed_round_reuses_its_batch(tmp_path):
    import threading

    from pixelrl.rewards.oracles import PersonOracle
    from pixelrl.rewards.queue import LabelQueue

    msgs = []
    oracle = PersonOracle(tmp_path / "q", poll_s=0.02, timeout_s=20, notify=msgs.append)
    a, b = square_frames(np.array([0.1, 0.9, 0.5]))[:, None], square_frames(np.array([0.8, 0.2, 0.5]))[:, None]
    query = PairQuery(a, b, round=0)

    def person():
        q = LabelQueue(tmp_path / "q")
        while q.batch_ids(0) is None:
            threading.Event().wait(0.02)
        with q.writer():
            for i, key in zip(q.batch_ids(0), ("right", "left", "skip")):
                q.append_label(i, key)

    t = threading.Thread(target=person)
    t.start()
    labels = oracle.label(query)
    t.join()
    assert labels.tolist() == [1, 0, SKIP] and "3 pairs wait for labels" in msgs[0]
    # the same round again (a run resumed from a checkpoint before this round): no new batch, the answers on disk
    again = PersonOracle(tmp_path / "q", poll_s=0.02, timeout_s=0.5, notify=msgs.append)
    assert again.label(query).tolist() == [1, 0, SKIP]
    assert LabelQueue(tmp_path / "q").num_pairs() == 3
    with pytest.raises(TimeoutError):
        again.label(PairQuery(a, b, round=1))


def test_a_logit_scale_keeps_a_noiseless_single_step_fit_graded_where_scale_one_saturates():
    """With tanh steps and logits R1 - R2 (RL-VLM-F), noiseless labels drive the best states' rewards onto the +1
    bound, so the top fifth of the true reward gets one flat learned reward; scaling the logits by 5 leaves those
    rewards spread (several times wider) at the same overall ordering. The scale is checked and reaches the model
    through the prefs: spec."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 2, (4000, 4)).astype(np.float32)
    t = true_state_reward(x)
    top = t >= np.quantile(t, 0.8)
    spread = {}
    for scale in (1.0, 5.0):
        m, fit, _ = _fit_states(2000, seed=3, epochs=30, logit_scale=scale)
        r = m.rewards(x)
        assert spearmanr(r, t).statistic > 0.85
        spread[scale] = float(r[top].std())
    assert spread[1.0] < 0.01 and spread[5.0] > 3 * spread[1.0], spread
    with pytest.raises(ConfigError, match="logit_scale"):
        state_model(logit_scale=0.0)
    with pytest.raises(ConfigError, match="pref-logit-scale"):
        build_reward_model(RewardConfig("prefs:scripted", pref_logit_scale=-1.0))
    m = build_reward_model(RewardConfig("prefs:scripted", pref_logit_scale=5.0))
    assert m.logit_scale == 5.0


@pytest.mark.slow
def test_the_benchmark_spreads_rounds_and_fits_a_frozen_reward_on_a_runs_replay(online_run, tmp_path):
    """benchmarks/preference_reward.py: ``--query-span 0.5`` keeps the spacing the earlier result files used (287 agent
    steps for N = 1000 at 100k frames), 1.0 spreads the rounds to the end of the run; a ``--frozen`` model is fitted on
    pairs of a run's stored steps labelled by their stored rewards, orders further pairs of them, is saved as a model
    folder the prefs: spec loads, and is read back rather than refitted when the benchmark resumes."""
    b = load_script("benchmarks/preference_reward.py")
    assert b.schedule(100_000, 1000)["query_every"] == 287
    s = b.schedule(100_000, 1000, 1.0)
    last = b.WARMUP + (s["rounds"] - 1) * s["query_every"]
    assert s["query_every"] == 600 and 12_500 - s["query_every"] <= last < 12_500
    with pytest.raises(SystemExit):
        b.INPUTS.update(frames=1, actions=False, span=0.5, logit_scale=1.0)
        b.sys.argv = ["preference_reward.py", "--query-span", "0"]
        b.main()
    fit = b.fit_on_true_arm(online_run, 200, 1, 0, tmp_path / "m", epochs=10)
    assert fit["held_out_acc"] > 0.7, fit  # chance: 0.5
    means = [r["model_mean"] for r in fit["by_true_decile"]["deciles"] if r["model_mean"] is not None]
    assert means[-1] > means[0] and fit["by_true_decile"]["spearman"] > 0.6
    model = build_reward_model(RewardConfig(f"prefs:{tmp_path / 'm'}"))
    assert model.num_labels == 0 and model.history[-1]["labels"] == 200
    again = b.fit_on_true_arm(online_run, 200, 1, 0, tmp_path / "m", epochs=10)
    assert again["held_out_acc"] == fit["held_out_acc"] and again["by_true_decile"] == fit["by_true_decile"]
