"""Learning with an expert that intervenes (HIL-SERL / RLIF style) vs RL alone vs BC on the expert's data, on
dmc/cartpole-swingup from pixels with DrQ-v2's cpu-fast settings.

Arms (each a fresh ``pixelrl train`` process, run one after the other; the machine may be shared):

* ``rl``            -- DrQ-v2 alone (cpu-fast: 64x64 frames, action repeat 8);
* ``interventions`` -- the same, with ``scripted:cartpole`` (the hand-written swing-up controller, reading the
  simulator state) taking over for 4 steps when the L1 distance between the agent's and its action exceeds
  ``--bound``; the env's reward; intervened steps also in a buffer mixed 50/50 into every batch (HIL-SERL);
* ``rlif``          -- the same interventions with RLIF's reward (0, and -1 at each intervention's start) instead of
  the env's;
* ``bc``            -- BC (``--agent bc``) on ``--bc-episodes`` episodes of the expert, ``--bc-steps`` updates.

Also measured: the scripted expert's own return. Reported per arm and seed: evaluation return vs env frames, the
intervention rate of every training episode (it should fall as the agent improves), final returns; the JSON names
the machine. Budget knobs: ``--frames``, ``--seeds``, ``--arms``, ``--bc-episodes``, ``--bc-steps``.

    MUJOCO_GL=egl python benchmarks/intervention.py --frames 110000 --seeds 1 2 3          # the full comparison
    MUJOCO_GL=egl python benchmarks/intervention.py --frames 2000 --bc-steps 100 --out /tmp/smoke.json   # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from _cli import cpu_fast_arm, run_pixelrl

ENV = "dmc/cartpole-swingup"
ROOT = Path(__file__).resolve().parents[1]


def common(frames: int, seed: int, run: Path, eval_every: int, eval_episodes: int) -> list[str]:
    return cpu_fast_arm(ENV, frames, seed, run, eval_every, eval_episodes)


def expert_dataset(path: Path, episodes: int, seed: int) -> dict:
    """Record the scripted expert on the cpu-fast pixel env (what the BC arm learns from)."""
    from pixelrl.data.dataset import DatasetWriter
    from pixelrl.envs import make
    from pixelrl.rewards.interventions import cartpole_controller, env_state

    env = make(ENV, seed=seed, size=64, action_repeat=8, fast_render=True, obs="pixels")
    returns = []
    with DatasetWriter(path, env.observation_space, env.action_space, env_id=ENV, frame_stack=3,
                       metadata={"policy": "scripted:cartpole"}) as w:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed * 1000 + ep)
            frames, acts, rews, terms, truncs = [obs], [], [], [], []
            done = False
            while not done:
                a = cartpole_controller(env_state(env))
                obs, r, te, tr, _ = env.step(a)
                frames.append(obs), acts.append(a), rews.append(r), terms.append(te), truncs.append(tr)
                done = te or tr
            w.add_episode(np.stack(frames), np.stack(acts), np.array(rews), np.array(terms), np.array(truncs),
                          seed=seed * 1000 + ep)
            returns.append(float(np.sum(rews)))
    env.close()
    return {"episodes": episodes, "mean_return": float(np.mean(returns)), "returns": returns}


def read_run(run: Path) -> dict:
    from pixelrl.train.logger import read_rows

    evals = read_rows(run, "eval")
    train = read_rows(run, "train")
    out = {"eval": [[r.get("frames", 0), r.get("step", 0), r["eval_return"]] for r in evals],
           "final_eval_return": evals[-1]["eval_return"] if evals else None}
    if train and "intervention_rate" in train[0]:
        out["intervention_rate"] = [[r["frames"], r["intervention_rate"]] for r in train]
        rates = [r["intervention_rate"] for r in train]
        k = max(1, len(rates) // 4)
        out["intervention_rate_first_quarter"] = float(np.mean(rates[:k]))
        out["intervention_rate_last_quarter"] = float(np.mean(rates[-k:]))
        out["intervened_steps"] = int(sum(r["intervened_steps"] for r in train))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=110_000, help="env frames per online run (cpu-fast: 110k)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--arms", nargs="+", default=["rl", "interventions", "rlif", "bc"],
                   choices=["rl", "interventions", "rlif", "bc"])
    p.add_argument("--bound", type=float, default=0.5, help="action-distance trigger bound (L1)")
    p.add_argument("--bc-episodes", type=int, default=10, help="expert episodes for the BC arm")
    p.add_argument("--bc-steps", type=int, default=20_000, help="BC gradient updates")
    p.add_argument("--eval-every", type=int, default=10_000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--work", default="runs/bench-intervention", help="folder for the runs")
    p.add_argument("--out", default="benchmarks/results/intervention.json")
    p.add_argument("--label", default="", help="a note stored in the JSON (e.g. 'reduced configuration')")
    args = p.parse_args()

    from pixelrl.utils.machine import machine_description

    work = Path(args.work) / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    result: dict = {"benchmark": "intervention", "env": ENV, "machine": machine_description(), "label": args.label,
                    "config": vars(args), "arms": {}}
    intervene = ["--intervention.expert", "scripted:cartpole", "--intervention.trigger", "action-distance",
                 "--intervention.bound", str(args.bound), "--intervention.demo-ratio", "0.5"]
    for seed in args.seeds:
        for arm in args.arms:
            run = work / f"{arm}-s{seed}"
            t0 = time.perf_counter()
            if arm == "bc":
                data = work / f"expert-s{seed}"
                info = expert_dataset(data, args.bc_episodes, seed)
                result.setdefault("expert", {})[str(seed)] = info
                run_pixelrl(["train", "--dataset", str(data), "--agent", "bc", "--preset", "none", "--size", "64",
                         "--action-repeat", "8", "--fast-render", "--offline-steps",
                         str(args.bc_steps), "--eval-every-steps", str(max(args.bc_steps // 4, 1)), "--eval-episodes",
                         str(args.eval_episodes), "--seed", str(seed), "--no-video", "--no-tensorboard",
                         "--no-progress", "--run-dir", str(run)], work / f"{arm}-s{seed}.log")
            else:
                extra = [] if arm == "rl" else intervene + (["--intervention.reward", "rlif"] if arm == "rlif" else [])
                run_pixelrl(["train", *common(args.frames, seed, run, args.eval_every, args.eval_episodes), *extra],
                        work / f"{arm}-s{seed}.log")
            res = read_run(run)
            res["wall_s"] = time.perf_counter() - t0
            result["arms"].setdefault(arm, {})[str(seed)] = res
            print(f"{arm} seed {seed}: final eval {res['final_eval_return']}"
                  + (f", intervention rate {res['intervention_rate_first_quarter']:.2f} -> "
                     f"{res['intervention_rate_last_quarter']:.2f}" if "intervention_rate" in res else "")
                  + f" ({res['wall_s'] / 60:.1f} min)", flush=True)
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1))
    summary = {arm: float(np.mean([r["final_eval_return"] for r in runs.values()]))
               for arm, runs in result["arms"].items()}
    result["summary_final_eval_return"] = summary
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
