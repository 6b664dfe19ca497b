"""Learning curves: runs grouped by their resolved config minus the seed, seeds aggregated with the interquartile
mean (IQM) and a 95% bootstrap confidence band (the rliable recommendation for few-seed RL results). Online runs are
drawn against env frames, offline runs against steps (offline updates, then online agent steps), in a panel each."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pixelrl.errors import ConfigError
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


NOT_GROUPED = ("seed", "seeds", "run_dir", "decisions", "device", "threads", "tune_malloc", "async_env", "progress",
               "video", "tensorboard", "keep_checkpoints", "checkpoint_every_frames", "time_budget_min")
"""Fields of a run's config.json that do not make it another experiment: the seed, where and on what it ran, what it
displayed and kept. Runs whose configs agree on everything else are seeds of one group."""


@dataclass
class Run:
    """One run folder as the plot sees it: its eval rows, x axis and grouping key."""

    path: Path
    rows: list[dict]
    x: str
    """``frames`` (online runs) or ``step`` (offline runs: offline updates, then online agent steps)."""
    key: str
    """The resolved config minus :data:`NOT_GROUPED` (canonical JSON); the folder name without its seed suffix when
    the run has no readable config.json."""
    config: dict | None
    seed: object


@dataclass
class Group:
    label: str
    runs: list[Run]
    x: str


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
    return out


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read a run folder for plotting; a folder that is missing or holds no run is one :class:`ConfigError`."""
    d = Path(run_dir)
    if not d.is_dir():
        raise ConfigError(f"{d}: no such run folder")
    if not (d / "metrics.jsonl").exists() and not (d / "config.json").exists():
        raise ConfigError(f"{d} is not a run folder (no metrics.jsonl or config.json); pass folders made by "
                          "`pixelrl train`")
    rows = read_rows(d, "eval")
    x = "step" if any("phase" in r for r in rows) else "frames"
    config = None
    if (d / "config.json").exists():
        try:
            config = json.loads((d / "config.json").read_text())
        except (ValueError, UnicodeDecodeError):
            config = None
    if isinstance(config, dict):
        kept = {k: v for k, v in config.items() if k not in NOT_GROUPED}
        key = json.dumps(kept, sort_keys=True)
        seed = config.get("seed")
    else:
        config = None
        key = re.sub(r"[-_](s|seed)\d+$", "", d.name)
        m = re.search(r"[-_](?:s|seed)(\d+)$", d.name)
        seed = int(m.group(1)) if m else None
    return Run(d, rows, x, key, config, seed)


def run_label(run_dir: Path) -> str:
    """Short label of a run: ``<env> <agent> (<preset>)`` from config.json, else the folder name with a trailing
    seed suffix (``-s1``, ``_seed3``) removed."""
    run = load_run(run_dir) if not isinstance(run_dir, Run) else run_dir
    return _base_label(run)


def _base_label(run: Run) -> str:
    c = run.config
    if c is None:
        return run.key
    return f"{c.get('env')} {c.get('agent_name')}" + (f" ({c['preset']})" if c.get("preset") else "")


def group_runs(runs: Sequence[Run]) -> tuple[list[Group], list[str]]:
    """Runs grouped by their config minus the seed (:data:`NOT_GROUPED`); returns the groups, labelled by what
    tells them apart (``dmc/x drqv2 (paper) agent.lr=0.001``), and notes for the user: which runs were merged into
    one group (and which of them share a seed), which runs have no config.json (grouped by folder name)."""
    by_key: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        by_key.setdefault((r.x, r.key), []).append(r)
    flats = {k: _flat(json.loads(k[1])) if rs[0].config is not None else {} for k, rs in by_key.items()}
    groups, notes = [], []
    for k, rs in by_key.items():
        label = _base_label(rs[0])
        if rs[0].config is not None:
            # name the settings in which this group differs from another group with the same short label
            differing: list[str] = []
            for k2, rs2 in by_key.items():
                if k2 != k and rs2[0].config is not None and _base_label(rs2[0]) == label:
                    a, b = flats[k], flats[k2]
                    differing += [n for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n) and n not in differing]
            shown = [f"{n}={json.loads(flats[k][n]) if n in flats[k] else '-'}" for n in differing[:3]]
            label = " ".join([label, *shown]) + (" ..." if len(differing) > 3 else "")
        else:
            notes.append(f"{', '.join(str(r.path) for r in rs)}: no readable config.json; grouped by folder name "
                         f"'{rs[0].key}'")
        if len(rs) > 1:
            seeds = [r.seed for r in rs]
            note = (f"merged {len(rs)} runs with the same config (seed aside) into '{label}': "
                    + ", ".join(f"{r.path} (seed {r.seed})" for r in rs))
            dup = sorted({str(s) for s in seeds if seeds.count(s) > 1})
            if dup:
                note += f"; seed {', '.join(dup)} appears more than once (repeats, not independent seeds)"
            notes.append(note)
        groups.append(Group(label, rs, rs[0].x))
    return groups, notes


