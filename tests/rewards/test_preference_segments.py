"""Segment queries (PEBBLE's scripted teacher): the online loop draws segments of K consecutive steps of one episode
from a replay ring that wraps and evicts, hands the oracle each segment's true return (the env's rewards summed over
its K steps), the scripted oracle labels by the sign of the return difference, and Bradley-Terry on segment sums
recovers the ordering of the per-step reward."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from scipy.stats import spearmanr

from pixelrl.data.replay import ReplayBuffer
from pixelrl.rewards.oracles import ScriptedOracle
from pixelrl.rewards.preference import (PairQuery, PreferenceRewardModel, OnlinePreferenceLoop, Schedule,
                                        sample_segment_starts, segment_rows)
from pixelrl.rewards.wrapper import RewardedReplay


def env_reward(g: np.ndarray) -> np.ndarray:
    """The env's reward of the step into absolute slot ``g`` (deterministic, so a test can recompute it)."""
    return np.sin(0.7 * np.asarray(g, dtype=np.float64)) + 0.1 * np.asarray(g, dtype=np.float64) % 3


class Recording:
    """The scripted oracle, keeping every query it answered."""

    def __init__(self) -> None:
        self.inner = ScriptedOracle(seed=0)
        self.queries: list[tuple[PairQuery, np.ndarray]] = []

    def label(self, query: PairQuery) -> np.ndarray:
        y = self.inner.label(query)
        self.queries.append((query, y))
        return y


def _run_loop(segment: int, capacity: int, episode_lengths: list[int]):
    """Feed episodes through a RewardedReplay whose model learns online (a query round after every step). States are
    ``[absolute slot g, episode id]`` so a query's rows can be traced back to the slots they came from."""
    space = spaces.Box(-1e6, 1e6, (2,), np.float32)
    replay = ReplayBuffer(space, spaces.Box(-1, 1, (1,), np.float32), capacity, frame_stack=1, nstep=1)
    model = PreferenceRewardModel(seed=0, segment=segment, epochs=1, batch_size=16)
    oracle = Recording()
    model.online = OnlinePreferenceLoop(model, oracle, Schedule(query_batch=8, query_every=1, max_queries=10 ** 6,
                                                                first_query=1), seed=0)
    model.bind(space, 1)
    store = RewardedReplay(replay, model)
    g = 0
    for ep, length in enumerate(episode_lengths):
        store.add_first(np.array([g, ep], np.float32))
        g += 1
        for t in range(length):
            store.add(np.zeros(1, np.float32), float(env_reward(g)), np.array([g, ep], np.float32), False,
                      t == length - 1)
            g += 1
    return replay, model, oracle


@pytest.mark.parametrize("segment", [1, 4])
def test_online_segments_stay_in_one_episode_of_a_wrapping_replay_and_carry_their_true_returns(segment):
    replay, model, oracle = _run_loop(segment, capacity=40, episode_lengths=[7, 3, 9, 2, 6, 11, 5, 8, 4, 10])
    assert replay.state_dict()["meta"]["lo"] > 0  # the ring wrapped: early episodes (and episode starts) evicted
    assert len(oracle.queries) > 20
    for q, y in oracle.queries:
        for side, ret in ((q.first, q.returns_first), (q.second, q.returns_second)):
            assert side.shape[1:] == (segment, 2)
            g, ep = side[..., 0].astype(np.int64), side[..., 1]
            assert (np.diff(g, axis=1) == 1).all()  # consecutive slots
            assert (ep == ep[:, :1]).all()  # of one episode: no segment crosses an episode boundary
            np.testing.assert_allclose(ret, env_reward(g).sum(1), rtol=1e-5, atol=1e-5)  # the segment's true return
        # the scripted oracle's label is the sign of the true segment-return difference (noise and equal rate 0)
        assert np.array_equal(y, (q.returns_first < q.returns_second).astype(np.int64))


