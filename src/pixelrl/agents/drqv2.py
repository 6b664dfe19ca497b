"""DrQ-v2: data-regularised actor-critic from pixels (Yarats et al., 2021).

The update reads top to bottom in :meth:`DrQv2Agent._update`:

1. pixels (uint8) -> float, random shift (pad 4) of ``obs`` and ``next_obs`` independently, channels_last;
2. encoder on ``obs`` (with grad) and ``next_obs`` (no grad, same encoder: DrQ-v2 has no target encoder);
3. target ``y = reward + discount * min_i Qbar_i(s', a')`` with ``a' = clip(mu(s') + clip(N(0, sigma), +-c), -1, 1)``
   (``batch.discount`` already holds ``gamma^n`` and the termination mask);
4. critic + encoder step on ``sum_i MSE(Q_i(s, a), y)`` (+ auxiliary losses);
5. actor step on ``-min_i Q_i(s, a~pi)`` with detached features (the critic gets no gradient from it); with
   ``actor_q='mean'`` the mean over the heads instead (RLPD); with ``utd_cycle`` only after the last of the
   ``updates_per_step`` critic steps of an update point (RLPD's cycle);
6. target critic EMA with ``tau`` (every update).

Hooks for mechanisms (kept narrow on purpose; nothing else of the agent is meant to be patched). The mechanisms
of ``pixelrl.mechanisms`` are switched on by the config's selectors (``critic``, ``aux``, ``exploration``,
``perturb``, ``value_blend``, ``moe``) and wire themselves in through these hooks in ``_install_mechanisms``
(those the DQN family has too -- ``add_aux_loss``, ``register_state``, ``update_hooks``, ``episode_hooks``,
``batch_extras``, ``last_feat`` -- are written once, in :class:`pixelrl.agents.hooks.MechanismHooks`):

* ``stddev(step) -> float`` -- the exploration / target-smoothing std. Override in a subclass or compose on an
  instance: ``agent.stddev = lambda step, base=agent.stddev: max(base(step), extra(step))`` (DrM, MENTOR).
* ``critic_target(batch, next_feat, std) -> Tensor[B, 1]`` -- the TD target, called under ``no_grad``; override to
  blend in a value net (DrM's expectile V) or transform the target.
* ``add_aux_loss(fn, module=None, name=None)`` -- ``fn(AuxInputs) -> loss`` or ``(loss, {name: tensor})`` is added
  to the critic/encoder loss; ``module``'s parameters join the critic optimizer and its state the checkpoint
  (TACO/CURL). The encoder gets one optimizer step per update whatever the number of losses.
* ``add_actor_aux_loss(fn, name=None)`` -- ``fn(ActorAuxInputs) -> loss | (loss, metrics)`` added to the actor loss
  (MENTOR's MoE load-balancing loss).
* ``critic_head=`` constructor argument (or ``critic='hl-gauss'``) -- a :class:`pixelrl.nets.QHead` (``out_dim``,
  ``value``, ``loss``) that replaces the scalar MSE head (HL-Gauss).
* ``action_encoder`` -- every action the critic sees goes through it (TACO's latent action; Identity by default).
* ``update_hooks`` -- callables ``fn(agent, step) -> dict | None`` run after each update, outside the hot path
  (dormant-ratio measurement and perturbation; they may use ``reset_optimizer_state(which)``, ``which`` one of
  'actor', 'critic', 'all'); ``last_feat`` holds the detached encoder features of the last update's batch.
* ``metric_hooks`` -- ``fn(agent, step) -> {name: 0-d tensor}`` run after each update, before its metrics are
  copied to the host in one sync, so their values cost no extra sync (DrM's dormant ratio on a GPU).
* ``episode_hooks`` -- ``fn(agent, episode_return, step) -> dict | None`` run by the trainer after each training
  episode (MENTOR's snapshot store).
* ``register_state(name, state_fn, load_fn)`` -- a mechanism's own state (schedules, snapshots, extra optimizers)
  saved in checkpoints, so resumed runs continue exactly.
* ``batch_extras`` -- extra replay fields a mechanism needs (TACO's ``action_seq``).
* ``_build_actor(repr_dim)`` -- the policy network factory (SAC overrides it).
* ``actor``, ``critic``, ``target_critic``, ``encoder``, ``actor_opt``, ``critic_opt`` are public attributes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from pixelrl.agents.hooks import AuxEntry, MechanismHooks
from pixelrl.agents.schedules import parse_schedule
from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError
from pixelrl.mechanisms.drm import DrMConfig
from pixelrl.mechanisms.hl_gauss import HLGaussConfig
from pixelrl.mechanisms.mentor import MentorConfig
from pixelrl.mechanisms.taco import TACOConfig
from pixelrl.nets.actor import Actor, sample_action
from pixelrl.nets.augment import random_shift, random_shift_index
from pixelrl.nets.critic import Critic, QHead
from pixelrl.nets.encoders import ObsEncoder
from pixelrl.utils.adam import LeanAdam
from pixelrl.utils.torch_state import align_moments, finish_update, snapshot

__all__ = ["DrQv2Config", "DrQv2Agent", "AuxInputs", "ActorAuxInputs", "MECHANISM_CHOICES"]

MECHANISM_CHOICES: dict[str, tuple[str, ...]] = {
    "critic": ("mse", "hl-gauss"),
    "aux": ("taco",),
    "exploration": ("schedule", "awakened", "dormant"),
    "perturb": ("none", "dormant", "task"),
    "value_blend": ("none", "expectile"),
    "moe": ("none", "actor", "actor+critic"),
}
"""Accepted values of the mechanism selectors of :class:`DrQv2Config`."""


@dataclass(frozen=True)
class DrQv2Config:
    """DrQ-v2 hyper-parameters. Defaults are the published DrQ-v2 values (medium-difficulty DMC tasks)."""

    lr: float = 1e-4
    """Adam learning rate of the encoder, critic and actor (paper: 1e-4; 8e-5 for humanoid)."""
    batch_size: int = 256
    """Transitions per update (paper: 256; 512 for walker tasks). Read by the trainer's replay sampler."""
    feature_dim: int = 50
    """Width of the Linear->LayerNorm->tanh bottleneck of the actor and critic trunks (paper: 50; 100 humanoid)."""
    hidden_dim: int = 1024
    """Hidden units of the actor and Q MLPs (two hidden layers each)."""
    critic_target_tau: float = 0.01
    """EMA rate of the target critic, applied after every update."""
    nstep: int = 3
    """n of the n-step return built by the replay (paper: 3; 1 for walker tasks)."""
    discount: float = 0.99
    """Per-step discount gamma; the replay folds gamma^n and termination into ``batch.discount``."""
    update_every_steps: int = 2
    """Agent steps between update points."""
    updates_per_step: int = 1
    """Gradient updates done at each update point (update-to-data ratio, G). What one of them is: ``utd_cycle``."""
    utd_cycle: bool = False
    """False (DrQ-v2; default): each of the ``updates_per_step`` updates is a whole update (critic, actor, target).
    True: RLPD's UTD cycle (ikostrikov/rlpd ``SACLearner.update``): G critic updates, each on its own batch and
    followed by its target EMA, then one actor update (and, for SAC, one temperature update) on the last batch, so
    the actor is updated once per G critic updates. The cycle is counted in updates (``num_updates``), so it stays
    aligned with the trainer's update points when every point runs G updates. SAC: requires
    ``actor_update_every=1`` (the cycle sets the actor's interval)."""
    num_seed_steps: int = 2000
    """Agent steps of uniform random actions at the start (paper: 4000 frames at action repeat 2)."""
    stddev_schedule: str = "linear(1.0,0.1,500000)"
    """Exploration std in agent steps: a number or 'linear(init,final,duration)' / 'step_linear(...)'."""
    stddev_clip: float = 0.3
    """Clip of the target-policy smoothing noise and of the actor-update noise."""
    encoder_channels: tuple[int, ...] = (32, 32, 32, 32)
    """Output channels of the 3x3 conv layers."""
    encoder_strides: tuple[int, ...] = (2, 1, 1, 1)
    """Strides of the 3x3 conv layers (84x84 -> 35x35 with the default)."""
    augment_pad: int = 4
    """Random-shift padding in pixels (0 disables augmentation)."""
    augment_impl: str = "index"
    """'index': exact integer shift by gathering uint8 pixels (fast); 'grid_sample': the reference's bilinear
    grid_sample on a sampling grid at pixel centres. Both give the same images up to float rounding."""
    replay_capacity: int = 1_000_000
    """Replay size in transitions (paper: 1M; 100k for quadruped_run). Read by the trainer."""
    precision: str = "auto"
    """'auto', 'fp32' or 'bf16' (autocast of the forward passes; parameters and optimizer state stay fp32).
    'auto': fp32 unless the device computes bf16 natively (AVX512_BF16 / AMX CPUs, Ampere+ GPUs) *and* a short
    timing of this agent's forward + backward pass at start shows bf16 at least 1.15x faster; elsewhere bf16 is
    emulated and slow (an AVX2-only CPU runs the cpu-fast update ~10x slower in bf16). The trainer prints the
    choice with its reason and records both in config.json, so a resumed run keeps the same precision."""
    channels_last: bool = True
    """Run the conv encoder in channels_last memory format (faster on CPU and GPU; same math)."""
    compile: bool = False
    """torch.compile the loss computations of the update (slower start; off by default)."""
    num_q: int = 2
    """Number of Q heads (paper: 2; RLPD: 10). The actor's objective over them is ``actor_q``."""
    actor_q: str = "min"
    """How the actor's objective combines the Q heads: 'min' over all heads (DrQ-v2, DrQ, SAC: the twin-Q min) or
    'mean' over all heads (RLPD: ikostrikov/rlpd ``SACLearner.update_actor`` takes ``qs.mean(axis=0)``; its min is
    only in the TD target, over ``target_q_subset`` heads). With 10 heads the min is a much more pessimistic
    objective than RLPD's. Agents whose actor uses no ensemble objective (IQL, TD3+BC) refuse 'mean'."""
    target_q_subset: int = 0
    """Q heads the TD target takes its min over: 0 = all (DrQ-v2); k = a random subset of k heads drawn anew at
    every update (RLPD / REDQ: 10 heads with a subset of 2 on states, 1 on pixels). Must be <= num_q. RLPD's
    LayerNorm inside the Q MLPs is ``critic_layernorm``."""
    critic_layernorm: bool = False
    """RLPD (Ball et al. 2023): a LayerNorm after each hidden Linear of the Q MLPs, before the ReLU, with its own
    gamma / beta per Q head (so the ensemble members stay independent). False (default) = DrQ-v2's critic, whose
    only LayerNorm is in the Linear-LayerNorm-tanh trunk. With ``moe='actor+critic'`` the middle layer is the MoE
    and only the first hidden layer is normalised. Reaches every agent with a Q critic (DrQ-v2, DrM, TACO, MENTOR,
    SAC, IQL, TD3+BC, residual); BC has no critic and refuses it."""

    # ---- mechanisms (issue 3): selectors, then one nested config per mechanism module. Presets (drm, taco,
    # mentor) are nothing but values of these fields, so they combine freely: --agent drm --agent.critic hl-gauss.
    critic: str = "mse"
    """Value head: 'mse' (DrQ-v2's scalar Q regressed with MSE) or 'hl-gauss' (Q as a histogram trained with
    cross-entropy to a Gaussian-smoothed target; knobs under ``hl_gauss``)."""
    aux: tuple[str, ...] = ()
    """Auxiliary representation losses added to the critic/encoder loss: any of ('taco',) (knobs under ``taco``)."""
    exploration: str = "schedule"
    """Exploration std: 'schedule' (``stddev_schedule``), 'awakened' (DrM: sigmoid of the dormant ratio, then a
    restarted linear decay) or 'dormant' (MENTOR: 0.8 * sigmoid of the dormant ratio, no schedule)."""
    perturb: str = "none"
    """Periodic weight perturbation: 'none', 'dormant' (DrM's dormant-ratio-guided shrink-and-perturb) or 'task'
    (MENTOR's perturbation towards a Gaussian fitted to the best snapshots by episode return)."""
    value_blend: str = "none"
    """TD-target value blend: 'none' or 'expectile' (DrM: an expectile V net blended into the target with a
    dormant-ratio-dependent weight)."""
    moe: str = "none"
    """Mixture-of-experts layer (MENTOR) in place of the middle hidden layer: 'none', 'actor' or 'actor+critic'."""
    actor_grad_clip: float = 0.0
    """Max global grad-norm of the actor update; 0 turns clipping off (DrQ-v2: off; MENTOR clips)."""
    actor_pre_tanh_penalty: float = 0.0
    """Weight of ``mean(u^2)`` added to the actor loss, ``u`` the policy's pre-tanh mean action (rlkit's DDPG
    ``policy_pre_activation_weight``; SAC: its pre-squash mean, rlkit's ``policy_mean_reg_weight``). 0 = DrQ-v2 /
    DrQ (no penalty). Not in the papers: the ``cpu-fast`` preset sets 1e-3 because at action repeat 8 with 500 seed
    steps the deterministic actor can saturate at +-1 within the first thousand updates (tanh'(u) ~ 0 then, so it
    never comes back) and the run stalls at the return of a constant action (cartpole-swingup ~75; see
    benchmarks/results/cpu_fast_actor_penalty_states.json)."""
    log_dormant: bool = False
    """Measure the actor's dormant ratio after every update and log it as ``dormant_ratio`` (on whenever a
    mechanism needs it)."""
    drm: DrMConfig = field(default_factory=DrMConfig)
    """DrM's knobs (dormant ratio, perturbation, awakened exploration, expectile value blend)."""
    taco: TACOConfig = field(default_factory=TACOConfig)
    """TACO's knobs (action encoders, contrastive, CURL and reward-prediction terms)."""
    mentor: MentorConfig = field(default_factory=MentorConfig)
    """MENTOR's knobs (MoE sizes, dormant exploration scale, task-oriented perturbation)."""
    hl_gauss: HLGaussConfig = field(default_factory=HLGaussConfig)
    """HL-Gauss head's knobs (bins, value range or symlog, sigma / bin width)."""

    def __post_init__(self) -> None:
        if not (self.actor_pre_tanh_penalty >= 0 and math.isfinite(self.actor_pre_tanh_penalty)):
            raise ConfigError("actor_pre_tanh_penalty must be a finite number >= 0, got "
                              f"{self.actor_pre_tanh_penalty}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if len(self.encoder_channels) != len(self.encoder_strides) or not self.encoder_channels:
            raise ConfigError(
                f"encoder_channels {self.encoder_channels} and encoder_strides {self.encoder_strides} must be "
                "non-empty and of equal length"
            )
        for name in ("lr", "critic_target_tau", "stddev_clip"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        if not 0.0 <= self.discount <= 1.0:
            raise ConfigError(f"discount must be in [0, 1], got {self.discount}")
        if self.replay_capacity < 1:
            raise ConfigError(f"replay_capacity must be >= 1, got {self.replay_capacity}")
        if min(self.encoder_channels, default=1) < 1 or min(self.encoder_strides, default=1) < 1:
            raise ConfigError(f"encoder_channels {self.encoder_channels} and encoder_strides {self.encoder_strides} "
                              "must be >= 1")
        if not 0.0 < self.critic_target_tau <= 1.0:
            raise ConfigError(f"critic_target_tau must be in (0, 1], got {self.critic_target_tau}")
        for name in ("batch_size", "feature_dim", "hidden_dim", "nstep", "update_every_steps", "updates_per_step"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_q < 1:
            raise ConfigError(f"num_q must be >= 1, got {self.num_q}")
        if self.actor_q not in ("min", "mean"):
            raise ConfigError(f"actor_q must be 'min' (DrQ-v2) or 'mean' (RLPD), got {self.actor_q!r}")
        if not 0 <= self.target_q_subset <= self.num_q:
            raise ConfigError(f"target_q_subset must be in [0, num_q={self.num_q}] (0 = all heads), got "
                              f"{self.target_q_subset}")
        if self.augment_impl not in ("index", "grid_sample"):
            raise ConfigError(f"augment_impl must be 'index' or 'grid_sample', got {self.augment_impl!r}")
        if self.augment_pad < 0 or self.num_seed_steps < 0:
            raise ConfigError("augment_pad and num_seed_steps must be >= 0")
        parse_schedule(self.stddev_schedule)  # raises ConfigError with the accepted forms
        for name, choices in MECHANISM_CHOICES.items():
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            bad = [v for v in values if v not in choices]
            if bad:
                raise ConfigError(f"{name}={value!r}: {bad[0]!r} is not one of {list(choices)}")
        if len(set(self.aux)) != len(self.aux):
            raise ConfigError(f"aux lists a loss twice: {self.aux}")
        if not (self.actor_grad_clip >= 0 and math.isfinite(self.actor_grad_clip)):
            raise ConfigError(f"actor_grad_clip must be a finite number >= 0 (0 = off), got {self.actor_grad_clip}")


@dataclass
class AuxInputs:
    """What an auxiliary loss sees. ``feat`` carries gradient to the encoder; ``next_feat`` does not."""

    agent: "DrQv2Agent"
    batch: Batch
    obs: Any
    next_obs: Any
    feat: torch.Tensor
    next_feat: torch.Tensor
    step: int
    critic_raw: torch.Tensor | None = None
    """The critic's raw outputs ``[num_q, B, out_dim]`` for ``batch.action`` (with grad)."""


@dataclass
class ActorAuxInputs:
    """What an actor auxiliary loss sees: the detached encoder features of the batch."""

    agent: "DrQv2Agent"
    feat: torch.Tensor
    step: int


def critic_metrics(target: torch.Tensor, q: torch.Tensor, loss: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
    """The critic step's logged values (0-d tensors, synced to the host once per update): mean TD target, mean
    Q of the first and last head ``q[num_q, B, 1]``, the loss and the batch's mean reward."""
    return {
        "critic_target_q": target.mean(),
        "critic_q1": q[0].mean(),
        "critic_q2": q[-1].mean(),
        "critic_loss": loss.detach(),
        "batch_reward": batch.reward.mean(),
    }


class _IdentityActionEncoder(torch.nn.Module):
    """The default action encoder: the critic sees the raw action."""

    def __init__(self, action_dim: int) -> None:
        super().__init__()
        self.out_dim = action_dim

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        return action


def _obs_kind(space: gym.Space) -> tuple[str, tuple[int, int, int] | None, int]:
    if isinstance(space, gym.spaces.Dict):
        keys = set(space.spaces)
        if "pixels" not in keys or not keys <= {"pixels", "state"}:
            raise ConfigError(
                f"DrQ-v2 takes a dict observation with 'pixels' and optional 'state'; got keys {sorted(keys)}"
            )
        px = space.spaces["pixels"]
        if len(px.shape) != 3:
            raise ConfigError(f"'pixels' must be [C, H, W], got shape {px.shape}")
        state_dim = int(np.prod(space.spaces["state"].shape)) if "state" in keys else 0
        return "dict", tuple(px.shape), state_dim
    if isinstance(space, gym.spaces.Box):
        if len(space.shape) == 3:
            return "pixels", tuple(space.shape), 0
        if len(space.shape) == 1:
            return "state", None, int(space.shape[0])
    raise ConfigError(
        f"unsupported observation space {space}; DrQ-v2 takes uint8 [C, H, W] pixels, a float [d] state, or a "
        "Dict with 'pixels' (+ 'state')"
    )


class ObsTensorMixin:
    """One env observation -> a batched tensor on the agent's device, and the precision's autocast context; shared
    by the agents on the DrQ-v2 core and BC. Needs ``device``, ``obs_kind``, ``_channels_last``, ``encoder``,
    ``actor`` (and ``critic`` / ``action_encoder`` where the agent has them) and ``cfg.precision``; the agent calls
    :meth:`_resolve_precision` at the end of its constructor."""

    def _obs_to_tensor(self, obs):
        def one(x, pixels: bool):
            t = torch.as_tensor(np.asarray(x), device=self.device).unsqueeze(0)
            if pixels:
                return t.contiguous(memory_format=torch.channels_last) if self._channels_last else t
            return t.float()

        if self.obs_kind == "dict":
            return {k: one(v, k == "pixels") for k, v in obs.items() if k in ("pixels", "state")}
        return one(obs, self.obs_kind == "pixels")

    precision: str = "fp32"
    """The precision in use: ``cfg.precision``, or what ``'auto'`` resolved to (:meth:`_resolve_precision`)."""
    precision_reason: str = ""
    """Why: ``'set in the config'`` or the capability check and timing of :func:`pixelrl.utils.precision.choose_precision`."""

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _resolve_precision(self) -> None:
        """Set ``precision``: the config's value, or for ``'auto'`` fp32 unless the device has native bf16 and a
        timed forward + backward pass of this agent's encoder, critic and actor on a synthetic batch is clearly
        faster in bf16. Leaves every random stream and ``.grad`` as they were."""
        from pixelrl.utils.precision import choose_precision, probe_update_fn

        cfg = self.cfg
        if cfg.precision != "auto":
            self.precision, self.precision_reason = cfg.precision, f"{cfg.precision}: set in the config"
            return
        n = int(cfg.batch_size)
        gen = torch.Generator().manual_seed(0)

        def synthetic(space: gym.spaces.Box, pixels: bool) -> torch.Tensor:
            if pixels:
                x = torch.randint(0, 256, (n, *space.shape), generator=gen).float().to(self.device)
                return x.contiguous(memory_format=torch.channels_last) if self._channels_last else x
            return torch.randn((n, *space.shape), generator=gen).to(self.device)

        space = self.observation_space
        inputs: dict = {}  # built at the first probe call: no batch is allocated where bf16 is not even timed

        def batch():
            if not inputs:
                if self.obs_kind == "dict":
                    inputs["obs"] = {k: synthetic(space.spaces[k], k == "pixels") for k in ("pixels", "state")
                                     if k in space.spaces}
                else:
                    inputs["obs"] = synthetic(space, self.obs_kind == "pixels")
                inputs["action"] = (torch.rand((n, self.action_dim), generator=gen) * 2 - 1).to(self.device)
            return inputs["obs"], inputs["action"]

        critic = getattr(self, "critic", None)
        modules = [m for m in (self.encoder, self.actor, critic) if m is not None]

        def loss() -> torch.Tensor:
            obs, action = batch()
            feat = self.encoder(obs)
            out = self.actor(feat.detach())
            total = (out[0] if isinstance(out, tuple) else out).float().sum()
            if critic is not None:
                total = total + critic(feat, self.action_encoder(action)).float().sum()
            return total

        key = (type(self).__name__, self.obs_kind, str(space), tuple(cfg.encoder_channels), tuple(cfg.encoder_strides),
               cfg.feature_dim, cfg.hidden_dim, getattr(cfg, "num_q", 0), n, self._channels_last)
        self.precision, self.precision_reason = choose_precision(
            self.device, probe_update_fn(modules, loss, self.device), key=key)


class DrQv2Agent(MechanismHooks, ObsTensorMixin):
    """The DrQ-v2 agent: ``act`` for acting, ``update`` for one gradient update, ``state_dict`` for checkpoints."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        cfg: DrQv2Config | None = None,
        device: str | torch.device = "cpu",
        *,
        critic_head: QHead | None = None,
    ) -> None:
        cfg = cfg if cfg is not None else DrQv2Config()
        if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
            raise ConfigError(f"DrQ-v2 needs a continuous Box action space of shape [A]; got {action_space}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.observation_space = observation_space
        self.action_space = action_space
        self.action_dim = int(action_space.shape[0])
        self.obs_kind, pixel_shape, state_dim = _obs_kind(observation_space)
        self._stddev_fn = parse_schedule(cfg.stddev_schedule)
        self._channels_last = cfg.channels_last and self.obs_kind != "state"
        self._augment_pad = cfg.augment_pad if self.obs_kind != "state" else 0

        self.encoder = ObsEncoder(
            self.obs_kind,
            pixel_shape=pixel_shape,
            state_dim=state_dim,
            channels=cfg.encoder_channels,
            strides=cfg.encoder_strides,
        ).to(self.device)
        repr_dim = self.encoder.repr_dim
        # Every action the critic sees goes through action_encoder (TACO's latent action; Identity otherwise).
        self.action_encoder: torch.nn.Module = _IdentityActionEncoder(self.action_dim)
        if "taco" in cfg.aux:
            from pixelrl.mechanisms import taco

            self.action_encoder = taco.make_action_encoder(self.action_dim, cfg.taco)
        self.action_encoder.to(self.device)
        if critic_head is None and cfg.critic == "hl-gauss":
            from pixelrl.mechanisms import hl_gauss

            critic_head = hl_gauss.make_head(cfg.hl_gauss)
        critic_moe = {"moe": cfg.mentor.moe} if cfg.moe == "actor+critic" else {}
        critic_in = int(self.action_encoder.out_dim)
        self.actor = self._build_actor(repr_dim).to(self.device)
        self.critic = Critic(repr_dim, critic_in, cfg.feature_dim, cfg.hidden_dim, cfg.num_q, critic_head,
                             layernorm=cfg.critic_layernorm, **critic_moe).to(self.device)
        self.target_critic = Critic(repr_dim, critic_in, cfg.feature_dim, cfg.hidden_dim, cfg.num_q,
                                    self.critic.head, layernorm=cfg.critic_layernorm, **critic_moe).to(self.device)
        self.target_critic.load_state_dict(self.critic.state_dict())
        self.target_critic.requires_grad_(False)
        if self._channels_last:
            self.encoder.to(memory_format=torch.channels_last)

        self.critic_opt = self._make_adam(
            [{"params": list(self.encoder.parameters())}, {"params": list(self.critic.parameters())},
             {"params": list(self.action_encoder.parameters())}]
        )
        self.actor_opt = self._make_adam([{"params": list(self.actor.parameters())}])
        self._actor_params = list(self.actor.parameters())
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.target_critic.parameters())

        self._init_hooks()  # aux_losses, update_hooks, episode_hooks, batch_extras, last_feat, mechanism states
        self.actor_aux_losses: list[AuxEntry] = []
        # tensor metrics computed after the update and synced with its metrics in one go (DrM's dormant ratio)
        self.metric_hooks: list[Callable[[DrQv2Agent, int], dict[str, torch.Tensor]]] = []
        self.num_updates = 0
        self._aug_buf: torch.Tensor | None = None  # reused float pixel buffer (the update's largest input)

        self._critic_loss_fn = self._critic_loss
        self._actor_loss_fn = self._actor_loss
        if cfg.compile:
            self._critic_loss_fn = torch.compile(self._critic_loss, dynamic=False)
            self._actor_loss_fn = torch.compile(self._actor_loss, dynamic=False)
        self._install_mechanisms()
        self._resolve_precision()

    def _build_actor(self, repr_dim: int) -> torch.nn.Module:
        """The policy network (overridden by SAC). MENTOR's MoE replaces the middle layer when ``moe`` asks."""
        moe = {"moe": self.cfg.mentor.moe} if self.cfg.moe != "none" else {}
        return Actor(repr_dim, self.action_dim, self.cfg.feature_dim, self.cfg.hidden_dim, **moe)

    def _install_mechanisms(self) -> None:
        """Wire the mechanisms the config selects; each ``install`` uses only the hooks documented above."""
        cfg = self.cfg
        if cfg.log_dormant or cfg.exploration == "awakened" or cfg.perturb == "dormant" or cfg.value_blend != "none":
            from pixelrl.mechanisms import drm

            drm.install(self)
        if "taco" in cfg.aux:
            from pixelrl.mechanisms import taco

            taco.install(self)
        if cfg.exploration == "dormant" or cfg.perturb == "task" or cfg.moe != "none":
            from pixelrl.mechanisms import mentor

            mentor.install(self)

    # ------------------------------------------------------------------ hooks
    def stddev(self, step: int) -> float:
        """Exploration / target-smoothing std at ``step`` (agent steps). Mechanisms override or compose this."""
        return self._stddev_fn(step)

    def critic_target(self, batch: Batch, next_feat: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """TD target ``[B, 1]`` (called under no_grad): ``r + discount * min_i Qbar_i(s', a')``."""
        mu = self.actor(next_feat)
        next_action = sample_action(mu, std, clip=self.cfg.stddev_clip)
        target_q = self.target_critic.values(next_feat, self.action_encoder(next_action))
        return batch.reward + batch.discount * self._target_min(target_q)

    def _actor_q(self, q: torch.Tensor) -> torch.Tensor:
        """The actor's objective over the Q heads ``[num_q, B, 1]`` -> ``[B, 1]``: their min (DrQ-v2) or mean (RLPD)."""
        return q.mean(dim=0) if self.cfg.actor_q == "mean" else q.min(dim=0).values

    def _actor_due(self) -> bool:
        """Whether this update has an actor step: always, or with ``utd_cycle`` only the last of each G updates."""
        g = self.cfg.updates_per_step
        return not self.cfg.utd_cycle or (self.num_updates + 1) % g == 0

    def _target_min(self, q: torch.Tensor) -> torch.Tensor:
        """Min over the Q heads ``[num_q, B, 1]`` used by the TD target: all heads, or a random subset (RLPD)."""
        k = self.cfg.target_q_subset
        if k and k < q.shape[0]:
            q = q[torch.randperm(q.shape[0], device=q.device)[:k]]
        return q.min(dim=0).values

    def _aux_optimizer(self) -> torch.optim.Optimizer:
        """``add_aux_loss``'s modules join the critic/encoder optimizer (the loss they are added to)."""
        return self.critic_opt

    def add_actor_aux_loss(self, fn: Callable[[ActorAuxInputs], Any], name: str | None = None) -> None:
        """Add ``fn(ActorAuxInputs) -> loss | (loss, metrics)`` to the actor loss (MENTOR's MoE balance loss)."""
        name = name or f"actor_aux{len(self.actor_aux_losses)}"
        if any(e.name == name for e in self.actor_aux_losses):
            raise ConfigError(f"an actor auxiliary loss named {name!r} is already registered")
        self.actor_aux_losses.append(AuxEntry(name, fn, None))

    def reset_optimizer_state(self, which: str = "all") -> None:
        """Drop Adam moments of ``'actor'``, ``'critic'`` (includes encoder and aux modules) or ``'all'``."""
        opts = {"actor": [self.actor_opt], "critic": [self.critic_opt], "all": [self.actor_opt, self.critic_opt]}
        if which not in opts:
            raise ConfigError(f"which must be one of {sorted(opts)}, got {which!r}")
        for opt in opts[which]:
            opt.state.clear()

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs, *, step: int, eval_mode: bool) -> np.ndarray:
        """Action for one unbatched observation: float32 ``[A]`` in [-1, 1].

        Eval mode returns the mean action. Otherwise, during the first ``num_seed_steps`` agent steps the action is
        uniform in [-1, 1] (as DrQ-v2's ``act``); after that it is ``mu + N(0, stddev(step))`` with *unclipped*
        noise, clamped to [-1, 1] (the reference samples with ``clip=None`` when acting).
        """
        if not eval_mode and step < self.cfg.num_seed_steps:
            return torch.empty(self.action_dim).uniform_(-1.0, 1.0).numpy().astype(np.float32)
        x = self._obs_to_tensor(obs)
        self.actor.eval()  # the reference acts under eval_mode (matters for dropout, e.g. MENTOR's MoE gate)
        with self._autocast():
            mu = self.actor(self.encoder(x))
            if not eval_mode:
                mu = sample_action(mu, self.stddev(step), clip=None)
        self.actor.train()
        return mu[0].float().clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ update
    def _augment(self, obs, next_obs):
        """uint8 pixels of obs and next_obs -> float, independently shifted, channels_last (one kernel for both)."""
        if self.obs_kind == "state":
            return obs.float(), next_obs.float()
        px, npx = (obs["pixels"], next_obs["pixels"]) if self.obs_kind == "dict" else (obs, next_obs)
        both = torch.cat([px, npx], dim=0)
        if self.cfg.augment_impl == "index":
            n, c, h, w = both.shape
            buf = self._aug_buf
            if buf is None or buf.shape != (n, h, w, c) or buf.device != both.device:
                buf = self._aug_buf = torch.empty((n, h, w, c), device=both.device)
            both = random_shift_index(both, self._augment_pad, channels_last=self._channels_last, out=buf)
        else:
            both = random_shift(both.float(), self._augment_pad)
            if self._channels_last:
                both = both.contiguous(memory_format=torch.channels_last)
        a, b = both.chunk(2, dim=0)
        if self.obs_kind == "dict":
            return {**obs, "pixels": a}, {**next_obs, "pixels": b}
        return a, b

    def _critic_loss(self, batch: Batch, std: torch.Tensor, step: int):
        obs, next_obs = self._augment(batch.obs, batch.next_obs)
        with self._autocast():
            feat = self.encoder(obs)
            with torch.no_grad():
                next_feat = self.encoder(next_obs)
                target = self.critic_target(batch, next_feat, std).float()
            raw = self.critic(feat, self.action_encoder(batch.action))
            q = self.critic.head.value(raw).float()
            loss = self.critic.head.loss(raw.float(), target)
        metrics = critic_metrics(target, q, loss, batch)
        if self.aux_losses:
            inputs = AuxInputs(self, batch, obs, next_obs, feat, next_feat, step, raw)
            loss = self._add_aux(self.aux_losses, inputs, loss, metrics)
        return loss, feat.detach(), metrics

    def _actor_loss(self, feat: torch.Tensor, std: torch.Tensor, step: int = 0):
        penalty = self.cfg.actor_pre_tanh_penalty
        with self._autocast():
            if penalty > 0:
                pre = self.actor.pre_tanh(feat)
                mu = torch.tanh(pre)
            else:
                mu = self.actor(feat)
            action = sample_action(mu, std, clip=self.cfg.stddev_clip)
            q = self._actor_q(self.critic.values(feat, self.action_encoder(action))).float()
            loss = -q.mean()
        metrics = {"actor_loss": loss.detach()}
        if penalty > 0:
            pre_sq = pre.float().pow(2).mean()
            loss = loss + penalty * pre_sq
            metrics["actor_pre_tanh_sq"] = pre_sq.detach()
        return self._add_actor_aux(loss, metrics, feat, step)

    def _add_actor_aux(self, loss: torch.Tensor, metrics: dict, feat: torch.Tensor, step: int):
        """Add the registered actor auxiliary losses (after the actor's forward pass, which they may read)."""
        if self.actor_aux_losses:
            loss = self._add_aux(self.actor_aux_losses, ActorAuxInputs(self, feat, step), loss, metrics)
        return loss, metrics

    def _update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        std = torch.tensor(self.stddev(step), device=self.device)
        feat, metrics = self._critic_step(batch, std, step)
        if self._actor_due():
            metrics.update(self._actor_step(feat, std, step))
        self._target_step()
        metrics["actor_std"] = std
        return metrics

    def _critic_step(self, batch: Batch, std: torch.Tensor, step: int):
        """Critic + encoder (+ auxiliary modules) step; returns the detached features and the metrics."""
        critic_loss, feat, metrics = self._critic_loss_fn(batch, std, step)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.last_feat = feat
        return feat, metrics

    def _actor_step(self, feat: torch.Tensor, std: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Actor step on detached features (the critic gets no gradient); returns the actor's metrics."""
        actor_loss, actor_metrics = self._actor_loss_fn(feat, std, step)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=self._actor_params)  # no gradient computed for critic weights
        if self.cfg.actor_grad_clip > 0:
            actor_metrics["actor_grad_norm"] = torch.nn.utils.clip_grad_norm_(self._actor_params,
                                                                              self.cfg.actor_grad_clip)
        self.actor_opt.step()
        return actor_metrics

    def _target_step(self) -> None:
        """Target critic EMA: ``theta_bar <- theta_bar + tau (theta - theta_bar)``."""
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, self.cfg.critic_target_tau)

    def update(self, batch: Batch, *, step: int) -> dict[str, float]:
        """One gradient update of critic+encoder, actor and target critic. Returns float metrics."""
        self.encoder.train()
        self.actor.train()
        metrics = self._update(batch, step)
        self.num_updates += 1
        return finish_update(self, metrics, step, self.update_hooks)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Nets' and optimizers' state dicts plus JSON-able counters; tensors are contiguous copies (a snapshot
        that later updates do not change)."""

        state = {
            "encoder": self.encoder.state_dict(),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "counters": {"num_updates": self.num_updates},
        }
        self._save_aux(state)
        if any(True for _ in self.action_encoder.parameters()):
            state["action_encoder"] = self.action_encoder.state_dict()
        self._save_mech(state)
        return snapshot(state)

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (register the same aux losses first)."""
        missing = [k for k in ("encoder", "actor", "critic", "target_critic", "actor_opt", "critic_opt") if k not in state]
        if missing:
            raise ConfigError(f"DrQ-v2 state is missing {missing}; is it a DrQ-v2 checkpoint?")
        self._check_hook_state(state)  # aux modules and mechanism states present, before anything is loaded
        self.encoder.load_state_dict(state["encoder"])
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        self._load_aux(state)
        if "action_encoder" in state:
            self.action_encoder.load_state_dict(state["action_encoder"])
        self._load_mech(state)
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        align_moments((self.actor_opt, self.critic_opt))
        self.num_updates = int(state.get("counters", {}).get("num_updates", 0))

    def _make_adam(self, groups: list[dict]) -> torch.optim.Optimizer:
        groups = [g for g in groups if g["params"]]
        if not groups:  # keeps the optimizer API uniform for parameter-free parts
            groups = [{"params": [torch.nn.Parameter(torch.zeros(()), requires_grad=False)]}]
        return LeanAdam(groups, lr=self.cfg.lr, fused=self.device.type in ("cpu", "cuda"))
