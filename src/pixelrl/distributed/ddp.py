"""Data-parallel learners (``--learners N``) on ``torch.distributed`` -- backend ``nccl`` when each learner has its own
GPU (learner ``i`` on ``cuda:i``), ``gloo`` on CPU. PPO: N processes, each holding a shard of the rollout, their
gradients all-reduced by DistributedDataParallel (DDP). Off-policy agents: one replay batch per learner (below).

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

Off-policy agents (DrQ-v2, SAC; :class:`OffPolicyLearnerGroup`): at every update learner 0 samples one replay batch
per learner (``batch_size`` each, from its replay, which stays in one place) and sends learner ``i`` batch ``i``;
every learner runs the agent's own ``update`` on its batch, and each optimizer step first averages the gradients of
that optimizer's parameters over the learners (one all-reduce of a flat buffer; a parameter no learner has a
gradient for is left without one). The update is then the one-process update on the union of the batches (an
effective batch of ``learners x batch_size``) where the losses are means over the batch: the test checks it with
exploration noise 0. Metrics are learner 0's (its batch). Mechanisms that change weights or optimizer state outside
an optimizer step from batch statistics (DrM/MENTOR perturbation) would make the learners drift apart: such agents are
refused.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

import torch
import torch.distributed as tdist

from pixelrl.errors import ConfigError

__all__ = ["LearnerGroup", "OffPolicyLearnerGroup", "ShardRollout", "draw_perms", "global_minibatches"]

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
                                        str(self.device), self.kind))
                      for r in range(1, self.world)]
        for p in self.procs:
            p.start()
        if self.device.type == "cuda":
            torch.cuda.set_device(_learner_device(self.device, 0))
        tdist.init_process_group(backend, init_method=init, rank=0, world_size=self.world, timeout=TIMEOUT)
        self._closed = False
        self.sync()
        self.dp = self._make_dp()

    kind = "ppo"

    def _make_dp(self):
        return _DataParallel(self.agent.net, self.device)

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

    def helper_parameters(self, rank: int) -> dict[str, Any]:
        """The network weights learner ``rank`` holds (PPO), or its whole ``agent.state_dict()`` (off-policy): what the
        tests compare."""
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


class LearnerGroupOwner:
    """Base of the Ray trainers that may hold helper learner processes in ``learner_group`` (a
    :class:`LearnerGroup` or ``OffPolicyLearnerGroup``, made on first use): ``_close`` closes the group before the
    trainer's own close, which runs even if closing the group fails."""

    learner_group: Any = None

    def _close(self, *, release: bool = True) -> None:
        group, self.learner_group = self.learner_group, None
        try:
            if group is not None:
                group.close()
        finally:
            super()._close(release=release)  # type: ignore[misc]


def _optimizers(agent: Any) -> list[torch.optim.Optimizer]:
    """The agent's optimizers, by attribute name (the same order on every learner)."""
    return [v for _, v in sorted(vars(agent).items()) if isinstance(v, torch.optim.Optimizer)]


def average_gradients_before_steps(agent: Any, world: int) -> None:
    """Make each of ``agent``'s optimizer steps average its parameters' gradients over the ``world`` learners first
    (every learner must call it, and step its optimizers in the same order)."""
    for opt in _optimizers(agent):
        original = opt.step

        def step(*args, _opt=opt, _original=original, **kwargs):
            params = [p for g in _opt.param_groups for p in g["params"] if p.requires_grad]
            if params:
                flags = torch.tensor([p.grad is not None for p in params], dtype=params[0].dtype,
                                     device=params[0].device)
                flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
                                 + [flags])
                tdist.all_reduce(flat)
                flat /= world
                offset = 0
                for i, p in enumerate(params):
                    n = p.numel()
                    p.grad = flat[offset:offset + n].view_as(p).clone() if flat[-len(params) + i] > 0 else None
                    offset += n
            return _original(*args, **kwargs)

        opt.step = step


def _flatten_batch(batch: Any) -> tuple[list, list[torch.Tensor]]:
    """A :class:`~pixelrl.data.batch.Batch` as ``(spec, tensors)``, spec entries ``(field, key or None, shape,
    dtype)``."""
    spec, tensors = [], []
    for name in ("obs", "action", "reward", "discount", "next_obs", "extras"):
        value = getattr(batch, name)
        items = sorted(value.items()) if isinstance(value, dict) else [(None, value)]
        for key, t in items:
            spec.append((name, key, tuple(t.shape), str(t.dtype).removeprefix("torch.")))
            tensors.append(t.contiguous())
    return spec, tensors


def _unflatten_batch(spec: list, tensors: list[torch.Tensor]) -> Any:
    from pixelrl.data.batch import Batch

    fields: dict[str, Any] = {"extras": {}}
    for (name, key, _, _), t in zip(spec, tensors):
        if key is None:
            fields[name] = t
        else:
            fields.setdefault(name, {})[key] = t
    return Batch(**fields)


class OffPolicyLearnerGroup(LearnerGroup):
    """Learner 0 (this process) and ``learners - 1`` helpers for an off-policy agent: :meth:`update` runs one update on
    one replay batch per learner with gradients averaged over the learners (see the module's docstring)."""

    kind = "off-policy"

    def __init__(self, learners: int, agent: Any, agent_name: str, obs_space: Any, action_space: Any,
                 agent_cfg: Any) -> None:
        super().__init__(learners, agent, agent_name, obs_space, action_space, agent_cfg)
        average_gradients_before_steps(agent, self.world)

    def _make_dp(self):
        return None

    def update(self, batches: list[Any], *, step: int) -> dict[str, float]:  # type: ignore[override]
        """One update: ``batches[i]`` is learner ``i``'s; returns learner 0's metrics."""
        if len(batches) != self.world:
            raise ValueError(f"{len(batches)} batches for {self.world} learners")
        specs = [_flatten_batch(b) for b in batches]
        tdist.broadcast_object_list([{"op": "update", "step": int(step), "specs": [sp for sp, _ in specs]}], src=0)
        for r in range(1, self.world):
            for t in specs[r][1]:
                tdist.send(t, dst=r)
        return self.agent.update(batches[0], step=step)


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x


def _helper_main(rank: int, world: int, init: str, backend: str, agent_name: str, obs_space: Any, action_space: Any,
                 agent_cfg: Any, device: str, kind: str = "ppo") -> None:
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
                if dp is None and kind == "ppo":
                    dp = _DataParallel(agent.net, dev)
                elif dp is None:
                    average_gradients_before_steps(agent, world)
                    dp = True
            elif msg["op"] == "weights":
                if msg["rank"] == rank:
                    tdist.send_object_list([_to_cpu(agent.net.state_dict() if kind == "ppo" else agent.state_dict())],
                                           dst=0)
            elif msg["op"] == "update" and kind != "ppo":
                spec = msg["specs"][rank]
                tensors = []
                for _, _, shape, dtype in spec:
                    t = torch.empty(shape, dtype=getattr(torch, dtype), device=dev)
                    tdist.recv(t, src=0)
                    tensors.append(t)
                agent.update(_unflatten_batch(spec, tensors), step=msg["step"])
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
