"""Dataset metrics on hand-built data with known answers: return stats, TQ, SACo binning and counting, stats CLI."""

import json

import numpy as np
import pytest
from gymnasium import spaces

from pixelrl.data.dataset import DatasetWriter, load_dataset
from pixelrl.data.dataset_metrics import (
    bin_columns,
    count_unique_state_actions,
    dataset_stats,
    plot_return_histogram,
    return_stats,
    saco,
    state_action_arrays,
    trajectory_quality,
)
from pixelrl.errors import ConfigError

pytest.importorskip("h5py")


def test_return_stats():
    s = return_stats([4.0, 1.0, 3.0, 2.0])
    assert s["episodes"] == 4 and s["mean"] == 2.5 and s["min"] == 1.0 and s["max"] == 4.0
    assert s["std"] == pytest.approx(np.sqrt(1.25))
    assert s["q50"] == 2.5 and s["q25"] == 1.75 and s["q75"] == 3.25 and s["q05"] == pytest.approx(1.15)
    with pytest.raises(ConfigError):
        return_stats([])


def test_trajectory_quality():
    assert trajectory_quality(50.0, 10.0, 90.0) == 0.5
    assert trajectory_quality(90.0, 10.0, 90.0) == 1.0
    assert trajectory_quality(0.0, 10.0, 90.0) == -0.125  # worse than random
    with pytest.raises(ConfigError, match="different"):
        trajectory_quality(1.0, 5.0, 5.0)
    with pytest.raises(ConfigError, match="finite"):
        trajectory_quality(float("nan"), 0.0, 1.0)


def test_bins_are_the_authors_digitize_of_a_linspace():
    x = np.array([[0.0], [0.005], [0.0102], [0.5], [0.999], [1.0], [-5.0], [7.0]])
    # np.digitize(x, np.linspace(0, 1, 100)): 99 intervals of width 1/99, 0 below the range, 100 at/above its max
    np.testing.assert_array_equal(bin_columns(x, [0.0], [1.0]).ravel(), [1, 1, 2, 50, 99, 100, 0, 100])
    np.testing.assert_array_equal(bin_columns(x, [0.0], [1.0]).ravel(),
                                  np.digitize(x.ravel(), np.linspace(0.0, 1.0, num=100)))
    np.testing.assert_array_equal(bin_columns(x, [0.0], [1.0], bins=4).ravel(), [1, 1, 1, 2, 3, 4, 0, 4])
    np.testing.assert_array_equal(bin_columns(x, [3.0], [3.0]).ravel(), [0, 0, 0, 0, 0, 0, 0, 100])  # constant column
    with pytest.raises(ConfigError, match="finite"):
        bin_columns(np.array([[np.nan]]), [0.0], [1.0])


def test_values_below_the_reference_range_get_their_own_bin():
    """Clipping into the edge bins (the old binning) counted -1 and 0 as one pair; the authors' digitize does not."""
    ref_s, ref_a = np.array([[0.0], [1.0]]), np.ones((2, 1))
    assert count_unique_state_actions(np.array([[0.0], [-1.0]]), np.ones((2, 1)), [0.0, 1.0], [1.0, 1.0]) == 2
    assert saco(np.array([[0.0], [-1.0], [-7.0]]), np.ones((3, 1)), ref_s, ref_a) == 1.0  # 2 pairs vs 2
    # at or above the maximum: one bin, the maximum's own
    assert saco(np.array([[1.0], [2.0], [5.0]]), np.ones((3, 1)), ref_s, ref_a) == 0.5


def test_saco_counts_distinct_binned_pairs_against_the_reference():
    grid = np.linspace(0.0, 1.0, 10)  # 10 states, each in its own bin of [0, 1] / 100
    ref_s = np.repeat(grid, 2)[:, None]
    ref_a = np.tile([-1.0, 1.0], 10)[:, None]
    assert count_unique_state_actions(ref_s, ref_a, [0, -1], [1, 1]) == 20
    assert saco(ref_s, ref_a, ref_s, ref_a) == 1.0
    # 5 states with action -1, each visited 3 times, plus 0.001 (the bin of 0.0): 5 distinct pairs of 20
    s = np.r_[np.repeat(grid[:5], 3), 0.001][:, None]
    a = -np.ones((16, 1))
    assert saco(s, a, ref_s, ref_a) == 0.25
    # values at or beyond the reference maximum share the maximum's bin
    assert saco(np.array([[1.0], [2.0], [5.0]]), np.ones((3, 1)), ref_s, ref_a) == 1 / 20
    # the bins follow the reference's range, not the dataset's: [0, 0.004] is one bin of [0, 1]...
    tiny = np.array([[0.0], [0.002], [0.004]])
    assert saco(tiny, np.ones((3, 1)), ref_s, ref_a) == 1 / 20
    # ...but three bins of its own range
    assert count_unique_state_actions(tiny, np.ones((3, 1)), [0, 1], [0.004, 1]) == 3
    with pytest.raises(ConfigError, match="columns"):
        saco(np.zeros((2, 3)), np.zeros((2, 1)), ref_s, ref_a)


