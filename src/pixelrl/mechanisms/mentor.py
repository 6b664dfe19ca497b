"""MENTOR (Huang et al. 2024): mixture-of-experts backbone, dormant-ratio exploration, task-oriented perturbation.

Three mechanisms, each selected by its own field of the agent config and installed by :func:`install`:

1. Mixture of experts (``moe='actor'`` / ``'actor+critic'``). The agent builds its actor (and critic) with the
   :class:`~pixelrl.nets.moe.MoE` layer in place of the middle hidden layer; here its auxiliary loss
   ``aux_weight * (Var_e(load_e) + mean_b H(gate_b))`` is added to the actor loss (and, for ``'actor+critic'``, the
   critic's to the critic loss). The authors put the MoE in the actor only; the critic option is ours.

2. Dormant-ratio exploration (``exploration='dormant'``). With ``beta`` the actor's dormant ratio (measured after
   every update on that update's features, shared with DrM through :func:`~pixelrl.mechanisms.dormant.dormant_tracker`)

       sigma = 0.8 * sigmoid(10 * (beta - 0.2))

   replaces the std schedule for acting and for the target / actor-update noise -- no schedule, no floor. ``beta``
   starts at 1 (sigma ~= 0.80 until the first measurement), as in the authors' code. The std of update ``n`` uses
   the ``beta`` measured after update ``n - 1`` (the authors measure at the start of update ``n``).

3. Task-oriented perturbation (``perturb='task'``). After every training episode the weights of the perturbed
   networks are copied into a store of the ``snapshots`` best by episode return (CPU memory; a new episode
   replaces the worst stored one when its return is strictly higher). The perturbed networks are the actor (MoE
   included), the critic and the target critic, plus DrM's expectile value net when that is on -- the authors'
   set. Every ``perturb_interval`` updates, for every weight and bias of the ``nn.Linear`` / ``EnsembleLinear``
   (and ``Conv2d``) layers of those networks

       theta_task ~ N(mean_s theta_s, std_s theta_s)      elementwise over the stored snapshots s
       theta      <- alpha * theta + (1 - alpha) * theta_task,   alpha = clip(1 - 2 beta, alpha_min, alpha_max)

   (DrM's shrink factor, :func:`~pixelrl.mechanisms.dormant.perturb_alpha`), and all optimizer state is dropped
   (``reset_optimizer='all'``): the authors' ``perturb`` calls ``utils.perturb`` on the actor, its MoE experts and
   gate, the critic, the target critic, the value predictor and the encoder, each of which sets its optimizer's
   ``state = defaultdict(dict)`` -- so the encoder's, actor's, critic's and predictor's Adam moments all restart
   (the encoder's weights are left as they are: it has no Linear layer). ``reset_optimizer='perturbed'`` drops
   only the perturbed parameters' moments.
   ``std`` is the unbiased standard deviation (0 with a single snapshot); with no snapshot yet the perturbation is
   skipped. The authors' snapshot-sampling helpers (``models_tuple.cal_params_stats`` / ``sampled_model``) index
   the layers inconsistently (the weight of one layer receives another layer's bias, the per-network dispatch
   misses the ``'actor'`` name); this follows the paper's description instead.

Actor gradient clipping (``actor_grad_clip``) is applied by the agent; MENTOR's value is :data:`ACTOR_GRAD_CLIP`.
Nothing here imports ``pixelrl.agents``: :func:`install` takes the agent duck-typed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pixelrl.errors import ConfigError
from pixelrl.mechanisms.dormant import MODES, WEIGHT_LAYERS, dormant_tracker, perturb_alpha
from pixelrl.nets.moe import MoE, MoEConfig

__all__ = [
    "ACTOR_GRAD_CLIP",
    "MentorConfig",
    "SnapshotStore",
    "dormant_stddev",
    "perturbable_params",
    "task_perturb_",
    "install",
]

ACTOR_GRAD_CLIP = 0.001
"""Max grad-norm of MENTOR's actor update: the authors clip the actor's gradient (actor loss + MoE auxiliary loss)
to a global norm of 0.001 before Adam (``clip_grad_norm_(actor.parameters(), 0.001)``)."""

PERTURB_LAYERS: tuple[type[nn.Module], ...] = (*WEIGHT_LAYERS, nn.Conv2d)
"""Layers whose weight and bias the task-oriented perturbation mixes (LayerNorm parameters are left alone)."""


@dataclass(frozen=True)
class MentorConfig:
    """MENTOR's knobs. Defaults are the authors' published DMC configuration."""

    moe: MoEConfig = field(default_factory=MoEConfig)
    """The mixture-of-experts layer used when the agent's ``moe`` selector is not 'none'."""
    stddev_scale: float = 0.8
    """Exploration std = stddev_scale * sigmoid(dormant_temp * (beta - dormant_target)) (MENTOR: 0.8)."""
    dormant_target: float = 0.2
    """Dormant ratio at which the exploration std is half of stddev_scale (MENTOR: 0.2)."""
    dormant_temp: float = 10.0
    """Steepness of the exploration std's sigmoid in the dormant ratio (MENTOR: 10)."""
    dormant_threshold: float = 0.025
    """A unit is dormant when its mean |activation| is below this fraction of its layer's mean (MENTOR: 0.025).
    Equal to DrM's (the default), the actor is measured once per update for both mechanisms."""
    dormant_mode: str = "drm"
    """Which activations the dormant ratio reads: 'drm' (the DrM/MENTOR code's), 'pre' or 'post'; see
    pixelrl.mechanisms.dormant."""
    snapshots: int = 10
    """Task-oriented perturbation: network snapshots kept, the best by training-episode return (MENTOR: 10).
    Each holds a CPU copy of the perturbed networks (about 76 MB for the default DMC networks and MoE)."""
    perturb_interval: int = 10_000
    """Gradient updates between task-oriented perturbations (MENTOR: 10,000 for DMC; 50,000 for Meta-World)."""
    alpha_min: float = 0.2
    """Lower clip of the mix factor alpha = clip(1 - 2 beta, alpha_min, alpha_max) (MENTOR, DrM: 0.2)."""
    alpha_max: float = 1.0
    """Upper clip of alpha; set per task as DrM's (1.0 DMC, 0.6 dog/humanoid, 0.9 manipulator, 0.95 Meta-World)."""
    perturb_nets: tuple[str, ...] = ("actor", "critic", "target_critic")
    """Agent networks snapshotted and perturbed: attribute names of the agent, or names of auxiliary-loss modules.
    The authors perturb the actor (MoE included), critic and target critic, not the encoder ('encoder' is
    accepted)."""
    perturb_value_net: bool = True
    """Also snapshot and perturb DrM's expectile value net (the 'drm_value' auxiliary module) when
    value_blend='expectile' is on, as the authors do with their value predictor."""
    reset_optimizer: str = "all"
    """Optimizer state dropped at each perturbation: 'all' (the authors' code: every optimizer's state -- encoder,
    actor, critic, value predictor -- is reset) or 'perturbed' (only the moments of the perturbed parameters)."""

    def __post_init__(self) -> None:
        for name in ("stddev_scale", "dormant_temp"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"mentor.{name} must be > 0, got {getattr(self, name)}")
        if self.dormant_mode not in MODES:
            raise ConfigError(f"mentor.dormant_mode must be one of {list(MODES)}, got {self.dormant_mode!r}")
        if not self.dormant_threshold >= 0:
            raise ConfigError(f"mentor.dormant_threshold must be >= 0, got {self.dormant_threshold}")
        if self.snapshots < 1:
            raise ConfigError(f"mentor.snapshots must be >= 1, got {self.snapshots}")
        if self.perturb_interval < 1:
            raise ConfigError(f"mentor.perturb_interval must be >= 1 (updates), got {self.perturb_interval}")
        if not 0.0 <= self.alpha_min <= self.alpha_max <= 1.0:
            raise ConfigError(
                f"mentor needs 0 <= alpha_min <= alpha_max <= 1, got alpha_min={self.alpha_min}, "
                f"alpha_max={self.alpha_max}"
            )
        if self.reset_optimizer not in ("all", "perturbed"):
            raise ConfigError(f"mentor.reset_optimizer must be 'all' or 'perturbed', got {self.reset_optimizer!r}")
        if not self.perturb_nets or len(set(self.perturb_nets)) != len(self.perturb_nets):
            raise ConfigError(f"mentor.perturb_nets must name distinct networks, got {self.perturb_nets}")


