"""Scale-out on Ray: env frames/s of one process vs Ray env workers, with RLlib's EnvRunner sampling as the peer.

Arms, for each env (``dmc/`` with the fast renderer, ``ale/``), each measured for ``--seconds`` after a warm-up:

* ``single``: one process stepping ``--envs-per-worker`` envs (the worker's own code,
  :class:`pixelrl.distributed.worker.EnvWorker`, called in process; random actions);
* ``ray N``: N Ray env workers of ``--envs-per-worker`` envs, one ``--chunk-steps`` chunk in flight per worker, the
  frames counted when a chunk reaches the driver (observations shipped included), random actions; and with
  ``--policy`` also the off-policy path proper: each worker acting with a CPU copy of DrQ-v2 (dmc/) batched over its
  envs;
* ``rllib N``: RLlib's new-stack EnvRunners (PPO's default RLModule acting on the frames as float32 channels-last,
  which its default conv nets take; ``num_env_runners=N``,
  ``num_envs_per_env_runner`` and ``rollout_fragment_length`` as ours), ``EnvRunnerGroup.foreach_env_runner(sample)``
  timed at the driver. RLlib is installed beside the project, not as its dependency (``--rllib-path``: a
  ``pip install --target`` folder); the arm is skipped with a note if it cannot be imported or built.

Scaling efficiency = throughput(N) / (N x throughput(1)) of the Ray arm. The costs behind the scaling model of
docs/distributed.md are measured too: a Ray call's round trip, the per-frame env cost, the policy's per-observation
inference cost, the learner's update cost, and the bytes shipped per frame.

    python benchmarks/scale_out.py --workers 1,2 --seconds 20 --out benchmarks/results/scale_out_cpu.json

``--training`` measures the learner-side options instead, as short training runs (``pixelrl train --workers``'s
trainers, in process) on ``dmc/cartpole-swingup`` pixels with the fast renderer, each arm the same frame budget,
frames/s taken between the first and the last ``train`` row (start-up and the final evaluation excluded):

* PPO, 2 workers x 4 envs: synchronous rollouts (``--max-staleness 0``), bounded staleness 1 (the update in a learner
  thread while the next rollout is collected), and staleness 1 with 2 data-parallel learners (``--learners 2``,
  gloo);
* DrQ-v2, 2 workers x 2 envs: inference in the workers (``--inference worker``, 32-step chunks) and in the learner
  (``--inference learner``, one batched forward pass per agent step).

    python benchmarks/scale_out.py --training --out benchmarks/results/scale_out_training_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

ENV_KWARGS = {"dmc": {"fast_render": True}, "ale": {}}


def env_kwargs(env: str) -> dict:
    return dict(ENV_KWARGS[env.split("/", 1)[0]])


def agent_for(env: str):
    """(agent name, config) acting in the --policy arm: DrQ-v2 (paper settings) on dmc/, none elsewhere."""
    if not env.startswith("dmc/"):
        return None
    from pixelrl.train.setup import build_config

    cfg = build_config(env, "drqv2", preset="paper", device="cpu", run_dir="unused", fast_render=True)
    return cfg.agent_name, cfg.agent


def single_arm(env: str, k: int, chunk: int, seconds: float) -> dict:
    from pixelrl.distributed.worker import EnvWorker

    w = EnvWorker(env, k, env_kwargs(env))
    w.reset(list(range(k)))
    w.chunk(chunk, step=0, version=0)  # warm-up
    frames, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        frames += int(w.chunk(chunk, step=0, version=0)["frames"].sum())
    fps = frames / (time.perf_counter() - t0)
    w.close()
    return {"frames_per_s": fps, "seconds_per_frame": 1.0 / fps}


def ray_arm(env: str, n: int, k: int, chunk: int, seconds: float, agent=None) -> dict:
    import pickle

    import ray

    from pixelrl.distributed.pool import WorkerPool
    from pixelrl.envs._gl import gl_environment

    gl = gl_environment()
    pool = WorkerPool(n, lambda i, r: ((env, k, env_kwargs(env)), {"gl_env": gl, "agent": agent, "torch_seed": i}))
    ray.get([a.reset.remote([i * k + j for j in range(k)]) for i, a in enumerate(pool.actors)])
    step = 10**9  # past any warm-up: the policy acts
    first = ray.get([a.chunk.remote(chunk, step=step, version=0) for a in pool.actors])  # warm-up (and weights)
    bytes_per_frame = len(pickle.dumps(first[0])) / max(int(first[0]["frames"].sum()), 1)
    inflight = {a.chunk.remote(chunk, step=step, version=0): i for i, a in enumerate(pool.actors)}
    frames, env_s, worker_frames = 0, np.zeros(n), np.zeros(n)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        done, _ = ray.wait(list(inflight), num_returns=1)
        i = inflight.pop(done[0])
        out = ray.get(done[0])
        inflight[pool.actors[i].chunk.remote(chunk, step=step, version=0)] = i
        f = int(out["frames"].sum())
        frames += f
        worker_frames[i] += f
        env_s[i] += out["env_s"] + out["act_s"]
    fps = frames / (time.perf_counter() - t0)
    ray.get(list(inflight))
    pool.close()
    return {"frames_per_s": fps, "per_worker_frames_per_s": (worker_frames / np.maximum(env_s, 1e-9)).tolist(),
            "bytes_shipped_per_frame": bytes_per_frame}


def call_overhead_ms(calls: int = 300) -> float:
    """Round trip of a Ray actor call with a tiny payload (what a chunk amortises)."""
    import ray

    @ray.remote(num_cpus=0)
    class Echo:
        def f(self, x):
            return x

    e = Echo.remote()
    ray.get(e.f.remote(0))
    t0 = time.perf_counter()
    for i in range(calls):
        ray.get(e.f.remote(i))
    ms = (time.perf_counter() - t0) / calls * 1e3
    ray.kill(e)
    return ms


def learner_costs(env: str, k: int) -> dict:
    """Per-observation inference (batched over k) and per-update cost of DrQ-v2 on this machine."""
    import torch

    from pixelrl.agents import make_agent
    from pixelrl.data.batch import Batch
    from pixelrl.distributed.worker import act_batch
    from pixelrl.envs import make

    name, cfg = agent_for(env)
    e = make(env, seed=0, **env_kwargs(env))
    agent = make_agent(name, e.observation_space, e.action_space, cfg, torch.device("cpu"))
    obs = np.stack([e.observation_space.sample() for _ in range(k)])
    act_batch(agent, obs, step=10**9)
    t0, reps = time.perf_counter(), 20
    for _ in range(reps):
        act_batch(agent, obs, step=10**9)
    infer = (time.perf_counter() - t0) / (reps * k)
    b = int(cfg.batch_size)
    batch = Batch(obs=torch.as_tensor(np.stack([e.observation_space.sample() for _ in range(b)])),
                  action=torch.rand(b, e.action_space.shape[0]) * 2 - 1, reward=torch.rand(b, 1),
                  discount=torch.full((b, 1), 0.99),
                  next_obs=torch.as_tensor(np.stack([e.observation_space.sample() for _ in range(b)])))
    agent.update(batch, step=10**6)
    t0, reps = time.perf_counter(), 3
    for _ in range(reps):
        agent.update(batch, step=10**6)
    upd = (time.perf_counter() - t0) / reps
    return {"inference_s_per_obs": infer, "update_s": upd, "batch_size": b,
            "updates_per_agent_step": float(cfg.updates_per_step) / float(cfg.update_every_steps),
            "action_repeat": int(e.get_wrapper_attr("action_repeat"))}


def ingest_cost(env: str, k: int) -> float:
    """Learner-side seconds per env frame of taking a chunk: unpickling it (Ray's transport, zero-copy aside) and
    :class:`~pixelrl.distributed.offpolicy.EpisodeAssembler` storing its finished episodes in the replay."""
    import pickle

    from pixelrl.data.replay import ReplayBuffer
    from pixelrl.distributed.offpolicy import EpisodeAssembler
    from pixelrl.distributed.worker import EnvWorker

    w = EnvWorker(env, k, env_kwargs(env))
    first = w.reset(list(range(k)))
    chunk = w.chunk(520, step=0, version=0)  # past a 500-step dmc episode: each env stores one
    e = w.vec
    replay = ReplayBuffer(e.single_observation_space, e.single_action_space, 100_000,
                          frame_stack=int(e.frame_stack), nstep=3, discount=0.99)
    asm = EpisodeAssembler(replay)
    for i in range(k):
        asm.start(i, first[i])
    t0 = time.perf_counter()
    asm.add_chunk(0, pickle.loads(pickle.dumps(chunk)))
    seconds = time.perf_counter() - t0
    w.close()
    return seconds / int(chunk["frames"].sum())


def project(result: dict, cores=(64, 1000)) -> dict:
    """The scaling model of docs/distributed.md from the measured costs (a projection, not a measurement).

    One core runs the learner process (driver: Ray calls, ingest into the replay, updates), every other core one env
    worker acting with its policy copy. Collection capacity = workers x per-worker frames/s (env + inference per
    frame); the driver's ingest limit = 1 / (ingest s per frame + call round trip / frames per chunk); the learner's
    limit at the agent's replay ratio = updates/s x action repeat / updates per agent step, for the CPU update measured
    here and for the H100 update of benchmarks/results/update_throughput_h100.json when present."""
    s = result["settings"]
    out = {}
    gpu = Path(__file__).parent / "results" / "update_throughput_h100.json"
    gpu_ups = json.loads(gpu.read_text())["ours_updates_per_s"] if gpu.exists() else None
    for env, r in result["envs"].items():
        lc = r.get("learner_costs")
        if not lc:
            continue
        ar = lc["action_repeat"]
        per_frame = r["single"]["seconds_per_frame"] + lc["inference_s_per_obs"] / ar
        frames_per_chunk = s["chunk_steps"] * s["envs_per_worker"] * ar
        driver = lc["ingest_s_per_frame"] + result["ray_call_round_trip_ms"] / 1e3 / frames_per_chunk
        limits = {"ingest_frames_per_s": 1.0 / driver,
                  "learner_cpu_frames_per_s": ar / (lc["updates_per_agent_step"] * lc["update_s"])}
        if gpu_ups:
            limits["learner_h100_frames_per_s"] = gpu_ups * ar / lc["updates_per_agent_step"]
        rows = {}
        for c in cores:
            collect = (c - 1) / per_frame
            rows[str(c)] = {"collection_frames_per_s": collect,
                            "bottleneck_at_replay_ratio": min([("collection", collect)] + [
                                (k, v) for k, v in limits.items() if k != "learner_cpu_frames_per_s"],
                                key=lambda kv: kv[1])[0],
                            "bottleneck_without_replay_ratio": min(("collection", collect),
                                                                   ("ingest", limits["ingest_frames_per_s"]),
                                                                   key=lambda kv: kv[1])[0]}
        out[env] = {"per_worker_frames_per_s": 1.0 / per_frame, **limits, "cores": rows}
    return out


RLLIB = r'''
import json, sys, time, os
import numpy as np
import gymnasium as gym
env_id, n, k, chunk, seconds, kwargs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), json.loads(sys.argv[6])
import ray
from ray.tune.registry import register_env
from ray.rllib.algorithms.ppo import PPOConfig

class HWC(gym.ObservationWrapper):
    """RLlib's default conv nets take float images channels-last."""
    def __init__(self, env):
        super().__init__(env)
        s = env.observation_space
        self.observation_space = gym.spaces.Box(0.0, 1.0, (s.shape[1], s.shape[2], s.shape[0]), np.float32)
    def observation(self, o):
        return np.ascontiguousarray(o.transpose(1, 2, 0), dtype=np.float32) / 255.0

def creator(cfg):
    from pixelrl.envs import make
    e = make(env_id, seed=int(cfg.worker_index) * 100 + int(cfg.vector_index), **kwargs)
    frames = int(e.get_wrapper_attr("action_repeat"))
    e = HWC(e)
    e.frames_per_step = frames
    return e

register_env("pixelrl", creator)
from pixelrl.envs._gl import gl_environment
ray.init(include_dashboard=False, log_to_driver=False, num_cpus=max(os.cpu_count(), n + 1),
         runtime_env={"env_vars": gl_environment()})  # the GL backend set before the env runners import mujoco
config = (PPOConfig().environment("pixelrl").framework("torch")
          .env_runners(num_env_runners=n, num_envs_per_env_runner=k, rollout_fragment_length=chunk,
                       num_cpus_per_env_runner=1)
          .learners(num_learners=0))
algo = config.build_algo()
group = algo.env_runner_group
frames_per_step = creator(type("C", (), {"worker_index": 0, "vector_index": 0})()).frames_per_step
def steps(samples):
    return sum(sum(len(ep) for ep in eps) for eps in samples)
group.foreach_env_runner(lambda r: r.sample(num_timesteps=chunk * k), local_env_runner=False)  # warm-up
t0, total = time.perf_counter(), 0
while time.perf_counter() - t0 < seconds:
    total += steps(group.foreach_env_runner(lambda r: r.sample(num_timesteps=chunk * k), local_env_runner=False))
dt = time.perf_counter() - t0
print("RESULT " + json.dumps({"frames_per_s": total * frames_per_step / dt, "agent_steps_per_s": total / dt}))
algo.stop()
ray.shutdown()
'''


def rllib_arm(env: str, n: int, k: int, chunk: int, seconds: float, rllib_path: str | None) -> dict:
    envvars = dict(os.environ)
    if rllib_path:
        envvars["PYTHONPATH"] = rllib_path + os.pathsep + envvars.get("PYTHONPATH", "")
    envvars["PYTHONWARNINGS"] = "ignore"
    try:
        out = subprocess.run([sys.executable, "-c", RLLIB, env, str(n), str(k), str(chunk), str(seconds),
                              json.dumps(env_kwargs(env))], capture_output=True, text=True, env=envvars,
                             timeout=600 + seconds)
    except subprocess.TimeoutExpired:
        return {"skipped": "RLlib's run did not finish within its time limit"}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    err = [ln for ln in (out.stderr or "").strip().splitlines() if ln.strip()]
    return {"skipped": f"RLlib could not run here: {err[-1] if err else 'no output'}"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", default="dmc/cartpole-swingup,ale/Pong")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (e.g. 1,2,4,8,16 on a big machine)")
    p.add_argument("--envs-per-worker", type=int, default=4)
    p.add_argument("--chunk-steps", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--policy", action="store_true", help="also the arms acting with DrQ-v2 in the workers (dmc/)")
    p.add_argument("--no-rllib", action="store_true")
    p.add_argument("--rllib-path", default="/tmp/rllib_pkgs" if Path("/tmp/rllib_pkgs").is_dir() else None,
                   help="a folder holding ray[rllib] (pip install --target), put first on the peer's PYTHONPATH")
    p.add_argument("--shared-note", default="", help="say the machine was shared with other work, and how")
    p.add_argument("--out", default="benchmarks/results/scale_out_cpu.json")
    p.add_argument("--project-only", action="store_true",
                   help="read --out, measure the ingest cost if it is missing, and (re)write its projection")
    p.add_argument("--training", action="store_true",
                   help="measure the learner-side options (bounded-staleness PPO, --learners, --inference) instead")
    p.add_argument("--training-frames-ppo", type=int, default=24576,
                   help="24 rollouts of 8 x 64 agent steps at action repeat 2")
    p.add_argument("--training-frames-drqv2", type=int, default=8000)
    args = p.parse_args()
    if args.training:
        import torch

        torch.set_num_threads(1)
        training_main(args)
        return
    if args.project_only:
        result = json.loads(Path(args.out).read_text())
        for env, r in result["envs"].items():
            if r.get("learner_costs") and "ingest_s_per_frame" not in r["learner_costs"]:
                r["learner_costs"]["ingest_s_per_frame"] = ingest_cost(env, result["settings"]["envs_per_worker"])
        result["projection"] = project(result)
        _write(Path(args.out), result)
        print(json.dumps(result["projection"], indent=1))
        return

    import ray
    import torch

    from pixelrl.distributed.pool import init_ray
    from pixelrl.utils.machine import machine_description

    torch.set_num_threads(1)
    counts = [int(x) for x in args.workers.split(",")]
    k, chunk, secs = args.envs_per_worker, args.chunk_steps, args.seconds
    result = {"machine": machine_description(), "shared": args.shared_note or None,
              "settings": {"envs_per_worker": k, "chunk_steps": chunk, "seconds": secs, "workers": counts},
              "note": "frames = simulator frames (agent steps x action repeat) per second of wall time, counted when a "
                      "chunk reaches the driver; random actions unless the arm says policy. Scaling efficiency = "
                      "throughput(N) / (N x throughput(1)) of the same arm.", "envs": {}}
    init_ray(None, max(counts))
    result["ray_call_round_trip_ms"] = call_overhead_ms()
    for env in args.envs.split(","):
        r: dict = {"env_kwargs": env_kwargs(env)}
        print(f"== {env}", flush=True)
        r["single"] = single_arm(env, k, chunk, secs)
        print(f"  single process ({k} envs): {r['single']['frames_per_s']:.0f} frames/s", flush=True)
        arms = [("ray", None)] + ([("ray_policy", agent_for(env))] if args.policy and agent_for(env) else [])
        for name, agent in arms:
            r[name] = {}
            for n in counts:
                r[name][str(n)] = ray_arm(env, n, k, chunk, secs, agent)
                print(f"  {name} {n} workers: {r[name][str(n)]['frames_per_s']:.0f} frames/s", flush=True)
            base = r[name][str(counts[0])]["frames_per_s"] / counts[0]
            r[f"{name}_efficiency"] = {str(n): r[name][str(n)]["frames_per_s"] / (n * base) for n in counts}
        if agent_for(env):
            r["learner_costs"] = {**learner_costs(env, k), "ingest_s_per_frame": ingest_cost(env, k)}
        result["envs"][env] = r
    ray.shutdown()
    for env in args.envs.split(","):
        r = result["envs"][env]
        if args.no_rllib:
            r["rllib"] = {"skipped": "--no-rllib"}
            continue
        r["rllib"] = {}
        for n in counts:
            r["rllib"][str(n)] = rllib_arm(env, n, k, chunk, secs, args.rllib_path)
            print(f"  {env} rllib {n} env runners: {r['rllib'][str(n)]}", flush=True)
    result["projection"] = project(result)
    _write(Path(args.out), result)
    print(json.dumps(result))


TRAINING_ENV = "dmc/cartpole-swingup"


def training_arms(frames_ppo: int, frames_drqv2: int) -> list[tuple[str, str, dict]]:
    """(name, agent, overrides) of the --training arms."""
    ppo = {"agent": {"num_envs": 8, "rollout_steps": 64, "num_minibatches": 4, "update_epochs": 4},
           "workers": 2, "frames": frames_ppo}
    drq = {"agent": {"batch_size": 64, "num_seed_steps": 100, "update_every_steps": 16, "replay_capacity": 20_000},
           "workers": 2, "envs_per_worker": 2,
           "frames": frames_drqv2}
    return [("ppo_sync", "ppo", {**ppo, "max_staleness": 0}),
            ("ppo_staleness1", "ppo", {**ppo, "max_staleness": 1}),
            ("ppo_staleness1_learners2", "ppo", {**ppo, "max_staleness": 1, "learners": 2}),
            ("drqv2_inference_worker", "drqv2", {**drq, "inference": "worker", "chunk_steps": 32}),
            ("drqv2_inference_learner", "drqv2", {**drq, "inference": "learner", "chunk_steps": 32})]


def training_arm(name: str, agent: str, over: dict, folder: Path) -> dict:
    """One short training run; frames/s between its first and last train row."""
    from pixelrl.distributed import trainer_class
    from pixelrl.train.logger import read_rows
    from pixelrl.train.setup import build_config

    cfg = build_config(TRAINING_ENV, agent, preset="paper", device="cpu", progress=False, video=False,
                       tensorboard=False, threads=1, fast_render=True, eval_every_frames=10**9, eval_episodes=1,
                       run_dir=str(folder / name), **over)
    t0 = time.perf_counter()
    trainer = trainer_class(cfg)(cfg)
    trainer.run()
    del trainer  # its replay and envs before the next arm starts Ray
    import gc

    gc.collect()
    rows = read_rows(folder / name, "train")
    first, last = rows[0], rows[-1]
    out = {"agent": agent, "settings": {k: v for k, v in over.items()}, "rows": len(rows), "frames": last["frames"],
           "frames_per_s": (last["frames"] - first["frames"]) / max(last["wall_s"] - first["wall_s"], 1e-9),
           "wall_s_total": time.perf_counter() - t0,
           "update_s_mean": float(np.mean([r["update_s"] for r in rows])),
           "env_s_mean": float(np.mean([r["env_s"] for r in rows]))}
    for key in ("staleness_max", "inference_batch", "updates"):
        if key in last:
            out[key] = last[key]
    return out


def training_main(args) -> None:
    import tempfile

    from pixelrl.utils.machine import machine_description

    import re

    try:
        flags = sorted(set(re.findall(r"avx512_bf16|amx_bf16|avx512f|avx2", Path("/proc/cpuinfo").read_text())))
    except OSError:
        flags = []
    result = {"machine": machine_description(), "cpu_flags": flags, "shared": args.shared_note or None,
              "load_average_start": os.getloadavg(), "command": " ".join(sys.argv), "env": TRAINING_ENV,
              "note": "short training runs of the --workers trainers on 2 Ray workers; frames/s = simulator frames "
                      "per second of wall time between the first and the last train row (start-up and the final "
                      "evaluation excluded), updates included. DrQ-v2 with batch 64 (not the paper's 256), 100 seed "
                      "steps, one update per 16 agent steps (not 2) and a 20k replay, so that its CPU updates do not "
                      "swamp the inference being compared; PPO 8 envs x 64 steps, 4 epochs of 4 minibatches.",
              "arms": {}}
    with tempfile.TemporaryDirectory(prefix="scale_out_training_") as tmp:
        for name, agent, over in training_arms(args.training_frames_ppo, args.training_frames_drqv2):
            r = training_arm(name, agent, over, Path(tmp))
            result["arms"][name] = r
            print(f"  {name}: {r['frames_per_s']:.0f} frames/s ({r['frames']} frames, update_s {r['update_s_mean']:.2f}"
                  f" per row)", flush=True)
    result["load_average_end"] = os.getloadavg()
    a = result["arms"]
    def ratio(x: str, y: str) -> float | None:  # None when an arm logged fewer than 2 rows
        fx, fy = a[x]["frames_per_s"], a[y]["frames_per_s"]
        return fx / fy if fx > 0 and fy > 0 else None

    result["ratios"] = {"ppo_staleness1_over_sync": ratio("ppo_staleness1", "ppo_sync"),
                        "ppo_learners2_over_staleness1": ratio("ppo_staleness1_learners2", "ppo_staleness1"),
                        "drqv2_learner_over_worker_inference": ratio("drqv2_inference_learner",
                                                                     "drqv2_inference_worker")}
    _write(Path(args.out), result)
    print(json.dumps(result["ratios"]))


def _write(out: Path, result: dict) -> None:
    from pixelrl.utils.atomic import write_json_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)


if __name__ == "__main__":
    main()
