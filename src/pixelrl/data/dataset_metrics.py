"""Dataset metrics: return distribution, trajectory quality (TQ) and state-action coverage (SACo).

Definitions follow "A Dataset Perspective on Offline Reinforcement Learning" (Schweighofer et al., 2022):

* **TQ** (exploitation): ``TQ(D) = (mean_return(D) - g_random) / (g_expert - g_random)``, the dataset's mean
  episode return normalised between a random and an expert policy's return (0 = random, 1 = expert).
* **SACo** (exploration): ``SACo(D) = u(D) / u(D_ref)``, where ``u`` counts the distinct state-action pairs: each
  column of ``[state, action]`` is binned between the *reference* data's minimum and maximum of that column, and
  distinct rows of bin indices are counted. The binning is the authors' (``kschweig/OfflineRL``,
  ``source/offline_ds_evaluation/evaluator.py``, ``get_unique_states``): ``np.digitize(x, np.linspace(min, max,
  num=100))``, so values below the reference minimum get a bin of their own (index 0) and values at or above the
  maximum share the last one (index 100) instead of being clipped into the edge bins of the range. The authors
  estimate the count with HyperLogLog (relative error 0.01); here it is exact (``np.unique`` on the bin indices),
  which the dataset sizes of pixelrl allow.
* **TQ with a reference only.** Without ``g_random`` / ``g_expert`` :func:`dataset_stats` reports no ``tq``; it
  reports ``tq_reference_range`` instead, the same formula with the reference's lowest and highest episode return
  (a proxy, under its own key so that it is never mistaken for the paper's TQ).

SACo needs low-dimensional states. A dataset of plain state observations uses them; a ``pixels+state`` dataset uses
its ``state`` entry; a pixels-only dataset raises ``ConfigError`` (binning raw pixels makes every frame distinct, so
the number would only measure dataset size): collect with ``--obs pixels+state`` to measure coverage.

The metric functions are pure NumPy; :func:`plot_return_histogram` imports matplotlib (Agg) when called.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pixelrl.errors import ConfigError

__all__ = [
    "QUANTILES",
    "SACO_BINS",
    "return_stats",
    "trajectory_quality",
    "bin_columns",
    "count_unique_state_actions",
    "saco",
    "state_action_arrays",
    "dataset_stats",
    "plot_return_histogram",
]

#: Quantiles reported by :func:`return_stats`.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Bin edges per column of ``[state, action]`` for SACo: the ``num`` of the authors' ``np.linspace(min, max, num)``
#: (the paper's "100 bins").
SACO_BINS = 100


def return_stats(returns: Sequence[float] | np.ndarray, quantiles: Sequence[float] = QUANTILES) -> dict[str, Any]:
    """Distribution of episode returns: ``episodes``, ``mean``, ``std`` (population), ``min``, ``max`` and
    ``q05``... for each quantile (linear interpolation, ``numpy.quantile``'s default)."""
    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    if r.size == 0:
        raise ConfigError("no episode returns to summarise (the dataset has no episodes)")
    out: dict[str, Any] = {"episodes": int(r.size), "mean": float(r.mean()), "std": float(r.std()),
                           "min": float(r.min()), "max": float(r.max())}
    for q in quantiles:
        out[f"q{round(100 * q):02d}"] = float(np.quantile(r, q))
    return out


def trajectory_quality(mean_return: float, random_return: float, expert_return: float) -> float:
    """``TQ = (mean_return - random_return) / (expert_return - random_return)``."""
    mean_return, random_return, expert_return = float(mean_return), float(random_return), float(expert_return)
    for name, v in (("mean_return", mean_return), ("random_return", random_return), ("expert_return", expert_return)):
        if not math.isfinite(v):
            raise ConfigError(f"{name} must be a finite number, got {v}")
    if expert_return == random_return:
        raise ConfigError(f"TQ needs an expert return different from the random return (both are {expert_return})")
    return (mean_return - random_return) / (expert_return - random_return)


def bin_columns(x: np.ndarray, low: np.ndarray, high: np.ndarray, bins: int = SACO_BINS) -> np.ndarray:
    """Bin index of every entry of ``x [N, d]`` for column ranges ``[low, high]``, as the authors bin.

    Per column ``np.digitize(x, np.linspace(low, high, num=bins))``: ``bins`` equally spaced edges, index ``i`` for
    ``edge[i-1] <= x < edge[i]``. So ``0`` holds the values below ``low``, ``1 .. bins - 1`` the ``bins - 1`` equal
    intervals of the range, and ``bins`` the values at or above ``high`` (the maximum itself included). Values
    outside the range are not clipped into the range's edge intervals (which would undercount the coverage of data
    that leaves the reference's range). A constant column (``high == low``) has two bins: below it (0) and the rest
    (``bins``). Returns int32 in ``[0, bins]``.
    """
    if int(bins) < 1:
        raise ConfigError(f"bins must be >= 1, got {bins}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ConfigError(f"expected an [N, d] array of rows, got shape {x.shape}")
    low = np.asarray(low, dtype=np.float64).reshape(-1)
    high = np.asarray(high, dtype=np.float64).reshape(-1)
    if low.shape != (x.shape[1],) or high.shape != (x.shape[1],):
        raise ConfigError(f"column ranges have {low.size}/{high.size} entries for {x.shape[1]} columns")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ConfigError("SACo needs finite states and actions (found NaN or infinity)")
    out = np.empty(x.shape, dtype=np.int32)
    for c in range(x.shape[1]):  # np.digitize with increasing edges == searchsorted(side='right')
        out[:, c] = np.searchsorted(np.linspace(low[c], high[c], num=int(bins)), x[:, c], side="right")
    return out


def count_unique_state_actions(states: np.ndarray, actions: np.ndarray, low: np.ndarray, high: np.ndarray,
                               bins: int = SACO_BINS) -> int:
    """Number of distinct binned ``[state, action]`` rows (exact count)."""
    rows = _rows(states, actions)
    if rows.shape[0] == 0:
        return 0
    return int(np.unique(bin_columns(rows, low, high, bins), axis=0).shape[0])


def _rows(states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    s = np.asarray(states, dtype=np.float64)
    a = np.asarray(actions, dtype=np.float64)
    s = s.reshape(s.shape[0], -1)
    a = a.reshape(a.shape[0], -1)
    if s.shape[0] != a.shape[0]:
        raise ConfigError(f"{s.shape[0]} states but {a.shape[0]} actions; SACo pairs each state with its action")
    return np.concatenate([s, a], axis=1)


def saco(states: np.ndarray, actions: np.ndarray, ref_states: np.ndarray, ref_actions: np.ndarray, *,
         bins: int = SACO_BINS) -> float:
    """``SACo = u(D) / u(D_ref)``: distinct binned state-action pairs of the dataset over those of the reference,
    both binned (:func:`bin_columns`) between the reference's per-column minimum and maximum."""
    if int(bins) < 1:
        raise ConfigError(f"bins must be >= 1, got {bins}")
    ref = _rows(ref_states, ref_actions)
    if ref.shape[0] == 0:
        raise ConfigError("the reference dataset has no transitions")
    rows = _rows(states, actions)
    if rows.shape[1] != ref.shape[1]:
        raise ConfigError(f"the dataset's [state, action] rows have {rows.shape[1]} columns, the reference's "
                          f"{ref.shape[1]}: compare datasets of the same environment and observation type")
    low, high = ref.min(axis=0), ref.max(axis=0)
    return count_unique_state_actions(states, actions, low, high, bins) / count_unique_state_actions(
        ref_states, ref_actions, low, high, bins)


def state_action_arrays(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(states [N, d], actions [N, ...])`` of every transition ``(s_t, a_t)`` of an
    :class:`~pixelrl.data.dataset.OfflineDataset` (pixel frames are not decoded).

    States are the observation itself for state datasets and the ``state`` entry of a dict observation; a dataset
    without low-dimensional states raises ``ConfigError``.
    """
    keys = dataset.observation_keys
    pixels = set(dataset.pixel_keys)
    if keys == [None]:
        if pixels:
            raise ConfigError(
                f"{dataset.path} holds pixel observations only; SACo needs low-dimensional states (binning raw pixels "
                "makes every frame distinct). Collect the dataset with --obs pixels+state to measure coverage")
        episodes = dataset.iter_episodes()
        pick = None
    else:
        if "state" not in keys or "state" in pixels:
            raise ConfigError(f"{dataset.path} has no low-dimensional 'state' observation (keys {keys}); SACo needs "
                              "states: collect with --obs pixels+state")
        episodes = dataset.iter_episodes(obs_keys=["state"])
        pick = "state"
    states, actions = [], []
    for ep in episodes:
        obs = ep["observations"] if pick is None else ep["observations"][pick]
        states.append(np.asarray(obs[:-1]).reshape(len(ep["rewards"]), -1))
        actions.append(np.asarray(ep["actions"]).reshape(len(ep["rewards"]), -1))
    return np.concatenate(states), np.concatenate(actions)


def dataset_stats(dataset: Any, *, reference: Any = None, random_return: float | None = None,
                  expert_return: float | None = None, bins: int = SACO_BINS) -> dict[str, Any]:
    """Size, return distribution, TQ and SACo of an :class:`~pixelrl.data.dataset.OfflineDataset`.

    ``tq`` (the paper's TQ) is reported when both ``random_return`` and ``expert_return`` are given, with
    ``tq_normalisation``. With a ``reference`` dataset and no returns there is no ``tq``: ``tq_reference_range`` is the
    same formula with the reference's lowest and highest episode return as ``g_random`` and ``g_expert``, with
    ``tq_reference_range_returns`` (a proxy: the paper's reference is the replay of an online run, whose episodes
    range from near-random to its final policy, but its TQ uses the returns of a random and an expert policy).
    ``tq_reference_range_unavailable`` says why it is missing when every reference episode has the same return.
    SACo needs ``reference`` and low-dimensional states (see :func:`state_action_arrays`); without states ``saco`` is
    None and ``saco_unavailable`` says why.
    """
    returns = dataset.episode_returns()
    out: dict[str, Any] = {
        "path": str(dataset.path),
        "dataset_id": dataset.dataset_id,
        "env_id": dataset.env_id,
        "episodes": int(dataset.num_episodes),
        "transitions": int(dataset.num_transitions),
        "episode_length": return_stats(dataset.episode_lengths()),
        "returns": return_stats(returns),
    }
    if (random_return is None) != (expert_return is None):
        raise ConfigError("TQ needs both a random return and an expert return (--random-return and --expert-return)")
    if reference is not None and reference.env_id != dataset.env_id:
        raise ConfigError(f"the reference dataset comes from {reference.env_id}, this one from {dataset.env_id}; "
                          "TQ and SACo compare datasets of the same environment")
    if random_return is not None:
        out["tq"] = trajectory_quality(returns.mean(), random_return, expert_return)
        out["tq_normalisation"] = {"random_return": float(random_return), "expert_return": float(expert_return),
                                   "source": "given"}
    elif reference is not None:
        ref_returns = reference.episode_returns()
        lo, hi = float(ref_returns.min()), float(ref_returns.max())
        out["tq_reference_range_returns"] = {"min": lo, "max": hi}
        if hi > lo:
            out["tq_reference_range"] = trajectory_quality(returns.mean(), lo, hi)
        else:
            out["tq_reference_range"] = None
            out["tq_reference_range_unavailable"] = (f"every episode of the reference returns {lo}; pass "
                                                     "--random-return and --expert-return for TQ")
    if reference is not None:
        out["saco_reference"] = str(reference.path)
        out["saco_bins"] = int(bins)
        try:
            s, a = state_action_arrays(dataset)
            rs, ra = state_action_arrays(reference)
        except ConfigError as e:  # no low-dimensional states: report why instead of failing the other numbers
            out["saco"] = None
            out["saco_unavailable"] = str(e)
        else:
            out["saco"] = saco(s, a, rs, ra, bins=bins)
    return out


def plot_return_histogram(returns: Sequence[float] | np.ndarray, out: str | os.PathLike, *, title: str | None = None,
                          reference_returns: Sequence[float] | np.ndarray | None = None,
                          bins: int | str = "auto") -> Path:
    """Write a histogram of episode returns as a PNG (matplotlib, Agg backend); a reference dataset's returns are
    drawn behind it when given. Returns the path written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    if r.size == 0:
        raise ConfigError("no episode returns to plot")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6, 3.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    edges = np.histogram_bin_edges(r if reference_returns is None else np.concatenate(
        [r, np.asarray(reference_returns, dtype=np.float64).reshape(-1)]), bins=bins)
    if reference_returns is not None:
        ax.hist(np.asarray(reference_returns, dtype=np.float64), bins=edges, color="0.75", label="reference")
    ax.hist(r, bins=edges, color="C0", alpha=0.85, label="dataset")
    ax.axvline(r.mean(), color="C3", linestyle="--", linewidth=1, label=f"mean {r.mean():.1f}")
    ax.set_xlabel("episode return")
    ax.set_ylabel("episodes")
    ax.set_title(title or f"episode returns ({r.size} episodes)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    return out
