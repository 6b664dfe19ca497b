"""MixedSampler: exact per-source counts in every batch, the ``source`` extra, row contents, clear errors."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from gymnasium import spaces

from pixelrl.data.mixing import MixedSampler, split_counts
from pixelrl.data.replay import ReplayBuffer
from pixelrl.errors import ConfigError

STATE = spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
ACTION = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
DICT = spaces.Dict({
    "pixels": spaces.Box(0, 255, shape=(6, 4, 4), dtype=np.uint8),  # frame_stack 2 of 3-channel frames
    "state": spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32),
})


def _obs(marker: int, ep: int, t: int, space):
    state = np.array([marker, ep, t], dtype=np.float32)
    if isinstance(space, spaces.Dict):
        frame = np.full((3, 4, 4), (marker * 50 + t) % 256, dtype=np.uint8)
        return {"pixels": np.concatenate([frame, frame]), "state": state}
    return state


def make_buffer(marker: int, *, episodes: int = 3, length: int = 7, seed: int = 0, space=STATE, nstep: int = 1,
                capacity: int = 1000) -> ReplayBuffer:
    """Every observation, action and reward of this buffer carries ``marker`` (which source it came from)."""
    buf = ReplayBuffer(space, ACTION, capacity, frame_stack=2, nstep=nstep, discount=0.9, seed=seed)
    for ep in range(episodes):
        buf.add_first(_obs(marker, ep, 0, space))
        for t in range(1, length + 1):
            buf.add(np.array([marker / 10, t / 10], dtype=np.float32), marker * 100 + t, _obs(marker, ep, t, space),
                    terminated=t == length and ep % 2 == 0, truncated=t == length and ep % 2 == 1)
    return buf


def _state(obs):
    return obs["state"] if isinstance(obs, dict) else obs


# ---------------------------------------------------------------------------------------------- split_counts

def _largest_remainder_exact(batch_size, fractions):
    """Reference with exact rationals (fractions given as decimal strings)."""
    q = [Fraction(f) * batch_size for f in fractions]
    c = [int(x) for x in q]  # floor (non-negative)
    order = sorted((i for i, f in enumerate(fractions) if Fraction(f) > 0), key=lambda i: (-(q[i] - c[i]), i))
    for i in order[: batch_size - sum(c)]:
        c[i] += 1
    return c


@pytest.mark.parametrize("fractions", [
    ["0.5", "0.5"], ["0.25", "0.75"], ["0", "1"], ["1", "0"], ["0.1", "0.2", "0.7"], ["0.29", "0.71"],
    ["0.333", "0.333", "0.334"], ["0", "0.5", "0", "0.5"], ["0.9", "0.1"],
])
@pytest.mark.parametrize("batch_size", [0, 1, 2, 3, 7, 10, 32, 100, 255, 256, 1001])
def test_split_counts_is_exact_largest_remainder(fractions, batch_size):
    counts = split_counts(batch_size, [float(f) for f in fractions])
    assert sum(counts) == batch_size
    assert counts == _largest_remainder_exact(batch_size, fractions)
    for c, f in zip(counts, fractions):
        assert abs(c - float(f) * batch_size) < 1
        if float(f) == 0:
            assert c == 0


def test_split_counts_ties_go_to_the_first_source():
    assert split_counts(3, [0.5, 0.5]) == [2, 1]
    assert split_counts(1, [0.5, 0.5]) == [1, 0]
    assert split_counts(5, [1 / 3, 1 / 3, 1 / 3]) == [2, 2, 1]


# ---------------------------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("space", [STATE, DICT], ids=["state", "dict"])
@pytest.mark.parametrize("frac_a", [0.0, 0.25, 0.5, 0.7, 1.0])
def test_every_batch_has_the_exact_counts_and_source_marks_the_rows(space, frac_a):
    a, b = make_buffer(1, seed=1, space=space), make_buffer(2, seed=2, space=space)
    mix = MixedSampler({"a": a, "b": b}, {"a": frac_a, "b": 1 - frac_a})
    for batch_size in (1, 2, 3, 5, 16, 33, 64):
        want = split_counts(batch_size, [frac_a, 1 - frac_a])
        for _ in range(3):
            batch = mix.sample(batch_size)
            assert len(batch) == batch_size
            src = batch.extras["source"]
            assert src.dtype == torch.int64 and src.shape == (batch_size,)
            assert [(src == i).sum().item() for i in range(2)] == want
            assert mix.last_counts == {"a": want[0], "b": want[1]}
            # rows come in source order and the marker stored in every field matches the source index
            assert torch.equal(src, torch.sort(src).values)
            marker = src + 1
            assert torch.equal(_state(batch.obs)[:, 0].long(), marker)
            assert torch.equal(_state(batch.next_obs)[:, 0].long(), marker)
            assert torch.equal((batch.reward[:, 0] // 100).long(), marker)
            assert torch.allclose(batch.action[:, 0], marker.float() / 10)
            if isinstance(space, spaces.Dict):
                px = batch.obs["pixels"].long()
                t = _state(batch.obs)[:, 2].long()
                assert torch.equal(px[:, -1, 0, 0], (marker * 50 + t) % 256)


def test_mixed_rows_equal_the_rows_each_source_returns():
    """The mix is exactly: source a's own sample of its count, then source b's (same seeds, same content)."""
    a, b = make_buffer(1, seed=11, nstep=3), make_buffer(2, seed=12, nstep=3, episodes=5)
    ref_a, ref_b = make_buffer(1, seed=11, nstep=3), make_buffer(2, seed=12, nstep=3, episodes=5)
    mix = MixedSampler({"a": a, "b": b}, {"a": 0.3, "b": 0.7})
    for batch_size in (10, 7, 1, 64):
        got = mix.sample(batch_size, action_seq=True)
        na, nb = split_counts(batch_size, [0.3, 0.7])
        parts = ([ref_a.sample(na, action_seq=True)] if na else []) + [ref_b.sample(nb, action_seq=True)]
        for name in ("obs", "action", "reward", "discount", "next_obs"):
            want = torch.cat([getattr(p, name) for p in parts])
            assert torch.equal(getattr(got, name), want), name
        for name in ("action_seq", "seq_mask"):
            assert torch.equal(got.extras[name], torch.cat([p.extras[name] for p in parts])), name
        # n-step semantics survive: discount is gamma^m or 0 on termination
        assert {round(float(d), 5) for d in got.discount.ravel()} <= {0.0, 0.9, 0.81, 0.729}


def test_single_source_and_zero_fraction_source_may_be_empty():
    a = make_buffer(1)
    empty = ReplayBuffer(STATE, ACTION, 100, frame_stack=2, nstep=1, discount=0.9)
    mix = MixedSampler({"a": a, "e": empty}, {"a": 1.0, "e": 0.0})
    batch = mix.sample(9)
    assert (batch.extras["source"] == 0).all() and mix.last_counts == {"a": 9, "e": 0}
    assert len(mix) == len(a) and mix.num_sampleable() == a.num_sampleable()


def test_empty_source_raises_or_redistributes():
    a = make_buffer(1)
    online = ReplayBuffer(STATE, ACTION, 100, frame_stack=2, nstep=1, discount=0.9)
    with pytest.raises(ConfigError, match="'online'.*no sampleable transition.*redistribute"):
        MixedSampler({"a": a, "online": online}, {"a": 0.5, "online": 0.5}).sample(8)
    mix = MixedSampler({"a": a, "online": online}, {"a": 0.5, "online": 0.5}, on_empty="redistribute")
    batch = mix.sample(8)
    assert (batch.extras["source"] == 0).all() and mix.last_counts == {"a": 8, "online": 0}
    # as soon as the online buffer holds a complete transition, the configured split is back
    online.add_first(_obs(2, 0, 0, STATE))
    online.add(np.zeros(2, np.float32), 201.0, _obs(2, 0, 1, STATE), False, False)
    batch = mix.sample(8)
    assert mix.last_counts == {"a": 4, "online": 4}
    assert torch.equal(_state(batch.obs)[4:, 0], torch.full((4,), 2.0))
    # nothing at all to sample: a clear error even when redistributing
    empty2 = ReplayBuffer(STATE, ACTION, 100, frame_stack=2, nstep=1, discount=0.9)
    with pytest.raises(ConfigError, match="no source of the batch mix has a sampleable"):
        MixedSampler({"x": empty2, "online": ReplayBuffer(STATE, ACTION, 10, frame_stack=2, nstep=1, discount=0.9)},
                     {"x": 0.5, "online": 0.5}, on_empty="redistribute").sample(4)


def test_redistribution_follows_the_remaining_fractions():
    a, b = make_buffer(1), make_buffer(2)
    empty = ReplayBuffer(STATE, ACTION, 100, frame_stack=2, nstep=1, discount=0.9)
    mix = MixedSampler({"a": a, "b": b, "c": empty}, {"a": 0.2, "b": 0.3, "c": 0.5}, on_empty="redistribute")
    mix.sample(10)
    assert mix.last_counts == {"a": 4, "b": 6, "c": 0}


@pytest.mark.parametrize("sources, fractions, match", [
    (lambda: {"a": make_buffer(1), "b": make_buffer(2)}, {"a": 0.5, "b": 0.6}, "sum to 1"),
    (lambda: {"a": make_buffer(1), "b": make_buffer(2)}, {"a": 1.0}, "missing: \\['b'\\]"),
    (lambda: {"a": make_buffer(1)}, {"a": 1.0, "z": 0.0}, "unknown: \\['z'\\]"),
    (lambda: {"a": make_buffer(1), "b": make_buffer(2)}, {"a": -0.5, "b": 1.5}, "in \\[0, 1\\]"),
    (lambda: {"a": make_buffer(1), "b": make_buffer(2)}, {"a": float("nan"), "b": 1.0}, "in \\[0, 1\\]"),
    (lambda: {}, {}, "at least one source"),
    (lambda: {"a": make_buffer(1), "b": make_buffer(2, space=DICT)}, {"a": 0.5, "b": 0.5}, "observation space"),
    (lambda: {"a": make_buffer(1), "b": make_buffer(2, nstep=3)}, {"a": 0.5, "b": 0.5}, "nstep"),
    (lambda: {"a": make_buffer(1), "b": ReplayBuffer(STATE, spaces.Box(-1, 1, (3,), np.float32), 10, frame_stack=2,
                                                       nstep=1, discount=0.9)}, {"a": 0.5, "b": 0.5}, "action space"),
    (lambda: {"a": make_buffer(1), "b": ReplayBuffer(STATE, ACTION, 10, frame_stack=2, nstep=1, discount=0.99)},
     {"a": 0.5, "b": 0.5}, "discount"),
    (lambda: {"a": make_buffer(1), "b": [1, 2]}, {"a": 0.5, "b": 0.5}, "not a ReplayBuffer"),
])
def test_bad_configuration_is_one_clear_error(sources, fractions, match):
    with pytest.raises(ConfigError, match=match):
        MixedSampler(sources(), fractions)


def test_bad_batch_size_and_on_empty():
    with pytest.raises(ConfigError, match="on_empty"):
        MixedSampler({"a": make_buffer(1)}, {"a": 1.0}, on_empty="skip")
    with pytest.raises(ConfigError, match="batch_size"):
        MixedSampler({"a": make_buffer(1)}, {"a": 1.0}).sample(0)
