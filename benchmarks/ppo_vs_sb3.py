"""PPO: pixelrl vs Stable-Baselines3, same hyper-parameters and frame budget, on Atari Breakout (pixels) and
HalfCheetah (states): env frames per second of the whole training, and the score.

Each (task, seed, library) is one fresh subprocess, the two libraries alternating (ours, SB3, SB3, ours, ...) so
that both see the same machine load; the same torch thread count on both sides (``--threads``, default 1: on a
shared 2-core machine, 2 threads made both sides several times slower on the small MuJoCo networks).

* Breakout: ours ``pixelrl.train`` with the ``ppo`` agent's Atari preset (CleanRL ``ppo_atari.py``: 8 envs x 128
  steps, 4 minibatches, 4 epochs, lr 2.5e-4 annealed, clip 0.1 with value clipping, entropy 0.01; ALE v5 without
  sticky actions, frame skip 4 with max-pool, 84x84 grey, stack 4, FIRE and up to 30 no-ops at reset, reward signs,
  a lost life ends the return). SB3: ``PPO("CnnPolicy")`` on SB3's own Atari pipeline (``make_atari_env`` on
  ``BreakoutNoFrameskip-v4`` = the same emulator settings, ``AtariWrapper``: no-ops, max-and-skip 4, episodic life,
  fire reset, 84x84 grey, reward clip; ``VecFrameStack(4)``; its default ``DummyVecEnv``), with the same values
  (``n_steps=128``, ``batch_size=256``, ``n_epochs=4``, linear lr from 2.5e-4, ``clip_range=0.1``,
  ``clip_range_vf=0.1``, ``ent_coef=0.01``, ``vf_coef=0.5``, ``max_grad_norm=0.5``, ``gae_lambda=0.95``). Both use
  the NatureCNN shared by both heads with orthogonal init (SB3's ``ortho_init``: gains sqrt(2), 0.01, 1).
* HalfCheetah-v5, states: ours with the MuJoCo preset (CleanRL ``ppo_continuous_action.py``: 1 env x 2048 steps,
  32 minibatches of 64, 10 epochs, lr 3e-4 annealed, clip 0.2 with value clipping, no entropy bonus, observation
  and reward normalisation with clips at 10, separate 64-64 tanh actor and critic, log std 0). SB3:
  ``PPO("MlpPolicy")`` on ``VecNormalize(DummyVecEnv([Monitor(gym.make("HalfCheetah-v5"))]), gamma=0.99)`` with
  ``net_arch=dict(pi=[64, 64], vf=[64, 64])``, tanh, ``log_std_init=0`` and the same values as ours.

Score: the mean raw return (game score, or env return before normalisation) of the last ``--last-episodes``
training episodes on both sides (what CleanRL's and SB3's logs report), plus our final evaluation. Frames/s: env
frames (emulator frames on Atari, 4 per agent step; MuJoCo env steps) divided by the training wall time (ours: up to
the last rollout's row, minus the evaluation at frame 0; SB3: ``model.learn``). Medians over seeds and the ratio
ours / SB3.

Default CPU configuration (about 12 minutes on 2 cores): seeds 1 2 3, Breakout 40,960 frames (10 rollouts),
HalfCheetah 49,152 steps (24 rollouts). Those budgets measure speed; the scores at them are early-training numbers
(Breakout barely above the random policy's ~1.5; HalfCheetah a few hundred), comparable between the two libraries
but not with published 10M-step / 1M-step results::

    MUJOCO_GL=egl .venv/bin/python benchmarks/ppo_vs_sb3.py
    .venv/bin/python benchmarks/ppo_vs_sb3.py --tasks halfcheetah --seeds 1 --mujoco-frames 1000000   # full budget

Results: ``ppo_vs_sb3_cpu.json`` (before the channels_last trunk and fused Adam: 1.30x / 1.13x) and
``ppo_vs_sb3_cpu_v2.json`` (after: 1.45x on Breakout, 1.18x on HalfCheetah), both on the shared 2-core EPYC;
``ppo_vs_sb3_cpu_auto_precision.json`` (Breakout only, ours with ``precision`` auto, which picked bf16 on that
AVX512-BF16 CPU: 1.92x idle; ``_shared``: 1.97x with the machine shared). ``--precision fp32`` pins our side to
CleanRL's fp32 arithmetic. Ours counts emulator frames including the reset no-ops and runs whole rollouts past the
budget (11,264 agent steps for 40,960 frames, SB3 10,240); agent steps/s give the same ratio (``runs`` hold
``agent_steps`` and ``train_s``).

Where our time goes: each of our runs records its seconds of env stepping, acting and updating (``phase_s``, summed
over the trainer's per-rollout rows), and the summary adds each phase's share and two ceilings of the ratio with our
update as it is: the ratio if env stepping and acting took no time (``ratio_ceiling_update_only``), and if only env
stepping took none (``ratio_ceiling_env_hidden``, what stepping the envs while the policy acts could at best give;
on-policy PPO cannot overlap either with the update, which needs the whole rollout).

Needs ``stable-baselines3`` (``.venv/bin/pip install stable-baselines3``), ale-py and MuJoCo.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = ("breakout", "halfcheetah")
PHASES = ("env_s", "act_s", "update_s")
"""Our trainer's per-rollout timings (train rows): stepping the envs, acting (policy forward, GAE and storage), and
the PPO update (every epoch and minibatch)."""


# --------------------------------------------------------------------------------------------- one run each side


def _ours(task: str, seed: int, frames: int, threads: int, last: int, run_dir: str) -> dict:
    from pixelrl.train.logger import read_rows
    from pixelrl.train.setup import build_config, trainer_class

    env, obs = ("ale/Breakout", "pixels") if task == "breakout" else ("gym/HalfCheetah-v5", "state")
    cfg = build_config(env, "ppo", preset="paper", device="cpu", run_dir=run_dir, obs=obs, seed=seed, frames=frames,
                       eval_every_frames=10 ** 12, eval_episodes=5, eval_random=False, threads=threads,
                       progress=False, video=False, tensorboard=False)
    summary = trainer_class(cfg)(cfg).run()
    train, evals = read_rows(run_dir, "train"), read_rows(run_dir, "eval")
    config = json.loads((Path(run_dir) / "config.json").read_text())
    last_row = train[-1]
    train_s = last_row["wall_s"] - sum(r["eval_s"] for r in evals if r["frames"] < last_row["frames"])
    returns = []  # rows hold means per rollout: expand to the episodes they cover
    for r in train:
        returns += [r["episode_return"]] * int(r.get("episodes_finished", 0)) if "episode_return" in r else []
    phases = {k: sum(r[k] for r in train if k in r) for k in PHASES}  # seconds over every rollout
    return {"frames": last_row["frames"], "agent_steps": last_row["agent_steps"], "train_s": train_s,
            "fps": last_row["frames"] / train_s, "last_return": _tail_mean(returns, last),
            "episodes": len(returns), "final_eval_return": summary["final_eval_return"], "phase_s": phases,
            "hyper_parameters": dict(config["agent"]),
            "precision_reason": (config.get("decisions") or {}).get("precision_reason")}


def _tail_mean(xs: list[float], n: int) -> float | None:
    return float(sum(xs[-n:]) / len(xs[-n:])) if xs else None


def _sb3(task: str, seed: int, frames: int, threads: int, last: int) -> dict:
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(threads)

    def linear(lr):
        return lambda remaining: remaining * lr

    if task == "breakout":
        import ale_py
        from stable_baselines3.common.env_util import make_atari_env
        from stable_baselines3.common.vec_env import VecFrameStack

        gym.register_envs(ale_py)
        env = VecFrameStack(make_atari_env("BreakoutNoFrameskip-v4", n_envs=8, seed=seed), n_stack=4)
        steps = frames // 4
        frames_per_step = 4
        hp = dict(n_steps=128, batch_size=256, n_epochs=4, learning_rate=linear(2.5e-4), clip_range=0.1,
                  clip_range_vf=0.1, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95)
        model = PPO("CnnPolicy", env, seed=seed, device="cpu", verbose=0, **hp)
    else:
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

        env = VecNormalize(DummyVecEnv([lambda: Monitor(gym.make("HalfCheetah-v5"))]), gamma=0.99)
        steps = frames
        frames_per_step = 1
        hp = dict(n_steps=2048, batch_size=64, n_epochs=10, learning_rate=linear(3e-4), clip_range=0.2,
                  clip_range_vf=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95,
                  policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh,
                                     log_std_init=0.0, ortho_init=True))
        model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **hp)

    returns: list[float] = []

    class Episodes(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "episode" in info:  # Monitor's raw (whole-game) return
                    returns.append(float(info["episode"]["r"]))
            return True

    t0 = time.perf_counter()
    model.learn(total_timesteps=steps, callback=Episodes())
    train_s = time.perf_counter() - t0
    done = int(model.num_timesteps)
    env.close()
    shown = {k: (v if isinstance(v, (int, float, str)) else repr(v)) for k, v in hp.items()}
    return {"frames": done * frames_per_step, "agent_steps": done, "train_s": train_s,
            "fps": done * frames_per_step / train_s, "last_return": _tail_mean(returns, last), "episodes": len(returns),
            "hyper_parameters": shown}


def _child(args: argparse.Namespace) -> None:
    frames = args.atari_frames if args.task == "breakout" else args.mujoco_frames
    if args.lib == "ours":
        with tempfile.TemporaryDirectory() as tmp:
            out = _ours(args.task, args.seed, frames, args.threads, args.last_episodes, str(Path(tmp) / "run"))
    else:
        out = _sb3(args.task, args.seed, frames, args.threads, args.last_episodes)
    print("RESULT " + json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------------------ driver


def _run_child(lib: str, task: str, seed: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", "--lib", lib, "--task", task, "--seed", str(seed),
           "--threads", str(args.threads), "--atari-frames", str(args.atari_frames),
           "--mujoco-frames", str(args.mujoco_frames), "--last-episodes", str(args.last_episodes)]
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), OMP_NUM_THREADS=str(args.threads))
    if args.precision != "auto":  # what our PPO's precision 'auto' resolves to (SB3 has fp32 only)
        env["PIXELRL_PRECISION"] = args.precision
    else:
        env.pop("PIXELRL_PRECISION", None)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"{lib} {task} seed {seed} failed:\n{p.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["process_s"] = time.perf_counter() - t0
    return out


def _phase_bounds(ours: list[dict], sb3_fps: float) -> dict:
    """Where our time goes, and what that allows: the median share of each phase in our training time, and the
    frames/s ratio to SB3 that ours would reach with the update unchanged if env stepping and acting took no time
    (``ratio_ceiling_update_only``) or if only env stepping took none (``ratio_ceiling_env_hidden``; on-policy PPO
    cannot overlap either with the update, which needs the whole rollout). Medians over seeds of per-frame costs."""
    runs = [r for r in ours if r.get("phase_s") and r["phase_s"].get("update_s")]
    if not runs:
        return {}
    per_frame = {k: _median([r["phase_s"][k] / r["frames"] for r in runs]) for k in PHASES}
    total = sum(per_frame.values())
    sb3_s = 1.0 / sb3_fps
    return {"phase_s_per_frame": per_frame, "phase_share": {k: v / total for k, v in per_frame.items()},
            "ratio_ceiling_update_only": sb3_s / per_frame["update_s"],
            "ratio_ceiling_env_hidden": sb3_s / (per_frame["update_s"] + per_frame["act_s"])}


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--atari-frames", type=int, default=40_960, help="emulator frames (4 per agent step)")
    ap.add_argument("--mujoco-frames", type=int, default=49_152, help="env steps")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads on both sides (1: on a shared 2-core machine a second thread contends)")
    ap.add_argument("--last-episodes", type=int, default=20, help="training episodes averaged for the score")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                    help="our PPO's precision (default auto: bf16 only where the CPU runs it natively and a timed "
                         "pass is faster, i.e. the NatureCNN on AVX512-BF16 CPUs; fp32 elsewhere); SB3 runs fp32")
    ap.add_argument("--out", default="benchmarks/results/ppo_vs_sb3_cpu.json")
    ap.add_argument("--note", default="", help="recorded in the JSON (e.g. that the machine was shared)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--lib", choices=("ours", "sb3"), help=argparse.SUPPRESS)
    ap.add_argument("--task", choices=TASKS, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args)

    import stable_baselines3
    import torch

    from pixelrl.utils.machine import machine_description
    from pixelrl.utils.precision import cpu_flags

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    runs: dict[str, dict[str, list[dict]]] = {t: {"ours": [], "sb3": []} for t in args.tasks}
    for task in args.tasks:
        for i, seed in enumerate(args.seeds):
            order = ("ours", "sb3") if i % 2 == 0 else ("sb3", "ours")
            for lib in order:
                r = _run_child(lib, task, seed, args)
                r["seed"] = seed
                runs[task][lib].append(r)
                print(f"{task:12s} seed {seed} {lib:4s}: {r['frames']:>8,} frames in {r['train_s']:6.1f} s = "
                      f"{r['fps']:7.0f} frames/s; last-{args.last_episodes}-episode return "
                      f"{r['last_return'] if r['last_return'] is None else round(r['last_return'], 1)} "
                      f"({r['episodes']} episodes)", flush=True)
    summary = {}
    for task, sides in runs.items():
        row = {}
        for lib, rs in sides.items():
            row[lib] = {"median_fps": _median([r["fps"] for r in rs]),
                        "median_last_return": _median([r["last_return"] for r in rs]),
                        "last_returns": [r["last_return"] for r in rs], "fps": [r["fps"] for r in rs]}
        row["fps_ratio_ours_over_sb3"] = row["ours"]["median_fps"] / row["sb3"]["median_fps"]
        row["ours"]["final_eval_returns"] = [r["final_eval_return"] for r in sides["ours"]]
        row["ours"].update(_phase_bounds(sides["ours"], row["sb3"]["median_fps"]))
        summary[task] = row
        print(f"{task}: median frames/s ours {row['ours']['median_fps']:.0f} vs SB3 {row['sb3']['median_fps']:.0f} "
              f"= {row['fps_ratio_ours_over_sb3']:.2f}x; median last-episode return ours "
              f"{row['ours']['median_last_return']} vs SB3 {row['sb3']['median_last_return']}", flush=True)
        if "phase_share" in row["ours"]:
            share = ", ".join(f"{k[:-2]} {v:.0%}" for k, v in row["ours"]["phase_share"].items())
            print(f"{task}: our training time by phase: {share}; ceiling of the ratio with our update as it is: "
                  f"{row['ours']['ratio_ceiling_update_only']:.2f}x if env stepping and acting cost nothing, "
                  f"{row['ours']['ratio_ceiling_env_hidden']:.2f}x if only env stepping did", flush=True)
    result = {
        "benchmark": "ppo_vs_sb3", "summary": summary, "runs": runs,
        "settings": {"tasks": args.tasks, "seeds": args.seeds, "atari_frames": args.atari_frames,
                     "mujoco_frames": args.mujoco_frames, "threads": args.threads, "precision": args.precision,
                     "last_episodes": args.last_episodes},
        "machine": machine_description(), "cpu_count": os.cpu_count(),
        "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma"}),
        "torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
        "wall_min": (time.perf_counter() - t_start) / 60, "note": args.note,
        "load_average_1_5_15min": {"start": list(load_before), "end": list(os.getloadavg())},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("summary", "machine", "wall_min")}))


if __name__ == "__main__":
    main()
