"""Off-policy agents (DrQ-v2 family, SAC, the DQN family) on Ray: SRL's dataflow with the learner, replay and policy
versions in this process and the envs on Ray env workers.

Data flow. Each of ``workers`` env workers holds ``envs_per_worker`` envs and a CPU copy of the agent; one call steps
every env ``chunk_steps`` agent steps, acting with one batched forward pass over its envs, and returns the chunk with
the policy version that acted stamped on it. The learner keeps one chunk in flight per worker: it takes whichever
chunk is ready first, hands that worker its next call (with the newest broadcast weights), puts the chunk's
finished episodes into the replay (an episode is stored whole when it ends: the replay keeps each episode contiguous)
and runs the gradient updates the new agent steps are owed, polling for ready chunks between updates so envs and
learner overlap. The update cadence is the agent's own (``updates_per_step`` every ``update_every_steps`` agent steps
after ``num_seed_steps``), counted over all envs' agent steps, so the replay ratio is the single-process loop's:
the learner pays the updates owed before it takes new data, and a worker whose chunk is waiting stays idle meanwhile.

Versions. The policy version is the number of gradient updates done. Weights (``agent.state_dict()``, which also
carries schedules and mechanism state such as DrM's exploration) are broadcast every ``broadcast_every`` updates: put
in Ray's object store once, fetched by each worker with its next call. ``max_staleness`` bounds how many updates the
learner may run past the version of any chunk in flight (it then waits for that chunk), so no transition reaches the
replay more than that many updates after the policy that chose it; with the bound, a worker starts its next chunk
only when the updates still owed fit within it. ``staleness_mean`` / ``staleness_max`` are logged.

Faults. A worker that dies is restarted by the pool; its chunk in flight never arrives and is never counted, the
steps of its unfinished episodes (counted when their chunks arrived) are not stored (``dropped_agent_steps``), and
its new envs start new episodes, so no transition is counted or stored twice. The learner's checkpoints are the single-process trainer's (agent, replay, counters, RNGs, log), written at
round boundaries into the same run folder; ``pixelrl resume`` continues from the last one with fresh envs (the
episodes unfinished at the checkpoint are not in it). A Ray run is not bitwise reproducible: which worker's chunk
arrives first depends on timing.

One ``train`` row per round (``workers x envs_per_worker x chunk_steps`` agent steps): the episodes that finished,
the update metrics' means, and the scale-out columns (per-worker env frames/s, inference batch, updates/s, staleness,
chunks waiting and in flight, restarts).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from pixelrl.distributed.ddp import LearnerGroupOwner
from pixelrl.distributed.onpolicy import RESTART_STREAM
from pixelrl.distributed.pool import WorkerPool
from pixelrl.distributed.vector import _concat
from pixelrl.distributed.worker import ChunkRecorder, act_batch, batchable, full_stack
from pixelrl.envs._gl import gl_environment
from pixelrl.errors import ConfigError, DivergenceError, PixelRLError
from pixelrl.train.config import TrainConfig
from pixelrl.train.episode import env_step_error
from pixelrl.train.loop import TRAIN_STREAM, WARMUP_STREAM, Trainer
from pixelrl.train.progress import TrainProgress
from pixelrl.utils.seeding import derive_seed

__all__ = ["EpisodeAssembler", "RayTrainer", "owed_updates"]

DEFAULT_CHUNK_STEPS, DEFAULT_BROADCAST_EVERY = 32, 10
MAX_START_ATTEMPTS = 3
"""A worker that dies this many times in a row before its envs are reset stops the run (a setup error, not a fault)."""


def owed_updates(agent_steps: int, *, seed_steps: int, update_every: int, updates_per_step: int) -> int:
    """Updates the single-process loop has done after ``agent_steps`` agent steps: ``updates_per_step`` at every step
    ``s >= seed_steps`` with ``s % update_every == 0``."""
    def multiples_below(n: int) -> int:  # multiples of update_every in [0, n)
        return -(-n // update_every)

    if agent_steps <= seed_steps:
        return 0
    return (multiples_below(agent_steps) - multiples_below(seed_steps)) * updates_per_step


class EpisodeAssembler:
    """Collects each env's steps from chunks and writes an episode into ``store`` (``add_first`` / ``add``, as the
    single-process loop does step by step) when it ends. ``reward_clip`` and ``life_loss_terminal`` are the agent's
    (what the learner stores; returns are the env's)."""

    def __init__(self, store: Any, *, reward_clip: float = 0.0, life_loss_terminal: bool = False) -> None:
        self.store = store
        self.reward_clip = float(reward_clip or 0.0)
        self.life_loss_terminal = bool(life_loss_terminal)
        self.open: dict[int, tuple[Any, list[tuple]]] = {}

    def start(self, env: int, obs: Any) -> None:
        """Env ``env`` begins an episode at ``obs`` (an unfinished one is dropped)."""
        self.open[env] = (obs, [])

    def drop(self, envs: range) -> int:
        """Drop the unfinished episodes of ``envs`` (a dead worker's); returns the agent steps dropped."""
        return sum(len(self.open.pop(e, (None, []))[1]) for e in envs)

    def open_steps(self) -> int:
        """Agent steps held in unfinished episodes."""
        return sum(len(steps) for _, steps in self.open.values())

    def add_chunk(self, first_env: int, chunk: dict[str, Any]) -> list[tuple[float, int, int]]:
        """Add a worker's chunk (:meth:`EnvWorker.chunk`) whose env ``k`` is env ``first_env + k``; returns
        ``(return, agent steps, frames)`` of every episode it finished, in the order they were stored."""
        finished = []
        nxt, fs = chunk["next_obs"], int(chunk.get("frame_stack", 1))
        T, K = chunk["reward"].shape
        for t in range(T):
            for k in range(K):
                e = first_env + k
                obs = full_stack({key: v[t, k] for key, v in nxt.items()} if isinstance(nxt, dict) else nxt[t, k], fs)
                term, trunc = bool(chunk["terminated"][t, k]), bool(chunk["truncated"][t, k])
                self.open[e][1].append((chunk["action"][t, k], float(chunk["reward"][t, k]), obs, term, trunc,
                                        bool(chunk["life_loss"][t, k]), int(chunk["frames"][t, k])))
                if term or trunc:
                    finished.append(self._store(e))
                    self.start(e, full_stack(chunk["reset_obs"][(t, k)], fs))
        return finished

    def _store(self, env: int) -> tuple[float, int, int]:
        first, steps = self.open.pop(env)
        self.store.add_first(first)
        ret, frames = 0.0, 0
        for action, reward, obs, term, trunc, life_loss, f in steps:
            learn = min(max(reward, -self.reward_clip), self.reward_clip) if self.reward_clip > 0 else reward
            if self.life_loss_terminal and life_loss:
                self.store.add(action, learn, obs, term, trunc, learner_terminal=True)
            else:
                self.store.add(action, learn, obs, term, trunc)
            ret += reward
            frames += f
        return ret, len(steps), frames


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu")
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x


class RayTrainer(LearnerGroupOwner, Trainer):
    """The off-policy :class:`~pixelrl.train.loop.Trainer` with its env on Ray env workers (see the module's
    docstring); evaluation, checkpoints, resume, logs and summary are the single-process trainer's."""

    def _init(self, cfg: TrainConfig, resume: bool, checkpoint: str | None) -> None:
        import ray

        self._ray = ray
        self._begin(cfg, resume)
        self.reward_model = self.snapshot_wrapper = self.interventions = None
        env_kwargs = self._make_eval_env(cfg)
        frame_stack = int(self.eval_env.get_wrapper_attr("frame_stack"))
        cfg = self._make_agent_and_replay(resume, frame_stack)
        a = cfg.agent
        self.store = self.sampler = self.replay
        self.warmup_rng = np.random.default_rng(derive_seed(cfg.seed, WARMUP_STREAM))  # kept for the checkpoint
        self.counters = {"frames": 0, "agent_steps": 0, "episodes": 0, "evals": 0, "next_eval": 0,
                         "next_checkpoint": 0, "last_eval_frames": -1, "last_checkpoint_frames": -1, "wall_s": 0.0,
                         "updates": 0, "resets": 0, "restarts": 0, "rounds": 0, "dropped_agent_steps": 0}
        self.K = int(cfg.envs_per_worker or 1)
        self.T = int(cfg.chunk_steps or DEFAULT_CHUNK_STEPS)
        self.M = int(cfg.broadcast_every or DEFAULT_BROADCAST_EVERY)
        self.S = cfg.max_staleness
        self.learner_inference = cfg.inference == "learner"
        """``--inference learner``: the learner acts for every worker's envs (one forward pass), workers only step."""
        if self.learner_inference and not batchable(self.agent):
            raise ConfigError(f"--inference learner batches the DrQ-v2 family's and SAC's acting; agent "
                              f"{cfg.agent_name!r} acts one observation at a time (use --inference worker)")
        self._frame_stack = frame_stack
        self.learners = int(cfg.learners or 1)
        """Learner processes sharing each update (``pixelrl.distributed.ddp``): one replay batch each."""
        self.learner_group = None
        if self.learners > 1:
            if not batchable(self.agent) or getattr(a, "perturb", "none") != "none":
                raise ConfigError(f"--learners {self.learners} runs DrQ-v2 and SAC without weight perturbation (their "
                                  "learners stay identical only through optimizer steps); drop --learners or "
                                  "--agent.perturb")
            from pixelrl.distributed.ddp import _backend

            _backend(self.device, self.learners)
        if self.cfg.decisions is not None and self.learner_inference:
            self.cfg.decisions["distributed"] = (
                f"Ray: {cfg.workers} env workers x {self.K} envs, inference in the learner batched over all "
                f"{cfg.workers * self.K} envs with its current weights, one Ray call per agent step, rounds of "
                f"{self.T} steps")
        elif self.cfg.decisions is not None:
            self.cfg.decisions["distributed"] = (
                f"Ray: {cfg.workers} env workers x {self.K} envs, {self.T}-step chunks, inference batched per worker "
                f"over its envs, weights broadcast every {self.M} updates, max staleness "
                f"{'unbounded' if self.S is None else self.S}")
        if self.cfg.decisions is not None and self.learners > 1:
            self.cfg.decisions["learners"] = (
                f"{self.learners} data-parallel learners ({'nccl' if self.device.type == 'cuda' else 'gloo'}), one "
                f"replay batch of {a.batch_size} each, gradients averaged before every optimizer step")
        self.assembler = EpisodeAssembler(self.store, reward_clip=getattr(self.agent, "reward_clip", 0.0),
                                          life_loss_terminal=getattr(self.agent, "life_loss_terminal", False))
        gl_env, worker_cfg = gl_environment(), a

        def make_args(index: int, restarts: int) -> tuple[tuple, dict]:
            agent = None if self.learner_inference else (cfg.agent_name, worker_cfg)
            return (cfg.env, self.K, env_kwargs), {"gl_env": gl_env, "agent": agent,
                                                   "torch_seed": derive_seed(cfg.seed, RESTART_STREAM, restarts, index)}

        self.pool = self.train_env = WorkerPool.launch(cfg.ray_address, cfg.workers, make_args)  # closed with the run
        self._obs: list[Any] = [None] * len(self.pool)  # each worker's current observations (--inference learner)
        self._gens = [self._generator(w) for w in range(len(self.pool))]
        self._inflight: dict[int, tuple[Any, int]] = {}  # worker -> (ref, version that acts)
        self._idle: list[int] = []  # workers whose chunk was taken and that wait for their next call
        self._worker_version = [-1] * len(self.pool)
        self._weights: tuple[int, Any] | None = None  # (version, object ref) of the last broadcast
        self._needs_reset = True
        self._open_run(resume, checkpoint)

    # ---- workers ---------------------------------------------------------------------------------------------
    def _generator(self, w: int) -> torch.Generator:
        """Worker ``w``'s exploration RNG, seeded as the worker seeds its own (``EnvWorker.gen``): with ``--inference
        learner`` the learner draws worker ``w``'s noise from it."""
        return torch.Generator().manual_seed(derive_seed(self.cfg.seed, RESTART_STREAM, self.pool.restarts, w))

    def _broadcast(self) -> None:
        self._weights = (self.counters["updates"], self._ray.put(_to_cpu(self.agent.state_dict())))

    def _submit(self, w: int) -> None:
        """Hand worker ``w`` its next chunk (with the newest weights if it does not hold them yet)."""
        version, ref = self._weights
        send = ref if self._worker_version[w] != version else None
        self._worker_version[w] = version
        call = self.pool.actors[w].chunk.remote(self.T, step=self.counters["agent_steps"], version=version,
                                                 weights=send)
        self._inflight[w] = (call, version)

    def _reset_worker(self, w: int, seeds: list[int]) -> bool:
        """Reset worker ``w``'s envs and open their episodes; False if the worker is dead."""
        try:
            obs = self._ray.get(self.pool.actors[w].reset.remote(seeds))
        except Exception as e:
            if self.pool.is_dead(e):
                return False
            raise env_step_error(self.cfg.env, getattr(e, "cause", e), "the reset of the training envs") from None
        self._obs[w] = obs
        for k in range(self.K):
            self.assembler.start(w * self.K + k,
                                 {key: v[k] for key, v in obs.items()} if isinstance(obs, dict) else obs[k])
        return True

    def _restart(self, w: int, progress: TrainProgress) -> None:
        """Worker ``w`` died: drop what it had in flight and its unfinished episodes, start a new one."""
        c = self.counters
        self._inflight.pop(w, None)
        if w in self._idle:
            self._idle.remove(w)
        c["dropped_agent_steps"] += self.assembler.drop(
            range(w * self.K, (w + 1) * self.K))
        for attempt in range(MAX_START_ATTEMPTS + 1):
            if attempt == MAX_START_ATTEMPTS:
                raise PixelRLError(f"env worker {w} died {MAX_START_ATTEMPTS} times in a row while starting (its envs "
                                   f"or agent copy could not be made in a Ray worker process); see the worker logs "
                                   f"under /tmp/ray/session_latest/logs, or run {self.cfg.env} without --workers to "
                                   "see the error")
            self.pool.restart(w)
            c["restarts"] += 1
            self._worker_version[w] = -1
            self._gens[w] = self._generator(w)
            seeds = [derive_seed(self.cfg.seed, RESTART_STREAM, c["restarts"], w * self.K + k) for k in range(self.K)]
            if self._reset_worker(w, seeds):
                break
        progress.print(f"env worker {w} died at frame {c['frames']:,}; restarted (restart {c['restarts']}), its "
                       "unfinished chunk and episodes dropped")
        if not self.learner_inference:
            self._submit(w)

    def _start_round_envs(self, progress: TrainProgress) -> None:
        """At the start (and after a resume): reset every env with the seeds of reset ``resets`` and submit."""
        c = self.counters
        if not self.learner_inference and (self._weights is None or self._weights[0] != c["updates"]):
            self._broadcast()
        for w in range(len(self.pool)):
            seeds = [derive_seed(self.cfg.seed, TRAIN_STREAM, c["resets"], w * self.K + k) for k in range(self.K)]
            if not self._reset_worker(w, seeds):
                self._restart(w, progress)
            elif not self.learner_inference:
                self._submit(w)
        c["resets"] += 1
        self._needs_reset = False

    # ---- the learner -----------------------------------------------------------------------------------------
    def _owed(self) -> int:
        a = self.cfg.agent
        return owed_updates(self.counters["agent_steps"], seed_steps=int(getattr(a, "num_seed_steps", 0)),
                            update_every=int(getattr(a, "update_every_steps", 1)),
                            updates_per_step=int(getattr(a, "updates_per_step", 1))) - self.counters["updates"]

    def _may_update(self) -> bool:
        """Whether an update is owed and allowed: the replay has a finished episode, and the next version stays within
        ``max_staleness`` of every chunk in flight."""
        if self._owed() <= 0 or self.replay.num_sampleable() == 0:  # episodes reach the replay when they end
            return False
        if self.S is None or not self._inflight:
            return True
        oldest = min(v for _, v in self._inflight.values())
        return self.counters["updates"] + 1 - oldest <= self.S

    def _may_submit(self) -> bool:
        """Whether an idle worker may start its next chunk: always without ``max_staleness`` (or while the replay has
        nothing to sample); with it, when the updates still owed fit within the bound for a chunk acting with the
        newest broadcast weights (else the learner pays its debt first: the workers wait, so the replay ratio and the
        bound both hold)."""
        if self.S is None or self.replay.num_sampleable() == 0:
            return True
        return self._owed() <= self.S - (self.counters["updates"] - self._weights[0])

    def _submit_idle(self) -> None:
        while self._idle and self._may_submit():
            self._submit(self._idle.pop(0))

    def _update(self, metrics: dict[str, list[float]]) -> None:
        c = self.counters
        batch_size = int(self.cfg.agent.batch_size)
        if self.learners > 1:
            if self.learner_group is None:  # after a resume has loaded the agent the helpers copy
                from pixelrl.distributed.ddp import OffPolicyLearnerGroup

                self.learner_group = OffPolicyLearnerGroup(self.learners, self.agent, self.cfg.agent_name,
                                                           self.obs_space, self.action_space, self.cfg.agent)
            m = self.learner_group.update([self.sampler.sample(batch_size, **self._sample_kwargs)
                                           for _ in range(self.learners)], step=c["agent_steps"])
        else:
            m = self.agent.update(self.sampler.sample(batch_size, **self._sample_kwargs), step=c["agent_steps"])
        for k, v in m.items():
            metrics[k].append(float(v))
        bad = {k: float(v) for k, v in m.items() if "loss" in k and not math.isfinite(float(v))}
        if bad:
            raise DivergenceError(f"{', '.join(f'{k} = {v}' for k, v in bad.items())} at update {c['updates'] + 1:,} "
                                  f"(frame {c['frames']:,}): the training diverged")
        c["updates"] += 1
        if self._weights is not None and c["updates"] - self._weights[0] >= self.M:
            self._broadcast()

    def _train_episode(self, progress: TrainProgress) -> None:
        """One round: ``workers x envs_per_worker x chunk_steps`` agent steps ingested, updates interleaved."""
        if self.learner_inference:
            return self._train_round_learner_inference(progress)
        c, ray = self.counters, self._ray
        t_start = time.perf_counter()
        if self._needs_reset:
            self._start_round_envs(progress)
        target = c["agent_steps"] + len(self.pool) * self.K * self.T
        frames0, updates0 = c["frames"], c["updates"]
        metrics: dict[str, list[float]] = defaultdict(list)
        finished: list[tuple[float, int, int]] = []
        staleness: list[int] = []
        ready_depth: list[int] = []
        worker_frames, worker_env_s = np.zeros(len(self.pool)), np.zeros(len(self.pool))
        wait_s = update_s = 0.0
        while c["agent_steps"] < target:
            self._submit_idle()
            if self._may_update():  # the replay ratio first: new data waits (its worker already steps the next chunk)
                t0 = time.perf_counter()
                self._update(metrics)
                update_s += time.perf_counter() - t0
                continue
            t0 = time.perf_counter()
            refs = {ref: w for w, (ref, _) in self._inflight.items()}
            done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
            if not done:
                done, _ = ray.wait(list(refs), num_returns=1)
            ready_depth.append(len(done))
            w = refs[done[0]]
            _, version = self._inflight.pop(w)
            try:
                chunk = ray.get(done[0])
            except Exception as e:
                if not self.pool.is_dead(e):
                    raise env_step_error(self.cfg.env, getattr(e, "cause", e), f"frame {c['frames']:,}") from None
                self._restart(w, progress)
                wait_s += time.perf_counter() - t0
                continue
            wait_s += time.perf_counter() - t0
            staleness.append(c["updates"] - version)
            worker_frames[w] += int(chunk["frames"].sum())
            worker_env_s[w] += float(chunk["env_s"])
            ended = self.assembler.add_chunk(w * self.K, chunk)
            if hasattr(self.agent, "observe_episode"):  # the agent's episode hooks (e.g. MENTOR's snapshots)
                for ret, _, _ in ended:
                    self.agent.observe_episode(ret, c["agent_steps"])
            finished += ended
            c["episodes"] += len(ended)
            c["agent_steps"] += int(chunk["reward"].size)
            c["frames"] += int(chunk["frames"].sum())
            self._idle.append(w)  # its next chunk starts at the loop's top, once the staleness bound allows it
            progress.update(c["frames"], env_s=wait_s, act_s=0.0, update_s=update_s)
        self._submit_idle()  # the workers step on while the learner evaluates or checkpoints between rounds
        c["rounds"] += 1
        self._log_round(t_start, frames0, updates0, metrics, finished, staleness, ready_depth, worker_frames,
                        worker_env_s, wait_s, update_s)

    def _train_round_learner_inference(self, progress: TrainProgress) -> None:
        """One round with ``--inference learner``: every agent step, one forward pass over all workers' envs (the
        learner's current weights, each worker's noise from its own generator), each worker steps its envs, and the
        updates the ingested steps are owed run while the envs step; each step is ingested as a one-step chunk."""
        c, ray, K = self.counters, self._ray, self.K
        t_start = time.perf_counter()
        if self._needs_reset:
            self._start_round_envs(progress)
        target = c["agent_steps"] + len(self.pool) * K * self.T
        frames0, updates0 = c["frames"], c["updates"]
        metrics: dict[str, list[float]] = defaultdict(list)
        finished: list[tuple[float, int, int]] = []
        staleness: list[int] = []
        worker_frames, worker_env_s = np.zeros(len(self.pool)), np.zeros(len(self.pool))
        wait_s = update_s = act_s = 0.0
        while c["agent_steps"] < target:
            t0 = time.perf_counter()
            actions = act_batch(self.agent, _concat(self._obs), step=c["agent_steps"],
                                generators=[(g, K) for g in self._gens])
            if not np.isfinite(actions).all():
                raise DivergenceError(f"the policy's action is not finite at agent step {c['agent_steps']:,} (frame "
                                      f"{c['frames']:,}): the networks diverged")
            version = c["updates"]
            refs = [a.timed_step.remote(actions[w * K:(w + 1) * K]) for w, a in enumerate(self.pool.actors)]
            t1 = time.perf_counter()
            act_s += t1 - t0
            while self._may_update():  # the updates owed so far, while the envs step
                self._update(metrics)
            t2 = time.perf_counter()
            update_s += t2 - t1
            for w, ref in enumerate(refs):
                try:
                    obs, reward, term, trunc, info, seconds = ray.get(ref)
                except Exception as e:
                    if not self.pool.is_dead(e):
                        raise env_step_error(self.cfg.env, getattr(e, "cause", e), f"frame {c['frames']:,}") from None
                    self._restart(w, progress)
                    continue
                rec = ChunkRecorder(self.action_repeat, self._frame_stack)
                rec.add(actions[w * K:(w + 1) * K], obs, reward, term, trunc, info)
                chunk = rec.result(version, env_s=seconds)
                self._obs[w] = obs
                staleness.append(c["updates"] - version)
                worker_frames[w] += int(chunk["frames"].sum())
                worker_env_s[w] += float(seconds)
                ended = self.assembler.add_chunk(w * K, chunk)
                if hasattr(self.agent, "observe_episode"):
                    for ret, _, _ in ended:
                        self.agent.observe_episode(ret, c["agent_steps"])
                finished += ended
                c["episodes"] += len(ended)
                c["agent_steps"] += K
                c["frames"] += int(chunk["frames"].sum())
            wait_s += time.perf_counter() - t2
            progress.update(c["frames"], env_s=wait_s, act_s=act_s, update_s=update_s)
        c["rounds"] += 1
        self._log_round(t_start, frames0, updates0, metrics, finished, staleness, [], worker_frames, worker_env_s,
                        wait_s, update_s, act_s=act_s, inference_batch=len(self.pool) * K)

    def _log_round(self, t_start: float, frames0: int, updates0: int, metrics: dict[str, list[float]],
                   finished: list[tuple[float, int, int]], staleness: list[int], ready_depth: list[int],
                   worker_frames: np.ndarray, worker_env_s: np.ndarray, wait_s: float, update_s: float, *,
                   act_s: float = 0.0, inference_batch: int | None = None) -> None:
        c = self.counters
        means = {k: float(np.mean(v)) for k, v in sorted(metrics.items())}
        self._warn_if_losses_explode(means)
        row: dict[str, Any] = {"frames": c["frames"], "agent_steps": c["agent_steps"], "episodes": c["episodes"],
                               "round": c["rounds"], "episodes_finished": len(finished)}
        if finished:
            row.update(episode_return=float(np.mean([f[0] for f in finished])),
                       episode_length=float(np.mean([f[1] for f in finished])))
        row.update(means)
        updates = c["updates"] - updates0
        row.update(updates=c["updates"], version=c["updates"], workers=len(self.pool), restarts=c["restarts"],
                   inference_batch=self.K if inference_batch is None else inference_batch,
                   updates_per_s=updates / max(update_s, 1e-9) if updates else 0.0,
                   staleness_mean=float(np.mean(staleness)) if staleness else 0.0,
                   staleness_max=int(max(staleness)) if staleness else 0,
                   queue_ready=float(np.mean(ready_depth)) if ready_depth else 0.0, inflight=len(self._inflight))
        for w in range(len(self.pool)):
            row[f"worker{w}_fps"] = float(worker_frames[w] / max(worker_env_s[w], 1e-9))
        seconds = time.perf_counter() - t_start
        row.update(fps=(c["frames"] - frames0) / max(seconds, 1e-9), env_s=wait_s, act_s=act_s, update_s=update_s,
                   wall_s=time.perf_counter() - self._wall_start)
        self.logger.log("train", row)
