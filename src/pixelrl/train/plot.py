"""Learning curves: runs grouped by label, seeds aggregated with the interquartile mean (IQM) and a
95% bootstrap confidence band (the rliable recommendation for few-seed RL results)."""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from pixelrl.train.logger import read_rows


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% of values (25% trimmed from each end).

    Uses the same fractional trimming as ``scipy.stats.trim_mean(x, 0.25)``: ``floor(0.25 n)`` values are cut from
    each end, so for fewer than 4 values it is the plain mean.
    """
    x = np.sort(np.asarray(x, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    k = int(np.floor(0.25 * n))
    return np.take(x, np.arange(k, n - k), axis=axis).mean(axis=axis)


def bootstrap_ci(x: np.ndarray, stat=iqm, reps: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``stat`` over the values ``x`` (one per seed)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()), float(x.mean())
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, len(x), size=(reps, len(x)))]
    vals = stat(samples, axis=1)
    return float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2))


def run_label(run_dir: Path) -> str:
    """Label that groups seeds of one configuration: ``<env> <agent>`` from config.json, else the folder name
    with a trailing seed suffix (``-s1``, ``_seed3``) removed."""
    cfg = run_dir / "config.json"
    if cfg.exists():
        try:
            c = json.loads(cfg.read_text())
            return f"{c['env']} {c['agent_name']}" + (f" ({c['preset']})" if c.get("preset") else "")
        except (json.JSONDecodeError, KeyError):
            pass
    return re.sub(r"[-_](s|seed)\d+$", "", run_dir.name)


def curves(run_dirs: Sequence[str | os.PathLike], metric: str = "eval_return", x: str = "frames"):
    """{label: (xs, values[seed, x])}; x points missing from a seed are NaN."""
    groups: dict[str, list[dict[int, float]]] = defaultdict(list)
    for d in run_dirs:
        d = Path(d)
        if not (d / "metrics.jsonl").exists():
            raise FileNotFoundError(f"{d} is not a run folder (no metrics.jsonl)")
        pts = {int(r[x]): float(r[metric]) for r in read_rows(d, "eval") if metric in r}
        groups[run_label(d)].append(pts)
    out = {}
    for label, seeds in groups.items():
        xs = np.array(sorted(set().union(*[s.keys() for s in seeds])), dtype=np.int64)
        vals = np.array([[s.get(int(v), np.nan) for v in xs] for s in seeds])
        out[label] = (xs, vals)
    return out


def plot_runs(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, metric: str = "eval_return",
              title: str | None = None) -> Path:
    """Plot IQM learning curves with 95% bootstrap bands over seeds; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # offline runs log every row at frames = 0; their x axis is the step (offline updates, then online steps)
    offline = any(any("phase" in r for r in read_rows(Path(d), "eval")[:1]) for d in run_dirs)
    x = "step" if offline else "frames"
    data = curves(run_dirs, metric, x=x)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, (xs, vals) in data.items():
        mid, lo, hi = [], [], []
        for j in range(len(xs)):
            col = vals[:, j][~np.isnan(vals[:, j])]
            mid.append(iqm(col))
            a, b = bootstrap_ci(col)
            lo.append(a)
            hi.append(b)
        n = vals.shape[0]
        ax.plot(xs, mid, label=f"{label} (IQM, {n} seed{'s' if n > 1 else ''})", lw=2)
        if n > 1:
            ax.fill_between(xs, lo, hi, alpha=0.2)
    ax.set_xlabel("steps (offline updates, then online agent steps)" if offline else "env frames")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, out)


def save_figure(fig, out: str | Path) -> Path:
    """Lay out ``fig``, write it to ``out`` (parent folders created) and close it; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
