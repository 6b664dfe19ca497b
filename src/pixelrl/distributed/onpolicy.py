"""PPO on Ray: the on-policy trainer with its vector env replaced by :class:`~pixelrl.distributed.vector.RayVectorEnv`.

Synchronous rollouts (``--max-staleness 0``, the default): at every rollout step the learner runs one forward pass
over the observations of all ``workers x envs_per_worker`` envs, each worker steps its envs, and the learner updates
after ``rollout_steps`` steps (policy staleness 0). Env ``i`` is seeded as env ``i`` of the single-process trainer's
vector env, so a Ray run with ``workers x envs_per_worker = num_envs`` writes the same rows (timing and worker columns
aside) as the one-process run, and checkpoints and resume are that trainer's (every checkpoint is a reset point of
all envs).

Bounded staleness (``--max-staleness S``, S >= 1): the update of a rollout runs in a learner thread while the workers
go on collecting the next rollouts, acting with the newest policy version the learner had finished when that rollout
started -- at most ``S`` rollouts (= ``S`` updates, one per rollout) may wait for the learner. Rollout ``r`` (counted
from the start of the pipeline) acts with policy version ``max(0, r - S)``, the version numbered by updates done, so
the update that takes it runs at version ``r`` and the data is ``r - max(0, r - S) <= S`` updates old. The version is
fixed by ``r`` (not by whichever update happens to be done), so a run is reproducible: the same seed gives the same
rows. Every transition is stamped with the version that acted; the row of each update logs ``policy_version`` and
``staleness_mean`` / ``staleness_max`` over its rows (never above ``S``). Inference stays batched in the learner
process, on a behaviour copy of the policy holding that version (so the learner thread never changes the weights the
rollout acts with).

What the update does with stale data: PPO's importance ratio is ``pi_theta(a|s) / mu(a|s)`` with ``mu`` the behaviour
policy's log-prob recorded at collection (what :class:`~pixelrl.data.rollout.RolloutBuffer` stores and
:meth:`~pixelrl.agents.ppo.PPOAgent.update` reads as the "old" log-prob), so the clip keeps the new policy near the
policy that collected the data; GAE's advantages and the value targets use the values the behaviour critic recorded
(the value clip is around them too). Nothing else corrects for the lag. Other asynchronous actor-critic methods do
more: IMPALA (Espeholt et al. 2018) and APPO (RLlib, Sample Factory) compute V-trace targets -- truncated importance
weights ``min(rho_bar, pi/mu)`` in the value targets and advantages; decoupled PPO (Hilton et al. 2021, "Batch
size-invariance for policy optimization") clips against a proximal policy (the learner's weights at the update's
start) and weights by ``pi_prox / mu`` separately. Neither is done here: with ``S`` small (1-2 updates) the ratio to
the behaviour policy stays near 1 and the clip alone is what APPO without V-trace does; ``clipfrac`` and
``old_approx_kl`` in each row show how far the data lagged.

Evaluations and checkpoints drain the pipeline first (every pending update is done and logged), so they see the
weights of all data collected so far; the rollout after a drain acts with the newest version (the pipeline starts
again). A checkpoint therefore holds no pending rollout and resume is exact as in the synchronous mode. The minibatch
permutations of each update are drawn from torch's RNG in the collecting thread, before the update starts, so the
learner thread draws no random number.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import torch

from pixelrl.distributed.ddp import LearnerGroupOwner, draw_perms
from pixelrl.distributed.pool import WorkerPool
from pixelrl.distributed.vector import RayVectorEnv
from pixelrl.envs._gl import gl_environment
from pixelrl.errors import ConfigError
from pixelrl.train.config import TrainConfig
from pixelrl.train.onpolicy import OnPolicyTrainer
from pixelrl.train.progress import TrainProgress
from pixelrl.utils.seeding import derive_seed

__all__ = ["RayOnPolicyTrainer", "RESTART_STREAM", "StagedRollout", "envs_per_worker"]

RESTART_STREAM = 11
"""Seed stream of the envs of a restarted worker: ``(seed, RESTART_STREAM, restart index, env index)``."""


def envs_per_worker(cfg: TrainConfig) -> int:
    """PPO's envs per worker: ``--envs-per-worker``, else ``num_envs / workers``; ``workers x K`` must be
    ``num_envs``."""
    n, w = int(cfg.agent.num_envs), int(cfg.workers)
    k = cfg.envs_per_worker if cfg.envs_per_worker is not None else n // w
    if k < 1 or w * k != n:
        raise ConfigError(f"PPO on Ray steps --agent.num-envs ({n}) envs as --workers ({w}) x --envs-per-worker "
                          f"({cfg.envs_per_worker if cfg.envs_per_worker is not None else 'num_envs / workers'}); "
                          "choose values whose product is num_envs")
    return k


class StagedRollout:
    """A finished rollout (advantages and returns computed) handed to the learner thread, with the minibatch
    permutations of each epoch drawn beforehand (``perms[epoch][learner]``, :func:`~pixelrl.distributed.ddp.draw_perms`)
    and the policy version of every row (``versions``, ``[T, N]``). With one learner, ``minibatches`` yields what
    :meth:`~pixelrl.data.rollout.RolloutBuffer.minibatches` does, from those permutations."""

    def __init__(self, rollout, perms: list[torch.Tensor], version: int) -> None:
        self.rollout = rollout
        self.perms = perms
        self.values, self.returns = rollout.values, rollout.returns
        self.versions = torch.full((rollout.num_steps, rollout.num_envs), int(version), dtype=torch.int64)
        self._epoch = 0

    def minibatches(self, num_minibatches: int):
        n = self.rollout.batch_size
        size = n // num_minibatches
        flat = self.rollout.flat()
        perm = self.perms[self._epoch][0].to(self.rollout.device)
        self._epoch += 1
        for start in range(0, n, size):
            idx = perm[start:start + size]
            yield {k: v[idx] for k, v in flat.items()}


class RayOnPolicyTrainer(LearnerGroupOwner, OnPolicyTrainer):
    """:class:`~pixelrl.train.onpolicy.OnPolicyTrainer` whose envs run on Ray env workers; with ``max_staleness >= 1``
    its updates run in a learner thread while the next rollouts are collected (see the module's docstring)."""

    def _init(self, cfg: TrainConfig, resume: bool, checkpoint: str | None) -> None:
        self.staleness_bound = int(cfg.max_staleness or 0)
        """S: rollouts collected ahead of the learner (0: synchronous)."""
        self._pending: list[tuple] = []
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._base: int | None = None  # the rollout count where the pipeline (re)started
        self._staleness: list[int] = []
        self.learners = int(cfg.learners or 1)
        """Learner processes sharing each update (``pixelrl.distributed.ddp``)."""
        self.learner_group = None
        super()._init(cfg, resume, checkpoint)
        if self.staleness_bound:
            from pixelrl.agents import make_agent
            from pixelrl.data.rollout import RolloutBuffer

            a = cfg.agent
            with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten: no draw from the run's RNG
                self._behaviour = make_agent(cfg.agent_name, self.obs_space, self.action_space, a, self.device)
            self._behaviour_version = -1
            self._latest: tuple[int, dict] | None = None
            ro = self.rollout
            self._free = [ro] + [RolloutBuffer(a.rollout_steps, a.num_envs, tuple(self.obs_space.shape),
                                               ro.obs.dtype, self.agent.action_shape, ro.actions.dtype, self.device)
                                 for _ in range(self.staleness_bound)]
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pixelrl-learner")
            if self.cfg.decisions is not None and not resume:
                self.cfg.decisions["vector_env"] += (f"; bounded staleness {self.staleness_bound}: updates in a "
                                                     "learner thread while the next rollouts are collected")

    def _make_train_env(self, cfg: TrainConfig, env_kwargs: dict[str, Any]) -> RayVectorEnv:
        k = envs_per_worker(cfg)
        if self.learners > 1:  # before Ray or the run folder starts
            n = cfg.agent.num_envs * cfg.agent.rollout_steps
            if n % (self.learners * cfg.agent.num_minibatches):
                raise ConfigError(f"--learners {self.learners} shares a rollout of num_envs x rollout_steps = {n} rows "
                                  f"in num_minibatches = {cfg.agent.num_minibatches} minibatches: learners x "
                                  "num_minibatches must divide the rows")
            from pixelrl.distributed.ddp import _backend

            _backend(self.device, self.learners)  # one GPU per learner, or one clear line
        gl_env = gl_environment()

        def make_args(index: int, restarts: int) -> tuple[tuple, dict]:
            return (cfg.env, k, env_kwargs), {"gl_env": gl_env}

        pool = WorkerPool.launch(cfg.ray_address, cfg.workers, make_args)
        vec = RayVectorEnv(pool, k, single_observation_space=self.obs_space, single_action_space=self.action_space,
                           restart_seeds=lambda r, first, count: [derive_seed(cfg.seed, RESTART_STREAM, r, first + i)
                                                                  for i in range(count)])
        vec.action_repeat = self.action_repeat
        if self.cfg.decisions is not None:
            self.cfg.decisions["vector_env"] = (f"Ray: {cfg.workers} env workers x {k} envs, synchronous rollouts, "
                                                "inference batched in the learner")
            if self.learners > 1:
                self.cfg.decisions["learners"] = (f"{self.learners} data-parallel learners (torch.distributed DDP, "
                                                  f"{'nccl' if self.device.type == 'cuda' else 'gloo'})")
        self._restarts_seen = 0
        return vec

    def _rollout_stats(self) -> dict[str, Any]:
        vec = self.train_env.vec
        c = self.counters
        c["restarts"] = int(c.get("restarts", 0)) + vec.pool.restarts - self._restarts_seen
        self._restarts_seen = vec.pool.restarts
        row: dict[str, Any] = {"workers": len(vec.pool), "restarts": c["restarts"], "inference_batch": vec.num_envs,
                               "staleness_max": 0}
        if self.staleness_bound:
            row.update(staleness_max=self._staleness[0], staleness_mean=self._staleness[1],
                       policy_version=self._staleness[2], pending=len(self._pending))
        for w, (f, s) in enumerate(zip(vec.frames, vec.env_s)):
            row[f"worker{w}_fps"] = float(f / max(s, 1e-9))
        vec.reset_stats()
        return row

    # ---- bounded staleness (max_staleness >= 1) -------------------------------------------------------------
    def _train_episode(self, progress: TrainProgress) -> None:
        if not self.staleness_bound:
            return super()._train_episode(progress)
        cfg, c, a, agent = self.cfg, self.counters, self.cfg.agent, self.agent
        t_start = time.perf_counter()
        if self._needs_reset:
            self._reset_envs()
        if self._base is None:
            self._base = c["rollouts"]
        r = c["rollouts"] + len(self._pending)  # this rollout's index
        version = max(self._base, r - self.staleness_bound)
        while c["rollouts"] < version:  # wait for the learner to reach the version this rollout acts with
            self._harvest(progress)
        if self._behaviour_version != version:
            if self._latest is None or self._latest[0] != version:  # the pipeline's start: the agent's own weights
                self._latest = (c["rollouts"], {k: v.detach().clone() for k, v in agent.net.state_dict().items()})
            assert self._latest[0] == version, (self._latest[0], version)
            self._behaviour.net.load_state_dict(self._latest[1])
            self._behaviour_version = version
        budget_done = c["frames"] / max(cfg.frames, 1)
        frames_before = c["frames"]
        ro = self._free.pop()
        behaviour = self._behaviour
        stats = self._collect_rollout(progress, ro, behaviour.policy_step, behaviour.value)
        ro.compute_returns(behaviour.value(self._next_obs), gamma=a.gamma, gae_lambda=a.gae_lambda)
        perms = draw_perms(self.learners, ro.batch_size // self.learners, a.update_epochs)  # torch's RNG, this thread
        staged = StagedRollout(ro, perms, version)
        self._start_learners()
        future = self._executor.submit(self._update_in_thread, staged, c["agent_steps"], budget_done)
        self._pending.append((future, staged, stats, frames_before, time.perf_counter() - t_start))

    def _update_in_thread(self, staged: StagedRollout, step: int, budget_done: float) -> tuple:
        """The learner thread: one PPO update on ``staged``; returns its metrics, the weights it made (the next
        version, copied) and its seconds."""
        t0 = time.perf_counter()
        if self.learner_group is not None:
            metrics = self.learner_group.update(staged.rollout, step=step, progress=budget_done, perms=staged.perms)
        else:
            metrics = self.agent.update(staged, step=step, progress=budget_done)
        weights = {k: v.detach().clone() for k, v in self.agent.net.state_dict().items()}
        return metrics, weights, time.perf_counter() - t0

    def _harvest(self, progress: TrainProgress) -> None:
        """Wait for the oldest pending update and log its row (with the staleness of its rows)."""
        future, staged, stats, frames_before, collect_s = self._pending.pop(0)
        metrics, weights, update_s = future.result()
        c = self.counters
        stale = c["rollouts"] - staged.versions  # the learner's version when the update started, minus each row's
        self._staleness = [int(stale.max()), float(stale.float().mean()), int(staged.versions.max())]
        self._latest = (c["rollouts"] + 1, weights)
        self._harvested = weights
        self._free.append(staged.rollout)
        progress.update(stats["frames"], env_s=stats["env_s"], act_s=stats["act_s"], update_s=update_s)
        self._log_rollout(stats, metrics, frames_before=frames_before, update_s=update_s, seconds=collect_s)

    # ---- data-parallel learners (learners > 1) ----------------------------------------------------------------
    def _start_learners(self) -> None:
        """Start the helper learners at the first update (after a resume has loaded the agent they copy)."""
        if self.learners > 1 and self.learner_group is None:
            from pixelrl.distributed.ddp import LearnerGroup

            self.learner_group = LearnerGroup(self.learners, self.agent, self.cfg.agent_name, self.obs_space,
                                              self.action_space, self.cfg.agent)

    def _update(self, rollout: Any, *, step: int, progress: float) -> dict[str, float]:
        if self.learners == 1:
            return super()._update(rollout, step=step, progress=progress)
        self._start_learners()
        return self.learner_group.update(rollout, step=step, progress=progress)

    def _check_parameters(self, where: str) -> None:
        """With updates in the learner thread: check the weights the harvested update made (the thread may be changing
        the agent's own meanwhile)."""
        if not self.staleness_bound:
            return super()._check_parameters(where)
        from pixelrl.errors import DivergenceError

        for name, t in self._harvested.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise DivergenceError(f"parameter net.{name} is not finite {where}: the training diverged")

    def _drain(self, progress: TrainProgress | None = None) -> None:
        """Do and log every pending update; the next rollout acts with the newest weights."""
        while self._pending:
            self._harvest(progress if progress is not None else _NoProgress())
        self._base = None

    def _evaluate(self, progress: TrainProgress) -> dict[str, Any]:
        self._drain(progress)
        return super()._evaluate(progress)

    def _checkpoint(self):
        self._drain()
        return super()._checkpoint()

    def _close(self, *, release: bool = True) -> None:
        executor, self._executor = getattr(self, "_executor", None), None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        super()._close(release=release)  # LearnerGroupOwner closes the learner group, then the trainer


class _NoProgress:
    def update(self, *args, **kwargs) -> None:
        pass
