"""Offline IQL: pixelrl vs d3rlpy on the same locally collected dataset, in the same process.

Steps (1 and 2 are skipped with ``--dataset``; 1 with ``--policy``):

1. medium-quality policy: state SAC (``pixelrl train --agent sac --obs state --preset none``, i.e. the state-based
   SAC settings of ``pixelrl.agents.sac.STATE_OVERRIDES``) trained for ``--sac-frames`` env steps on ``--env``
   (default gym/HalfCheetah-v5: on 2 CPU cores it improves steadily within tens of thousands of steps, has no
   early termination, and IQL's seed-to-seed spread on halfcheetah-medium is small, which keeps the comparison
   readable); or a run folder given with ``--policy``;
2. dataset: ``--episodes`` episodes of that policy's deterministic action plus Gaussian noise (``--noise-std``),
   written with ``pixelrl.train.collect`` (DatasetWriter format, reusable with ``--dataset PATH``);
3. for each seed, our IQL (``pixelrl.agents.make_agent('iql', ...)``) and d3rlpy's IQL (``d3rlpy.algos.IQL``) are
   built with the same hyper-parameters (printed and recorded) and trained for ``--steps`` gradient updates each on
   the same transitions (the same per-seed torch / NumPy seeds before each side is built). Each side uses its own
   training path: ours ``agent.update(replay.sample(256))`` on pixelrl's ``ReplayBuffer``; d3rlpy
   ``algo.update(buffer.sample_transition_batch(256))`` on its ``ReplayBuffer`` (exactly the inner loop of its
   ``fit``, without the logger). Timing: the two sides **alternate** windows of ``--window`` updates in the same
   process (ours, d3rlpy, ours, ...), so both see the same machine load; updates/s of a side is ``window /
   median(window wall time)`` over all its windows of all seeds. Sample and update time are also reported apart;
4. evaluation: each trained policy (deterministic: the Gaussian mean ``tanh(m(s))`` on both sides), the uniform
   random policy and the data-collecting policy (deterministic, no collection noise) are run for
   ``--eval-episodes`` episodes with the same env seeds. Normalised score = ``100 * (return - random_return) /
   (reference_return - random_return)``, with ``random_return`` measured here and ``reference_return`` the
   data-collecting policy's deterministic return measured here (D4RL's expert constants are for the -v2 envs and
   do not apply to -v5). When the collecting policy is not available (``--dataset`` from elsewhere, its run
   folder gone), the reference is the dataset's mean episode return and ``reference_kind`` says so.
5. a table, and as the last line one JSON object, also written to ``--out``.

Same data, hyper-parameters and update order on both sides (Q with V(s') of the previous update; V by expectile
regression on the target critic's min Q; policy by advantage-weighted regression with the freshly updated V; Polyak
target). Differences that are not hyper-parameters and are kept as each library has them: weight initialisation
(ours orthogonal as the DrQ-v2 core, d3rlpy PyTorch's default), the policy's state-independent log std (ours: a
parameter clipped to [-5, 2], initial 0; d3rlpy: ``-5 + 7 * sigmoid(p)``, initial -1.5), and one Adam over Q and V
in d3rlpy vs one per net in ours (identical updates: Adam is per parameter and the two losses share no parameter).

Default (what ``benchmarks/results/offline_vs_d3rlpy_cpu.json`` was made with): SAC 50k env steps, 50 episodes
(50k transitions) with noise std 0.2, 15k updates per side and seed, seeds 1 2 3, 10 eval episodes, 2 torch
threads. About 11 min (SAC) + 15-19 min (IQL) on a quiet 2-core machine; the committed run took 35 min because
another process shared the cores for part of the SAC step::

    MUJOCO_GL=egl .venv/bin/python benchmarks/offline_vs_d3rlpy.py

Scale up: ``--sac-frames 300000 --episodes 200 --steps 200000 --seeds 1 2 3 4 5``. Reuse data:
``--dataset runs/offline_vs_d3rlpy/data/halfcheetah-medium-v0`` (or ``--policy RUN_DIR`` to collect anew).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pixelrl.agents import make_agent
from pixelrl.data.dataset import load_dataset
from pixelrl.data.replay import ReplayBuffer
from pixelrl.envs import make
from pixelrl.errors import ConfigError
from pixelrl.train.evaluate import random_policy, run_episodes
from pixelrl.utils.machine import machine_description
from pixelrl.utils.malloc import tune_glibc_malloc

EVAL_SEED = 12345
EVAL_STREAM = 2  # the trainers' evaluation stream; every policy is evaluated on episodes (EVAL_SEED, 2, 0, e)


# ----------------------------------------------------------------------------------------------- helpers
def quiet_d3rlpy() -> None:
    """Keep d3rlpy's info-level structlog lines (signatures, action space...) out of the output."""
    import logging

    import d3rlpy  # noqa: F401  (configures structlog on import)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def mean_std(xs) -> tuple[float, float]:
    xs = [float(x) for x in xs]
    return (float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0)


