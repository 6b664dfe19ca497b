"""A vector env over Ray env workers: ``N`` workers x ``K`` envs behind the ``reset(seed=[...])`` / ``step(actions)``
interface of a Gymnasium vector env with same-step autoreset, so the on-policy trainer's rollout code runs on it
unchanged. Env ``w * K + k`` is env ``k`` of worker ``w``; every step sends each worker its K actions in one call,
all workers step at once, and the learner batches inference over all ``N x K`` observations.

A worker that dies during a step is restarted (:class:`~pixelrl.distributed.pool.WorkerPool`): its envs are reset
with fresh seeds and that step reports them as truncated with 0 reward and 0 frames (the step never happened), their
last observation as ``final_obs`` (so the learner bootstraps from it), and the new first observation as ``obs``.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from pixelrl.distributed.pool import WorkerPool

__all__ = ["RayVectorEnv"]


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def _merge_infos(infos: list[dict], sizes: list[int]) -> dict:
    """Concatenate per-worker vector-env infos (arrays of length K, ``_key`` masks, nested dicts); a key a worker did
    not report is filled with zeros and masked out."""
    out: dict[str, Any] = {}
    for key in sorted({k for info in infos for k in info}):
        vals = [info.get(key) for info in infos]
        if all(v is None or isinstance(v, dict) for v in vals):
            out[key] = _merge_infos([v or {} for v in vals], sizes)
            continue
        ref = np.asarray(next(v for v in vals if v is not None))
        out[key] = np.concatenate([np.asarray(v) if v is not None else np.zeros((n, *ref.shape[1:]), ref.dtype)
                                   for v, n in zip(vals, sizes)])
    return out


class RayVectorEnv:
    """``len(pool)`` workers of ``envs_per_worker`` envs each, as one vector env of ``num_envs`` envs.

    ``restart_seeds(restarts, first_env, count)`` gives the reset seeds of a restarted worker's envs."""

    def __init__(self, pool: WorkerPool, envs_per_worker: int, *, single_observation_space, single_action_space,
                 restart_seeds: Callable[[int, int, int], list[int]]) -> None:
        import ray

        self._ray = ray
        self.pool = pool
        self.K = int(envs_per_worker)
        self.num_envs = len(pool) * self.K
        self.single_observation_space = single_observation_space
        self.single_action_space = single_action_space
        self._restart_seeds = restart_seeds
        self._obs: Any = None
        self.frames = np.zeros(len(pool), np.int64)
        """Env frames each worker stepped since :meth:`reset_stats`."""
        self.env_s = np.zeros(len(pool))
        """Seconds each worker spent stepping its envs since :meth:`reset_stats`."""

    @property
    def vec(self) -> "RayVectorEnv":
        """Itself: what the on-policy trainer steps (its training envs are ``train_env.vec``)."""
        return self

    def _slice(self, x: Any, w: int) -> Any:
        sl = slice(w * self.K, (w + 1) * self.K)
        return {k: v[sl] for k, v in x.items()} if isinstance(x, dict) else x[sl]

    def _get(self, ref):
        """Fetch a result: a worker's env error is raised as itself (the trainer names it), a dead worker as None."""
        from ray.exceptions import RayTaskError

        try:
            return self._ray.get(ref)
        except RayTaskError as e:
            if self.pool.is_dead(e):
                return None
            raise (e.cause if isinstance(getattr(e, "cause", None), BaseException) else e) from None
        except Exception as e:
            if self.pool.is_dead(e):
                return None
            raise

    def reset(self, seed: list[int] | None = None, options: Any = None) -> tuple[Any, dict]:
        """Reset env ``i`` with ``seed[i]`` (a worker that died meanwhile is restarted and reset with the same
        seeds)."""
        seeds = list(seed) if seed is not None else [None] * self.num_envs
        parts = []
        for w in range(len(self.pool)):
            mine = seeds[w * self.K:(w + 1) * self.K]
            obs = self._get(self.pool.actors[w].reset.remote(mine))
            if obs is None:
                self.pool.restart(w)
                obs = self._ray.get(self.pool.actors[w].reset.remote(mine))
            parts.append(obs)
        self._obs = _concat(parts)
        return self._obs, {}

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        refs = [a.timed_step.remote(self._slice(actions, w)) for w, a in enumerate(self.pool.actors)]
        outs = []
        for w, ref in enumerate(refs):
            out = self._get(ref)
            if out is None:
                out = self._restarted(w)
            *out, seconds = out
            self.env_s[w] += seconds
            outs.append(out)
        sizes = [self.K] * len(outs)
        info = _merge_infos([o[4] for o in outs], sizes)
        obs = _concat([o[0] for o in outs])
        reward, term, trunc = (np.concatenate([np.asarray(o[i]) for o in outs]) for i in (1, 2, 3))
        self._count_frames(info, term | trunc)
        self._obs = obs
        return obs, reward, term, trunc, info

    def _count_frames(self, info: dict, done: np.ndarray) -> None:
        from pixelrl.train.onpolicy import _per_env

        repeat = int(getattr(self, "action_repeat", 1))
        frames = _per_env(info, "frames", done, repeat).astype(np.int64)
        self.frames += frames.reshape(len(self.pool), self.K).sum(axis=1)

    def _restarted(self, w: int) -> tuple:
        """Restart worker ``w`` and make the step it did not finish: its envs truncated with nothing gained."""
        t0 = time.perf_counter()
        self.pool.restart(w)
        seeds = self._restart_seeds(self.pool.restarts, w * self.K, self.K)
        obs = self._ray.get(self.pool.actors[w].reset.remote(seeds))
        last = self._slice(self._obs, w)
        final_obs = np.empty(self.K, dtype=object)
        for k in range(self.K):
            final_obs[k] = {key: v[k] for key, v in last.items()} if isinstance(last, dict) else last[k]
        done = np.ones(self.K, bool)
        info = {"final_obs": final_obs, "_final_obs": done,
                "final_info": {"frames": np.zeros(self.K, np.int64), "_frames": done}}
        return (obs, np.zeros(self.K, np.float32), np.zeros(self.K, bool), done, info, time.perf_counter() - t0)

    def reset_stats(self) -> None:
        self.frames[:] = 0
        self.env_s[:] = 0.0

    def close(self) -> None:
        self.pool.close()
