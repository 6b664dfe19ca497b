"""Atari-100k: DrQ(eps) (``--agent drq-eps``) on the Atari-100k protocol, human-normalised, beside the published
DrQ(eps) scores, with rliable's IQM and its stratified-bootstrap 95% confidence interval.

Each run is a normal ``pixelrl train`` run folder under ``--out-dir/<game>/s<seed>`` (``--preset paper``, so the
agent's own preset sets the protocol: 400k frames, no sticky actions, 108k-frame episodes, life loss terminal for
the learner, 100 evaluation episodes); runs go in parallel (``--parallel``), a finished run is skipped and an
unfinished one resumed from its last checkpoint (every ``--checkpoint-every`` frames, 50k by default), so the script
can be stopped and started again. The score of a run is the mean return of
the final evaluation: ``pixelrl eval <run> --episodes 100`` on the last checkpoint (raw game scores), saved as
``final_eval.json`` in the run folder. The trainer's own evaluations (at the start and the end) run
``--train-eval-episodes`` (1) episodes only: an untrained greedy agent can play Breakout for the whole 27k-step cap
without pressing FIRE (one such episode took 136 s on the CPU), so 100 of them at frame 0 would cost hours.

    # CPU configuration: 3 games x 2 seeds (see docs/agents/dqn.md for how long it takes)
    python benchmarks/atari100k.py
    # GPU configuration: all 26 games x 3 seeds, IQM with a stratified-bootstrap 95% CI
    python benchmarks/atari100k.py --device cuda
    # smoke run (tiny budget; the numbers mean nothing): a label keeps it apart from results
    python benchmarks/atari100k.py --frames 4000 --seeds 1 --eval-episodes 1 --label smoke \\
        --agent-flags "--agent.num-seed-steps 500"

It prints a table and writes ``benchmarks/results/atari100k_<label>.json`` naming the machine (CPU model, its flags,
torch, threads), the command, every run's score, human-normalised score and cost per agent step, and the aggregate
(mean / median / IQM with its CI) beside DrQ(eps)'s published numbers. The IQM of a subset of games does not compare
with the published 26-game IQM (0.280); the per-game columns do.
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
ROOT = HERE.parent

GAMES = ["Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout", "ChopperCommand",
         "CrazyClimber", "DemonAttack", "Freeway", "Frostbite", "Gopher", "Hero", "Jamesbond", "Kangaroo", "Krull",
         "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert", "RoadRunner", "Seaquest", "UpNDown"]
"""The 26 games of Atari-100k (Kaiser et al. 2020)."""
CPU_GAMES = ["Breakout", "Pong", "MsPacman"]

# Human and random scores: Dopamine's dopamine/labs/atari_100k/normalization_utils.py (the standard tables).
HUMAN = {"Alien": 7127.7, "Amidar": 1719.5, "Assault": 742.0, "Asterix": 8503.3, "BankHeist": 753.1,
         "BattleZone": 37187.5, "Boxing": 12.1, "Breakout": 30.5, "ChopperCommand": 7387.8, "CrazyClimber": 35829.4,
         "DemonAttack": 1971.0, "Freeway": 29.6, "Frostbite": 4334.7, "Gopher": 2412.5, "Hero": 30826.4,
         "Jamesbond": 302.8, "Kangaroo": 3035.0, "Krull": 2665.5, "KungFuMaster": 22736.3, "MsPacman": 6951.6,
         "Pong": 14.6, "PrivateEye": 69571.3, "Qbert": 13455.0, "RoadRunner": 7845.0, "Seaquest": 42054.7,
         "UpNDown": 11693.2}
RANDOM = {"Alien": 227.8, "Amidar": 5.8, "Assault": 222.4, "Asterix": 210.0, "BankHeist": 14.2, "BattleZone": 2360.0,
          "Boxing": 0.1, "Breakout": 1.7, "ChopperCommand": 811.0, "CrazyClimber": 10780.5, "DemonAttack": 152.1,
          "Freeway": 0.0, "Frostbite": 65.2, "Gopher": 257.6, "Hero": 1027.0, "Jamesbond": 29.0, "Kangaroo": 52.0,
          "Krull": 1598.0, "KungFuMaster": 258.5, "MsPacman": 307.3, "Pong": -20.7, "PrivateEye": 24.9,
          "Qbert": 163.9, "RoadRunner": 11.5, "Seaquest": 68.4, "UpNDown": 533.4}
# DrQ(eps): mean score per game over 100 runs (Agarwal et al. 2021, the runs behind rliable's Atari-100k data), as
# tabulated by later papers' Atari-100k tables (e.g. IRIS, Micheli et al. 2023, Table 1, column "DrQ"); their mean
# human-normalised score is 0.465 (checked in tests/agents/test_dqn.py). Published IQM over 26 games x 100 runs:
# 0.280 (Agarwal et al. 2021).
DRQ_EPS = {"Alien": 865.2, "Amidar": 137.8, "Assault": 579.6, "Asterix": 763.6, "BankHeist": 232.9,
           "BattleZone": 10165.3, "Boxing": 9.0, "Breakout": 19.8, "ChopperCommand": 844.6, "CrazyClimber": 21539.0,
           "DemonAttack": 1321.5, "Freeway": 20.3, "Frostbite": 1014.2, "Gopher": 621.6, "Hero": 4167.9,
           "Jamesbond": 349.1, "Kangaroo": 1088.4, "Krull": 4402.1, "KungFuMaster": 11467.4, "MsPacman": 1218.1,
           "Pong": -9.1, "PrivateEye": 3.5, "Qbert": 1810.7, "RoadRunner": 11211.4, "Seaquest": 352.3,
           "UpNDown": 4324.5}
DRQ_EPS_IQM = 0.280


def hns(game: str, score: float) -> float:
    """Human-normalised score ``(score - random) / (human - random)``."""
    return (score - RANDOM[game]) / (HUMAN[game] - RANDOM[game])


def iqm(x: np.ndarray) -> float:
    """Interquartile mean of all values of ``x``: the mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``,
    which rliable's ``aggregate_iqm`` calls: ``int(0.25 * n)`` values are cut from each end)."""
    v = np.sort(np.asarray(x, dtype=np.float64).ravel())
    cut = int(0.25 * v.size)
    return float(v[cut:v.size - cut].mean())


