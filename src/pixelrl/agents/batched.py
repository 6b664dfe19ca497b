"""K DrQ-v2 agents of equal network shapes updated as one batched computation (``pixelrl train --seeds 1-5``).

The K agents' parameters are stacked along a new leading dimension with ``torch.func.stack_module_state``; one
update runs the DrQ-v2 agent's own loss methods (:meth:`DrQv2Agent._critic_loss`, :meth:`DrQv2Agent._actor_loss`)
for all K agents at once under ``torch.func.vmap`` + ``functional_call``, then takes one optimizer step for all of
them (Adam is elementwise, so one Adam over the stacked tensors is exactly K separate Adams). There is no second copy
of the loss math: a change to the single agent's losses is a change to the batched update.

Each agent keeps its own random stream: the numbers the single agent draws from torch's global RNG during an update
(augmentation shifts, target-policy noise, actor-update noise) and when acting (exploration noise) are drawn here
from that agent's own ``torch.Generator``, in the same order and with the same shapes and dtypes, and fed to the
vmapped loss code through :func:`pixelrl.nets.actor.supplied_noise`. An agent whose generator starts in the state
the global RNG would have in a single run therefore gets the same updates as alone, up to the float rounding of
batched kernels (tests/train/test_batched.py: parameters after many updates equal to ~1e-12 in fp64).

The K :class:`DrQv2Agent` objects stay the single-run agents (for evaluation and checkpoints in the single-run
format): :meth:`BatchedDrQv2.export_to_agents` writes the stacked parameters (and optimizer moments) into them,
:meth:`BatchedDrQv2.import_from_agents` reads them back (after a checkpoint was loaded into them).

Scope: the DrQ-v2 core (MSE critic, scheduled exploration, no mechanisms); anything else is refused with one
:class:`~pixelrl.errors.ConfigError` naming the settings. Device-agnostic (CPU or CUDA); CUDA graphs and
``torch.compile`` of the batched update are later work.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError, DivergenceError
from pixelrl.nets.actor import sample_action, supplied_noise
from pixelrl.nets.augment import random_shift, random_shift_index
from pixelrl.utils.torch_state import align_moments

__all__ = ["BatchedDrQv2", "unsupported_settings"]


def unsupported_settings(cfg: Any) -> list[str]:
    """The settings of an agent config that the batched learner does not support (empty: supported)."""
    if type(cfg) is not DrQv2Config:
        return [f"an agent configured by {type(cfg).__name__}"]
    bad = [f"{name}={getattr(cfg, name)!r}" for name, ok in
           (("critic", "mse"), ("exploration", "schedule"), ("perturb", "none"), ("value_blend", "none"),
            ("moe", "none")) if getattr(cfg, name) != ok]
    if cfg.aux:
        bad.append(f"aux={cfg.aux!r}")
    if cfg.log_dormant:
        bad.append("log_dormant=True")
    if cfg.target_q_subset:
        bad.append(f"target_q_subset={cfg.target_q_subset}")
    if cfg.actor_grad_clip > 0:
        bad.append(f"actor_grad_clip={cfg.actor_grad_clip}")
    if getattr(cfg, "utd_cycle", False):
        bad.append("utd_cycle=True")
    if cfg.compile:
        bad.append("compile=True")
    return bad


class _Nets(nn.Module):
    """An agent's networks under one module, so that ``torch.func`` can stack and call them by parameter name.
    ``forward(fn, *args)`` calls ``fn(*args)``: under ``functional_call`` the networks then hold the given
    parameters while ``fn`` (an agent method that uses them) runs."""

    def __init__(self, agent: DrQv2Agent) -> None:
        super().__init__()
        self.encoder = agent.encoder
        self.actor = agent.actor
        self.critic = agent.critic
        self.target_critic = agent.target_critic
        self.action_encoder = agent.action_encoder

    def forward(self, fn, *args):
        return fn(*args)


class _Supply:
    """Serves pre-drawn standard-normal tensors to :func:`sample_action` in order, checking shape and dtype."""

    def __init__(self, draws: Sequence[torch.Tensor], where: str) -> None:
        self.draws, self.where, self.used = list(draws), where, 0

    def __call__(self, mu: torch.Tensor) -> torch.Tensor:
        if self.used == len(self.draws):
            raise RuntimeError(f"the DrQ-v2 {self.where} drew more action noise than the batched learner prepared "
                               f"({len(self.draws)}); update pixelrl.agents.batched to the single agent's draws")
        x = self.draws[self.used]
        self.used += 1
        if x.shape != mu.shape or x.dtype != mu.dtype:
            raise RuntimeError(f"the DrQ-v2 {self.where} drew action noise of shape {tuple(mu.shape)} {mu.dtype}; "
                               f"the batched learner prepared {tuple(x.shape)} {x.dtype}")
        return x

    def check_used(self) -> None:
        if self.used != len(self.draws):
            raise RuntimeError(f"the DrQ-v2 {self.where} drew {self.used} action-noise samples, the batched learner "
                               f"prepared {len(self.draws)}; update pixelrl.agents.batched to the single agent's draws")


def _stack(xs: Sequence[Any]) -> Any:
    if isinstance(xs[0], dict):
        return {k: torch.stack([x[k] for x in xs]) for k in xs[0]}
    return torch.stack(list(xs))


def _slice(v: Any, k: int | None) -> Any:
    """Agent ``k``'s copy of an optimizer-state value: a slice of a stacked tensor, a copy of a 0-d one (Adam's
    ``step``, equal for all agents) or the value itself."""
    if not torch.is_tensor(v):
        return v
    return v[k].clone() if k is not None and v.dim() > 0 else v.clone()


def _already_augmented(obs, next_obs):
    return obs, next_obs


class BatchedDrQv2:
    """``K`` DrQ-v2 agents (same config, spaces and device) trained in lockstep as one batched computation.

    Args:
        agents: the agents, freshly built or with a checkpoint loaded; their parameters, optimizer moments and
            ``num_updates`` are read once here (:meth:`import_from_agents`).
        generators: one ``torch.Generator`` per agent, on the agents' device; every random number of agent ``k``
            (acting and updating) is drawn from ``generators[k]``.
    """

    def __init__(self, agents: Sequence[DrQv2Agent], generators: Sequence[torch.Generator]) -> None:
        if not agents:
            raise ConfigError("BatchedDrQv2 needs at least one agent")
        if len(generators) != len(agents):
            raise ConfigError(f"{len(agents)} agents but {len(generators)} generators: each agent needs its own")
        first = agents[0]
        bad = unsupported_settings(first.cfg)
        if type(first) is not DrQv2Agent:
            bad.insert(0, f"agent class {type(first).__name__}")
        if bad:
            raise ConfigError("batched training (--seeds) supports the DrQ-v2 core only (MSE critic, scheduled "
                              f"exploration, no mechanisms); this configuration sets {', '.join(bad)}. Train each "
                              "seed as its own run (pixelrl train --seed N) instead.")
        for k, a in enumerate(agents[1:], start=1):
            # the config's precision may be 'auto' for one and what it resolved to for another; compare what is used
            same_cfg = dataclasses.replace(a.cfg, precision=first.cfg.precision) == first.cfg
            if (type(a) is not type(first) or not same_cfg or a.observation_space != first.observation_space
                    or a.action_space != first.action_space or a.device != first.device
                    or getattr(a, "precision", None) != getattr(first, "precision", None)):
                raise ConfigError(f"batched agents must share their config, spaces, device and precision; agent {k} "
                                  "differs from agent 0")
        self.agents = list(agents)
        self.generators = list(generators)
        self.K = len(agents)
        self.device = first.device
        self.cfg: DrQv2Config = first.cfg
        # The template runs the loss methods; its own parameters are replaced by the stacked ones in every call.
        # Augmentation is done for all agents at once before the vmapped call (an exact per-image gather).
        self.template = copy.deepcopy(first)
        self.template._augment = _already_augmented
        self._nets = _Nets(self.template)
        params, buffers = stack_module_state([_Nets(a) for a in agents])
        self.params: dict[str, torch.Tensor] = {**params, **buffers}
        names = list(params)
        self._critic_names = [n for n in names if n.split(".")[0] in ("encoder", "critic", "action_encoder")]
        self._actor_names = [n for n in names if n.startswith("actor.")]
        self._critic_only = [n for n in names if n.startswith("critic.")]
        self._target_names = ["target_" + n for n in self._critic_only]
        groups = [[self.params[n] for n in names if n.startswith(prefix + ".")]
                  for prefix in ("encoder", "critic", "action_encoder")]
        self.critic_opt = self.template._make_adam([{"params": g} for g in groups])
        self.actor_opt = self.template._make_adam([{"params": [self.params[n] for n in self._actor_names]}])
        self._opt_of = {n: ("critic_opt", self.critic_opt) for n in self._critic_names}
        self._opt_of.update({n: ("actor_opt", self.actor_opt) for n in self._actor_names})
        t = self.template
        self._pixels = t.obs_kind != "state" and t._augment_pad > 0
        # dtype of the actor's mean action (and so of its noise draws): the parameters' dtype, or bf16 under autocast
        w = next(first.actor.parameters())
        with t._autocast():
            self._noise_dtype = torch.nn.functional.linear(torch.zeros(1, 1, dtype=w.dtype, device=self.device),
                                                           torch.zeros(1, 1, dtype=w.dtype, device=self.device)).dtype
        self._aug_buf: torch.Tensor | None = None
        self.num_updates = 0
        self.import_from_agents()

    # ------------------------------------------------------------------ agents <-> stacked state
    def _agent_params(self, agent: DrQv2Agent) -> dict[str, torch.Tensor]:
        """The agent's parameters and buffers by the names of :attr:`params`."""
        nets = _Nets(agent)
        return {**dict(nets.named_parameters()), **dict(nets.named_buffers())}

    @torch.no_grad()
    def import_from_agents(self) -> None:
        """Read every agent's parameters, Adam moments and ``num_updates`` into the stacked state (after a
        checkpoint was loaded into the agents). The agents must be at the same update count."""
        counts = {a.num_updates for a in self.agents}
        if len(counts) != 1:
            raise ConfigError(f"batched agents are at different update counts {sorted(counts)}; resume them from "
                              "checkpoints of the same step")
        self.num_updates = counts.pop()
        per_agent = [self._agent_params(a) for a in self.agents]
        for name, stacked in self.params.items():
            for k, ps in enumerate(per_agent):
                stacked[k].copy_(ps[name])
        for name, (attr, opt) in self._opt_of.items():
            p = self.params[name]
            states = [getattr(a, attr).state.get(ps[name]) for a, ps in zip(self.agents, per_agent)]
            opt.state.pop(p, None)
            if not any(states):
                continue
            if not all(states):
                raise ConfigError(f"some batched agents have optimizer state for {name} and others not")
            opt.state[p] = {key: (torch.stack([s[key] for s in states]) if torch.is_tensor(v) and v.dim() > 0
                                  else _slice(v, None)) for key, v in states[0].items()}
        align_moments((self.critic_opt, self.actor_opt))

    @torch.no_grad()
    def export_to_agents(self, *, optimizer: bool = True) -> None:
        """Write the stacked parameters (and, with ``optimizer``, the Adam moments and ``num_updates``) into the K
        agents, so that their ``act`` / ``state_dict`` are those of single runs at this point."""
        for k, agent in enumerate(self.agents):
            ps = self._agent_params(agent)
            for name, stacked in self.params.items():
                ps[name].copy_(stacked[k])
            if not optimizer:
                continue
            agent.num_updates = self.num_updates
            for name, (attr, opt) in self._opt_of.items():
                st = opt.state.get(self.params[name])
                agent_opt = getattr(agent, attr)
                if st is None:
                    agent_opt.state.pop(ps[name], None)
                    continue
                agent_opt.state[ps[name]] = {key: _slice(v, k) for key, v in st.items()}
            align_moments((agent.critic_opt, agent.actor_opt))

    @torch.no_grad()
    def check_finite(self, where: str, names: Sequence[Any] | None = None) -> None:
        """Raise :class:`~pixelrl.errors.DivergenceError` naming the agents (``names[k]``, default ``k``) and the
        first parameter of each whose values are not all finite."""
        bad: dict[int, str] = {}
        for name, p in self.params.items():
            if p.is_floating_point():
                ok = torch.isfinite(p).reshape(self.K, -1).all(dim=1).tolist()
                for k, good in enumerate(ok):
                    if not good:
                        bad.setdefault(k, name)
        if bad:
            names = list(names) if names is not None else list(range(self.K))
            listed = ", ".join(f"{names[k]} ({name})" for k, name in sorted(bad.items()))
            raise DivergenceError(f"parameters of agent(s) {listed} are not finite {where}: the training diverged")

    # ------------------------------------------------------------------ random draws
    def _normal(self, g: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=self._noise_dtype, device=self.device)

    def _update_draws(self, batch_size: int) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Per agent, in the single agent's order: the augmentation shifts of ``obs`` and ``next_obs`` (one
        ``[2B, 2]`` draw), the target-policy noise ``[B, A]``, the actor-update noise ``[B, A]``; stacked over K."""
        shifts, target, actor = [], [], []
        pad, a = self.template._augment_pad, self.template.action_dim
        for g in self.generators:
            if self._pixels:
                shifts.append(torch.randint(0, 2 * pad + 1, (2 * batch_size, 2), generator=g, device=self.device))
            target.append(self._normal(g, (batch_size, a)))
            actor.append(self._normal(g, (batch_size, a)))
        return (torch.stack(shifts) if shifts else None), torch.stack(target), torch.stack(actor)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, observations: Sequence[Any], *, step: int) -> list[np.ndarray]:
        """Exploration actions of the K agents for their K observations (what each agent's ``act(obs, step=step,
        eval_mode=False)`` returns after its seed steps): ``mu + N(0, stddev(step))`` clamped to [-1, 1]."""
        t = self.template
        x = _stack([t._obs_to_tensor(o) for o in observations])
        noise = torch.stack([self._normal(g, (1, t.action_dim)) for g in self.generators])

        def mean_action(params, obs):
            return functional_call(self._nets, params, (lambda o: t.actor(t.encoder(o)), obs))

        with t._autocast():
            mu = vmap(mean_action)(self.params, x)
            mu = sample_action(mu, t.stddev(step), clip=None, noise=noise)
        out = mu[:, 0].float().clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)
        return list(out)

    # ------------------------------------------------------------------ update
    def _augment(self, batches: Sequence[Batch], shifts: torch.Tensor | None):
        """The single agent's ``_augment`` for all K batches: per agent, ``obs`` and ``next_obs`` concatenated and
        shifted with that agent's ``[2B, 2]`` shifts (an exact per-image gather). Returns ``[K, B, ...]`` obs and
        next_obs. The pixels are written into one ``[2B, H, W, K, C]`` buffer: under ``vmap`` each conv then runs as
        one grouped channels_last convolution over all K agents without a copy of its input."""
        t = self.template
        obs, next_obs = _stack([b.obs for b in batches]), _stack([b.next_obs for b in batches])
        if t.obs_kind == "state":
            return obs.float(), next_obs.float()
        px, npx = (obs["pixels"], next_obs["pixels"]) if t.obs_kind == "dict" else (obs, next_obs)
        both = torch.cat([px, npx], dim=1)  # [K, 2B, C, H, W]: each agent's batch as the single agent builds it
        k, n, c, h, w = both.shape
        buf = self._aug_buf
        if buf is None or buf.shape != (n, h, w, k, c) or buf.device != both.device:
            buf = self._aug_buf = torch.empty((n, h, w, k, c), device=both.device)
        for i in range(k):
            s = shifts[i] if shifts is not None else None
            if t.cfg.augment_impl == "index":
                random_shift_index(both[i], t._augment_pad, s, channels_last=True, out=buf[:, :, :, i])
            else:
                buf[:, :, :, i].copy_(random_shift(both[i].float(), t._augment_pad, s).permute(0, 2, 3, 1))
        out = buf.permute(3, 0, 4, 1, 2)  # [K, 2B, C, H, W]
        a, b = out[:, : n // 2], out[:, n // 2:]
        if t.obs_kind == "dict":
            return {**obs, "pixels": a}, {**next_obs, "pixels": b}
        return a, b

    def update(self, batches: Sequence[Batch], *, step: int) -> list[dict[str, float]]:
        """One DrQ-v2 update of every agent on its own batch (critic + encoder step, actor step, target EMA), with
        one optimizer step per network for all K. Returns each agent's metrics, as its own ``update`` would."""
        if len(batches) != self.K:
            raise ConfigError(f"{self.K} agents but {len(batches)} batches")
        t = self.template
        for m in (t.encoder, t.actor, t.critic):
            m.train()
        std = torch.tensor(t.stddev(step), device=self.device)
        shifts, target_noise, actor_noise = self._update_draws(len(batches[0]))
        obs, next_obs = self._augment(batches, shifts)
        action, reward, discount = (torch.stack([getattr(b, f) for b in batches])
                                    for f in ("action", "reward", "discount"))

        def critic_loss(params, obs, next_obs, action, reward, discount, noise):
            batch = Batch(obs=obs, action=action, reward=reward, discount=discount, next_obs=next_obs)
            supply = _Supply([noise], "critic loss")
            with supplied_noise(supply):
                loss, feat, metrics = functional_call(self._nets, params, (t._critic_loss, batch, std, step))
            supply.check_used()
            return loss, feat, metrics

        loss, feat, metrics = vmap(critic_loss)(self.params, obs, next_obs, action, reward, discount, target_noise)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # agents share no parameter: d(sum)/d(theta_k) = dL_k/d(theta_k)
        self.critic_opt.step()

        def actor_loss(params, feat, noise):
            supply = _Supply([noise], "actor loss")
            with supplied_noise(supply):
                loss, metrics = functional_call(self._nets, params, (t._actor_loss, feat, std, step))
            supply.check_used()
            return loss, metrics

        actor_params = [self.params[n] for n in self._actor_names]
        loss, actor_metrics = vmap(actor_loss)(self.params, feat, actor_noise)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.sum().backward(inputs=actor_params)  # no gradient for the critic, as in the single agent
        self.actor_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_([self.params[n] for n in self._target_names],
                                 [self.params[n] for n in self._critic_only], self.cfg.critic_target_tau)
        metrics.update(actor_metrics)
        metrics["actor_std"] = std.expand(self.K)
        self.num_updates += 1
        names = list(metrics)
        values = torch.stack([metrics[n].detach().float().reshape(self.K) for n in names]).T.tolist()
        return [dict(zip(names, row)) for row in values]
