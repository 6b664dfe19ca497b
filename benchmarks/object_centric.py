"""The object-centric RL benchmark (Yoon et al. 2023, "An Investigation into Pre-Training Object-Centric
Representations for RL"): PPO's success rate per task with a frozen pretrained Slot Attention encoder (``slots``),
the end-to-end NatureCNN (``cnn``) and the ground-truth object state (``state``), in distribution and on the
out-of-distribution splits.

Pipeline: ``pixelrl pretrain slots`` (reconstruction on generated images of 5 random objects) once, then for each
task and arm one ``pixelrl train --agent ppo`` run with the benchmark's PPO preset (4 envs x 2048 steps, minibatches
of 32, 10 epochs, lr 3e-4, gamma 0.99, clip 0.2, entropy 0.01), then the success rate (share of episodes that end
on the target; greedy actions) on ``--eval-episodes`` fresh episodes of the task and of its OOD splits:

* object comparison: a colour seen in pretraining but not in RL (yellow), a colour unseen even in pretraining
  (pink), and 3 / 5 / 6 objects instead of 4;
* property comparison / object goal: 3 / 5 / 6 objects;
* with ``--pairing``: an extra run trained on ``shapes-property-comparison-pairing-train`` (the blue/yellow pairing
  held out), evaluated on ``...-pairing-test`` (only that pairing).

Configurations:

* ``--config full`` (a GPU, ``--device cuda``): the paper's budget: 2M agent steps per run, the encoder pretrained
  on 1M images for 500k steps of 64 with the paper's architecture (4 conv layers at full resolution, 6 slots x 64,
  7 iterations), 100 evaluation episodes. Hours per run on one GPU.
* ``--config reduced-cpu`` (the default): the same PPO settings and task definitions with a budget a 2-core CPU can
  run in well under an hour: ``--frames`` 16,384 per run (2 PPO updates, 0.8% of the paper's 2M), the encoder
  pretrained for ``--pretrain-steps`` 300 steps of 32 on 10,000 images with a smaller architecture (stride 2 in the
  first two convolutions, 32 channels, the decoder reconstructing a 32x32 image). At that size neither the
  encoder nor the policies are trained: the numbers test the pipeline end to end and show where learning starts,
  they are not a reproduction of the paper's table.

The paper's success rates (SLATE slots / end-to-end CNN / ground-truth state, in task order object goal, object
interaction, object comparison, property comparison) are recorded in the JSON beside ours.

    .venv/bin/python benchmarks/object_centric.py                         # reduced CPU configuration
    .venv/bin/python benchmarks/object_centric.py --config full --device cuda --pairing
    .venv/bin/python benchmarks/object_centric.py --tasks object-goal --arms cnn state --frames 8192   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TASKS = ("object-goal", "object-interaction", "object-comparison", "property-comparison")
ARMS = ("slots", "cnn", "state")
PAPER = {  # Yoon et al. 2023, success rates after 2M steps (SLATE encoder; order: goal, interaction, comparisons)
    "slots (SLATE)": {"object-goal": 0.985, "object-interaction": 0.787, "object-comparison": 0.979,
                      "property-comparison": 0.980},
    "cnn": {"object-goal": 0.987, "object-interaction": 0.784, "object-comparison": 0.225,
            "property-comparison": 0.232},
    "state": {"object-goal": 0.974, "object-interaction": 0.795, "object-comparison": 0.973,
              "property-comparison": 0.968},
}
CONFIGS = {
    "reduced-cpu": {"frames": 16_384, "pretrain_images": 10_000, "pretrain_steps": 300, "pretrain_batch": 32,
                    "eval_episodes": 50, "model": {"encoder_stride": 2, "cnn_channels": 32, "decoder_channels": 32,
                                                   "decoder_size": 32}},
    "full": {"frames": 2_000_000, "pretrain_images": 1_000_000, "pretrain_steps": 500_000, "pretrain_batch": 64,
             "eval_episodes": 100, "model": {}},
}


def _ood(task: str) -> dict[str, tuple[str, dict]]:
    """name -> (env id, options) of the evaluations of a policy trained on ``task``."""
    base = f"builtin/shapes-{task}"
    out = {"in-distribution": (base, {})}
    if task == "object-comparison":
        out["ood color seen in pretraining (yellow)"] = ("builtin/shapes-object-comparison-ood-seen-color", {})
        out["ood color unseen (pink)"] = ("builtin/shapes-object-comparison-ood-unseen-color", {})
    if task != "object-interaction":
        for n in (3, 5, 6):
            out[f"{n} objects"] = (base, {"num_objects": n})
    return out


def success_rate(agent, env_id: str, obs: str, options: dict, episodes: int, seed: int) -> float:
    from pixelrl.envs import make

    env = make(env_id, seed=seed, size=64, obs=obs, **options)
    wins = 0
    for ep in range(episodes):
        o, _ = env.reset(seed=seed * 100_003 + ep)
        done, info, step = False, {}, 0
        while not done:
            o, _, term, trunc, info = env.step(agent.act(o, step=step, eval_mode=True))
            done, step = term or trunc, step + 1
        wins += bool(info.get("is_success"))
    env.close()
    return wins / episodes


def pretrain(args, cfgv: dict, work: Path) -> dict:
    from pixelrl.nets.slots import SlotConfig
    from pixelrl.train.pretrain import PretrainConfig, pretrain_slots

    # Locatello et al.'s 10k warm-up steps, at most a tenth of a shorter run (else its lr would never rise)
    pc = PretrainConfig(images=args.pretrain_images, steps=args.pretrain_steps, batch_size=cfgv["pretrain_batch"],
                        warmup_steps=min(10_000, args.pretrain_steps // 10),
                        seed=args.seed, device=args.device, threads=args.threads, log_every=50,
                        checkpoint_every=max(args.pretrain_steps // 2, 1), model=SlotConfig(**cfgv["model"]))
    t = time.time()
    s = pretrain_slots(pc, work / "encoder")
    s["wall_s"] = time.time() - t
    s["config"] = {"images": pc.images, "steps": pc.steps, "batch_size": pc.batch_size,
                   "warmup_steps": pc.warmup_steps, "lr": pc.lr, "model": pc.model.to_dict()}
    return s


def run_arm(args, task_env: str, arm: str, encoder_dir: Path, work: Path, eval_sets: dict) -> dict:
    from pixelrl.train.setup import build_config, trainer_class

    obs = "state" if arm == "state" else "pixels"
    agent = {"encoder": "slots", "slot_encoder": str(encoder_dir), "pooling": args.pooling} if arm == "slots" else {}
    if args.rollout_steps:  # shorter rollouts, same minibatch size of 32 (4 envs)
        agent.update(rollout_steps=args.rollout_steps, num_minibatches=4 * args.rollout_steps // 32)
    env_options = {"max_objects": 7} if arm == "state" and "interaction" not in task_env else {}
    run_dir = work / f"{task_env.split('/')[-1]}-{arm}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = build_config(task_env, "ppo", preset="paper", device=args.device, run_dir=str(run_dir), obs=obs,
                       seed=args.seed, frames=args.frames, eval_every_frames=10 ** 12, eval_episodes=2,
                       eval_random=False, threads=args.threads, progress=False, video=False, tensorboard=False,
                       env_options=env_options, agent=agent)
    t = time.time()
    trainer = trainer_class(cfg)(cfg)
    summary = trainer.run()
    train_s = time.time() - t
    rates = {}
    for name, (env_id, opts) in eval_sets.items():
        rates[name] = success_rate(trainer.agent, env_id, obs, {**env_options, **opts}, args.eval_episodes,
                                   args.seed + 1)
    return {"success": rates, "train_s": train_s, "frames": summary["frames"],
            "final_eval_return": summary["final_eval_return"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=tuple(CONFIGS), default="reduced-cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    ap.add_argument("--pooling", default="transformer", choices=("transformer", "relation", "mlp"))
    ap.add_argument("--frames", type=int, default=None, help="agent steps per run (default: the config's)")
    ap.add_argument("--pretrain-images", type=int, default=None)
    ap.add_argument("--pretrain-steps", type=int, default=None)
    ap.add_argument("--eval-episodes", type=int, default=None)
    ap.add_argument("--rollout-steps", type=int, default=0,
                    help="steps per env per PPO rollout (0: the preset's 2048); minibatches stay 32 rows")
    ap.add_argument("--pairing", action="store_true", help="also the held-out colour pairing run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/pixelrl_object_centric")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/object_centric_<config>.json)")
    ap.add_argument("--note", default="", help="recorded in the JSON (e.g. that the machine was shared)")
    ap.add_argument("--append", action="store_true",
                    help="add these tasks' runs to the existing --out JSON (same settings; the encoder in --work is "
                         "reused: its pretraining is already done)")
    args = ap.parse_args()
    cfgv = CONFIGS[args.config]
    for k in ("frames", "pretrain_images", "pretrain_steps", "eval_episodes"):
        if getattr(args, k) is None:
            setattr(args, k, cfgv[k])
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"object_centric_{args.config.replace('-', '_')}.json")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from pixelrl.utils.machine import machine_description

    torch.set_num_threads(args.threads)
    t0 = time.time()
    result: dict = {
        "benchmark": "object_centric", "config": args.config, "device": args.device,
        "machine": machine_description(), "cpu_count": os.cpu_count(), "note": args.note,
        "settings": {"frames_per_run": args.frames, "paper_frames_per_run": 2_000_000,
                     "eval_episodes": args.eval_episodes, "pooling": args.pooling, "seed": args.seed,
                     "rollout_steps": args.rollout_steps or 2048,
                     "ppo": "the ppo preset for builtin/shapes-* (pixelrl.agents.ppo.SHAPES)"},
        "paper_success": PAPER, "pretrain": None, "runs": {},
    }

    def save() -> None:
        result["wall_min"] = (time.time() - t0) / 60
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")

    encoder_dir = work / "encoder"
    if args.append and out.exists():
        old = json.loads(out.read_text())
        if old["settings"] != result["settings"]:
            raise SystemExit(f"--append: {out} was run with other settings {old['settings']}")
        result["runs"], result["pretrain"] = old["runs"], old["pretrain"]
        result["note"] = old["note"] + (" | " + args.note if args.note and args.note != old["note"] else "")
        t0 -= old.get("wall_min", 0) * 60
    if "slots" in args.arms and result["pretrain"] is None:
        result["pretrain"] = pretrain(args, cfgv, work)
        save()
    plan = [(t, f"builtin/shapes-{t}", _ood(t)) for t in args.tasks]
    if args.pairing:
        plan.append(("property-comparison-pairing", "builtin/shapes-property-comparison-pairing-train",
                     {"in-distribution": ("builtin/shapes-property-comparison-pairing-train", {}),
                      "held-out pairing": ("builtin/shapes-property-comparison-pairing-test", {})}))
    for task, env_id, evals in plan:
        for arm in args.arms:
            print(f"[{(time.time() - t0) / 60:5.1f} min] {task} / {arm}", flush=True)
            r = run_arm(args, env_id, arm, encoder_dir, work, evals)
            result["runs"].setdefault(task, {})[arm] = r
            print(f"    success {json.dumps(r['success'])} ({r['train_s']:.0f}s)", flush=True)
            save()
    table = {task: {arm: r["success"]["in-distribution"] for arm, r in arms.items()}
             for task, arms in result["runs"].items()}
    result["summary"] = {"in_distribution_success": table}
    save()
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