def available_metrics(runs: Sequence[Run]) -> list[str]:
    """Numeric columns of the runs' eval rows (what ``--metric`` can name)."""
    names = set()
    for r in runs:
        for row in r.rows:
            names |= {k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(names - {"frames", "agent_steps", "step", "updates", "episode"})


def curves(run_dirs: Sequence[str | os.PathLike], metric: str = "eval_return", x: str | None = None):
    """{label: (xs, values[seed, x])}; x points missing from a seed are NaN. ``x``: the x column (default: each
    run's own, ``frames`` online, ``step`` offline)."""
    runs = [load_run(d) for d in run_dirs]
    groups, _ = group_runs(runs)
    return {g.label: _curve(g.runs, metric, x or g.x) for g in groups}


def _curve(runs: Sequence[Run], metric: str, x: str):
    seeds = [{int(r[x]): float(r[metric]) for r in run.rows if metric in r and x in r} for run in runs]
    xs = np.array(sorted(set().union(*[s.keys() for s in seeds])), dtype=np.int64)
    vals = np.array([[s.get(int(v), np.nan) for v in xs] for s in seeds]).reshape(len(seeds), len(xs))
    return xs, vals


def plot_runs(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, metric: str = "eval_return",
              title: str | None = None) -> Path:
    """Plot IQM learning curves with 95% bootstrap bands over seeds; returns the PNG path."""
    return plot_runs_report(run_dirs, out, metric, title)[0]


def plot_runs_report(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, metric: str = "eval_return",
                     title: str | None = None) -> tuple[Path, list[str]]:
    """:func:`plot_runs`, also returning notes for the user (runs merged into a group, runs left out, a second
    panel for offline runs). A missing folder, a folder without a run, or a ``metric`` that no run logs is a
    :class:`ConfigError` (the last one lists the metrics that exist)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise ConfigError("no run folder given")
    runs = [load_run(d) for d in run_dirs]
    have = [r for r in runs if any(metric in row for row in r.rows)]
    avail = available_metrics(runs)
    if not have and avail:
        raise ConfigError(f"metric {metric!r} is in no eval row of {', '.join(str(r.path) for r in runs)}; "
                          f"available: {', '.join(avail)}")
    notes = [f"{r.path}: no eval row with {metric!r} yet; left out" for r in runs if r not in have]
    groups, group_notes = group_runs(have)
    notes += group_notes
    axes_x = [x for x in ("frames", "step") if any(g.x == x for g in groups)] or [runs[0].x]  # [] = nothing yet
    if len(axes_x) > 1:
        notes.append("online runs (x: env frames) and offline runs (x: offline updates, then online agent steps) "
                     "are drawn in two panels: their x axes count different things")
    fig, axs = plt.subplots(1, len(axes_x), figsize=(7 * len(axes_x), 4.5), dpi=120, squeeze=False)
    for ax, x in zip(axs[0], axes_x):
        for g in (g for g in groups if g.x == x):
            xs, vals = _curve(g.runs, metric, x)
            mid, lo, hi = [], [], []
            for j in range(len(xs)):
                col = vals[:, j][~np.isnan(vals[:, j])]
                mid.append(iqm(col))
                a, b = bootstrap_ci(col)
                lo.append(a)
                hi.append(b)
            n = vals.shape[0]
            ax.plot(xs, mid, label=f"{g.label} (IQM, {n} seed{'s' if n > 1 else ''})", lw=2)
            if n > 1:
                ax.fill_between(xs, lo, hi, alpha=0.2)
        ax.set_xlabel("steps (offline updates, then online agent steps)" if x == "step" else "env frames")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        if title:
            ax.set_title(title)
    return save_figure(fig, out), notes


def save_figure(fig, out: str | Path) -> Path:
    """Lay out ``fig``, write it to ``out`` (parent folders created) and close it; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
