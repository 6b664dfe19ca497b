"""A data-parallel PPO learner: ``--learners N`` processes, each holding a shard of the rollout, their gradients
all-reduced by ``torch.distributed``'s DistributedDataParallel (DDP) -- backend ``nccl`` when each learner has its own
GPU (learner ``i`` on ``cuda:i``), ``gloo`` on CPU.

Learner 0 is the trainer's process: it collects the rollout (on Ray env workers), computes GAE, and at each update
sends learner ``i`` rows ``[i * L, (i + 1) * L)`` of the flattened rollout (``L = num_envs * rollout_steps / N``) with
the minibatch permutations of its shard, drawn from learner 0's torch RNG (so a resumed run draws the same ones). Each
epoch, learner ``i`` cuts its permuted shard into ``num_minibatches`` parts; minibatch ``j`` of the update is the union
of every learner's part ``j`` (``N x L / num_minibatches`` rows, the one-process minibatch size). Per minibatch every
learner computes PPO's loss on its part, DDP averages the gradients (the gradient of the global minibatch's mean
loss, since the parts are equal), and each learner clips the global norm and takes the same Adam step, so the
weights stay identical everywhere. What would differ from one process is made global: advantages are normalised with
the global minibatch's mean and std (an all-reduce of sums), the ``target_kl`` early stop and the logged metrics use
the mean over learners. :func:`global_minibatches` names the rows of each global minibatch: one learner updating on
the whole rollout with those minibatches makes the same update (``tests/distributed/test_ddp.py``, to float
tolerance).

When it helps: with several GPUs, when the update -- not the envs -- limits the run (large pixel rollouts, many
epochs): each GPU computes a ``1 / N`` share of every minibatch. On CPU it is for testing only (one process with more
threads does the same work without the transfers). The learners are processes of one machine (``tcp://127.0.0.1``);
the env workers may be anywhere in the Ray cluster.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

import torch
import torch.distributed as tdist

from pixelrl.errors import ConfigError

__all__ = ["LearnerGroup", "ShardRollout", "draw_perms", "global_minibatches"]

FIELDS = ("obs", "actions", "logprobs", "values", "advantages", "returns")
TIMEOUT = datetime.timedelta(minutes=30)
"""How long a learner waits for the next rollout (or any collective) before it gives up."""


def draw_perms(world: int, shard_rows: int, epochs: int, generator: torch.Generator | None = None
               ) -> list[list[torch.Tensor]]:
    """``perms[epoch][learner]``: a permutation of each learner's ``shard_rows`` rows per epoch, from torch's RNG (or
    ``generator``), epoch-major then learner. With one learner, one ``randperm`` of the rollout per epoch (what
    :meth:`~pixelrl.data.rollout.RolloutBuffer.minibatches` draws)."""
    return [[torch.randperm(shard_rows, generator=generator) for _ in range(world)] for _ in range(epochs)]


def global_minibatches(perms: list[list[torch.Tensor]], num_minibatches: int) -> list[list[torch.Tensor]]:
    """The rows (of the whole flattened rollout) of minibatch ``j`` of each epoch: learner ``i``'s part ``j`` of its
    permuted shard, offset by ``i x shard_rows``, concatenated over learners."""
    out = []
    for epoch in perms:
        rows = len(epoch[0])
        size = rows // num_minibatches
        out.append([torch.cat([p[j * size:(j + 1) * size] + i * rows for i, p in enumerate(epoch)])
                    for j in range(num_minibatches)])
    return out


class ShardRollout:
    """What :meth:`~pixelrl.agents.ppo.PPOAgent.update` reads from a rollout, for one learner: ``minibatches`` of its
    shard ``flat`` (a dict of ``FIELDS``, ``[L, ...]``) following ``perms`` (one per epoch), and the ``values`` /
    ``returns`` its ``explained_variance`` is computed from (learner 0: the whole rollout's)."""

    def __init__(self, flat: dict[str, torch.Tensor], perms: list[torch.Tensor], values: torch.Tensor,
                 returns: torch.Tensor) -> None:
        self.flat, self.perms, self.values, self.returns = flat, perms, values, returns
        self._epoch = 0

    def minibatches(self, num_minibatches: int):
        n = len(self.flat["logprobs"])
        if n % num_minibatches:
            raise ValueError(f"a shard of {n} rows does not split into {num_minibatches} equal minibatches")
        size = n // num_minibatches
        perm = self.perms[self._epoch].to(self.flat["logprobs"].device)
        self._epoch += 1
        for start in range(0, n, size):
            idx = perm[start:start + size]
            yield {k: v[idx] for k, v in self.flat.items()}


class _DataParallel:
    """The ``data_parallel`` argument of :meth:`~pixelrl.agents.ppo.PPOAgent.update`."""

    def __init__(self, net: torch.nn.Module, device: torch.device) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.world = tdist.get_world_size()
        self.module = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)

    def mean_std(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and unbiased std (``torch.std``) of the concatenation of every learner's ``x``."""
        x = x.detach()
        s = torch.stack([x.sum(), (x * x).sum(), torch.tensor(float(x.numel()), device=x.device, dtype=x.dtype)])
        tdist.all_reduce(s)
        total, sq, n = s[0], s[1], s[2]
        mean = total / n
        var = (sq - n * mean * mean) / (n - 1)
        return mean, var.clamp_min(0).sqrt()

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The mean over learners of ``x`` (equal-sized shards: the global mean)."""
        y = x.detach().clone()
        tdist.all_reduce(y)
        return y / self.world


def _backend(device: torch.device, learners: int) -> str:
    if device.type == "cuda":
        have = torch.cuda.device_count()
        if have < learners:
            raise ConfigError(f"--learners {learners} on {device} needs one GPU per learner; {have} visible "
                              f"(use --learners {max(have, 1)}, or --device cpu to test on CPU)")
        return "nccl"
    return "gloo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _learner_device(device: torch.device, rank: int) -> torch.device:
    return torch.device("cuda", rank) if device.type == "cuda" else device


class LearnerGroup:
    """Learner 0 (this process) and ``learners - 1`` helper processes. :meth:`update` runs one data-parallel PPO update
    of ``agent`` on a finished rollout; :meth:`close` stops the helpers."""

    def __init__(self, learners: int, agent: Any, agent_name: str, obs_space: Any, action_space: Any,
                 agent_cfg: Any) -> None:
        import multiprocessing as mp

        self.world = int(learners)
        self.agent = agent
        self.device = agent.device
        backend = _backend(self.device, self.world)
        init = f"tcp://127.0.0.1:{_free_port()}"
        ctx = mp.get_context("spawn")
        self.procs = [ctx.Process(target=_helper_main, daemon=True, name=f"pixelrl-learner{r}",
                                  args=(r, self.world, init, backend, agent_name, obs_space, action_space, agent_cfg,
                                        str(self.device)))
                      for r in range(1, self.world)]
        for p in self.procs:
            p.start()
        if self.device.type == "cuda":
            torch.cuda.set_device(_learner_device(self.device, 0))
        tdist.init_process_group(backend, init_method=init, rank=0, world_size=self.world, timeout=TIMEOUT)
        self._closed = False
        self.sync()
        self.dp = _DataParallel(agent.net, self.device)

    def sync(self) -> None:
        """Send learner 0's agent state (networks, optimizer, counters) to every helper: at the start and after a
        resume; afterwards identical updates keep them equal."""
        tdist.broadcast_object_list([{"op": "state", "state": _to_cpu(self.agent.state_dict())}], src=0)

    def update(self, rollout: Any, *, step: int, progress: float, perms: list[list[torch.Tensor]] | None = None
               ) -> dict[str, float]:
        """One PPO update on ``rollout`` (a :class:`~pixelrl.data.rollout.RolloutBuffer` with its returns computed)
        shared by the learners; ``perms`` (:func:`draw_perms`) are drawn from torch's RNG when not given."""
        cfg = self.agent.cfg
        n = rollout.batch_size
        if n % (self.world * cfg.num_minibatches):
            raise ConfigError(f"a rollout of {n} rows does not split into --learners {self.world} x num_minibatches "
                              f"{cfg.num_minibatches} equal parts; choose values whose product divides it")
        rows = n // self.world
        if perms is None:
            perms = draw_perms(self.world, rows, cfg.update_epochs)
        flat = rollout.flat()
        header = {"op": "update", "step": int(step), "progress": float(progress), "rows": rows,
                  "shapes": {k: (tuple(v.shape[1:]), str(v.dtype).removeprefix("torch.")) for k, v in flat.items()}}
        tdist.broadcast_object_list([header], src=0)
        for r in range(1, self.world):
            for k in FIELDS:
                tdist.send(flat[k][r * rows:(r + 1) * rows].contiguous(), dst=r)
            tdist.send(torch.stack([e[r] for e in perms]).to(self.device), dst=r)
        mine = ShardRollout({k: v[:rows] for k, v in flat.items()}, [e[0] for e in perms], rollout.values,
                            rollout.returns)
        return self.agent.update(mine, step=step, progress=progress, data_parallel=self.dp)

    def helper_parameters(self, rank: int) -> dict[str, torch.Tensor]:
        """The network weights learner ``rank`` holds (what the tests compare)."""
        tdist.broadcast_object_list([{"op": "weights", "rank": rank}], src=0)
        out = [None]
        tdist.recv_object_list(out, src=rank)
        return out[0]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            tdist.broadcast_object_list([{"op": "stop"}], src=0)
        finally:
            for p in self.procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
            tdist.destroy_process_group()


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x


def _helper_main(rank: int, world: int, init: str, backend: str, agent_name: str, obs_space: Any, action_space: Any,
                 agent_cfg: Any, device: str) -> None:
    """A helper learner: receive the state, then shards and update on them until told to stop."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    from pixelrl.agents import make_agent

    dev = _learner_device(torch.device(device), rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    tdist.init_process_group(backend, init_method=init, rank=rank, world_size=world, timeout=TIMEOUT)
    try:
        agent = make_agent(agent_name, obs_space, action_space, agent_cfg, dev)
        dp = None
        while True:
            box = [None]
            tdist.broadcast_object_list(box, src=0)
            msg = box[0]
            if msg["op"] == "stop":
                break
            if msg["op"] == "state":
                agent.load_state_dict(msg["state"])
                dp = dp or _DataParallel(agent.net, dev)
            elif msg["op"] == "weights":
                if msg["rank"] == rank:
                    tdist.send_object_list([_to_cpu(agent.net.state_dict())], dst=0)
            elif msg["op"] == "update":
                rows = msg["rows"]
                flat = {}
                for k in FIELDS:
                    shape, dtype = msg["shapes"][k]
                    flat[k] = torch.empty((rows, *shape), dtype=getattr(torch, dtype), device=dev)
                    tdist.recv(flat[k], src=0)
                perms = torch.empty((agent.cfg.update_epochs, rows), dtype=torch.int64, device=dev)
                tdist.recv(perms, src=0)
                shard = ShardRollout(flat, list(perms.cpu()), flat["values"], flat["returns"])
                agent.update(shard, step=msg["step"], progress=msg["progress"], data_parallel=dp)
    finally:
        tdist.destroy_process_group()
