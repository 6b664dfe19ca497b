"""A learned preference reward (RL-VLM-F's ensemble, Bradley-Terry fit and PEBBLE schedule) vs the true reward, on
dmc/cartpole-swingup from pixels with DrQ-v2's cpu-fast settings; the scripted oracle (the true return of each
frame, noise and "equal" rate 0 as in RL-VLM-F's runs) stands in for the VLM.

Online arms (each a fresh ``pixelrl train`` process, one after the other; the machine may be shared):

* ``true``      -- DrQ-v2 on the env's reward;
* ``prefs-N``   -- DrQ-v2 on ``--reward prefs:scripted`` with a budget of N queries (``--queries``, default 200 and
  1000): 50 pairs per round (RL-VLM-F's cartpole ``reward_batch``), the first round when the 500 warm-up steps end,
  then rounds spread so that the budget is spent by half of the run (``query_every`` = (half the agent steps -
  warm-up) / rounds; RL-VLM-F's 5000-step spacing would fit only a round or two in a CPU-sized run).

Reported per arm and seed: evaluation return vs env frames (the env's own return in every arm), the final return,
``ratio`` = final return of ``prefs-N`` / ``true`` (goal: >= 0.9), the query-efficiency curve (final return vs N),
and for the ``prefs`` arms the fit accuracy and how often the oracle's label agreed with the model's ordering.

Offline protocol (``--offline``): a dataset collected by the ``true`` arm's final policy with action noise
(``--offline-episodes``, ``--offline-noise``), a preference model fitted on N pairs of its frames labelled by the
scripted oracle (:func:`pixelrl.rewards.preference.fit_from_dataset`), the dataset relabelled with it
(``pixelrl dataset relabel --reward prefs:DIR``), and IQL (``--offline-steps`` updates) on the relabelled vs the
original dataset.

The JSON names the machine. Budget knobs: ``--frames``, ``--seeds``, ``--queries``, ``--offline-steps``.

    MUJOCO_GL=egl python benchmarks/preference_reward.py --frames 100000 --seeds 1 2 3 --offline   # the comparison
    MUJOCO_GL=egl python benchmarks/preference_reward.py --frames 3000 --queries 100 --offline --offline-steps 200 \\
        --offline-episodes 2 --eval-every 1000 --out /tmp/smoke.json                                    # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from _cli import cpu_fast_arm, run_pixelrl

ENV = "dmc/cartpole-swingup"
QUERY_BATCH = 50
WARMUP = 500  # cpu-fast's num_seed_steps
ACTION_REPEAT = 8  # cpu-fast


def common(frames: int, seed: int, run: Path, eval_every: int, eval_episodes: int) -> list[str]:
    return cpu_fast_arm(ENV, frames, seed, run, eval_every, eval_episodes)


def schedule(frames: int, queries: int) -> dict:
    """Rounds of 50 pairs from the end of the warm-up until half of the run's agent steps."""
    steps = frames // ACTION_REPEAT
    rounds = max(1, math.ceil(queries / QUERY_BATCH))
    every = max(1, (steps // 2 - WARMUP) // rounds)
    return {"query_batch": QUERY_BATCH, "query_every": every, "max_queries": queries, "rounds": rounds}


def read_run(run: Path) -> dict:
    from pixelrl.train.logger import read_rows

    evals, train = read_rows(run, "eval"), read_rows(run, "train")
    out = {"eval": [[r["frames"], r["eval_return"]] for r in evals],
           "final_eval_return": evals[-1]["eval_return"] if evals else None,
           "frames": evals[-1]["frames"] if evals else 0}
    if train and "pref_sent" in train[-1]:
        out.update({"queries_sent": train[-1]["pref_sent"], "labels_kept": train[-1]["pref_labels"],
                    "fit_acc": [[r["frames"], r["pref_fit_acc"]] for r in train if r["pref_rounds"] > 0]})
    return out


def offline(args, work: Path, seed: int, policy_run: Path) -> dict:
    """Collect -> fit a preference model on N labelled pairs -> relabel -> IQL, vs IQL on the true reward."""
    from pixelrl.data.dataset import load_dataset
    from pixelrl.rewards.oracles import ScriptedOracle
    from pixelrl.rewards.preference import fit_from_dataset

    data = work / f"offline-s{seed}" / "data"
    data.parent.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    out["collect_s"] = run_pixelrl(["collect", "--policy", str(policy_run), "--episodes", str(args.offline_episodes),
                                "--noise-std", str(args.offline_noise), "--seed", str(seed), "--out", str(data),
                                "--no-progress", "--device", "cpu"], data.parent / "collect.log")
    ds = load_dataset(data)
    returns = [float(np.sum(e["rewards"])) for e in ds.iter_episodes()]
    out["dataset"] = {"episodes": len(returns), "transitions": ds.num_transitions, "mean_return": float(np.mean(returns))}
    for n in args.queries:
        t0 = time.perf_counter()
        model_dir = data.parent / f"rm-{n}"
        model = fit_from_dataset(ds, ScriptedOracle(seed=seed), queries=n, out=model_dir, seed=seed)
        arm = {"fit": model.history[-1], "fit_s": time.perf_counter() - t0}
        relabelled = data.parent / f"data-prefs-{n}"
        arm["relabel_s"] = run_pixelrl(["dataset", "relabel", str(data), "--out", str(relabelled), "--reward",
                                    f"prefs:{model_dir}", "--device", "cpu", "--no-progress"],
                                   data.parent / f"relabel-{n}.log")
        out[f"prefs-{n}"] = arm
    for name, path in [("true", data)] + [(f"prefs-{n}", data.parent / f"data-prefs-{n}") for n in args.queries]:
        run = data.parent / f"iql-{name}"
        s = run_pixelrl(["train", "--dataset", str(path), "--agent", "iql", "--preset", "none", "--size", "48",
                     "--action-repeat", str(ACTION_REPEAT), "--fast-render", "--offline-steps", str(args.offline_steps),
                     "--eval-every-frames", str(10 ** 9), "--eval-episodes", str(args.eval_episodes),
                     "--seed", str(seed), "--no-video", "--no-tensorboard", "--no-progress", "--run-dir", str(run)],
                    data.parent / f"iql-{name}.log")
        from pixelrl.train.logger import read_rows

        evals = read_rows(run, "eval")
        out.setdefault(name, {})["iql_final_eval_return"] = evals[-1]["eval_return"] if evals else None
        out[name]["iql_s"] = s
    base = out["true"]["iql_final_eval_return"]
    for n in args.queries:
        r = out[f"prefs-{n}"]["iql_final_eval_return"]
        out[f"prefs-{n}"]["ratio_to_true"] = (r / base) if base else None
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=100_000, help="env frames per online run")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--queries", type=int, nargs="+", default=[200, 1000], help="query budgets N of the prefs arms")
    p.add_argument("--eval-every", type=int, default=10_000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--offline", action="store_true", help="also run the offline protocol (IQL)")
    p.add_argument("--offline-episodes", type=int, default=20)
    p.add_argument("--offline-noise", type=float, default=0.3)
    p.add_argument("--offline-steps", type=int, default=20_000)
    p.add_argument("--work", default="runs/bench-preference", help="folder for the runs")
    p.add_argument("--out", default="benchmarks/results/preference_reward.json")
    p.add_argument("--label", default="", help="a note stored in the JSON (e.g. 'reduced configuration')")
    args = p.parse_args()

    from pixelrl.utils.machine import machine_description

    work = Path(args.work) / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    result: dict = {"benchmark": "preference_reward", "env": ENV, "machine": machine_description(),
                    "label": args.label, "config": vars(args), "online": {}, "offline": {}}
    out_path = Path(args.out)
    for seed in args.seeds:
        arms = {}
        true_run = work / f"true-s{seed}"
        arms["true"] = {"wall_s": run_pixelrl(["train", *common(args.frames, seed, true_run, args.eval_every,
                                                              args.eval_episodes)], work / f"true-s{seed}.log"),
                        **read_run(true_run)}
        for n in args.queries:
            sched = schedule(args.frames, n)
            run = work / f"prefs{n}-s{seed}"
            extra = ["--reward", "prefs:scripted", "--reward.query-batch", str(sched["query_batch"]),
                     "--reward.query-every", str(sched["query_every"]), "--reward.max-queries", str(n)]
            wall = run_pixelrl(["train", *common(args.frames, seed, run, args.eval_every, args.eval_episodes), *extra],
                           work / f"prefs{n}-s{seed}.log")
            arm = {"wall_s": wall, "schedule": sched, **read_run(run)}
            t, r = arms["true"]["final_eval_return"], arm["final_eval_return"]
            arm["ratio_to_true"] = (r / t) if t else None
            arms[f"prefs-{n}"] = arm
        result["online"][f"seed{seed}"] = arms
        if args.offline:
            result["offline"][f"seed{seed}"] = offline(args, work, seed, true_run)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1))  # after every seed: a partial result survives
    # query-efficiency curve: final return vs N, mean over seeds (N = 0 is not run: no reward at all)
    curve = []
    for n in args.queries:
        vals = [result["online"][s][f"prefs-{n}"]["final_eval_return"] for s in result["online"]]
        ratios = [result["online"][s][f"prefs-{n}"]["ratio_to_true"] for s in result["online"]]
        curve.append({"queries": n, "mean_final_return": float(np.mean(vals)),
                      "mean_ratio_to_true": float(np.mean([x for x in ratios if x is not None] or [np.nan]))})
    result["query_efficiency"] = curve
    result["true_mean_final_return"] = float(np.mean([result["online"][s]["true"]["final_eval_return"]
                                                      for s in result["online"]]))
    out_path.write_text(json.dumps(result, indent=1))
    print(json.dumps({"query_efficiency": curve, "true": result["true_mean_final_return"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
