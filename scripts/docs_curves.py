"""Figures for the agent and environment pages of the docs, drawn from committed measurements only.

``python scripts/docs_curves.py`` reads ``benchmarks/results/*.json`` and writes one PNG per page into ``docs/img/``
(``docs_<name>.png``); every figure's title says what the run was (machine, reduced / smoke, seeds), and a figure
whose result file is missing is skipped with a note, never drawn from other numbers.

``python scripts/docs_curves.py pack --run RUN_DIR --out benchmarks/results/<name>_cpu_docs.json --command "..."
--what "..."`` turns a short run folder of ``pixelrl train`` into a result file: the command, the machine, the
resolved config and the eval rows of its ``metrics.jsonl`` (the curve), labelled a short docs run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pixelrl.errors import ConfigError
from pixelrl.train.logger import read_rows
from pixelrl.train.plot import bootstrap_ci, iqm, save_figure
from pixelrl.utils.atomic import write_json_atomic
from pixelrl.utils.machine import machine_description

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMG = ROOT / "docs" / "img"


def _load(name: str) -> dict | None:
    p = RESULTS / name
    if not p.exists():
        print(f"skip: {p} is missing", file=sys.stderr)
        return None
    return json.loads(p.read_text())


def _fig(ncols: int = 1, width: float = 6.5, height: float = 4.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, ncols, figsize=(width * ncols, height), dpi=110, squeeze=False)
    return fig, axs[0]


def _short(machine: str) -> str:
    """``'AMD EPYC, 2 cpus, ...'`` -> ``'AMD EPYC, 2 cpus'`` for a title."""
    return ", ".join(str(machine).split(", ")[:2])


def _suptitle(fig, text: str) -> None:
    """A title over the whole figure, wrapped to its width."""
    import textwrap

    width = int(fig.get_figwidth() * 12.5)
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in text.split("\n")), fontsize=9)


def _iqm_band(ax, xs, vals, label: str, color=None) -> None:
    """IQM over seeds (rows of ``vals``) with a 95% bootstrap band, as ``pixelrl plot`` draws it."""
    vals = np.asarray(vals, dtype=np.float64)
    mid = [iqm(vals[:, j][~np.isnan(vals[:, j])]) for j in range(vals.shape[1])]
    band = [bootstrap_ci(vals[:, j][~np.isnan(vals[:, j])]) for j in range(vals.shape[1])]
    line, = ax.plot(xs, mid, lw=2, color=color, label=f"{label} (IQM, {vals.shape[0]} seeds)")
    if vals.shape[0] > 1:
        ax.fill_between(xs, [b[0] for b in band], [b[1] for b in band], alpha=0.2, color=line.get_color())


def _dots(ax, i: int, values, color, label: str | None = None, width: float = 0.25) -> None:
    """Per-seed values as dots around x = i with their median as a bar."""
    values = np.asarray(values, dtype=np.float64)
    xs = i + np.linspace(-width / 2, width / 2, len(values)) if len(values) > 1 else [i]
    ax.scatter(xs, values, color=color, s=22, zorder=3, label=label)
    ax.hlines(np.median(values), i - width, i + width, color=color, lw=2)


def ppo() -> Path | None:
    d = _load("ppo_vs_sb3_cpu_v2.json")
    if d is None:
        return None
    s = d["settings"]
    fig, axs = _fig(2, 4.6)
    for ax, task in zip(axs, s["tasks"]):
        runs = d["runs"][task]
        for i, (lib, color) in enumerate((("ours", "C0"), ("sb3", "C1"))):
            _dots(ax, i, [r["last_return"] for r in runs[lib]], color)
        fps = d["summary"][task]
        ax.set_xticks([0, 1], [f"pixelrl PPO\n{fps['ours']['median_fps']:.0f} frames/s",
                               f"Stable-Baselines3 PPO\n{fps['sb3']['median_fps']:.0f} frames/s"])
        frames = s["atari_frames"] if task == "breakout" else s["mujoco_frames"]
        ax.set_title(f"{task}: {frames:,} frames", fontsize=9)
        ax.set_ylabel(f"mean return of the last {s['last_episodes']} training episodes")
        ax.grid(alpha=0.3, axis="y")
    _suptitle(fig, f"PPO vs Stable-Baselines3, per seed (dots; bar = median), seeds {s['seeds']}, "
                   f"short CPU runs on {_short(d['machine'])} ({s['threads']} "
                   f"thread) - benchmarks/results/ppo_vs_sb3_cpu_v2.json")
    return save_figure(fig, IMG / "docs_ppo.png")


def iql() -> Path | None:
    d = _load("offline_vs_d3rlpy_cpu.json")
    if d is None:
        return None
    sc = d["scores"]
    fig, axs = _fig(1, 7.0)
    ax = axs[0]
    arms = (("pixelrl", "pixelrl IQL fp32", "C0"), ("pixelrl_bf16", "pixelrl IQL bf16", "C2"),
            ("d3rlpy", "d3rlpy IQL", "C1"))
    for i, (key, _, color) in enumerate(arms):
        _dots(ax, i, sc[key]["per_seed"], color)
    ax.axhline(sc["dataset_score"], color="grey", ls="--", lw=1, label=f"dataset episodes ({sc['dataset_score']})")
    ax.axhline(100, color="k", ls=":", lw=1, label="data-collecting SAC policy (100)")
    ax.set_xticks(range(len(arms)), [a[1] for a in arms])
    ax.set_ylabel("normalised score after %s updates" % f"{d['steps']:,}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    _suptitle(fig, f"IQL offline on {d['env']} ({d['dataset']['transitions']:,} transitions of a noisy SAC policy), "
                   f"seeds {d['seeds']}, {_short(d['machine'])}\nbenchmarks/results/offline_vs_d3rlpy_cpu.json")
    return save_figure(fig, IMG / "docs_iql.png")


def sqirl() -> Path | None:
    d = _load("sqirl_effective_horizon_cpu.json")
    if d is None:
        return None
    fig, axs = _fig(2, 6.0)
    for ax, key in zip(axs, ("two_step_mdp", "cartpole")):
        t = d[key]
        labels = []
        for i, st in enumerate(t["settings"]):
            a = st["agent"]
            _dots(ax, i, [r["final_eval_return"] for r in st["runs"]], "C0" if st["solved"] else "C3")
            labels.append(f"k={a['planning_depth']} m={a['episodes_per_timestep']}\nlr={a['lr']:g} "
                          f"{st['solved']}/{st['of']}")
        rnd = [r["random_return"] for st in t["settings"] for r in st["runs"]]
        ax.axhline(t["success_bar"], color="k", ls=":", lw=1, label=f"success bar ({t['success_bar']:g})")
        ax.axhline(float(np.mean(rnd)), color="grey", ls="--", lw=1, label="random policy (mean)")
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylabel("final eval return (10 episodes)")
        ax.set_title(f"{t['env']}, {t['frames']:,} frames budget, seeds {t['seeds']}: "
                     f"estimate H = {t['effective_horizon_estimate']:g}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    _suptitle(fig, f"SQIRL per setting (k = planning depth, m = episodes per timestep; x/y = seeds solved; "
                   f"blue = solved by some seed), {_short(d['machine'])} - "
                   f"benchmarks/results/sqirl_effective_horizon_cpu.json")
    return save_figure(fig, IMG / "docs_sqirl.png")


def dqn() -> Path | None:
    d = _load("atari100k_smoke.json")
    if d is None:
        return None
    pub = d["published"]
    games = [r["game"] for r in d["runs"]]

    def hns(game, score):
        return (score - pub["random"][game]) / (pub["human"][game] - pub["random"][game])

    fig, axs = _fig(1, 7.0)
    ax = axs[0]
    x = np.arange(len(games))
    ax.bar(x - 0.2, [r["hns"] for r in d["runs"]], 0.4, label=f"pixelrl {d['agent']}, {d['frames']:,} frames (smoke)")
    ax.bar(x + 0.2, [hns(g, pub["drq_eps_per_game"][g]) for g in games], 0.4,
           label="DrQ(eps) published, 100k agent steps (400k frames)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, games)
    ax.set_ylabel("human-normalised score")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    _suptitle(fig, f"SMOKE RUN, not a result: {d['agent']} (DQN core) on 3 Atari games, seed {d['seeds']}, "
                   f"{d['eval_episodes']} eval episode, {_short(d['machine'])}\nbenchmarks/results/atari100k_smoke.json")
    return save_figure(fig, IMG / "docs_dqn.png")


def quadrotor() -> Path | None:
    files = (("quadrotor_hover_cpu.json", "paper curriculum (x1.2)"),
             ("quadrotor_hover_cpu_position2.json", "steeper position curriculum (x2.0)"))
    loaded = [(f, lab, _load(f)) for f, lab in files]
    loaded = [x for x in loaded if x[2] is not None]
    if not loaded:
        return None
    fig, axs = _fig(1, 7.5)
    ax = axs[0]
    for (f, lab, d), color in zip(loaded, ("C0", "C1")):
        steps = sorted({c["steps"] for s in d["per_seed"] for c in s["curve"]})
        vals = np.array([[next((c["success_rate"] for c in s["curve"] if c["steps"] == st), np.nan) for st in steps]
                         for s in d["per_seed"]])
        for row in vals:
            ax.plot(steps, row, color=color, lw=0.6, alpha=0.35)
        _iqm_band(ax, steps, vals, f"{lab}: {f}", color)
    ax.axhline(loaded[0][2]["pass_rate"], color="k", ls=":", lw=1, label="pass rate of the success test")
    ax.set_xlabel("training steps")
    ax.set_ylabel(f"hover success rate ({loaded[0][2]['eval_episodes']} episodes)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    d0 = loaded[0][2]
    _suptitle(fig, f"Learning to Fly hover on {d0['env']}: {len(d0['per_seed'])} seeds each (thin lines), "
                   f"{d0['steps_per_seed']:,} steps, {_short(d0['machine'])} (shared)")
    return save_figure(fig, IMG / "docs_quadrotor.png")


def shapes() -> Path | None:
    d = _load("object_centric_reduced_cpu.json")
    if d is None:
        return None
    tasks = list(d["runs"])
    encs = ("slots", "cnn", "state")
    fig, axs = _fig(1, 8.0)
    ax = axs[0]
    x = np.arange(len(tasks))
    for j, enc in enumerate(encs):
        off = (j - 1) * 0.27
        ax.bar(x + off, [d["runs"][t][enc]["success"]["in-distribution"] for t in tasks], 0.27, color=f"C{j}",
               label=f"{enc}: this run, {d['settings']['frames_per_run']:,} frames")
        ax.scatter(x + off, [d["paper_success"][{"slots": "slots (SLATE)"}.get(enc, enc)][t] for t in tasks],
                   marker="_", s=200, color=f"C{j}", zorder=3)
    ax.scatter([], [], marker="_", s=200, color="k", label="paper, 2M frames (marks)")
    ax.set_xticks(x, tasks, fontsize=8)
    ax.set_ylabel(f"in-distribution success ({d['settings']['eval_episodes']} episodes)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    _suptitle(fig, f"REDUCED CPU run: PPO on builtin/shapes-*, seed {d['settings']['seed']}, "
                   f"{d['settings']['frames_per_run']:,} of the paper's {d['settings']['paper_frames_per_run']:,} "
                   f"frames, {_short(d['machine'])}\nbenchmarks/results/object_centric_reduced_cpu.json")
    return save_figure(fig, IMG / "docs_shapes.png")


def metaworld() -> Path | None:
    d = _load("metaworld_drm_reach_cpu_smoke.json")
    if d is None:
        return None
    fig, axs = _fig(2, 4.6)
    fr = [r["frames"] for r in d["eval"]]
    ret = np.array([r["eval_return"] for r in d["eval"]])
    std = np.array([r["eval_return_std"] for r in d["eval"]])
    axs[0].plot(fr, ret, "o-", label="DrM eval return (± std)")
    axs[0].fill_between(fr, ret - std, ret + std, alpha=0.2)
    axs[0].axhline(d["random_policy"]["eval_return"], color="grey", ls="--", lw=1, label="random policy")
    axs[0].set_ylabel("eval return")
    axs[1].plot(fr, [r["success_rate"] for r in d["eval"]], "o-", color="C2")
    axs[1].set_ylabel("success rate (10 episodes)")
    axs[1].set_ylim(-0.02, 1.02)
    for ax in axs:
        ax.set_xlabel("env frames")
        ax.grid(alpha=0.3)
    axs[0].legend(fontsize=8)
    _suptitle(fig, f"SMOKE RUN, not a result about DrM: metaworld/reach-v3, one seed, "
                   f"{d['summary']['frames']:,} frames (paper: 2.1M), {d['machine']['cpu']}\n"
                   f"benchmarks/results/metaworld_drm_reach_cpu_smoke.json")
    return save_figure(fig, IMG / "docs_metaworld.png")


def _eval_curve(d: dict, x: str) -> tuple[list, list, list]:
    rows = [r for r in d["eval"] if x in r]
    return [r[x] for r in rows], [r["eval_return"] for r in rows], [r.get("eval_return_std", 0.0) for r in rows]


def _plot_docs_run(ax, d: dict, x: str, label: str, color: str) -> None:
    xs, ys, sd = _eval_curve(d, x)
    ax.plot(xs, ys, "o-", color=color, label=label, ms=3)
    ax.fill_between(xs, np.subtract(ys, sd), np.add(ys, sd), alpha=0.15, color=color)


def _dataset_line(ax, d: dict) -> None:
    ds = d.get("dataset") or {}
    if "return_mean" in ds:
        ax.axhline(ds["return_mean"], color="grey", ls="--", lw=1,
                   label=f"dataset episodes' mean return ({ds['episodes']} episodes)")


def td3bc() -> Path | None:
    d = _load("td3bc_cpu_docs.json")
    if d is None:
        return None
    b = _load("bc_cpu_docs.json")
    fig, axs = _fig(1, 7.0)
    ax = axs[0]
    _plot_docs_run(ax, d, "step", "td3bc", "C0")
    if b is not None:
        _plot_docs_run(ax, b, "step", "bc, same dataset (bc_cpu_docs.json)", "C1")
    _dataset_line(ax, d)
    ax.set_xlabel("offline updates")
    ax.set_ylabel("eval return (± std over episodes)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _suptitle(fig, f"SHORT DOCS RUN, not a reproduction: TD3+BC offline on {d['env']} (states), seed {d['seed']}, "
                   f"{_short(d['machine'])}\nbenchmarks/results/td3bc_cpu_docs.json")
    return save_figure(fig, IMG / "docs_td3bc.png")


def bc() -> Path | None:
    b = _load("bc_cpu_docs.json")
    iv = _load("intervention_reduced_cpu.json")
    if b is None and iv is None:
        return None
    fig, axs = _fig(2 if (b and iv) else 1, 5.2)
    i = 0
    if b is not None:
        _plot_docs_run(axs[0], b, "step", f"bc ({b['config']['agent'].get('policy')} policy), 20 eval episodes", "C1")
        _dataset_line(axs[0], b)
        axs[0].set_title(f"SHORT DOCS RUN: {b['env']} states, seed {b['seed']}\nbenchmarks/results/bc_cpu_docs.json",
                         fontsize=8)
        axs[0].set_xlabel("offline updates")
        i = 1
    if iv is not None:
        ax = axs[i]
        cfg = iv["config"]
        for seed, arm in iv["arms"]["bc"].items():
            ax.plot([e[1] for e in arm["eval"]], [e[2] for e in arm["eval"]], "o-", color="C1", ms=3,
                    label=f"bc on {cfg['bc_episodes']} expert episodes (pixels), seed {seed}")
        for seed, ex in iv["expert"].items():
            ax.axhline(ex["mean_return"], color="grey", ls="--", lw=1, label="expert's mean return")
        ax.set_title(f"REDUCED: {iv['env']} pixels, from intervention_reduced_cpu.json", fontsize=8)
        ax.set_xlabel("offline updates")
    for ax in axs:
        ax.set_ylabel("eval return")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    _suptitle(fig, f"Behaviour cloning, one seed per panel, {_short((b or iv)['machine'])}")
    return save_figure(fig, IMG / "docs_bc.png")


def residual() -> Path | None:
    d = _load("residual_cpu_docs.json")
    if d is None:
        return None
    fig, axs = _fig(1, 7.0)
    ax = axs[0]
    _plot_docs_run(ax, d, "frames", "residual (frozen BC base + SAC residual)", "C0")
    base = d.get("base")
    if base and "final_eval_return" in base:
        ax.axhline(base["final_eval_return"], color="C1", ls="--", lw=1,
                   label="the frozen BC base alone (bc_cpu_docs.json, final eval)")
    seed_steps = (d["config"].get("agent") or {}).get("num_seed_steps")
    if seed_steps:
        ax.axvline(seed_steps, color="grey", ls=":", lw=1, label=f"end of the uniform-residual seed steps ({seed_steps:,})")
    ax.set_xlabel("env frames")
    ax.set_ylabel("eval return (± std over episodes)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _suptitle(fig, f"SHORT DOCS RUN, not a reproduction: residual RL online on {d['env']} (states), "
                   f"seed {d['seed']}, {_short(d['machine'])}\nbenchmarks/results/residual_cpu_docs.json")
    return save_figure(fig, IMG / "docs_residual.png")


FIGURES = {"ppo": ppo, "iql": iql, "sqirl": sqirl, "dqn": dqn, "quadrotor": quadrotor, "shapes": shapes,
           "metaworld": metaworld, "td3bc": td3bc, "bc": bc, "residual": residual}


def pack(run: Path, out: Path, command: str, what: str, extra: dict) -> Path:
    """Write a short docs run's result file: command, machine, config and the eval rows (its curve)."""
    cfg_path = run / "config.json"
    if not cfg_path.exists():
        raise ConfigError(f"{run} has no config.json; pass the folder of a `pixelrl train` run")
    cfg = json.loads(cfg_path.read_text())
    keep = ("frames", "step", "agent_steps", "eval_return", "eval_return_std", "random_return", "success_rate",
            "phase")
    evals = [{k: r[k] for k in keep if k in r} for r in read_rows(run, "eval")]
    if not evals:
        raise ConfigError(f"{run}/metrics.jsonl has no eval row; run it with an eval interval")
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    result = {"what": what, "label": "SHORT DOCS RUN: a few CPU minutes to draw the docs page's figure; "
                                     "not a reproduction of the paper", "command": command,
              "machine": machine_description(), "env": cfg.get("env"), "agent": cfg.get("agent_name"),
              "seed": cfg.get("seed"), "config": cfg, "eval": evals,
              "final_eval_return": evals[-1]["eval_return"], "summary": summary, **extra}
    write_json_atomic(out, result)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    d = sub.add_parser("draw", help="draw the figures (the default)")
    d.add_argument("names", nargs="*", help=f"figures to draw (default all): {', '.join(FIGURES)}")
    k = sub.add_parser("pack", help="write a short docs run's result file")
    k.add_argument("--run", type=Path, required=True)
    k.add_argument("--out", type=Path, required=True)
    k.add_argument("--command", required=True, help="the command line(s) that made the run")
    k.add_argument("--what", required=True, help="one sentence: what the run is")
    k.add_argument("--extra", default="{}", help="JSON object merged into the result (e.g. the dataset's stats)")
    a = p.parse_args(argv)
    if a.cmd == "pack":
        try:
            print(pack(a.run, a.out, a.command, a.what, json.loads(a.extra)))
        except ConfigError as e:
            raise SystemExit(f"docs_curves.py pack: {e}")
        return 0
    names = getattr(a, "names", None) or list(FIGURES)
    bad = [n for n in names if n not in FIGURES]
    if bad:
        raise SystemExit(f"unknown figure {', '.join(bad)}; choose from {', '.join(FIGURES)}")
    for n in names:
        out = FIGURES[n]()
        if out is not None:
            print(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