def normalised(ret: float, random_return: float, reference_return: float) -> float:
    return 100.0 * (ret - random_return) / (reference_return - random_return)


# ----------------------------------------------------------------------------------------------- steps 1-2
def train_policy(args, work: Path) -> Path:
    """Step 1: state SAC with pixelrl's trainer, in a subprocess (its run folder is what ``collect`` reads)."""
    run_dir = work / f"sac-{args.env.replace('/', '_')}-f{args.sac_frames}-s{args.sac_seed}"
    if (run_dir / "summary.json").is_file():
        print(f"[1/5] policy: reusing {run_dir}", flush=True)
        return run_dir
    if run_dir.exists():
        raise ConfigError(f"{run_dir} exists but holds no finished run (no summary.json); delete it and rerun")
    cmd = [sys.executable, "-m", "pixelrl.cli.main", "train", "--env", args.env, "--obs", "state", "--agent", "sac",
           "--preset", "none", "--frames", str(args.sac_frames), "--seed", str(args.sac_seed),
           "--eval-every-frames", str(args.sac_frames), "--eval-episodes", str(args.eval_episodes),
           "--no-video", "--no-tensorboard", "--no-progress", "--threads", str(args.threads), "--no-async-env",
           "--device", "cpu", "--run-dir", str(run_dir)]
    if args.sac_seed_steps is not None:
        cmd += ["--agent.num-seed-steps", str(args.sac_seed_steps)]
    print(f"[1/5] policy: state SAC for {args.sac_frames} env steps: {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"      SAC done in {time.perf_counter() - t0:.0f} s", flush=True)
    return run_dir


def collect_dataset(args, run_dir: Path, work: Path) -> Path:
    """Step 2: ``--episodes`` episodes of the policy + Gaussian action noise, with pixelrl's collector."""
    from pixelrl.train.collect import collect

    name = (f"{args.env.split('/')[-1].split('-')[0].lower()}-sac{args.sac_frames}-s{args.sac_seed}"
            f"-n{args.noise_std:g}-e{args.episodes}-v0")
    out = work / "data" / name
    if out.exists():
        print(f"[2/5] dataset: reusing {out}", flush=True)
        return out
    print(f"[2/5] dataset: {args.episodes} episodes of {run_dir} + N(0, {args.noise_std}) action noise -> {out}",
          flush=True)
    summary = collect(None, str(run_dir), args.episodes, out, seed=args.collect_seed, noise_std=args.noise_std,
                      device="cpu")
    print(f"      {summary['transitions']} transitions, mean return {summary['mean_return']:.1f} "
          f"({summary['wall_s']:.0f} s)", flush=True)
    return out


def load_reference_policy(run_dir: Path, env):
    """The data-collecting policy of a ``pixelrl train`` run folder (latest checkpoint, deterministic)."""
    from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint
    from pixelrl.train.setup import config_from_run

    cfg = config_from_run(json.loads((run_dir / "config.json").read_text()))
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    if ckpt is None:
        raise ConfigError(f"{run_dir} has no checkpoint")
    agent = make_agent(cfg.agent_name, env.observation_space, env.action_space, cfg.agent, "cpu")
    state = load_checkpoint(ckpt)
    agent.load_state_dict(state["agent"])
    step = int(state["trainer"]["agent_steps"])
    return (lambda o: agent.act(o, step=step, eval_mode=True)), {"run_dir": str(run_dir), "checkpoint": ckpt.name,
                                                                  "agent_steps": step}


# ----------------------------------------------------------------------------------------------- step 3
def hyperparameters(args, return_range: tuple[float, float]) -> dict:
    """One place for the values given to both sides (IQL's MuJoCo locomotion configuration)."""
    return {
        "actor_lr": 3e-4, "critic_lr": 3e-4, "value_lr": 3e-4,
        "actor_lr_schedule": f"cosine to 0 over {args.steps} updates (= the run; IQL: 1M updates over 1M)",
        "lr_decay_steps": args.steps,
        "batch_size": 256, "gamma": 0.99, "polyak_tau": 0.005, "n_critics": 2,
        "expectile": 0.7, "beta (weight_temp)": 3.0, "max_weight": 100.0,
        "hidden": [256, 256], "activation": "relu", "log_std_range": [-5.0, 2.0],
        "reward_scale": "1000 / (max - min episode return)", "return_min": return_range[0],
        "return_max": return_range[1], "obs_normalisation": False, "nstep": 1, "precision": "fp32",
        "compile": False, "optimizer": "Adam(betas=(0.9, 0.999), eps=1e-8)",
    }


def build_ours(ds, obs_space, act_space, hp: dict, seed: int, precision: str = "fp32"):
    torch.manual_seed(seed)
    np.random.seed(seed)
    cfg = {
        "lr": hp["actor_lr"], "batch_size": hp["batch_size"], "hidden_dim": hp["hidden"][0],
        "critic_target_tau": hp["polyak_tau"], "discount": hp["gamma"], "nstep": 1, "num_q": hp["n_critics"],
        "expectile": hp["expectile"], "beta": hp["beta (weight_temp)"], "max_weight": hp["max_weight"],
        "log_std_min": hp["log_std_range"][0], "log_std_max": hp["log_std_range"][1],
        "actor_lr_schedule": "cosine", "lr_decay_steps": hp["lr_decay_steps"], "normalize_returns": True,
        "obs_norm": False, "state_trunk": False, "precision": precision, "compile": False, "dropout": 0.0,
    }
    agent = make_agent("iql", obs_space, act_space, cfg, "cpu")
    agent.set_dataset_returns(ds.episode_returns())
    replay = ReplayBuffer(obs_space, act_space, ds.replay_capacity_needed(), frame_stack=1, nstep=1,
                          discount=hp["gamma"], seed=seed)
    ds.fill_replay(replay)
    return agent, replay


def d3rlpy_episodes(ds):
    """The dataset's episodes as d3rlpy ``Episode`` objects holding exactly the same transitions: a truncated
    episode keeps its last observation (one padded action / reward row, never sampled as a transition's own), so
    d3rlpy bootstraps from it instead of dropping the last transition as it does for flat ``MDPDataset`` arrays."""
    from d3rlpy.dataset import Episode

    episodes = []
    for ep in ds.iter_episodes():
        obs = np.asarray(ep["observations"], dtype=np.float32)
        act = np.asarray(ep["actions"], dtype=np.float32)
        rew = np.asarray(ep["rewards"], dtype=np.float32).reshape(-1, 1)
        terminated = bool(np.asarray(ep["terminations"])[-1])
        if terminated:  # d3rlpy: T observations, the last transition's next observation is a zero vector, terminal
            episodes.append(Episode(observations=obs[:-1], actions=act, rewards=rew, terminated=True))
        else:
            episodes.append(Episode(observations=obs, actions=np.concatenate([act, np.zeros_like(act[:1])]),
                                    rewards=np.concatenate([rew, np.zeros_like(rew[:1])]), terminated=False))
    return episodes


def build_d3rlpy(episodes, hp: dict, seed: int):
    import d3rlpy
    from d3rlpy.dataset import InfiniteBuffer
    from d3rlpy.dataset import ReplayBuffer as D3ReplayBuffer
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.optimizers import AdamFactory, CosineAnnealingLRFactory
    from d3rlpy.preprocessing import ReturnBasedRewardScaler

    d3rlpy.seed(seed)
    buffer = D3ReplayBuffer(InfiniteBuffer(), episodes=episodes)

    def enc():
        return VectorEncoderFactory(hidden_units=list(hp["hidden"]), activation=hp["activation"])

    cfg = d3rlpy.algos.IQLConfig(
        actor_learning_rate=hp["actor_lr"], critic_learning_rate=hp["critic_lr"],
        actor_optim_factory=AdamFactory(lr_scheduler_factory=CosineAnnealingLRFactory(T_max=hp["lr_decay_steps"])),
        critic_optim_factory=AdamFactory(),
        actor_encoder_factory=enc(), critic_encoder_factory=enc(), value_encoder_factory=enc(),
        batch_size=hp["batch_size"], gamma=hp["gamma"], tau=hp["polyak_tau"], n_critics=hp["n_critics"],
        expectile=hp["expectile"], weight_temp=hp["beta (weight_temp)"], max_weight=hp["max_weight"],
        reward_scaler=ReturnBasedRewardScaler(return_max=hp["return_max"], return_min=hp["return_min"],
                                              multiplier=1000.0),
        compile_graph=False,
    )
    algo = cfg.create(device=False)
    algo.build_with_dataset(buffer)
    return algo, buffer


def train_alternating(sides: dict, steps: int, window: int, log_every: int) -> dict:
    """Train every side for ``steps`` updates, alternating windows of ``window`` updates between the sides (side 1,
    side 2, ..., side 1, ...). ``sides[name] = (sample() -> batch, update(batch, step) -> metrics)``. Returns per side
    the wall time of every full window and the summed sample / update times."""
    res = {name: {"window_s": [], "sample_s": 0.0, "update_s": 0.0, "last": {}} for name in sides}
    done = 0
    t_log = time.perf_counter()
    while done < steps:
        n = min(window, steps - done)
        for name, (sample, update) in sides.items():
            r = res[name]
            ts = tu = 0.0
            m = {}
            t0 = time.perf_counter()
            for i in range(n):
                a = time.perf_counter()
                batch = sample()
                b = time.perf_counter()
                m = update(batch, done + i)
                c = time.perf_counter()
                ts += b - a
                tu += c - b
            if n == window:
                r["window_s"].append(time.perf_counter() - t0)
            r["sample_s"] += ts
            r["update_s"] += tu
            r["last"] = m
        done += n
        if log_every and (done % log_every < window or done == steps):
            ups = {k: window / statistics.median(v["window_s"]) for k, v in res.items() if v["window_s"]}
            print(f"      {done:>7}/{steps} updates  ({time.perf_counter() - t_log:.0f} s)  updates/s: "
                  + "  ".join(f"{k} {v:.0f}" for k, v in ups.items()), flush=True)
    return res


# ----------------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="gym/HalfCheetah-v5", help="state-based MuJoCo task (pixelrl env id)")
    ap.add_argument("--policy", default=None, help="a `pixelrl train` run folder to collect with (skips step 1)")
    ap.add_argument("--dataset", default=None, help="a dataset folder to train on (skips steps 1 and 2)")
    ap.add_argument("--work-dir", default="runs/offline_vs_d3rlpy", help="where the SAC run and dataset go")
    ap.add_argument("--sac-frames", type=int, default=50_000, help="SAC env steps for the medium policy")
    ap.add_argument("--sac-seed", type=int, default=1)
    ap.add_argument("--sac-seed-steps", type=int, default=None,
                    help="SAC's uniform warm-up steps (default: STATE_OVERRIDES' 5000)")
    ap.add_argument("--episodes", type=int, default=50, help="dataset episodes (1000 steps each on HalfCheetah)")
    ap.add_argument("--noise-std", type=float, default=0.2, help="Gaussian action noise of the collection")
    ap.add_argument("--collect-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=15_000, help="gradient updates per side and seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--window", type=int, default=250, help="updates per timed window (sides alternate)")
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (both sides, same process)")
    ap.add_argument("--bf16-arm", action="store_true",
                    help="also train our IQL in bf16 autocast as a third, unmatched arm (own score and updates/s)")
    ap.add_argument("--out", default="benchmarks/results/offline_vs_d3rlpy_cpu.json")
    ap.add_argument("--no-out", action="store_true", help="print only (smoke runs)")
    args = ap.parse_args(argv)
    for name in ("sac_frames", "episodes", "steps", "window", "eval_episodes", "threads"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.dataset and args.policy:
        raise SystemExit("give --dataset (train on it) or --policy (collect with it), not both")
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(args.threads)
    malloc_tuned = tune_glibc_malloc()  # as `pixelrl train` does on CPU; process-wide, so both sides get it
    quiet_d3rlpy()
    t_start = time.perf_counter()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    # steps 1-2
    run_dir = None
    if args.dataset:
        data_path = Path(args.dataset)
        print(f"[1-2/5] dataset given: {data_path}", flush=True)
    else:
        run_dir = Path(args.policy) if args.policy else train_policy(args, work)
        data_path = collect_dataset(args, run_dir, work)
    ds = load_dataset(data_path)
    env_id = ds.env_id
    env_kwargs = {k: v for k, v in (ds.env_kwargs or {}).items() if k in ("obs", "action_repeat", "frame_stack",
                                                                             "size", "fast_render")}
    if env_kwargs.get("obs", "state") != "state":
        raise SystemExit(f"{data_path} holds {env_kwargs.get('obs')} observations; this benchmark is state-based")
    env = make(env_id, seed=EVAL_SEED, **env_kwargs)
    obs_space, act_space = env.observation_space, env.action_space
    if ds.observation_space != obs_space or ds.action_space != act_space:
        raise SystemExit(f"{data_path} does not fit {env_id}: its spaces differ from the env's")
    returns = ds.episode_returns()
    collect_meta = (ds.metadata.get("collect") if hasattr(ds, "metadata") else None) or {}
    if run_dir is None and collect_meta.get("run_dir") and (Path(collect_meta["run_dir"]) / "config.json").is_file():
        run_dir = Path(collect_meta["run_dir"])

    # reference and random returns (same eval episodes as the trained policies)
    print("[3/5] reference returns", flush=True)
    rand = run_episodes(env, random_policy(act_space, EVAL_SEED), args.eval_episodes, seed=EVAL_SEED,
                        stream=EVAL_STREAM, index=0)["returns"]
    random_return = float(np.mean(rand))
    ref_info: dict = {}
    if run_dir is not None:
        ref_policy, ref_info = load_reference_policy(run_dir, env)
        ref = run_episodes(env, ref_policy, args.eval_episodes, seed=EVAL_SEED, stream=EVAL_STREAM, index=0)["returns"]
        reference_return, reference_kind = float(np.mean(ref)), "data-collecting policy, deterministic, measured here"
    else:
        ref = []
        reference_return, reference_kind = float(np.mean(returns)), "dataset mean episode return (policy unavailable)"
    if not reference_return > random_return:
        raise SystemExit(f"the reference return {reference_return:.1f} is not above the random return "
                         f"{random_return:.1f}: the data-collecting policy has not learned; raise --sac-frames")
    print(f"      random {random_return:.1f}, reference {reference_return:.1f} ({reference_kind}), dataset mean "
          f"{returns.mean():.1f}", flush=True)

    hp = hyperparameters(args, (float(returns.min()), float(returns.max())))
    print("[4/5] hyper-parameters (both sides): " + json.dumps(hp), flush=True)
    episodes = d3rlpy_episodes(ds)
    names = ["pixelrl", "d3rlpy"] + (["pixelrl_bf16"] if args.bf16_arm else [])
    per_seed = []
    times: dict = {k: [] for k in names}
    split = {k: {"sample_s": 0.0, "update_s": 0.0, "updates": 0} for k in names}
    for seed in args.seeds:
        print(f"      seed {seed}: {args.steps} updates per side, alternating windows of {args.window}", flush=True)
        ours, replay = build_ours(ds, obs_space, act_space, hp, seed)
        algo, buffer = build_d3rlpy(episodes, hp, seed)
        if seed == args.seeds[0]:
            n_ours = sum(p.numel() for m in (ours.critic, ours.value, ours.actor) for p in m.parameters())
            n_d3 = sum(p.numel() for p in algo.impl.modules.q_funcs.parameters()) + sum(
                p.numel() for m in (algo.impl.modules.value_func, algo.impl.modules.policy) for p in m.parameters())
            print(f"      parameters (Q x2 + V + policy): pixelrl {n_ours}, d3rlpy {n_d3}; transitions: pixelrl "
                  f"{replay.num_sampleable()}, d3rlpy {buffer.transition_count}", flush=True)
            if n_ours != n_d3 or replay.num_sampleable() != buffer.transition_count:
                raise SystemExit("the two sides do not have the same networks / data; see the line above")
        sides = {
            "pixelrl": (lambda r=replay: r.sample(256), lambda b, i, a=ours: a.update(b, step=i)),
            "d3rlpy": (lambda buf=buffer: buf.sample_transition_batch(256), lambda b, i: algo.update(b)),
        }
        policies = {"pixelrl": lambda o, a=ours: a.act(o, step=args.steps, eval_mode=True),
                    "d3rlpy": lambda o: algo.predict(np.asarray(o, dtype=np.float32)[None])[0]}
        if args.bf16_arm:
            ours16, replay16 = build_ours(ds, obs_space, act_space, hp, seed, precision="bf16")
            sides["pixelrl_bf16"] = (lambda r=replay16: r.sample(256), lambda b, i, a=ours16: a.update(b, step=i))
            policies["pixelrl_bf16"] = lambda o, a=ours16: a.act(o, step=args.steps, eval_mode=True)
        res = train_alternating(sides, args.steps, args.window, log_every=max(args.steps // 10, 1))
        row: dict = {"seed": seed}
        for k in names:
            times[k] += res[k]["window_s"]
            split[k]["sample_s"] += res[k]["sample_s"]
            split[k]["update_s"] += res[k]["update_s"]
            split[k]["updates"] += args.steps
            ev = run_episodes(env, policies[k], args.eval_episodes, seed=EVAL_SEED, stream=EVAL_STREAM,
                              index=0)["returns"]
            row[f"{k}_return"] = float(np.mean(ev))
            row[f"{k}_score"] = normalised(float(np.mean(ev)), random_return, reference_return)
            row[f"{k}_last_metrics"] = {m: round(float(v), 4) for m, v in res[k]["last"].items()}
        per_seed.append(row)
        print(f"      seed {seed}: " + ", ".join(f"{k} score {row[k + '_score']:.1f} (return {row[k + '_return']:.1f})"
                                                  for k in names), flush=True)
        del sides, policies, ours, replay, algo, buffer
    env.close()

    ups = {k: args.window / statistics.median(times[k]) if times[k] else float("nan") for k in names}
    stats = {k: mean_std(r[f"{k}_score"] for r in per_seed) for k in names}
    (ours_m, ours_sd), (d3_m, d3_sd) = stats["pixelrl"], stats["d3rlpy"]
    n = len(per_seed)
    sem = math.sqrt((ours_sd ** 2 + d3_sd ** 2) / n) if n > 1 else float("nan")
    result = {
        "benchmark": "offline_vs_d3rlpy",
        "env": env_id,
        "scores": {
            **{k: {"mean": round(stats[k][0], 2), "std": round(stats[k][1], 2),
                   "per_seed": [round(r[f"{k}_score"], 2) for r in per_seed]} for k in names},
            "difference_pixelrl_minus_d3rlpy": round(ours_m - d3_m, 2),
            "difference_standard_error": round(sem, 2) if math.isfinite(sem) else None,
            "score_formula": "100 * (return - random_return) / (reference_return - random_return)",
            "random_return": round(random_return, 2),
            "reference_return": round(reference_return, 2),
            "reference_kind": reference_kind,
            "reference_policy": ref_info,
            "dataset_score": round(normalised(float(returns.mean()), random_return, reference_return), 2),
        },
        "returns_per_seed": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}
                             for r in per_seed],
        "updates_per_s": {
            **{k: round(ups[k], 1) for k in names},
            "ratio_pixelrl_over_d3rlpy": round(ups["pixelrl"] / ups["d3rlpy"], 3),
            **({"ratio_pixelrl_bf16_over_d3rlpy": round(ups["pixelrl_bf16"] / ups["d3rlpy"], 3)}
               if args.bf16_arm else {}),
            "timing": (f"sample + update of each library's own training path, windows of {args.window} updates, "
                       "sides alternating window by window in one process; updates/s = window / median window "
                       "time over all seeds"),
            "windows_per_side": len(times["pixelrl"]),
            "mean_sample_ms": {k: round(1e3 * split[k]["sample_s"] / max(split[k]["updates"], 1), 3) for k in names},
            "mean_update_ms": {k: round(1e3 * split[k]["update_s"] / max(split[k]["updates"], 1), 3) for k in names},
        },
        "goals": {
            "score_ge_d3rlpy_within_seed_noise": bool(ours_m >= d3_m - 2 * sem) if n > 1 else None,
            "score_rule": "pixelrl mean >= d3rlpy mean - 2 standard errors of the difference of the per-seed means",
            "updates_per_s_ge_2x": bool(ups["pixelrl"] >= 2 * ups["d3rlpy"]),
        },
        "hyperparameters": hp,
        "pixelrl_bf16_arm": ("pixelrl_bf16: our IQL with precision='bf16' (autocast) and otherwise the same "
                             "settings; not part of the matched comparison" if args.bf16_arm else None),
        "implementation_differences": [
            "weight init: pixelrl orthogonal (DrQ-v2 core), d3rlpy PyTorch default",
            "policy log std: pixelrl a parameter clipped to [-5, 2] (init 0, as the IQL authors), d3rlpy "
            "-5 + 7*sigmoid(p) (init -1.5)",
            "optimizers: d3rlpy one Adam over Q and V, pixelrl one per net (same update)",
            "pixelrl evaluates the target critic and V(s) once per update and reuses them; d3rlpy computes them "
            "again for the policy weights (same values)",
        ],
        "dataset": {
            "path": str(data_path), "env_kwargs": env_kwargs, "episodes": int(ds.num_episodes),
            "transitions": int(ds.num_transitions), "return_mean": round(float(returns.mean()), 2),
            "return_std": round(float(returns.std()), 2), "return_min": round(float(returns.min()), 2),
            "return_max": round(float(returns.max()), 2), "collect": collect_meta,
            "sac_frames": args.sac_frames if not args.dataset and not args.policy else None,
        },
        "eval_episodes": args.eval_episodes,
        "eval_env_seeds": f"derive_seed({EVAL_SEED}, {EVAL_STREAM}, 0, e) for e < {args.eval_episodes}, every policy",
        "steps": args.steps,
        "seeds": args.seeds,
        "threads": args.threads,
        "glibc_malloc_tuned": malloc_tuned,
        "versions": {"torch": torch.__version__, "d3rlpy": __import__("d3rlpy").__version__,
                     "python": platform.python_version()},
        "machine": machine_description(),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "command": shlex.join(["python", *sys.argv]),
    }

    print("[5/5] results")
    print(f"{'':<14}{'score mean':>11}{'std':>7}{'per seed':>26}{'updates/s':>11}{'sample ms':>11}{'update ms':>11}")
    for k in names:
        sc = result["scores"][k]
        per = ", ".join(f"{x:.1f}" for x in sc["per_seed"])
        u = result["updates_per_s"]
        print(f"{k:<14}{sc['mean']:>11.1f}{sc['std']:>7.1f}{per:>26}{u[k]:>11.1f}{u['mean_sample_ms'][k]:>11.3f}"
              f"{u['mean_update_ms'][k]:>11.3f}")
    print(f"updates/s ratio pixelrl / d3rlpy: {result['updates_per_s']['ratio_pixelrl_over_d3rlpy']:.2f}x; score "
          f"difference {result['scores']['difference_pixelrl_minus_d3rlpy']:+.1f} (s.e. "
          f"{result['scores']['difference_standard_error']}); random {random_return:.1f}, reference "
          f"{reference_return:.1f}, dataset score {result['scores']['dataset_score']:.1f}")
    if not args.no_out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
