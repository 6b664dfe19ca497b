"""DMC sample efficiency: agents x tasks x seeds for a frame budget, beside the published pixel-based scores.

Each run is a normal ``pixelrl train`` run folder under ``--out-dir/<agent>/<task>/s<seed>``; runs go in parallel
(``--parallel``), a finished run is skipped and an unfinished one is resumed (``pixelrl resume``), so the script
can be stopped and started again. At the end it writes, beside the runs:

* ``table.md`` - per task: mean +- std over seeds of the last evaluation at or before the budget, for each agent,
  next to the published DrQ-v2 / TD-MPC2 / MR.Q numbers at the same frames (``published_dmc_pixels.json``),
* ``iqm.png`` - IQM of returns over all (task, seed) runs per agent with a 95% bootstrap interval, published
  methods as reference marks where they report every task,
* ``curves.png`` - eval return against env frames, one panel per task, the mean over seeds per agent (thin lines:
  seeds), the random policy's return as a dotted line,
* ``summary.json`` - everything above plus the command, machine and wall time.

The last printed line is JSON: ``{"frames": ..., "iqm": {agent: ...}, "task_means": {agent: {task: ...}}, ...}``.

    # GPU, the issue's configuration (paper presets, 84x84, action repeat 2):
    python benchmarks/dmc_sample_efficiency.py --agents drqv2 drm --seeds 1 2 3 --frames 100000 --parallel 12
    # CPU, reduced (cpu-fast preset: 64x64, action repeat 8, small nets), one task, every preset:
    python benchmarks/dmc_sample_efficiency.py --preset cpu-fast --tasks cartpole-swingup \\
        --agents drqv2 drm taco mentor sac --seeds 1 --frames 60000 --parallel 2
    # GPU, one process per (agent, task) for the drqv2 seeds (K agents batched), the issue's six-task table:
    python benchmarks/dmc_sample_efficiency.py --agents drqv2 drm --seeds 1 2 3 --frames 100000 --batch-seeds \
        --tasks finger-spin cartpole-swingup reacher-easy cheetah-run walker-walk cup-catch --parallel 12
    # agents take extra flags after the name (quote them):  --agents "drm --agent.critic hl-gauss"
    # a wall-clock deadline (a GPU lease): every run ends, final evaluation included, within 9 minutes; a run
    # the deadline cuts is evaluated where it stopped and marked "(at Nk)" in the table:  ... --deadline-min 9
    # only summarise existing runs:  ... --summarize-only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PUBLISHED = HERE / "published_dmc_pixels.json"
DEFAULT_TASKS = ["cartpole-swingup", "reacher-easy", "cheetah-run", "walker-walk"]


def agent_label(spec: str) -> str:
    words = shlex.split(spec)
    label = words[0]
    for w in words[1:]:
        if not w.startswith("--"):
            label += "-" + w.replace("/", "_")
    return label


def run_folder(out_dir: Path, spec: str, task: str, seed: int) -> Path:
    return out_dir / agent_label(spec) / task / f"s{seed}"


def eval_rows(run: Path) -> list[dict]:
    path = run / "eval.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("eval_return") not in (None, "")]


def train_frames(run: Path) -> int:
    """Env frames of the run's last training episode (``train.csv``'s last row; 0 before the first)."""
    try:
        with open(run / "train.csv", "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            last = f.read().decode(errors="replace").strip().splitlines()[-1]
        return int(float(last.split(",")[0]))
    except (OSError, IndexError, ValueError):
        return 0


def is_finished(run: Path, frames: int) -> bool:
    summary = run / "summary.json"
    if not summary.exists():
        return False
    try:
        return int(json.loads(summary.read_text()).get("frames", 0)) >= frames
    except (ValueError, OSError):
        return False


def command(spec: str, task: str, seed: int, run: Path, args) -> list[str]:
    words = shlex.split(spec)
    if (run / "metrics.jsonl").exists():  # (a resume takes no time budget: --deadline-min stops it instead)
        return [sys.executable, "-m", "pixelrl.cli.main", "resume", str(run), "--frames", str(args.frames)]
    cmd = [sys.executable, "-m", "pixelrl.cli.main", "train", "--env", f"dmc/{task}", "--agent", words[0],
           "--seed", str(seed), "--frames", str(args.frames), "--preset", args.preset, "--device", args.device,
           "--run-dir", str(run), "--eval-every-frames", str(args.eval_every_frames),
           "--eval-episodes", str(args.eval_episodes), "--no-video", "--no-tensorboard", "--no-progress",
           "--threads", str(args.threads)]
    return cmd + words[1:] + shlex.split(args.extra) + time_budget(args)


def time_budget(args) -> list[str]:
    """``--time-budget-min`` for a train process started now, so that it ends (its final evaluation and
    checkpoint included) by ``--deadline-min``: the minutes left minus ``--deadline-margin-s``."""
    if args.deadline_min is None:
        return []
    left_s = args.deadline_at - time.time() - args.deadline_margin_s
    return ["--time-budget-min", f"{max(left_s, 6.0) / 60:.3f}"]


def batchable(spec: str, task: str, args) -> bool:
    """Whether ``--batch-seeds`` can train this agent's seeds in one process: a bare agent name whose resolved
    config is the DrQ-v2 core that :class:`pixelrl.agents.batched.BatchedDrQv2` supports (drm, taco, ... are not)."""
    if len(shlex.split(spec)) > 1 or shlex.split(args.extra) and any("agent." in w for w in shlex.split(args.extra)):
        return False
    from pixelrl.agents.batched import unsupported_settings
    from pixelrl.train.setup import build_config

    cfg = build_config(f"dmc/{task}", spec, args.preset, args.device, fill_run_dir=False)
    return not unsupported_settings(cfg.agent)


def batched_command(spec: str, task: str, seeds: list[int], parent: Path, args) -> list[str]:
    """One ``pixelrl train --seeds`` process for all seeds of (agent, task): seed folders are ``parent/s<seed>``,
    the same folders a per-seed run uses, so the summary reads both alike."""
    if (parent / "batch.json").exists():
        return [sys.executable, "-m", "pixelrl.cli.main", "resume", str(parent), "--frames", str(args.frames)]
    cmd = command(spec, task, seeds[0], parent, args)
    i = cmd.index("--seed")
    return cmd[:i] + ["--seeds", ",".join(map(str, seeds))] + cmd[i + 2:]


def run_all(jobs: list[tuple[str, str, int]], args) -> None:
    out_dir = Path(args.out_dir)
    pending: list = [(s, t, seed) for s, t, seed in jobs
                     if not is_finished(run_folder(out_dir, s, t, seed), args.frames)]
    if args.batch_seeds:  # group the seeds of each batchable (agent, task) into one job
        grouped: dict[tuple[str, str], list[int]] = {}
        rest = []
        for s, t, seed in pending:
            (grouped.setdefault((s, t), []).append(seed) if batchable(s, t, args) else rest.append((s, t, seed)))
        pending = [(s, t, tuple(seeds)) for (s, t), seeds in grouped.items()] + rest
    print(f"{len(jobs)} runs, {len(jobs) - sum(len(j[2]) if isinstance(j[2], tuple) else 1 for j in pending)} "
          f"already finished, {len(pending)} processes to run ({args.parallel} at a time)", flush=True)
    running: list[tuple[subprocess.Popen, Path, object]] = []
    t0 = time.time()
    last_report = 0.0
    stopping = False
    while pending or running:
        if pending and args.deadline_min is not None and \
                args.deadline_at - time.time() - args.deadline_margin_s < args.min_run_s:
            print(f"[{(time.time() - t0) / 60:5.1f} min] deadline: {len(pending)} processes not started "
                  f"(less than {args.min_run_s:.0f} s of training time would be left)", flush=True)
            pending = []
        if running and args.deadline_min is not None and not stopping and time.time() > args.deadline_at:
            stopping = True  # time budgets end runs at an episode boundary; a run still going is stopped
            print(f"[{(time.time() - t0) / 60:5.1f} min] deadline passed: stopping {len(running)} runs", flush=True)
            for proc, _, _ in running:
                proc.terminate()
            kill_at = time.time() + 10.0
        if stopping and time.time() > kill_at:
            for proc, _, _ in running:
                if proc.poll() is None:
                    proc.kill()
        while pending and len(running) < args.parallel:
            spec, task, seed = pending.pop(0)
            if isinstance(seed, tuple):  # K seeds batched in one process
                parent = run_folder(out_dir, spec, task, seed[0]).parent
                parent.mkdir(parents=True, exist_ok=True)
                cmd = batched_command(spec, task, list(seed), parent, args)
                run, log = run_folder(out_dir, spec, task, seed[0]), open(parent.parent / f"{task}.log", "a")
                log.write("$ " + shlex.join(cmd) + "\n")
                log.flush()
                env = dict(os.environ, PYTHONUNBUFFERED="1")
                running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), run, log))
                continue
            run = run_folder(out_dir, spec, task, seed)
            run.parent.mkdir(parents=True, exist_ok=True)
            cmd = command(spec, task, seed, run, args)
            log = open(run.parent / f"s{seed}.log", "a")
            log.write("$ " + shlex.join(cmd) + "\n")
            log.flush()
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), run, log))
        time.sleep(2.0)
        still = []
        for proc, run, log in running:
            if proc.poll() is None:
                still.append((proc, run, log))
                continue
            log.close()
            status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {run.parent}/{run.name}.log)"
            print(f"[{(time.time() - t0) / 60:5.1f} min] {run}: {status}", flush=True)
        running = still
        if time.time() - last_report > args.report_every and running:
            last_report = time.time()
            prog = ", ".join(f"{r.parent.parent.name}/{r.parent.name}/{r.name}:{train_frames(r) // 1000}k"
                             for _, r, _ in running)
            print(f"[{(time.time() - t0) / 60:5.1f} min] running: {prog}", flush=True)


def iqm(x: np.ndarray) -> float:
    x = np.sort(np.asarray(x, dtype=float))
    n = len(x)
    lo, hi = int(np.floor(0.25 * n)), int(np.ceil(0.75 * n))
    return float(x[lo:hi].mean()) if hi > lo else float(x.mean())


def bootstrap(x: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    stats = [iqm(rng.choice(x, size=len(x), replace=True)) for _ in range(reps)]
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def score_at(run: Path, frames: int) -> tuple[float | None, int]:
    """Return of the last evaluation at or before ``frames`` (and its frame count)."""
    best = None
    for r in eval_rows(run):
        f = int(float(r["frames"]))
        if f <= frames + 1000:  # evaluations happen at the first episode boundary after each multiple
            best = (float(r["eval_return"]), f)
    return best if best else (None, 0)


def summarize(jobs: list[tuple[str, str, int]], args, wall_s: float) -> dict:
    out_dir = Path(args.out_dir)
    published = json.loads(PUBLISHED.read_text())
    pub = published["frames"].get(str(args.frames), {})
    specs = list(dict.fromkeys(s for s, _, _ in jobs))
    tasks = list(dict.fromkeys(t for _, t, _ in jobs))
    seeds = sorted({seed for _, _, seed in jobs})
    scores: dict[str, dict[str, list[float]]] = {agent_label(s): {t: [] for t in tasks} for s in specs}
    frames_reached: dict[str, dict[str, list[int]]] = {agent_label(s): {t: [] for t in tasks} for s in specs}
    for s, t, seed in jobs:
        val, f = score_at(run_folder(out_dir, s, t, seed), args.frames)
        if val is not None:
            scores[agent_label(s)][t].append(val)
            frames_reached[agent_label(s)][t].append(f)
    labels = [agent_label(s) for s in specs]
    lines = [f"Eval return at {args.frames:,} frames (preset {args.preset}; mean ± std over seeds {seeds}; "
             "published: mean ± std as reported).", ""]
    head = "| task | " + " | ".join(labels) + " | " + " | ".join(f"{m} (published)" for m in published["methods"]) + " |"
    lines += [head, "|" + "---|" * (1 + len(labels) + len(published["methods"]))]
    task_means: dict[str, dict[str, float]] = {lab: {} for lab in labels}
    for t in tasks:
        cells = []
        for lab in labels:
            v = scores[lab][t]
            if v:
                task_means[lab][t] = float(np.mean(v))
                partial = "" if min(frames_reached[lab][t]) >= args.frames else f" (at {min(frames_reached[lab][t]) // 1000}k)"
                cells.append(f"{np.mean(v):.0f} ± {np.std(v):.0f} (n={len(v)}){partial}")
            else:
                cells.append("–")
        key = t.replace("-", "_")
        for m in published["methods"]:
            p = pub.get(key, {}).get(m)
            cells.append(f"{p[0]:.0f} ± {p[1]:.0f}" if p else "n/a")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    iqms, cis = {}, {}
    for lab in labels:
        allv = np.array([x for t in tasks for x in scores[lab][t]])
        if len(allv):
            iqms[lab] = iqm(allv)
            cis[lab] = bootstrap(allv)
    lines += ["", "IQM over all (task, seed) runs, 95% bootstrap CI:", ""]
    lines += [f"- {lab}: {iqms[lab]:.0f} [{cis[lab][0]:.0f}, {cis[lab][1]:.0f}]" for lab in iqms]
    pub_means = {}
    for m in published["methods"]:
        vals = [pub.get(t.replace("-", "_"), {}).get(m) for t in tasks]
        if vals and all(vals):
            pub_means[m] = float(np.mean([v[0] for v in vals]))
    if pub_means:
        lines += ["", "Published mean over these tasks (per-seed data not available, so a mean, not an IQM): "
                  + ", ".join(f"{m} {v:.0f}" for m, v in pub_means.items())]
    table = "\n".join(lines) + "\n"
    (out_dir / "table.md").write_text(table)
    print(table)
    _plot(out_dir / "iqm.png", iqms, cis, pub_means, args)
    _plot_curves(out_dir / "curves.png", jobs, args)
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    result = {
        "frames": args.frames, "preset": args.preset, "tasks": tasks, "seeds": seeds, "agents": labels,
        "iqm": iqms, "iqm_ci95": cis, "task_means": task_means,
        "scores": {lab: scores[lab] for lab in labels},
        "eval_frames": {lab: frames_reached[lab] for lab in labels},  # frames of each score's evaluation
        "deadline_min": args.deadline_min,
        "published_task_means": {m: {t: pub.get(t.replace("-", "_"), {}).get(m) for t in tasks}
                                 for m in published["methods"]},
        "published_mean_over_tasks": pub_means,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, gpu: {gpu}",
        "wall_s": wall_s, "command": shlex.join(sys.argv),
    }
    (out_dir / "summary.json").write_text(json.dumps(result, indent=1))
    return result


def _plot(path: Path, iqms: dict, cis: dict, pub_means: dict, args) -> None:
    if not iqms:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * (len(iqms) + len(pub_means)), 3.6))
    labels = list(iqms)
    y = [iqms[k] for k in labels]
    err = np.array([[iqms[k] - cis[k][0] for k in labels], [cis[k][1] - iqms[k] for k in labels]])
    ax.bar(labels, y, yerr=err, capsize=4, color="tab:blue", label="pixelrl (IQM, 95% CI)")
    if pub_means:
        ax.bar(list(pub_means), list(pub_means.values()), color="lightgray", label="published (mean)")
    ax.set_ylabel(f"return at {args.frames // 1000}k frames")
    ax.set_title(f"DMC from pixels, preset {args.preset}")
    ax.legend(fontsize=7)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_curves(path: Path, jobs: list[tuple[str, str, int]], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(args.out_dir)
    tasks = list(dict.fromkeys(t for _, t, _ in jobs))
    specs = list(dict.fromkeys(s for s, _, _ in jobs))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        randoms = []
        for i, spec in enumerate(specs):
            color = f"C{i}"
            series = []
            for s, t, seed in jobs:
                if s != spec or t != task:
                    continue
                rows = eval_rows(run_folder(out_dir, s, t, seed))
                if not rows:
                    continue
                xs = np.array([float(r["frames"]) for r in rows])
                ys = np.array([float(r["eval_return"]) for r in rows])
                randoms += [float(r["random_return"]) for r in rows if r.get("random_return") not in (None, "")]
                series.append((xs, ys))
                ax.plot(xs, ys, color=color, lw=0.8, alpha=0.35)
            if series:
                n = min(len(x) for x, _ in series)
                ax.plot(series[0][0][:n], np.mean([y[:n] for _, y in series], axis=0), color=color, lw=2,
                        label=f"{agent_label(spec)} ({len(series)} seed{'s' if len(series) > 1 else ''})")
        if randoms:
            ax.axhline(float(np.mean(randoms)), color="gray", ls=":", lw=1, label="random policy")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("env frames")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("eval return")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"preset {args.preset}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", nargs="+", default=["drqv2", "drm"],
                    help="agent names, each optionally followed by its flags in one quoted string")
    ap.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, help="DMC tasks as domain-task")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--preset", default="paper", choices=["paper", "cpu-fast", "none"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--parallel", type=int, default=1, help="runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--eval-every-frames", type=int, default=None, help="default: frames / 4")
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--extra", default="", help="flags added to every run, e.g. '--fast-render'")
    ap.add_argument("--out-dir", default="runs/dmc_sample_efficiency")
    ap.add_argument("--report-every", type=float, default=60.0, help="seconds between progress lines")
    ap.add_argument("--batch-seeds", action="store_true",
                    help="train all seeds of an agent the batched learner supports (drqv2) in one process "
                         "(pixelrl train --seeds); other agents run one process per seed")
    ap.add_argument("--deadline-min", type=float, default=None,
                    help="wall minutes from this script's start by which every run must have ended: each train "
                         "process gets --time-budget-min for what is left (less --deadline-margin-s, for its "
                         "start-up and final evaluation), none starts with under --min-run-s left, and a run still "
                         "going at the deadline is stopped (SIGTERM, then SIGKILL after 10 s); then the summary")
    ap.add_argument("--deadline-margin-s", type=float, default=75.0,
                    help="seconds kept back from each run's time budget for its start-up and final evaluation")
    ap.add_argument("--min-run-s", type=float, default=60.0,
                    help="with --deadline-min: start no run that would get less training time than this")
    ap.add_argument("--summarize-only", action="store_true")
    ap.add_argument("--result", default=None, help="also copy summary.json here (e.g. benchmarks/results/...)")
    args = ap.parse_args()
    if args.eval_every_frames is None:
        args.eval_every_frames = max(args.frames // 4, 1)
    jobs = [(s, t, seed) for s in args.agents for t in args.tasks for seed in args.seeds]
    t0 = time.time()
    args.deadline_at = t0 + 60.0 * args.deadline_min if args.deadline_min is not None else None
    if not args.summarize_only:
        run_all(jobs, args)
    result = summarize(jobs, args, time.time() - t0)
    if args.result:
        Path(args.result).parent.mkdir(parents=True, exist_ok=True)
        Path(args.result).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("frames", "preset", "iqm", "task_means", "machine")}))


if __name__ == "__main__":
    main()