def _write_state_dataset(path, episodes, *, seed, obs="state", env_id="toy/env"):
    """Episodes of 5 steps with integer-valued states/actions (so binning is predictable) and known returns."""
    rng = np.random.default_rng(seed)
    state = spaces.Box(-10, 10, (2,), np.float32)
    pix = spaces.Box(0, 255, (3, 8, 8), np.uint8)
    space = {"state": state, "pixels": pix, "pixels+state": spaces.Dict({"pixels": pix, "state": state})}[obs]
    act = spaces.Box(-1, 1, (1,), np.float32)
    eps = []
    with DatasetWriter(path, space, act, env_id=env_id, frame_stack=1) as w:
        for e in range(episodes):
            s = rng.integers(-10, 11, (6, 2)).astype(np.float32)
            frames = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
            o = {"state": s, "pixels": frames, "pixels+state": {"pixels": frames, "state": s}}[obs]
            a = rng.choice([-1.0, 0.0, 1.0], size=(5, 1)).astype(np.float32)
            r = np.full(5, float(e))  # return of episode e is 5e
            w.add_episode(o, a, r, [False] * 4 + [True], [False] * 5)
            eps.append((s, a))
    return load_dataset(path), eps


def _unique_pairs(eps, low, high):
    rows = np.concatenate([np.concatenate([s[:-1], a], axis=1) for s, a in eps])
    idx = np.stack([np.digitize(rows[:, c], np.linspace(low[c], high[c], 100)) for c in range(rows.shape[1])], 1)
    return len({tuple(r) for r in idx})


def test_dataset_stats_with_reference_and_given_returns(tmp_path):
    ref, ref_eps = _write_state_dataset(tmp_path / "ref", 6, seed=0)
    ds, _ = _write_state_dataset(tmp_path / "ds", 2, seed=0)  # the same first two episodes
    s, a = state_action_arrays(ds)
    assert s.shape == (10, 2) and a.shape == (10, 1)
    out = dataset_stats(ds, reference=ref)
    assert out["episodes"] == 2 and out["transitions"] == 10
    assert out["returns"]["mean"] == 2.5  # returns 0 and 5
    # without random / expert returns there is no TQ, only the proxy on the reference's return range, named so
    assert "tq" not in out and "tq_normalisation" not in out
    assert out["tq_reference_range"] == pytest.approx((2.5 - 0.0) / (25.0 - 0.0))  # reference returns 0..25
    assert out["tq_reference_range_returns"] == {"min": 0.0, "max": 25.0}
    rows = np.concatenate([np.concatenate([s_[:-1], a_], axis=1) for s_, a_ in ref_eps])
    low, high = rows.min(axis=0), rows.max(axis=0)
    assert out["saco"] == pytest.approx(_unique_pairs(ref_eps[:2], low, high) / _unique_pairs(ref_eps, low, high))
    assert 0 < out["saco"] < 1
    given = dataset_stats(ds, random_return=0.0, expert_return=10.0)
    assert given["tq"] == 0.25 and "saco" not in given and "tq_reference_range" not in given
    both = dataset_stats(ds, reference=ref, random_return=0.0, expert_return=10.0)
    assert both["tq"] == 0.25 and "tq_reference_range" not in both
    with pytest.raises(ConfigError, match="both"):
        dataset_stats(ds, random_return=0.0)
    other, _ = _write_state_dataset(tmp_path / "other", 1, seed=1, env_id="toy/other")
    with pytest.raises(ConfigError, match="same environment"):
        dataset_stats(ds, reference=other)
    flat, _ = _write_state_dataset(tmp_path / "flat", 1, seed=1)  # one reference episode: no return range
    out = dataset_stats(ds, reference=flat)
    assert out["tq_reference_range"] is None and "--random-return" in out["tq_reference_range_unavailable"]
    assert "tq" not in out and out["saco"] > 0


def test_saco_states_of_pixel_datasets(tmp_path):
    both, eps = _write_state_dataset(tmp_path / "both", 2, seed=3, obs="pixels+state")
    s, _ = state_action_arrays(both)
    np.testing.assert_array_equal(s, np.concatenate([e[0][:-1] for e in eps]))  # the 'state' entry
    pixels, _ = _write_state_dataset(tmp_path / "pix", 2, seed=3, obs="pixels")
    with pytest.raises(ConfigError, match="pixels\\+state"):
        state_action_arrays(pixels)
    out = dataset_stats(pixels, reference=pixels)
    assert out["saco"] is None and "pixels+state" in out["saco_unavailable"] and "tq_reference_range" in out


def test_histogram_png(tmp_path):
    out = plot_return_histogram([1.0, 2.0, 2.5, 7.0], tmp_path / "sub" / "h.png", reference_returns=[0.0, 9.0])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000


def test_stats_cli(tmp_path, capsys):
    from pixelrl.cli.dataset import cmd_dataset

    _write_state_dataset(tmp_path / "ref", 4, seed=0)
    _write_state_dataset(tmp_path / "ds", 2, seed=0)
    assert cmd_dataset(["stats", str(tmp_path / "ds"), "--reference", str(tmp_path / "ref"),
                        "--png", str(tmp_path / "h.png")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    out = json.loads(lines[-1])
    assert out["episodes"] == 2 and out["tq_reference_range"] == pytest.approx(2.5 / 15.0) and 0 < out["saco"] <= 1
    assert "tq" not in out and any("a proxy, not the paper's TQ" in line for line in lines)
    assert (tmp_path / "h.png").exists() and any("SACo" in line for line in lines)
    assert cmd_dataset(["stats", str(tmp_path / "ds"), "--random-return", "0", "--expert-return", "5"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tq"] == 0.5
    assert cmd_dataset(["nonsense"]) == 2
