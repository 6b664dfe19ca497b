"""What the benchmarks that train through the command line share: run ``pixelrl ...`` in a fresh process with its
output in a log file, and the arguments of a cpu-fast DrQ-v2 arm trained for a fixed number of frames."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def run_pixelrl(args: list[str], log: Path) -> float:
    """``python -m pixelrl.cli.main ARGS`` with stdout and stderr in ``log``; the wall time in seconds. A failure
    stops the benchmark naming the log."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "pixelrl.cli.main", *args], stdout=f, stderr=subprocess.STDOUT,
                            env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}).returncode
    if rc != 0:
        raise SystemExit(f"pixelrl {' '.join(args[:3])} failed (exit {rc}); see {log}")
    return time.perf_counter() - t0


def cpu_fast_arm(env: str, frames: int, seed: int, run: Path, eval_every: int, eval_episodes: int) -> list[str]:
    """``pixelrl train`` arguments of DrQ-v2 with the cpu-fast preset for exactly ``frames`` frames: the preset's
    wall-clock budget is lifted, so arms compared at the same frames are not cut short by a busy machine."""
    return ["--env", env, "--agent", "drqv2", "--preset", "cpu-fast", "--frames", str(frames), "--seed", str(seed),
            "--time-budget-min", "100000", "--eval-every-frames", str(eval_every), "--eval-episodes",
            str(eval_episodes), "--no-video", "--no-tensorboard", "--no-progress", "--run-dir", str(run)]
