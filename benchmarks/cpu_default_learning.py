"""Does the `make train` default learn on this machine, and how fast?

Runs `pixelrl train` with its defaults (env dmc/cartpole-swingup, preset auto -> cpu-fast on a CPU) for each seed,
one after the other, and reports the final evaluation return against the uniform random policy's return
measured in the same run (the peer), plus wall time. Last line: JSON, also written to
benchmarks/results/cpu_default_learning.json.

    .venv/bin/python benchmarks/cpu_default_learning.py --seeds 1 2
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="extra `pixelrl train` arguments")
    ap.add_argument("--out", default="benchmarks/results/cpu_default_learning.json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pixelrl-cpu-default-"))
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    runs = []
    for seed in args.seeds:
        run_dir = root / f"s{seed}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pixelrl.cli.main", "train", "--seed", str(seed), "--run-dir",
                        str(run_dir), "--no-progress", *args.extra], env=env, check=True)
        wall = time.perf_counter() - t0
        summary = json.loads((run_dir / "summary.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                 if '"kind": "eval"' in line]
        runs.append({"seed": seed, "final_eval_return": summary["final_eval_return"],
                     "random_return": summary["random_return"], "wall_s": wall,
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
        "wall_min_median": float(np.median([r["wall_s"] for r in runs]) / 60), "runs": runs,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "reproduce": "python benchmarks/cpu_default_learning.py --seeds " + " ".join(map(str, args.seeds)),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))


if __name__ == "__main__":
    main()