def dormant_stddev(beta: float, scale: float = 0.8, target: float = 0.2, temp: float = 10.0) -> float:
    """MENTOR's exploration std ``scale * sigmoid(temp * (beta - target))``."""
    return scale / (1.0 + math.exp(-temp * (beta - target)))


def perturbable_params(nets: dict[str, nn.Module]) -> dict[str, nn.Parameter]:
    """``{"<net>.<param name>": parameter}`` for the weight and bias of every perturbed layer of ``nets``."""
    out: dict[str, nn.Parameter] = {}
    for net_name, net in nets.items():
        for mod_name, mod in net.named_modules():
            if isinstance(mod, PERTURB_LAYERS):
                for p_name, p in mod.named_parameters(recurse=False):
                    out[f"{net_name}.{mod_name}.{p_name}" if mod_name else f"{net_name}.{p_name}"] = p
    return out


class SnapshotStore:
    """The ``capacity`` best parameter snapshots by episode return, as CPU tensors ``[capacity, *shape]``.

    :meth:`offer` keeps a snapshot while the store is not full, then replaces the worst stored one (the first
    of equal returns) when the new return is strictly higher -- the authors' ``models_tuple.add`` rule.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigError(f"snapshot capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.count = 0
        self.returns = torch.zeros(capacity, dtype=torch.float64)
        self.params: dict[str, torch.Tensor] = {}

    def slot_for(self, episode_return: float) -> int | None:
        """Where a snapshot with this return would go, or None if it would not be kept."""
        if self.count < self.capacity:
            return self.count
        worst = int(torch.argmin(self.returns).item())
        return worst if episode_return > float(self.returns[worst]) else None

    @torch.no_grad()
    def offer(self, episode_return: float, params: dict[str, torch.Tensor] | Callable[[], dict[str, torch.Tensor]]
              ) -> bool:
        """Store the snapshot if it is among the best; ``params`` may be a callable (only called when kept)."""
        slot = self.slot_for(episode_return)
        if slot is None:
            return False
        tensors = params() if callable(params) else params
        if self.params and set(tensors) != set(self.params):
            raise ConfigError("snapshot parameter names changed between episodes")
        for name, t in tensors.items():
            buf = self.params.get(name)
            if buf is None:
                buf = self.params[name] = torch.zeros((self.capacity, *t.shape), dtype=torch.float32)
            buf[slot].copy_(t.detach())
        self.returns[slot] = float(episode_return)
        self.count = max(self.count, slot + 1)
        return True

    def stats(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Elementwise ``(mean, std)`` over the stored snapshots (unbiased std; zeros with one snapshot)."""
        if self.count == 0:
            raise ConfigError("the snapshot store is empty")
        out = {}
        n = self.count
        for name, buf in self.params.items():
            s = buf[:n]
            mean = s.mean(dim=0)
            # sqrt(sum (s - mean)^2 / (n - 1)): the same as s.std(dim=0), ~5x faster on CPU for big tensors
            std = (s - mean).square_().sum(dim=0).div_(n - 1).sqrt_() if n > 1 else torch.zeros_like(mean)
            out[name] = (mean, std)
        return out

    def mean_return(self) -> float:
        return float(self.returns[: self.count].mean()) if self.count else float("nan")

    def state_dict(self) -> dict[str, Any]:
        n = self.count
        return {"count": n, "returns": self.returns[:n].clone(),
                "params": {k: v[:n].clone() for k, v in self.params.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = int(state["count"])
        if n > self.capacity:
            raise ConfigError(f"checkpoint holds {n} snapshots but mentor.snapshots is {self.capacity}")
        self.count = n
        self.returns.zero_()
        self.returns[:n] = torch.as_tensor(state["returns"], dtype=torch.float64)
        self.params = {}
        for k, v in state["params"].items():
            v = torch.as_tensor(v, dtype=torch.float32)
            buf = self.params[k] = torch.zeros((self.capacity, *v.shape[1:]), dtype=torch.float32)
            buf[:n].copy_(v)


@torch.no_grad()
def task_perturb_(params: dict[str, torch.Tensor], store: SnapshotStore, alpha: float) -> None:
    """In place: ``p <- alpha * p + (1 - alpha) * (mean + std * N(0, 1))`` elementwise over the snapshots.

    The Gaussian is sampled on the CPU from torch's global RNG (deterministic under ``torch.manual_seed``)."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"perturbation alpha must be in [0, 1], got {alpha}")
    stats = store.stats()
    missing = sorted(set(params) - set(stats))
    if missing:
        raise ConfigError(f"no snapshot of {missing[:3]}...; were the snapshots taken of the same networks?")
    for name, p in params.items():
        mean, std = stats[name]
        task = mean + std * torch.randn(mean.shape)
        p.mul_(alpha).add_(task.to(device=p.device, dtype=p.dtype), alpha=1.0 - alpha)


def _moe_layers(net: nn.Module) -> list[MoE]:
    return [m for m in net.modules() if isinstance(m, MoE)]


def _moe_aux_fn(get_net: Callable[[], nn.Module], weight: float, what: str):
    """An auxiliary loss reading the MoE layers' losses of the network's last forward pass (with grad)."""

    def fn(inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        layers = _moe_layers(get_net())
        if any(m.aux_loss is None for m in layers):
            raise RuntimeError(f"the {what}'s MoE layer has not run a forward pass before its auxiliary loss")
        loss = torch.stack([m.aux_loss.float() for m in layers]).sum()
        if torch.is_grad_enabled() and not loss.requires_grad:
            raise RuntimeError(f"the {what}'s MoE auxiliary loss carries no gradient: the {what}'s forward pass of "
                               "this update must run (with grad) before the auxiliary losses")
        metrics = {"load_var": torch.stack([m.load_var for m in layers]).sum(),
                   "gate_entropy": torch.stack([m.gate_entropy for m in layers]).sum()}
        return weight * loss, metrics

    return fn


def install(agent: Any) -> None:
    """Wire MENTOR's mechanisms selected by ``agent.cfg`` (``moe``, ``exploration='dormant'``, ``perturb='task'``)."""
    cfg = agent.cfg
    mcfg: MentorConfig = cfg.mentor

    # 1. MoE auxiliary losses (the agent built the networks with the MoE layer).
    if cfg.moe != "none":
        if not _moe_layers(agent.actor):
            raise ConfigError(f"moe={cfg.moe!r} but the agent's actor has no MoE layer; this agent's actor does not "
                              "support MENTOR's MoE (use moe='none')")
        if mcfg.moe.aux_weight > 0:
            agent.add_actor_aux_loss(_moe_aux_fn(lambda: agent.actor, mcfg.moe.aux_weight, "actor"), name="moe")
        if cfg.moe == "actor+critic":
            if not _moe_layers(agent.critic):
                raise ConfigError("moe='actor+critic' but the agent's critic has no MoE layer")
            if mcfg.moe.aux_weight > 0:
                agent.add_aux_loss(_moe_aux_fn(lambda: agent.critic, mcfg.moe.aux_weight, "critic"),
                                   name="moe_critic")

    needs_beta = cfg.exploration == "dormant" or cfg.perturb == "task"
    if not needs_beta:
        return
    # The shared per-agent tracker: measures the actor once per update (also for DrM when its settings match).
    tracker = dormant_tracker(agent, threshold=mcfg.dormant_threshold, mode=mcfg.dormant_mode)

    # 2. Exploration std from the dormant ratio; replaces the schedule (MENTOR has none).
    if cfg.exploration == "dormant":
        scale, target, temp = mcfg.stddev_scale, mcfg.dormant_target, mcfg.dormant_temp

        def stddev(step: int) -> float:
            return dormant_stddev(tracker.beta, scale, target, temp)

        agent.stddev = stddev

    # 3. Task-oriented perturbation.
    if cfg.perturb == "task":
        aux_modules = {e.name: e.module for e in getattr(agent, "aux_losses", []) if e.module is not None}
        names = list(mcfg.perturb_nets)
        if mcfg.perturb_value_net and "drm_value" in aux_modules and "drm_value" not in names:
            names.append("drm_value")
        nets = {}
        for name in names:
            net = getattr(agent, name, None)
            net = net if isinstance(net, nn.Module) else aux_modules.get(name)
            if not isinstance(net, nn.Module):
                raise ConfigError(f"mentor.perturb_nets names {name!r}, which is not a network of this agent; "
                                  "use names like 'actor', 'critic', 'target_critic', 'encoder' or an auxiliary "
                                  f"module ({sorted(aux_modules)})")
            nets[name] = net
        params = perturbable_params(nets)
        if not params:
            raise ConfigError(f"mentor.perturb_nets {mcfg.perturb_nets} hold no Linear/Conv layer to perturb")
        store = SnapshotStore(mcfg.snapshots)
        counters = {"perturbs": 0}
        optimizers = [agent.actor_opt, agent.critic_opt]

        def on_episode(agent_: Any, episode_return: float, step: int) -> dict[str, float]:
            store.offer(episode_return, lambda: params)
            return {"mentor_snapshots": float(store.count), "mentor_snapshot_mean_return": store.mean_return()}

        def on_update(agent_: Any, step: int) -> dict[str, float] | None:
            if agent_.num_updates % mcfg.perturb_interval != 0:
                return None
            if store.count == 0:
                return {"mentor_perturb_skipped": 1.0}
            alpha = perturb_alpha(tracker.beta, mcfg.alpha_max, mcfg.alpha_min)
            task_perturb_(params, store, alpha)
            if mcfg.reset_optimizer == "all":  # the authors' code: every optimizer restarts
                agent_.reset_optimizer_state("all")
            else:  # drop the moments of the perturbed parameters only
                for opt in optimizers:
                    for p in params.values():
                        opt.state.pop(p, None)
            counters["perturbs"] += 1
            return {"mentor_perturb_alpha": alpha, "mentor_perturbs": float(counters["perturbs"])}

        def state_fn() -> dict[str, Any]:
            return {"store": store.state_dict(), "perturbs": counters["perturbs"]}

        def load_fn(state: dict[str, Any]) -> None:
            store.load_state_dict(state["store"])
            counters["perturbs"] = int(state["perturbs"])

        agent.episode_hooks.append(on_episode)
        agent.update_hooks.append(on_update)  # after the tracker's hook: sees this update's beta
        agent.register_state("mentor_task_perturb", state_fn, load_fn)
