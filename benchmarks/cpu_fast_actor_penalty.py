"""Does the cpu-fast preset's pre-tanh penalty (``actor_pre_tanh_penalty = 1e-3``) stop the saturated-actor stall?

DrQ-v2 with the cpu-fast settings (action repeat 8, 500 seed steps, batch 128, hidden 256, lr 3e-4, sigma over 10k
steps) on dmc/cartpole-swingup from *states* (the stall is not a pixel problem and state runs take ~3 min): for each
seed, one run without the penalty (the peer: DrQ-v2's actor loss) and one with it, two runs at a time with one torch
thread each. A run "stalls" when its deterministic policy is stuck at a constant action: every evaluation after the
first within 5 of the last one and below 100 (a cart pushed against the rail earns ~75). Last line: JSON, also
written to benchmarks/results/cpu_fast_actor_penalty_states.json.

    .venv/bin/python benchmarks/cpu_fast_actor_penalty.py --seeds 1 2 3 4
    .venv/bin/python benchmarks/cpu_fast_actor_penalty.py --off-runs DIR ... --on-runs DIR ...   # summarise only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARMS = {"off": 0.0, "on": 1e-3}


def curve(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if '"kind": "eval"' in line]
    return [(int(r["frames"]), float(r["eval_return"])) for r in rows]


def stalled(c: list[tuple[int, float]]) -> bool:
    later = [v for _, v in c[1:]]
    return bool(later) and max(later) < 100 and max(abs(v - later[-1]) for v in later) < 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--frames", type=int, default=120_000)
    ap.add_argument("--off-runs", nargs="*", default=None, help="finished run folders without the penalty")
    ap.add_argument("--on-runs", nargs="*", default=None, help="finished run folders with the penalty")
    ap.add_argument("--note", default="", help="free text stored with the result")
    ap.add_argument("--out", default="benchmarks/results/cpu_fast_actor_penalty_states.json")
    args = ap.parse_args()
    runs: dict[str, list[Path]] = {"off": [], "on": []}
    t0 = time.perf_counter()
    if args.off_runs is not None or args.on_runs is not None:
        runs = {"off": [Path(d) for d in args.off_runs or []], "on": [Path(d) for d in args.on_runs or []]}
    else:
        root = Path(tempfile.mkdtemp(prefix="pixelrl-penalty-"))
        env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
        for seed in args.seeds:
            procs = []
            for arm, w in ARMS.items():
                d = root / f"s{seed}_{arm}"
                cmd = [sys.executable, "-m", "pixelrl.cli.main", "train", "--env", "dmc/cartpole-swingup", "--obs",
                       "state", "--preset", "cpu-fast", "--seed", str(seed), "--frames", str(args.frames),
                       "--threads", "1", "--no-video", "--no-progress", "--no-async-env", "--run-dir", str(d),
                       "--agent.actor-pre-tanh-penalty", str(w)]
                procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
                runs[arm].append(d)
            for p in procs:
                if p.wait() != 0:
                    raise SystemExit(f"a run of seed {seed} failed (exit {p.returncode})")
    result_runs = []
    for arm, dirs in runs.items():
        for d in dirs:
            cfg = json.loads((d / "config.json").read_text())
            c = curve(d)
            result_runs.append({"arm": arm, "seed": cfg["seed"], "final_eval_return": c[-1][1], "stalled": stalled(c),
                                "curve": c, "run_dir": str(d)})
            print(f"{arm:>3} seed {cfg['seed']}: final eval {c[-1][1]:6.1f}  stalled={stalled(c)}", flush=True)
    summary = {arm: {"median_final_eval_return": float(np.median([r["final_eval_return"] for r in result_runs
                                                                   if r["arm"] == arm])),
                     "stalled_runs": sum(r["stalled"] for r in result_runs if r["arm"] == arm),
                     "runs": sum(r["arm"] == arm for r in result_runs)}
               for arm in ARMS if any(r["arm"] == arm for r in result_runs)}
    result = {
        "benchmark": "cpu_fast_actor_penalty", "env": "dmc/cartpole-swingup", "obs": "state", "preset": "cpu-fast",
        "arms": {"off": "actor_pre_tanh_penalty=0 (DrQ-v2's actor loss, the peer)", "on": "actor_pre_tanh_penalty=1e-3"},
        "summary": summary, "runs": result_runs, "note": args.note,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "wall_s": round(time.perf_counter() - t0, 1),
        "reproduce": "python benchmarks/cpu_fast_actor_penalty.py --seeds " + " ".join(map(str, args.seeds)),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs",)}))


if __name__ == "__main__":
    main()