def stratified_bootstrap_ci(scores: np.ndarray, stat=iqm, reps: int = 2000, seed: int = 0,
                            alpha: float = 0.05) -> tuple[float, float]:
    """rliable's stratified bootstrap: ``scores`` is ``[runs, games]``; each replicate resamples the runs with
    replacement *within each game* (every game keeps its number of runs), then takes ``stat`` of the whole
    replicate; the interval is the percentile interval of the replicates (rliable's default 'percentile')."""
    scores = np.asarray(scores, dtype=np.float64)
    n, g = scores.shape
    rng = np.random.default_rng(seed)
    cols = np.arange(g)[None, :]
    vals = np.empty(reps)
    for i in range(reps):
        idx = rng.integers(0, n, size=(n, g))
        vals[i] = stat(scores[idx, cols])
    lo, hi = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------------------- runs
def run_dir(out: Path, game: str, seed: int) -> Path:
    return out / game / f"s{seed}"


def _rows(run: Path, kind: str) -> list[dict]:
    path = run / f"{kind}.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def command(args, game: str, seed: int) -> str:
    """The shell command of one run: train (or resume) unless finished, then the final evaluation."""
    run = run_dir(Path(args.out_dir), game, seed)
    py = [sys.executable, "-m", "pixelrl.cli.main"]
    steps = []
    if not (run / "summary.json").exists():
        if (run / "checkpoints" / "latest.json").exists():
            steps.append(py + ["resume", str(run)])
        else:
            frames = args.frames or 400_000
            steps.append(py + ["train", "--env", f"ale/{game}", "--agent", args.agent, "--preset", "paper", "--seed",
                               str(seed), "--run-dir", str(run), "--device", args.device, "--no-progress",
                               "--no-video", "--no-tensorboard", "--eval-episodes", str(args.train_eval_episodes),
                               "--frames", str(frames), "--eval-every-frames", str(frames),
                               "--checkpoint-every-frames", str(args.checkpoint_every),
                               "--threads", str(args.threads)] + shlex.split(args.agent_flags))
    final = run / "final_eval.json"
    evaluate = py + ["eval", str(run), "--episodes", str(args.eval_episodes), "--device", args.device]
    chain = " && ".join(shlex.join(c) for c in steps)
    tail = f"{shlex.join(evaluate)} | tail -n 1 > {shlex.quote(str(final))}.tmp && mv {shlex.quote(str(final))}.tmp " \
           f"{shlex.quote(str(final))}"
    return f"{chain} && {tail}" if chain else tail