def test_no_round_runs_while_no_segment_fits_and_the_first_one_runs_when_one_does():
    # segments of 5: the first episode has only 3 steps, so the round waits for the second episode's fifth step
    replay, model, oracle = _run_loop(5, capacity=200, episode_lengths=[3, 6])
    assert len(oracle.queries) == 2  # its steps 5 and 6
    assert all(len(q.first) == 8 for q, _ in oracle.queries)


def test_segment_samples_of_a_wrapped_replay_never_include_an_evicted_episode_start_or_a_first_row():
    # a live window that starts inside an episode (its first slot evicted): rows 0-3 belong to that episode
    first = np.array([False, False, False, False, True, False, False, False, True, False], bool)
    ep_start = np.array([97] * 4 + [104] * 4 + [108] * 2)  # absolute slots; the live window starts at 100
    starts = sample_segment_starts(first, ep_start, 5000, 3, np.random.default_rng(1))
    assert set(starts.tolist()) == {0, 1, 5}
    rows = segment_rows(starts, 3)
    assert not first[rows].any() and (ep_start[rows] == ep_start[rows[:, :1]]).all()


def test_bradley_terry_on_segment_sums_recovers_the_per_step_reward_ordering():
    """Labels from segment returns only (never a single step's reward): the fitted per-step reward orders single
    states like the true per-step reward, and held-out segments like their true returns."""
    rng = np.random.default_rng(0)
    w = np.array([1.0, -0.5, 0.3, 0.0])

    def reward(x):
        return np.sin(x @ w)

    segment = 4
    m = PreferenceRewardModel(seed=0, segment=segment, epochs=40)
    m.bind(spaces.Box(-2, 2, (4,), np.float32), 1)
    a, b = rng.uniform(-2, 2, (2, 300, segment, 4)).astype(np.float32)
    y = ScriptedOracle().label(PairQuery(a, b, reward(a).sum(1), reward(b).sum(1), pixel=False))
    m.add_labels(a, b, y)
    m.fit()
    x = rng.uniform(-2, 2, (500, 4)).astype(np.float32)
    assert spearmanr(m.rewards(x), reward(x)).statistic > 0.85  # measured 0.90
    ta, tb = rng.uniform(-2, 2, (2, 500, segment, 4)).astype(np.float32)
    ty = (reward(ta).sum(1) < reward(tb).sum(1)).astype(np.int64)
    assert m.accuracy(ta, tb, ty) > 0.85  # measured 0.91
    fresh = PreferenceRewardModel(seed=0, segment=segment)
    fresh.bind(spaces.Box(-2, 2, (4,), np.float32), 1)
    assert fresh.accuracy(ta, tb, ty) < 0.7  # an unfitted ensemble: the fit is what orders them (0.62)


def test_segments_longer_than_every_episode_never_copy_the_replay():
    """A round first checks that some episode had `segment` steps; without that guard every step after the first
    due round copied the whole replay (``state_dict``) only to find no segment fits."""
    calls = []
    original = ReplayBuffer.state_dict

    def counting(self):
        calls.append(1)
        return original(self)

    ReplayBuffer.state_dict = counting
    try:
        _, _, oracle = _run_loop(8, capacity=200, episode_lengths=[5, 7, 6, 4])
    finally:
        ReplayBuffer.state_dict = original
    assert oracle.queries == [] and calls == []


def test_the_loop_state_keeps_the_longest_episode_run_for_an_exact_resume():
    _, model, _ = _run_loop(5, capacity=200, episode_lengths=[7, 3])
    state = model.online.state_dict()
    assert state["longest"] == 7 and state["run"] == 3
    other = PreferenceRewardModel(seed=0, segment=5, epochs=1)
    other.online = OnlinePreferenceLoop(other, Recording(), Schedule(), seed=0)
    other.online.attach(ReplayBuffer(spaces.Box(-1e6, 1e6, (2,), np.float32), spaces.Box(-1, 1, (1,), np.float32),
                                     200, frame_stack=1, nstep=1))
    other.online.load_state_dict(state)
    assert other.online._longest == 7 and other.online._run == 3
