"""Does the `make train` default learn on this machine, and how fast?

Runs `pixelrl train` with its defaults (env dmc/cartpole-swingup, preset auto -> cpu-fast on a CPU) for each seed,
one after the other, and reports the final evaluation return against the uniform random policy's return
measured in the same run (the peer), plus wall time. Last line: JSON, also written to
benchmarks/results/cpu_default_learning.json.

    .venv/bin/python benchmarks/cpu_default_learning.py --seeds 1 2 3
    .venv/bin/python benchmarks/cpu_default_learning.py --seeds 1 --emulate-avx2   # see below

The result names the CPU, its bf16 / AVX-512 flags and what ``precision auto`` chose (from each run's config.json).
``--emulate-avx2`` runs the children with torch's, oneDNN's and MKL's kernels limited to AVX2
(``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``): on an AVX-512 machine this
approximates an AVX2-only CPU of the same clock (bf16 is then emulated and ~10x slower, as on a real AVX2 EPYC).
It is an approximation, recorded as such in the result: a real AVX2-only machine may be slower still.

``--curves RUN_DIR ...`` trains nothing: it writes the eval curves (return by env frames) of run folders, finished
or not, for comparing settings of the preset by frames rather than by wall time (the runs of such a comparison
share a loaded machine). Each run gets a label (its folder name without ``-s<seed>``), its changes against the
``cpu-fast`` preset of this checkout, and the command that reproduces it; ``--load-log`` (lines ``<time> <load1>
<load5> <load15>``, sampled while the runs ran) adds the machine's load average to the result:

    .venv/bin/python benchmarks/cpu_default_learning.py --curves runs/ln-s3 runs/pad2-s3 --load-log load.log \
        --out benchmarks/results/cpu_default_learning_candidates.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pixelrl.utils.machine import machine_description
from pixelrl.utils.precision import cpu_flags

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="extra `pixelrl train` arguments")
    ap.add_argument("--parallel", action="store_true",
                    help="run the seeds at the same time (wall times are then not the single-run times)")
    ap.add_argument("--runs", nargs="+", default=None,
                    help="summarise finished run folders instead of training (wall time from their summary.json)")
    ap.add_argument("--emulate-avx2", action="store_true",
                    help="limit torch/oneDNN/MKL kernels to AVX2 in the training processes (see the docstring)")
    ap.add_argument("--curves", nargs="+", default=None,
                    help="write the eval curves of these run folders (finished or not) instead of training")
    ap.add_argument("--load-log", default=None, help="with --curves: load averages sampled while the runs ran")
    ap.add_argument("--what", default="", help="with --curves: one sentence on what the runs compare")
    ap.add_argument("--update-cost", nargs="*", default=None, metavar="ARM",
                    help="with --curves: also time (CPU time) one update of the preset against each ARM, a comma-"
                         "separated "
                         "list of agent field=value (e.g. critic_layernorm=true), fp32, 1 thread, synthetic batch; "
                         "the arms alternate over --cost-rounds rounds of --cost-reps updates (medians)")
    ap.add_argument("--reference", default=None,
                    help="with --curves: a committed result whose runs' curves are copied in as label 'preset' (the "
                         "peer measured earlier with the same settings but the changes)")
    ap.add_argument("--plot", default=None, help="with --curves: also draw the curves, one panel per seed, to this PNG")
    ap.add_argument("--cost-rounds", type=int, default=5)
    ap.add_argument("--cost-reps", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/cpu_default_learning.json")
    args = ap.parse_args()
    if args.curves:
        write_curves(args)
        return
    root = Path(tempfile.mkdtemp(prefix="pixelrl-cpu-default-"))
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    if args.emulate_avx2:
        env.update(AVX2_ENV)
    runs = []
    procs = {}
    if args.runs:
        for d in args.runs:
            d = Path(d)
            seed = json.loads((d / "config.json").read_text())["seed"]
            procs[seed] = (d, 0.0, None, json.loads((d / "summary.json").read_text())["wall_s"])
        args.seeds = list(procs)
    for seed in ([] if args.runs else args.seeds):
        run_dir = root / f"s{seed}"
        cmd = [sys.executable, "-m", "pixelrl.cli.main", "train", "--seed", str(seed), "--run-dir", str(run_dir),
               "--no-progress", *args.extra]
        procs[seed] = (run_dir, time.perf_counter(), subprocess.Popen(cmd, env=env))
        if not args.parallel:
            procs[seed][2].wait()
            procs[seed] = (run_dir, procs[seed][1], procs[seed][2], time.perf_counter() - procs[seed][1])
    for seed in args.seeds:
        run_dir, t0, proc, *wall = procs[seed]
        if proc is not None and proc.wait() != 0:
            raise SystemExit(f"seed {seed} failed (exit {proc.returncode})")
        wall = wall[0] if wall else time.perf_counter() - t0
        summary = json.loads((run_dir / "summary.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                 if '"kind": "eval"' in line]
        runs.append({"seed": seed, "final_eval_return": summary["final_eval_return"],
                     "random_return": summary["random_return"], "wall_s": wall, "run_dir": str(run_dir),
                     "frames": summary["frames"], "ended_by": summary.get("ended_by", "frames"),
                     "precision": config["agent"]["precision"],
                     "precision_reason": (config.get("decisions") or {}).get("precision_reason"),
                     "curve": [(r["frames"], r["eval_return"]) for r in evals]})
        print(f"seed {seed}: final eval {summary['final_eval_return']:.1f} vs random {summary['random_return']:.1f} "
              f"in {wall / 60:.1f} min", flush=True)
    finals = np.array([r["final_eval_return"] for r in runs])
    randoms = np.array([r["random_return"] for r in runs])
    result = {
        "env": config["env"], "preset": config["preset"], "frames": config["frames"], "size": config["size"],
        "action_repeat": config["action_repeat"], "seeds": args.seeds,
        "final_eval_return_median": float(np.median(finals)), "random_return_median": float(np.median(randoms)),
        "ratio_vs_random": float(np.median(finals) / max(np.median(randoms), 1e-9)),
        "wall_min_median": float(np.median([r["wall_s"] for r in runs]) / 60), "parallel": args.parallel,
        "precision": config["agent"]["precision"], "eval_episodes": config["eval_episodes"], "runs": runs,
        "machine": machine_description(),
        "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
        "emulated_avx2": bool(args.emulate_avx2), "kernel_env": AVX2_ENV if args.emulate_avx2 else {},
        "time_budget_min": config.get("time_budget_min"),
        "reproduce": ("summarised from finished runs (their config.json has the full configuration): "
                      + " ".join(args.runs)) if args.runs else
        "python benchmarks/cpu_default_learning.py --seeds " + " ".join(map(str, args.seeds))
        + (" --parallel" if args.parallel else "") + (" --emulate-avx2" if args.emulate_avx2 else ""),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))


def run_changes(config: dict) -> list[tuple[str, object, object]]:
    """``(field, preset value, run value)`` for what a run changed against the ``cpu-fast`` preset of this checkout
    (run-bookkeeping fields such as the run folder, seed, frames and logging switches left out)."""
    from pixelrl.train.setup import build_config, config_changes
    from pixelrl.utils.dataclass_io import to_dict

    ref = to_dict(build_config(env=config["env"], agent_name=config["agent_name"], preset="cpu-fast", device="cpu",
                               fill_run_dir=False))
    skip = {"run_dir", "seed", "seeds", "frames", "time_budget_min", "video", "tensorboard", "progress", "threads",
            "decisions", "agent.precision", "eval_every_frames", "checkpoint_every_frames", "keep_checkpoints"}
    return [c for c in config_changes(ref, config) if c[0] not in skip]


def _flag(field: str, value: object) -> str:
    """The `pixelrl train` flag that sets a (dotted) config field: ``agent.augment_pad``, 2 -> ``--agent.augment-pad
    2``; booleans as ``--agent.critic-layernorm`` / ``--agent.no-critic-layernorm``."""
    head, _, name = field.rpartition(".")
    prefix = f"--{head.replace('_', '-')}." if head else "--"
    name = name.replace("_", "-")
    if isinstance(value, bool):
        return f"{prefix}{name}" if value else f"{prefix}no-{name}"
    return f"{prefix}{name} " + (" ".join(map(str, value)) if isinstance(value, list) else str(value))


def update_cost(arms: list[str], rounds: int, reps: int) -> dict:
    """Median CPU time (this process's, ``time.process_time``) of one agent update (fp32, 1 thread, the preset's
    batch on synthetic 48x48 frames) of the ``cpu-fast`` preset and of each arm (agent field=value changes). CPU time
    rather than wall time because on a shared machine a 1-thread process gets a varying share of a core; the arms
    also take turns within every round, so what sharing still does (caches, clock) hits them alike."""
    import statistics

    import gymnasium as gym
    import torch

    from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
    from pixelrl.agents.presets import cpu_fast
    from pixelrl.data.batch import Batch
    from pixelrl.utils.dataclass_io import from_dict

    torch.set_num_threads(1)
    base = {k: v for k, v in cpu_fast.items() if k in DrQv2Config.__dataclass_fields__}
    base["precision"] = "fp32"
    agents = {}
    size = int(cpu_fast["size"])
    obs = gym.spaces.Box(0, 255, (9, size, size), np.uint8)
    act = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    for arm in ["preset", *arms]:
        kw = dict(base)
        for item in ([] if arm == "preset" else arm.split(",")):
            k, v = item.split("=", 1)
            kw[k.strip()] = json.loads(v.strip().lower() if v.strip().lower() in ("true", "false") else v.strip())
        torch.manual_seed(0)
        agents[arm] = DrQv2Agent(obs, act, from_dict(DrQv2Config, kw, where=f"arm {arm!r}"))
    n = int(base["batch_size"])
    g = torch.Generator().manual_seed(0)
    o = torch.randint(0, 256, (n, 9, size, size), dtype=torch.uint8, generator=g)
    batch = Batch(obs=o, action=torch.rand(n, 1, generator=g) * 2 - 1, reward=torch.rand(n, 1, generator=g),
                  discount=torch.full((n, 1), 0.99), next_obs=o.roll(1, 0))
    times: dict[str, list[float]] = {arm: [] for arm in agents}
    for agent in agents.values():
        for _ in range(3):
            agent.update(batch, step=100_000)
    for _ in range(rounds):
        for arm, agent in agents.items():
            t = []
            for _ in range(reps):
                t0 = time.process_time()
                agent.update(batch, step=100_000)
                t.append(time.process_time() - t0)
            times[arm].append(statistics.median(t))
    ms = {arm: 1e3 * statistics.median(v) for arm, v in times.items()}
    for arm, v in ms.items():
        print(f"update {arm}: {v:.1f} ms ({v / ms['preset']:.2f}x the preset)")
    return {"what": "CPU time of one update (process time, not wall time), fp32, 1 thread, batch of the preset, "
                    "synthetic frames; median over rounds of the per-round medians", "rounds": rounds, "reps": reps,
            "update_ms": ms, "ratio_vs_preset": {arm: v / ms["preset"] for arm, v in ms.items()}}


def write_curves(args: argparse.Namespace) -> None:
    """The eval curves of finished or running run folders, by env frames, with their changes and commands."""
    runs = []
    for d in map(Path, args.curves):
        config = json.loads((d / "config.json").read_text())
        evals = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()
                 if '"kind": "eval"' in line]
        changes = run_changes(config)
        flags = " ".join(_flag(k, v) for k, _, v in changes)
        summary = d / "summary.json"
        runs.append({
            "label": d.name.rsplit("-s", 1)[0], "seed": config["seed"],
            "changes_vs_preset": [{"field": k, "preset": a, "run": b} for k, a, b in changes],
            "command": (f"pixelrl train --preset cpu-fast --seed {config['seed']} --threads {config['threads']} "
                        f"--frames {config['frames']} --time-budget-min {config['time_budget_min']} --no-video "
                        f"--agent.precision {config['agent']['precision']} {flags}").strip(),
            "precision": config["agent"]["precision"],
            "random_return": next((r.get("random_return") for r in evals if r.get("random_return") is not None),
                                  None),
            "finished": summary.exists(),
            "curve": [(r["frames"], round(r["eval_return"], 1)) for r in evals],
        })
        print(f"{runs[-1]['label']} seed {runs[-1]['seed']}: " + " ".join(f"{f // 1000}k:{r:.0f}"
                                                                            for f, r in runs[-1]["curve"]))
    reference = None
    if args.reference:
        ref = json.loads(Path(args.reference).read_text())
        reference = {"file": args.reference, "command": ref.get("command"), "machine": ref.get("machine")}
        runs = [{"label": "preset", "seed": r["seed"], "changes_vs_preset": [], "from": args.reference,
                 "random_return": r.get("random_return"), "curve": [tuple(c) for c in r["curve"]]}
                for r in ref["runs"]] + runs
    load = None
    if args.load_log:
        rows = [line.split() for line in Path(args.load_log).read_text().splitlines() if line.strip()]
        load1 = np.array([float(r[1]) for r in rows])
        load = {"samples": len(rows), "from": rows[0][0], "to": rows[-1][0], "load1_min": float(load1.min()),
                "load1_median": float(np.median(load1)), "load1_max": float(load1.max())}
    result = {
        "what": args.what, "measure": "eval return (deterministic policy) against env frames",
        "machine": machine_description(), "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16",
                                                                               "amx_bf16"}),
        "load_average": load if load is not None else list(os.getloadavg()),
        "reference": reference,
        "runs": runs,
        "update_cost": update_cost(args.update_cost, args.cost_rounds, args.cost_reps)
        if args.update_cost is not None else None,
        "reproduce": "python benchmarks/cpu_default_learning.py --curves " + " ".join(args.curves)
        + (" --update-cost " + " ".join(args.update_cost) if args.update_cost is not None else ""),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot_curves(runs, args.plot, title=args.what)


def plot_curves(runs: list[dict], path: str, title: str = "") -> None:
    """One panel per seed, one line per label, eval return against env frames (thousands)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted({r["seed"] for r in runs})
    labels = list(dict.fromkeys(r["label"] for r in runs))
    fig, axes = plt.subplots(1, len(seeds), figsize=(4 * len(seeds), 3.4), sharey=True, squeeze=False)
    for ax, seed in zip(axes[0], seeds):
        for i, label in enumerate(labels):
            for r in runs:
                if r["seed"] == seed and r["label"] == label and r["curve"]:
                    f, ret = zip(*r["curve"])
                    ax.plot(np.array(f) / 1e3, ret, marker=".", color=f"C{i}", label=label)
        rnd = next((r["random_return"] for r in runs if r["seed"] == seed and r.get("random_return")), None)
        if rnd is not None:
            ax.axhline(rnd, color="grey", ls=":", lw=1, label="random policy")
        ax.axhline(750, color="black", ls="--", lw=0.8, label="goal 750")
        ax.set_title(f"seed {seed}")
        ax.set_xlabel("env frames (k)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("eval return")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    if title:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
