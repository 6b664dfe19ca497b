"""What one gradient update of the ``cpu-fast`` preset costs on this CPU: the preset before issue 13 (64x64 frames)
against the current one, in fp32 and bf16 autocast, with the machine's own kernels and with torch / oneDNN / MKL
limited to AVX2 (an approximation of an AVX2-only CPU such as the AMD EPYC where bf16 was ~10x slower).

Every arm runs in its own subprocess (the kernel limits are read at process start), timing the agent's real
``update`` on a synthetic batch: a few warm-up updates, then the median of ``--reps``. It also prints what
``precision='auto'`` chooses in each setting, the preset's update time for its frames (updates x update time; the env
steps in a subprocess, overlapped with the update; evaluation is not counted) and, for the current preset, the
frames its time budget allows at that update time (an upper bound: acting and evaluation also take time). Every arm
runs once per round (``--rounds``), so a noisy stretch of a shared machine hits all arms alike; medians over rounds.

    .venv/bin/python benchmarks/cpu_fast_cost.py              # writes benchmarks/results/cpu_fast_cost_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
OLD_PRESET = {"size": 64, "frames": 110_000}
"""The cpu-fast preset's image size and frame budget before issue 13 (the peer); the network was the same."""


def child(size: int, precision: str, reps: int, threads: int) -> dict:
    import gymnasium as gym
    import numpy as np
    import torch

    from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
    from pixelrl.agents.presets import cpu_fast
    from pixelrl.data.batch import Batch

    torch.set_num_threads(threads)
    agent_keys = {f for f in DrQv2Config.__dataclass_fields__}
    kw = {k: v for k, v in cpu_fast.items() if k in agent_keys}
    obs = gym.spaces.Box(0, 255, (9, size, size), np.uint8)
    act = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    torch.manual_seed(0)
    agent = DrQv2Agent(obs, act, DrQv2Config(**{**kw, "precision": precision}))
    n = int(kw["batch_size"])
    g = torch.Generator().manual_seed(0)
    o = torch.randint(0, 256, (n, 9, size, size), dtype=torch.uint8, generator=g)
    batch = Batch(obs=o, action=torch.rand(n, 1, generator=g) * 2 - 1, reward=torch.rand(n, 1, generator=g),
                  discount=torch.full((n, 1), 0.99), next_obs=o.roll(1, 0))
    for _ in range(3):
        agent.update(batch, step=100_000)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        agent.update(batch, step=100_000)
        times.append(time.perf_counter() - t0)
    auto = DrQv2Agent(obs, act, DrQv2Config(**{**kw, "precision": "auto"}))
    return {"update_ms": 1e3 * statistics.median(times), "auto": auto.precision, "auto_reason": auto.precision_reason}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/cpu_fast_cost_cpu.json")
    ap.add_argument("--child", nargs=2, metavar=("SIZE", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.reps, args.threads)))
        return

    from pixelrl.agents.presets import cpu_fast
    from pixelrl.utils.machine import machine_description
    from pixelrl.utils.precision import cpu_flags

    env0 = {k: v for k, v in os.environ.items() if k not in AVX2_ENV and k != "PIXELRL_PRECISION"}
    presets = {"before (64x64)": OLD_PRESET, "current": {"size": cpu_fast["size"], "frames": cpu_fast["frames"]}}
    arms = [(kernels, extra, name, p, precision) for kernels, extra in (("native", {}), ("AVX2-limited", AVX2_ENV))
            for name, p in presets.items() for precision in ("fp32", "bf16")]
    samples: dict[int, list[dict]] = {i: [] for i in range(len(arms))}
    for rnd in range(args.rounds):  # every arm once per round: a noisy stretch of the machine hits all arms alike
        for i, (kernels, extra, name, p, precision) in enumerate(arms):
            out = subprocess.run([sys.executable, __file__, "--child", str(p["size"]), precision,
                                  "--reps", str(args.reps), "--threads", str(args.threads)],
                                 env={**env0, **extra}, capture_output=True, text=True, check=True)
            samples[i].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {rnd + 1}: {kernels:13s} {name:15s} {precision}: {samples[i][-1]['update_ms']:7.1f} ms",
                  flush=True)
    rows = []
    for i, (kernels, extra, name, p, precision) in enumerate(arms):
        per_round = [s["update_ms"] for s in samples[i]]
        r = {"update_ms": statistics.median(per_round), "update_ms_rounds": per_round,
             "auto": [s["auto"] for s in samples[i]], "auto_reason": samples[i][-1]["auto_reason"]}
        updates = p["frames"] // cpu_fast["action_repeat"] - cpu_fast["num_seed_steps"]
        r.update(kernels=kernels, preset=name, size=p["size"], precision=precision, frames=p["frames"],
                 updates=updates, projected_update_min=updates * r["update_ms"] / 6e4,
                 frames_in_budget=None if p is OLD_PRESET else int(
                     cpu_fast["time_budget_min"] * 6e4 / r["update_ms"] + cpu_fast["num_seed_steps"])
                 * cpu_fast["action_repeat"])
        rows.append(r)
        print(f"{kernels:13s} {name:15s} {precision}: median {r['update_ms']:7.1f} ms/update over {args.rounds} rounds; "
              f"auto -> {sorted(set(r['auto']))}", flush=True)
    ratios = {}
    for kernels in ("native", "AVX2-limited"):
        def ms(preset, prec):
            return next(r["update_ms"] for r in rows if r["kernels"] == kernels and r["preset"] == preset
                        and r["precision"] == prec)
        ratios[kernels] = {"bf16_over_fp32_current": ms("current", "bf16") / ms("current", "fp32"),
                           "before_over_current_fp32": ms("before (64x64)", "fp32") / ms("current", "fp32")}
    result = {"machine": machine_description(), "threads": args.threads,
              "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
              "avx2_env": AVX2_ENV, "rows": rows, "ratios": ratios,
              "note": "AVX2-limited = torch/oneDNN/MKL kernels limited by environment variables on this CPU: an "
                      "approximation of an AVX2-only machine of the same clock, not a measurement on one.",
              "reproduce": f"python benchmarks/cpu_fast_cost.py --reps {args.reps} --rounds {args.rounds} "
                           f"--threads {args.threads}"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"ratios": ratios, "machine": result["machine"]}))


if __name__ == "__main__":
    main()
