"""PPO on Ray: the on-policy trainer with its vector env replaced by :class:`~pixelrl.distributed.vector.RayVectorEnv`.

Rollouts stay synchronous: at every rollout step the learner runs one forward pass over the observations of all
``workers x envs_per_worker`` envs, each worker steps its envs, and the learner updates after ``rollout_steps`` steps
(policy staleness 0). Env ``i`` is seeded as env ``i`` of the single-process trainer's vector env, so a Ray run with
``workers x envs_per_worker = num_envs`` writes the same rows (timing and worker columns aside) as the one-process
run, and checkpoints and resume are that trainer's (every checkpoint is a reset point of all envs).
"""

from __future__ import annotations

from typing import Any

from pixelrl.distributed.pool import WorkerPool
from pixelrl.distributed.vector import RayVectorEnv
from pixelrl.envs._gl import gl_environment
from pixelrl.errors import ConfigError
from pixelrl.train.config import TrainConfig
from pixelrl.train.onpolicy import OnPolicyTrainer
from pixelrl.utils.seeding import derive_seed

__all__ = ["RayOnPolicyTrainer", "RESTART_STREAM", "envs_per_worker"]

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


class RayOnPolicyTrainer(OnPolicyTrainer):
    """:class:`~pixelrl.train.onpolicy.OnPolicyTrainer` whose envs run on Ray env workers."""

    def _make_train_env(self, cfg: TrainConfig, env_kwargs: dict[str, Any]) -> RayVectorEnv:
        k = envs_per_worker(cfg)
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
        self._restarts_seen = 0
        return vec

    def _rollout_stats(self) -> dict[str, Any]:
        vec = self.train_env.vec
        c = self.counters
        c["restarts"] = int(c.get("restarts", 0)) + vec.pool.restarts - self._restarts_seen
        self._restarts_seen = vec.pool.restarts
        row: dict[str, Any] = {"workers": len(vec.pool), "restarts": c["restarts"], "inference_batch": vec.num_envs,
                               "staleness_max": 0}
        for w, (f, s) in enumerate(zip(vec.frames, vec.env_s)):
            row[f"worker{w}_fps"] = float(f / max(s, 1e-9))
        vec.reset_stats()
        return row