def run_all(args, jobs: list[tuple[str, int]]) -> None:
    env = dict(os.environ, PYTHONHASHSEED="0")
    if args.device == "cpu":
        env["OMP_NUM_THREADS"] = str(args.threads)
    todo = [j for j in jobs if not (run_dir(Path(args.out_dir), *j) / "final_eval.json").exists()]
    running: list[tuple[subprocess.Popen, tuple[str, int], float]] = []
    while todo or running:
        while todo and len(running) < args.parallel:
            job = todo.pop(0)
            run = run_dir(Path(args.out_dir), *job)
            run.parent.mkdir(parents=True, exist_ok=True)
            log = open(run.parent / f"s{job[1]}.log", "a")
            cmd = command(args, *job)
            print(f"start {job[0]} seed {job[1]}: {cmd}", flush=True)
            running.append((subprocess.Popen(["bash", "-c", "set -o pipefail; " + cmd], stdout=log,
                                             stderr=subprocess.STDOUT, env=env, cwd=ROOT), job, time.time()))
        time.sleep(2)
        for p, job, t0 in list(running):
            if p.poll() is not None:
                running.remove((p, job, t0))
                state = "done" if p.returncode == 0 else f"FAILED (exit {p.returncode}, see the .log beside the run)"
                print(f"{state}: {job[0]} seed {job[1]} in {time.time() - t0:.0f} s", flush=True)


def run_result(out: Path, game: str, seed: int) -> dict | None:
    run = run_dir(out, game, seed)
    evals = [r for r in _rows(run, "eval") if r.get("eval_return") not in (None, "")]
    if not (run / "summary.json").exists() or not (run / "final_eval.json").exists() or not evals:
        return None
    summary = json.loads((run / "summary.json").read_text())
    final = json.loads((run / "final_eval.json").read_text())
    last = evals[-1]
    train = _rows(run, "train")
    sums = {k: sum(float(r.get(k) or 0) for r in train) for k in ("update_s", "env_s", "act_s")}
    steps = int(float(train[-1]["agent_steps"])) if train else 0
    cfg = json.loads((run / "config.json").read_text())
    seed_steps = int(cfg["agent"].get("num_seed_steps", 0))
    learn_steps = max(steps - seed_steps, 1)
    score = float(final["mean_return"])
    return {
        "game": game, "seed": seed, "score": score, "hns": hns(game, score), "score_std": final["std_return"],
        "frames": int(float(last["frames"])), "agent_steps": steps, "eval_episodes": int(final["episodes"]),
        "checkpoint": Path(final["checkpoint"]).name,
        "random_policy_return": float(evals[0]["random_return"]) if evals[0].get("random_return") else None,
        "wall_s": float(summary.get("wall_s", 0.0)),
        "update_ms_per_learning_step": 1000 * sums["update_s"] / learn_steps,
        "env_ms_per_step": 1000 * sums["env_s"] / max(steps, 1), "act_ms_per_step": 1000 * sums["act_s"] / max(steps, 1),
        "eval_s": sum(float(r.get("eval_s") or 0) for r in evals),
        "precision": cfg["agent"].get("precision"), "decisions": cfg.get("decisions"),
    }


