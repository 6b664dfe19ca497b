"""Ray itself: starting or joining a cluster, the env workers as actors, restarting a worker that died.

A dead worker (its process killed, its node lost) surfaces as a ``RayActorError`` when its result is fetched. The
pool then starts a new actor in its place (same envs, new seeds), counts the restart, and the caller drops whatever
the dead worker had in flight: a chunk that never came back is never counted, and the new actor's envs start new
episodes.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from pixelrl.errors import ConfigError, MissingExtraError

__all__ = ["WorkerPool", "init_ray", "require_ray"]


def require_ray():
    """The ``ray`` module, or one line naming the extra to install."""
    try:
        import ray
    except ImportError as e:
        raise MissingExtraError("ray", "ray", "--workers (scale-out on Ray)") from e
    return ray


def init_ray(address: str | None, workers: int) -> bool:
    """Join the cluster at ``address``, or start a local Ray instance (no dashboard) with at least one CPU per worker
    when none runs in this process yet. Returns whether this call started Ray (the caller shuts it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "runtime_env": {"env_vars": {"PYTHONWARNINGS": "ignore"}}}
    try:
        if address is not None:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=max(os.cpu_count() or 1, int(workers)), **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"could not start or join {where} ({first}); check --ray-address (e.g. 'auto' on a node "
                          "of a running cluster) or drop it to run Ray locally") from None
    return True


class WorkerPool:
    """``num_workers`` :class:`~pixelrl.distributed.worker.EnvWorker` actors made by ``make_args(index, restarts)``
    (the worker's constructor arguments), with restart on death."""

    def __init__(self, num_workers: int, make_args: Callable[[int, int], tuple[tuple, dict]], *,
                 owns_ray: bool = False) -> None:
        ray = require_ray()
        from pixelrl.distributed.worker import EnvWorker

        self._ray = ray
        self._cls = ray.remote(num_cpus=1, max_restarts=0)(EnvWorker)
        self._make_args = make_args
        self._owns_ray = owns_ray
        self.restarts = 0
        """Workers restarted since this pool started."""
        self.actors = [self._start(i) for i in range(int(num_workers))]

    @classmethod
    def launch(cls, address: str | None, num_workers: int,
               make_args: Callable[[int, int], tuple[tuple, dict]]) -> "WorkerPool":
        """Start (or join, :func:`init_ray`) Ray and the workers; a Ray this call started is shut down by
        :meth:`close`, or at once if the workers cannot be started."""
        started = init_ray(address, num_workers)
        try:
            return cls(num_workers, make_args, owns_ray=started)
        except BaseException:
            if started:
                require_ray().shutdown()
            raise

    def _start(self, index: int):
        args, kwargs = self._make_args(index, self.restarts)
        return self._cls.remote(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.actors)

    def restart(self, index: int) -> None:
        """Replace worker ``index`` (dead) by a new actor; counts the restart."""
        try:
            self._ray.kill(self.actors[index], no_restart=True)
        except Exception:  # already gone
            pass
        self.restarts += 1
        self.actors[index] = self._start(index)

    def is_dead(self, error: BaseException) -> bool:
        """Whether ``error`` (raised fetching a result) says the worker died, rather than its env failing."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError

        return isinstance(error, (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError))

    def pids(self) -> list[int]:
        """The process id of every worker."""
        return self._ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        """Stop the workers (and Ray, if :meth:`launch` started it)."""
        for a in self.actors:
            try:
                self._ray.kill(a, no_restart=True)
            except Exception:
                pass
        self.actors = []
        if self._owns_ray:
            self._owns_ray = False
            self._ray.shutdown()
