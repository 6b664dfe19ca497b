"""SQIRL and the effective horizon, measured: for each task, SQIRL runs over (k, m, lr) and seeds, success judged
against the task's bar, and the effective-horizon estimate ``min over (k, m) solved by at least half the seeds of
max(k, log_A m)`` (:func:`pixelrl.agents.sqirl.horizon_estimate`); for the tabular two-step MDP also the exact
k-QVI-solvability (the authors' ``min_k``), which the SQIRL runs must agree with.

    python benchmarks/sqirl_effective_horizon.py                       # ~6 min on 2 cores
    python benchmarks/sqirl_effective_horizon.py --quick               # one seed, fewer settings

Writes ``benchmarks/results/sqirl_effective_horizon_cpu.json`` (machine named inside)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "train"))

from pixelrl.agents.sqirl import horizon_estimate, qvi_min_k  # noqa: E402
from pixelrl.train.setup import build_config  # noqa: E402
from pixelrl.train.sqirl import SQIRLTrainer  # noqa: E402
from pixelrl.utils.machine import machine_description  # noqa: E402


def run(env: str, agent: dict, frames: int, seed: int, root: Path) -> dict:
    cfg = build_config(env=env, agent_name="sqirl", preset="none", device="cpu", obs="state", frames=frames,
                       eval_every_frames=frames, eval_episodes=10, threads=1, progress=False, tensorboard=False,
                       video=False, seed=seed, run_dir=str(root / f"{env.replace('/', '_')}_{time.time_ns()}"),
                       agent=agent)
    t0 = time.perf_counter()
    s = SQIRLTrainer(cfg).run()
    return {"seed": seed, "final_eval_return": s["final_eval_return"], "random_return": s["random_return"],
            "frames": s["frames"], "ended_by": s["ended_by"],
            "timesteps_learned": s["effective_horizon"]["timesteps_learned"], "wall_s": time.perf_counter() - t0}


def sweep(env: str, settings: list[dict], seeds: list[int], frames: int, bar: float, num_actions: int,
          root: Path) -> dict:
    rows = []
    for agent in settings:
        runs = [run(env, agent, frames, s, root) for s in seeds]
        solved = sum(r["final_eval_return"] >= bar for r in runs)
        row = {"agent": agent, "runs": runs, "solved": solved, "of": len(runs),
               "estimate_if_solved": horizon_estimate(agent["planning_depth"], agent["episodes_per_timestep"],
                                                      num_actions)}
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}),
              [round(r["final_eval_return"], 1) for r in runs], flush=True)
        rows.append(row)
    ok = [r["estimate_if_solved"] for r in rows if 2 * r["solved"] >= r["of"]]
    return {"env": env, "frames": frames, "success_bar": bar, "num_actions": num_actions, "seeds": seeds,
            "settings": rows, "effective_horizon_estimate": min(ok) if ok else None}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "sqirl_effective_horizon_cpu.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    import test_sqirl as t  # the two-step MDP, registered as gym/PixelrlSqirlTwoStep-v0

    seeds = [1] if args.quick else [1, 2, 3]
    t0 = time.perf_counter()
    out = {"machine": f"{platform.node()}: {machine_description()}",
           "note": "success = final evaluation (10 episodes) >= success_bar; estimate = min over settings solved by "
                   "at least half the seeds of max(k, log_A m)"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tab = {"planning_depth": 1, "episodes_per_timestep": 16, "discount": 1.0, "lr": 1e-2, "n_epochs": 400,
               "idle_iterations": 0}
        tabs = [{**tab, "planning_depth": k, "episodes_per_timestep": m} for k in (1, 2) for m in (1, 2, 4, 16)]
        two = sweep(f"gym/{t.ENV_ID}", tabs, seeds, 10_000, 1.0 - 1e-6, 2, root)
        two["exact_min_k"] = qvi_min_k(t.P, t.R, horizon=2)
        out["two_step_mdp"] = two
        cp = [{"planning_depth": 1, "episodes_per_timestep": 1, "lr": 1e-4},   # the authors' defaults
              {"planning_depth": 1, "episodes_per_timestep": 16, "lr": 1e-4},
              {"planning_depth": 1, "episodes_per_timestep": 1, "lr": 1e-3},
              {"planning_depth": 1, "episodes_per_timestep": 4, "lr": 1e-3},
              {"planning_depth": 1, "episodes_per_timestep": 16, "lr": 1e-3},  # the gym preset
              {"planning_depth": 2, "episodes_per_timestep": 16, "lr": 1e-3}]
        if args.quick:
            cp = cp[-2:]
        out["cartpole"] = sweep("gym/CartPole-v1", cp, seeds[:2], 60_000, 195.0, 2, root)
    out["wall_s"] = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: (v["effective_horizon_estimate"] if isinstance(v, dict) and "settings" in v else v)
                      for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