def aggregate(results: list[dict], games: list[str], reps: int) -> dict:
    by_game: dict[str, list[float]] = {g: [r["hns"] for r in results if r["game"] == g] for g in games}
    complete = [g for g in games if by_game[g]]
    out: dict = {"games": complete}
    if not complete:
        return out
    n = min(len(by_game[g]) for g in complete)
    mat = np.array([[by_game[g][i] for g in complete] for i in range(n)])  # [runs, games]
    out.update({"runs_per_game": n, "mean_hns": float(mat.mean()), "median_hns": float(np.median(mat.mean(0))),
                "iqm_hns": iqm(mat)})
    if n >= 2:
        out["iqm_hns_ci95"] = stratified_bootstrap_ci(mat, reps=reps)
    pub = np.array([[hns(g, DRQ_EPS[g]) for g in complete]])
    out["published_drq_eps"] = {"mean_hns_of_per_game_means": float(pub.mean()),
                                "iqm_hns_26_games_100_runs": DRQ_EPS_IQM if len(complete) == 26 else None}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu (3 games x 2 seeds) or cuda (26 games x 3 seeds)")
    ap.add_argument("--games", nargs="+", default=None, help="games (default: Breakout Pong MsPacman on cpu, all "
                    "26 on cuda)")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 1 2 on cpu, 1 2 3 on cuda")
    ap.add_argument("--agent", default="drq-eps")
    ap.add_argument("--agent-flags", default="", help="extra flags for pixelrl train, e.g. '--agent.precision bf16'")
    ap.add_argument("--frames", type=int, default=None, help="env frames per run (default: the protocol's 400k)")
    ap.add_argument("--eval-episodes", type=int, default=100, help="episodes of the final evaluation (protocol: 100)")
    ap.add_argument("--checkpoint-every", type=int, default=50_000,
                    help="env frames between checkpoints (weights, optimizer, replay), so that a run stopped midway "
                         "resumes from its last one (the trainer's own evaluations, which also checkpoint, run only "
                         "at the start and the end)")
    ap.add_argument("--train-eval-episodes", type=int, default=1, help="episodes of the trainer's own evaluations "
                    "(at the start and the end of each run)")
    ap.add_argument("--parallel", type=int, default=None, help="runs at a time (default: 2 on cpu, 8 on cuda)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--out-dir", default="runs/atari100k")
    ap.add_argument("--label", default=None, help="result name: benchmarks/results/atari100k_<label>.json "
                    "(default: the device)")
    ap.add_argument("--bootstrap-reps", type=int, default=2000)
    ap.add_argument("--summarize-only", action="store_true", help="only read the existing runs")
    args = ap.parse_args(argv)
    gpu = args.device.startswith("cuda")
    games = args.games or (GAMES if gpu else CPU_GAMES)
    unknown = [g for g in games if g not in HUMAN]
    if unknown:
        ap.error(f"unknown game(s) {unknown}; Atari-100k games: {', '.join(GAMES)}")
    seeds = args.seeds or ([1, 2, 3] if gpu else [1, 2])
    args.parallel = args.parallel or (8 if gpu else 2)
    jobs = [(g, s) for g in games for s in seeds]
    t0 = time.time()
    if not args.summarize_only:
        run_all(args, jobs)
    results = [r for r in (run_result(Path(args.out_dir), g, s) for g, s in jobs) if r is not None]
    agg = aggregate(results, games, args.bootstrap_reps)

    print(f"\n{'game':<15}{'seed':>5}{'score':>10}{'HNS':>8}{'DrQ(eps)':>11}{'its HNS':>9}{'update ms':>11}"
          f"{'env ms':>8}")
    for r in results:
        g = r["game"]
        print(f"{g:<15}{r['seed']:>5}{r['score']:>10.1f}{r['hns']:>8.3f}{DRQ_EPS[g]:>11.1f}{hns(g, DRQ_EPS[g]):>9.3f}"
              f"{r['update_ms_per_learning_step']:>11.1f}{r['env_ms_per_step']:>8.2f}")
    if "iqm_hns" in agg:
        ci = agg.get("iqm_hns_ci95")
        print(f"IQM HNS {agg['iqm_hns']:.3f}" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
              + f", mean {agg['mean_hns']:.3f} over {len(agg['games'])} games x {agg['runs_per_game']} runs"
              + (f"; published DrQ(eps) IQM {DRQ_EPS_IQM} (26 games x 100 runs)" if len(agg["games"]) == 26 else ""))

    from pixelrl.utils.machine import machine_description
    from pixelrl.utils.precision import cpu_flags
    import torch

    label = args.label or ("gpu" if gpu else "cpu")
    doc = {
        "benchmark": "atari100k", "label": label,
        "note": ("SMOKE RUN: a tiny budget to exercise the script; the scores are not results"
                 if "smoke" in label else "Atari-100k protocol (see docs/agents/dqn.md)"),
        "command": shlex.join([sys.executable, *sys.argv]), "agent": args.agent, "agent_flags": args.agent_flags,
        "frames": args.frames or 400_000, "eval_episodes": args.eval_episodes, "games": games, "seeds": seeds,
        "machine": machine_description(), "host": platform.node(), "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if gpu and torch.cuda.is_available() else None,
        "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma"}),
        "parallel": args.parallel, "threads_per_run": args.threads, "wall_s": time.time() - t0,
        "runs": results, "aggregate": agg,
        "published": {"drq_eps_per_game": {g: DRQ_EPS[g] for g in games}, "drq_eps_iqm_26_games": DRQ_EPS_IQM,
                      "human": {g: HUMAN[g] for g in games}, "random": {g: RANDOM[g] for g in games}},
    }
    out = HERE / "results" / f"atari100k_{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "src"))
    from pixelrl.utils.atomic import write_json_atomic

    write_json_atomic(out, doc)
    print(f"wrote {out}")
    return doc


if __name__ == "__main__":
    main()
