"""Behaviour cloning: regress the dataset's actions, on pixels (with random-shift augmentation) or on states.

One update (:meth:`BCAgent._update`) on a batch of dataset transitions ``(s, a)``:

1. pixels (uint8) -> float, random shift (pad ``augment_pad``) of ``obs``; states -> float, normalised with the
   dataset's mean / std when ``obs_norm`` (``set_obs_normalizer``);
2. encoder + policy on the augmented observation (BC has no critic, so the BC loss trains the encoder too);
3. ``policy='deterministic'``: ``MSE(pi(s), a)`` with the tanh actor; ``policy='gaussian'``: the negative
   log-likelihood ``-log N(a; tanh(m(s)), std)`` of :class:`GaussianPolicy` (the IQL policy with every advantage
   weight equal to 1);
4. one Adam step on encoder + policy.

Acting: evaluation returns ``pi(s)`` (the tanh mean); training (``eval_mode=False``, e.g. when the agent is run
online) returns the mean for the deterministic policy (BC does not learn from its own experience, so it does not
explore) and a sample of the Gaussian, after ``num_seed_steps`` uniform actions when that is > 0.

This file also holds the pieces the offline agents share (IQL and TD3+BC import them):

* :class:`ObsNormalizer`, :class:`ObsNormMixin` and :class:`CoreObsNormMixin` -- state normalisation with the
  dataset's mean and std (TD3+BC's ``normalize_states``: ``(s - mean) / (std + 1e-3)``), saved with the agent;
* :class:`GaussianPolicy` -- IQL's policy: a tanh mean and a state-independent, clipped log std;
* :func:`plain`, :func:`rebuild_plain_critic`, :func:`use_state_trunk` -- the papers' plain MLPs on state
  observations, without the core's ``Linear -> LayerNorm -> tanh`` trunk;
* :func:`check_offline_mechanisms` -- which of the core's mechanism selectors an offline agent accepts;
* :class:`OfflineAgentConfig` and :func:`offline_preset` -- the settings BC, IQL and TD3+BC share (their papers agree
  on them) and the values they re-assert over DrQ-v2's per-task preset.

Defaults are CORL's BC (Tarasov et al. 2022, ``any_percent_bc.py`` with ``frac = 1``, the BC row of the offline-RL
reference averages): a 256x256 tanh MLP, Adam lr 3e-4, batch 256, MSE, states normalised with the dataset's mean /
std + 1e-3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelrl.agents.drqv2 import DrQv2Config, ObsTensorMixin, _obs_kind
from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError
from pixelrl.nets.actor import Actor
from pixelrl.nets.augment import random_shift, random_shift_index
from pixelrl.nets.critic import Critic
from pixelrl.nets.encoders import ObsEncoder
from pixelrl.nets.layers import weight_init
from pixelrl.utils.adam import LeanAdam
from pixelrl.utils.torch_state import align_moments, finish_update, snapshot

__all__ = ["BCConfig", "BCAgent", "OfflineAgentConfig", "offline_preset", "GaussianPolicy", "ObsNormalizer",
           "ObsNormMixin", "CoreObsNormMixin", "OBS_NORM_EPS", "SUMMARY", "check_offline_mechanisms", "gaussian_log_prob", "plain", "preset",
           "rebuild_plain_critic", "use_state_trunk"]

SUMMARY = "Behaviour cloning (MSE or Gaussian NLL) on pixels (with augmentation) or states"

OBS_NORM_EPS = 1e-3
"""Added to the dataset's state std before dividing (TD3+BC's and CORL's ``normalize_states``: ``std + 1e-3``)."""

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------------------- shared


def check_offline_mechanisms(cfg: DrQv2Config, agent: str, allowed: tuple[str, ...] = ("critic", "aux")) -> None:
    """Refuse the core's mechanism selectors an offline agent does not support. The exploration-std mechanisms
    (DrM's awakened / MENTOR's dormant exploration), the weight perturbations, DrM's value blend (it replaces the
    TD target, which IQL defines itself) and MENTOR's MoE layer are online-RL mechanisms; ``critic`` (the value
    head, e.g. 'hl-gauss') and ``aux`` (e.g. TACO) act through the critic and are allowed where ``allowed`` says."""
    defaults = {"critic": "mse", "aux": (), "exploration": "schedule", "perturb": "none", "value_blend": "none",
                "moe": "none"}
    for name, default in defaults.items():
        value = getattr(cfg, name)
        if name not in allowed and value != default:
            ok = ", ".join(f"--agent.{a}" for a in allowed) or "none"
            raise ConfigError(f"{agent} does not support --agent.{name.replace('_', '-')} {value!r} (mechanism "
                              f"selectors it supports: {ok}); drop that flag")


def plain(module: nn.Module) -> nn.Module:
    """Replace ``module.trunk`` (the core's ``Linear -> LayerNorm -> tanh``) by the identity. The module must have
    been built with ``feature_dim = repr_dim`` so that its MLP takes the raw features (the state)."""
    module.trunk = nn.Identity()
    return module


def use_state_trunk(agent) -> bool:
    """Whether the agent's nets keep the core's trunk: always on pixels, on states only with ``state_trunk``."""
    return agent.obs_kind != "state" or agent.cfg.state_trunk


def rebuild_plain_critic(agent) -> None:
    """Give a DrQ-v2-core agent the papers' plain twin-Q MLP on states: rebuild ``critic`` and ``target_critic``
    without the trunk (same value head, ``num_q``, hidden size, ``critic_layernorm``), and the critic optimizer and
    parameter lists that refer to them. Call before the mechanisms are installed (they may add parameter groups to
    the optimizer)."""
    cfg = agent.cfg
    repr_dim = agent.encoder.repr_dim
    action_in = int(agent.action_encoder.out_dim)

    def make() -> Critic:
        critic = Critic(repr_dim, action_in, repr_dim, cfg.hidden_dim, cfg.num_q, agent.critic.head,
                        layernorm=cfg.critic_layernorm)
        return plain(critic).to(agent.device)

    agent.critic = make()
    agent.target_critic = make()
    agent.target_critic.load_state_dict(agent.critic.state_dict())
    agent.target_critic.requires_grad_(False)
    agent.critic_opt = agent._make_adam(
        [{"params": list(agent.encoder.parameters())}, {"params": list(agent.critic.parameters())},
         {"params": list(agent.action_encoder.parameters())}]
    )
    agent._critic_params = list(agent.critic.parameters())
    agent._target_params = list(agent.target_critic.parameters())


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log N(x; mean, exp(log_std))`` of a diagonal Gaussian, summed over the last dim: ``[B, 1]``. ``log_std``
    is ``[B, A]`` or a state-independent ``[A]`` (broadcast)."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - _LOG_SQRT_2PI).sum(dim=-1, keepdim=True)


class GaussianPolicy(nn.Module):
    """IQL's policy (the authors' ``NormalTanhPolicy`` with ``state_dependent_std=False`` and
    ``tanh_squash_distribution=False``): ``N(tanh(m(s)), diag(exp(log_std)))`` with a learned, state-independent
    ``log_std`` (initialised to 0, clipped to ``[log_std_min, log_std_max]``). The mean is squashed, the
    distribution is not, so ``log pi(a|s)`` of a dataset action is a plain Gaussian log-density.

    Network: trunk (``Linear(repr_dim -> feature_dim) -> LayerNorm -> tanh``, or none with ``trunk=False``), then
    ``hidden_dim`` x2 ReLU layers, each followed by dropout when ``dropout > 0`` (IQL's Kitchen/Adroit setting),
    then a linear layer to the pre-tanh mean. ``forward`` returns the deterministic action ``tanh(m(s))``.
    """

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int = 50, hidden_dim: int = 256, *,
                 trunk: bool = True, dropout: float = 0.0, log_std_min: float = -5.0,
                 log_std_max: float = 2.0) -> None:
        super().__init__()
        if not log_std_min < log_std_max:
            raise ConfigError(f"log_std_min ({log_std_min}) must be < log_std_max ({log_std_max})")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)
        if trunk:
            self.trunk: nn.Module = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim),
                                                  nn.Tanh())
            d = feature_dim
        else:
            self.trunk = nn.Identity()
            d = repr_dim
        layers: list[nn.Module] = []
        for _ in range(2):
            layers += [nn.Linear(d, hidden_dim), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = hidden_dim
        layers.append(nn.Linear(d, action_dim))
        self.policy = nn.Sequential(*layers)
        self.log_std = nn.Parameter(torch.zeros(action_dim))
        self.apply(weight_init)

    def _mean_log_std(self, obs_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``tanh(m(s))`` ``[B, A]`` and the clipped log std ``[A]`` (state-independent, not broadcast)."""
        return (torch.tanh(self.policy(self.trunk(obs_feat))),
                self.log_std.clamp(self.log_std_min, self.log_std_max))

    def dist_params(self, obs_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``tanh(m(s))`` ``[B, A]`` and the clipped log std broadcast to ``[B, A]`` (kept in float32)."""
        mean, log_std = self._mean_log_std(obs_feat)
        return mean, log_std.expand(mean.shape)

    def forward(self, obs_feat: torch.Tensor) -> torch.Tensor:
        """Deterministic action ``tanh(m(s))`` in (-1, 1), ``[B, A]`` (the evaluation action)."""
        return self.dist_params(obs_feat)[0]

    def log_prob(self, obs_feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``log pi(action|s)`` ``[B, 1]``, in float32 even under bf16 autocast."""
        mean, log_std = self._mean_log_std(obs_feat)  # log_std [A] broadcasts: exp over A, not B x A
        return gaussian_log_prob(action.float(), mean.float(), log_std)

    def sample(self, obs_feat: torch.Tensor) -> torch.Tensor:
        """One sample of ``pi(.|s)`` ``[B, A]`` (unbounded: the caller clamps to the action box)."""
        mean, log_std = (x.float() for x in self.dist_params(obs_feat))
        return mean + log_std.exp() * torch.randn_like(mean)


class ObsNormalizer(nn.Module):
    """``(s - mean) / std`` with the dataset's per-dimension mean and std (``std`` already includes
    :data:`OBS_NORM_EPS`). Identity until :meth:`set` is called. Buffers, so they move with the agent's device."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set(self, mean, std) -> None:
        """Set from the dataset's mean and (population) std of the state, each ``[dim]``; adds ``OBS_NORM_EPS``."""
        dim = self.mean.shape[0]
        m = torch.as_tensor(np.asarray(mean, dtype=np.float64)).reshape(-1)
        s = torch.as_tensor(np.asarray(std, dtype=np.float64)).reshape(-1)
        if m.shape != (dim,) or s.shape != (dim,):
            raise ConfigError(f"the state normaliser needs a mean and std of shape ({dim},), got {tuple(m.shape)} "
                              f"and {tuple(s.shape)}: pass the per-dimension statistics of the dataset's states")
        if not (torch.isfinite(m).all() and torch.isfinite(s).all()) or (s < 0).any():
            raise ConfigError("the state normaliser needs a finite mean and a finite, non-negative std; the dataset's "
                              "states contain NaN / inf, or the std was computed wrongly")
        self.mean.copy_(m.float())
        self.std.copy_((s + OBS_NORM_EPS).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ObsNormMixin:
    """State normalisation for agents on the DrQ-v2 core (IQL, TD3+BC) and BC.

    Needs ``cfg.obs_norm``, ``obs_kind``, ``observation_space`` and ``device``; call :meth:`_init_obs_norm` once the
    observation kind is known. Pixels are never normalised (the encoder scales them); a dict observation has its
    ``'state'`` entry normalised. The statistics are saved with the agent (``state_dict()['obs_norm']`` for BC,
    ``['mech']['obs_norm']`` for the DrQ-v2-based agents, see :class:`CoreObsNormMixin`).
    """

    obs_normalizer: ObsNormalizer | None

    def _init_obs_norm(self) -> None:
        space = self.observation_space
        if self.obs_kind == "state":
            dim = int(np.prod(space.shape))
        elif self.obs_kind == "dict" and "state" in space.spaces:
            dim = int(np.prod(space.spaces["state"].shape))
        else:
            dim = 0
        self.obs_normalizer = ObsNormalizer(dim).to(self.device) if dim else None

    def set_obs_normalizer(self, mean, std) -> None:
        """Normalise states with the dataset's ``mean`` and ``std`` (per dimension, as computed over the dataset's
        observations; :data:`OBS_NORM_EPS` is added to ``std``). Used when ``cfg.obs_norm`` is True (the trainer calls
        this once, before training, with the offline dataset's statistics; a resumed run restores them from the
        checkpoint). Pixel-only observations have no state to normalise: ConfigError."""
        if self.obs_normalizer is None:
            raise ConfigError("set_obs_normalizer: this agent sees pixels only, which are not normalised (the "
                              "encoder scales them); set obs_norm=False or train on states / pixels+state")
        self.obs_normalizer.set(mean, std)

    def _norm_obs(self, obs):
        if self.obs_normalizer is None or not self.cfg.obs_norm:
            return obs
        if isinstance(obs, dict):
            return {**obs, "state": self.obs_normalizer(obs["state"].float())}
        return self.obs_normalizer(obs.float())

    def _obs_norm_state(self) -> dict:
        if self.obs_normalizer is None:
            return {}
        return {k: v.clone() for k, v in self.obs_normalizer.state_dict().items()}

    def _load_obs_norm_state(self, state: dict) -> None:
        if self.obs_normalizer is not None:
            if not state:
                raise ConfigError("checkpoint has no state normaliser for this agent's state observations; was it "
                                  "saved by an agent with the same observation space?")
            self.obs_normalizer.load_state_dict(state)


class CoreObsNormMixin(ObsNormMixin):
    """:class:`ObsNormMixin` for agents on the DrQ-v2 core (IQL, TD3+BC): wraps the core's two input paths,
    ``_augment`` (the update's observations) and ``_obs_to_tensor`` (acting), so that every network sees normalised
    states, and saves the statistics as the mechanism state ``'obs_norm'``. Put it before ``DrQv2Agent`` in the bases
    and call :meth:`_install_obs_norm` after ``DrQv2Agent.__init__``."""

    def _install_obs_norm(self) -> None:
        self._init_obs_norm()
        self.register_state("obs_norm", self._obs_norm_state, self._load_obs_norm_state)  # type: ignore[attr-defined]

    def _augment(self, obs, next_obs):
        a, b = super()._augment(obs, next_obs)  # type: ignore[misc]
        return self._norm_obs(a), self._norm_obs(b)

    def _obs_to_tensor(self, obs):
        return self._norm_obs(super()._obs_to_tensor(obs))  # type: ignore[misc]


# ------------------------------------------------------------------------------------------ shared offline settings


@dataclass(frozen=True)
class OfflineAgentConfig(DrQv2Config):
    """What the offline agents' published state-based configurations share (IQL, TD3+BC and CORL's BC agree on all
    of it); BC, IQL and TD3+BC derive their configs from this one. Fields not redefined keep the DrQ-v2 core's
    values, which matter only on pixels (encoder, 50-d trunk, pad-4 random shift)."""

    lr: float = 3e-4
    """Adam learning rate of every net (IQL: actor, critic and value net; TD3+BC: actor and critic; CORL's BC: the
    policy; all 3e-4). The encoder, on pixels, is trained with the critic (or with the policy for BC)."""
    batch_size: int = 256
    """Dataset transitions per update (IQL, TD3+BC, CORL's BC: 256)."""
    hidden_dim: int = 256
    """Hidden units of the two layers of every MLP (IQL, TD3+BC, CORL's BC: 256x256)."""
    critic_target_tau: float = 0.005
    """Polyak rate of the target critic (IQL: every update; TD3+BC: with each actor update, the target actor too;
    both 0.005). BC has no critic."""
    nstep: int = 1
    """n of the n-step return the replay builds (IQL, TD3+BC: 1; BC reads only ``obs`` and ``action``)."""
    update_every_steps: int = 1
    """Agent steps between update points in an online phase (IQL / TD3 fine-tuning: one update per env step;
    offline training ignores it)."""
    num_seed_steps: int = 0
    """Uniform random actions at the start of an online phase, in agent steps (0: act with the offline policy)."""
    state_trunk: bool = False
    """On state observations, keep the core's ``Linear -> LayerNorm -> tanh`` trunk (``feature_dim``) in front of the
    MLPs. False (default) = the papers' plain MLPs on the state. Pixels always use the trunk (DrQ-v2)."""


def offline_preset(**extra) -> dict:
    """The values an offline agent re-asserts over DrQ-v2's per-task preset, which changes them for some tasks
    (humanoid lr / feature_dim, walker n-step / batch, quadruped_run replay): the offline agents use one configuration
    everywhere. ``extra``: the agent's own (e.g. its ``stddev_schedule``)."""
    return {"lr": 3e-4, "feature_dim": 50, "nstep": 1, "batch_size": 256, "replay_capacity": 1_000_000, **extra}


# ---------------------------------------------------------------------------------------------------------- BC


@dataclass(frozen=True)
class BCConfig(OfflineAgentConfig):
    """BC hyper-parameters. Defaults are CORL's BC (256x256 tanh MLP, Adam 3e-4, batch 256, MSE, state
    normalisation). Fields of the DrQ-v2 core that BC has no use for (critic, target, n-step, mechanisms) are kept so
    that presets and the trainer see the usual fields; the mechanism selectors must stay at their defaults."""

    stddev_schedule: str = "0.0"
    """Unused by BC (the deterministic policy does not explore; the Gaussian one samples its own std)."""
    policy: str = "deterministic"
    """'deterministic': tanh MLP trained with MSE to the dataset action (CORL / TD3+BC's BC); 'gaussian': the IQL
    policy (tanh mean, learned state-independent std) trained by negative log-likelihood."""
    obs_norm: bool = True
    """Normalise states with the dataset's mean and std + 1e-3 (CORL's BC; the trainer passes the statistics via
    ``agent.set_obs_normalizer``). Pixels are never normalised."""
    dropout: float = 0.0
    """Dropout after each hidden layer of the Gaussian policy (0 = none). Deterministic policy: must be 0."""
    log_std_min: float = -5.0
    """Lower clip of the Gaussian policy's log std (IQL's policy: -5)."""
    log_std_max: float = 2.0
    """Upper clip of the Gaussian policy's log std (IQL's policy: 2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.policy not in ("deterministic", "gaussian"):
            raise ConfigError(f"policy must be 'deterministic' or 'gaussian', got {self.policy!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.dropout > 0 and self.policy == "deterministic":
            raise ConfigError("dropout is an option of the Gaussian policy; use --agent.policy gaussian or dropout 0")
        if not (math.isfinite(self.log_std_min) and math.isfinite(self.log_std_max)
                and self.log_std_min < self.log_std_max):
            raise ConfigError(f"log_std_min ({self.log_std_min}) must be < log_std_max ({self.log_std_max}), both "
                              "finite")
        check_offline_mechanisms(self, "BC", allowed=())
        if self.log_dormant:
            raise ConfigError("BC does not support log_dormant (a mechanism of the DrQ-v2 core); drop it")
        if self.critic_layernorm:
            raise ConfigError("BC has no critic, so critic_layernorm does nothing there; drop --agent.critic-layernorm")


def preset(env_id: str, obs: str = "pixels") -> dict:
    """BC's overrides for ``env_id``: re-assert its values on the fields DrQ-v2's per-task preset changes (humanoid
    lr / feature_dim, walker n-step / batch, quadruped_run replay, the exploration schedule): BC uses one
    configuration everywhere."""
    return offline_preset(stddev_schedule="0.0")


class BCAgent(ObsNormMixin, ObsTensorMixin):
    """Behaviour cloning with the agent API (``act``, ``update``, ``state_dict``) of the DrQ-v2 core.

    Attributes: ``encoder`` (:class:`~pixelrl.nets.ObsEncoder`), ``actor`` (:class:`~pixelrl.nets.Actor` or
    :class:`GaussianPolicy`), ``opt`` (Adam over both), ``obs_normalizer``.
    """

    cfg: BCConfig

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: BCConfig | None = None,
                 device: str | torch.device = "cpu") -> None:
        cfg = cfg if cfg is not None else BCConfig()
        if not isinstance(cfg, BCConfig):
            raise ConfigError(f"BCAgent needs a BCConfig, got {type(cfg).__name__}")
        if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
            raise ConfigError(f"BC needs a continuous Box action space of shape [A]; got {action_space}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.observation_space = observation_space
        self.action_space = action_space
        self.action_dim = int(action_space.shape[0])
        self.obs_kind, pixel_shape, state_dim = _obs_kind(observation_space)
        self._channels_last = cfg.channels_last and self.obs_kind != "state"
        self._augment_pad = cfg.augment_pad if self.obs_kind != "state" else 0
        self.encoder = ObsEncoder(self.obs_kind, pixel_shape=pixel_shape, state_dim=state_dim,
                                  channels=cfg.encoder_channels, strides=cfg.encoder_strides).to(self.device)
        if self._channels_last:
            self.encoder.to(memory_format=torch.channels_last)
        repr_dim = self.encoder.repr_dim
        trunk = use_state_trunk(self)
        feature_dim = cfg.feature_dim if trunk else repr_dim
        if cfg.policy == "gaussian":
            self.actor: nn.Module = GaussianPolicy(repr_dim, self.action_dim, feature_dim, cfg.hidden_dim,
                                                   trunk=trunk, dropout=cfg.dropout, log_std_min=cfg.log_std_min,
                                                   log_std_max=cfg.log_std_max)
        else:
            self.actor = Actor(repr_dim, self.action_dim, feature_dim, cfg.hidden_dim)
            if not trunk:
                plain(self.actor)
        self.actor.to(self.device)
        self._init_obs_norm()
        params = list(self.encoder.parameters()) + list(self.actor.parameters())
        self.opt = LeanAdam(params, lr=cfg.lr, fused=self.device.type in ("cpu", "cuda"))
        self.num_updates = 0
        self.batch_extras: set[str] = set()
        self.update_hooks: list = []
        self.episode_hooks: list = []
        self._loss_fn = torch.compile(self._loss, dynamic=False) if cfg.compile else self._loss
        self._resolve_precision()

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs, *, step: int, eval_mode: bool) -> np.ndarray:
        """Action for one unbatched observation: float32 ``[A]`` in [-1, 1] (see the module docstring)."""
        if not eval_mode and step < self.cfg.num_seed_steps:
            return torch.empty(self.action_dim).uniform_(-1.0, 1.0).numpy().astype(np.float32)
        x = self._norm_obs(self._obs_to_tensor(obs))
        self.actor.eval()
        with self._autocast():
            feat = self.encoder(x)
            if not eval_mode and self.cfg.policy == "gaussian":
                action = self.actor.sample(feat)
            else:
                action = self.actor(feat)
        self.actor.train()
        return action[0].float().clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)

    def observe_episode(self, episode_return: float, step: int) -> dict[str, float]:
        """Called by the trainer after each training episode; BC keeps nothing per episode."""
        return {}

    # ------------------------------------------------------------------ update
    def _prepare(self, obs):
        """uint8 pixels -> float, randomly shifted (pad ``augment_pad``); states -> float, normalised."""
        if self.obs_kind == "state":
            return self._norm_obs(obs.float())
        px = obs["pixels"] if self.obs_kind == "dict" else obs
        if self.cfg.augment_impl == "index":
            px = random_shift_index(px, self._augment_pad, channels_last=self._channels_last)
        else:
            px = random_shift(px.float(), self._augment_pad)
            if self._channels_last:
                px = px.contiguous(memory_format=torch.channels_last)
        return self._norm_obs({**obs, "pixels": px}) if self.obs_kind == "dict" else px

    def _loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obs = self._prepare(batch.obs)
        with self._autocast():
            feat = self.encoder(obs)
            if self.cfg.policy == "gaussian":
                log_prob = self.actor.log_prob(feat, batch.action)
                loss = -log_prob.mean()
                mse = F.mse_loss(self.actor(feat).float(), batch.action.float()).detach()
                return loss, {"bc_loss": loss.detach(), "bc_mse": mse,
                              "policy_log_std": self.actor.log_std.detach().mean()}
            loss = F.mse_loss(self.actor(feat).float(), batch.action.float())
        return loss, {"bc_loss": loss.detach(), "bc_mse": loss.detach()}

    def _update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        loss, metrics = self._loss_fn(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return metrics

    def update(self, batch: Batch, *, step: int) -> dict[str, float]:
        """One gradient step of the encoder and policy on the batch's ``(obs, action)``. Returns float metrics."""
        self.encoder.train()
        self.actor.train()
        metrics = self._update(batch, step)
        self.num_updates += 1
        return finish_update(self, metrics, step, self.update_hooks)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Encoder, policy, optimizer, state normaliser and the update counter (tensors are copies)."""

        return snapshot({
            "encoder": self.encoder.state_dict(),
            "actor": self.actor.state_dict(),
            "opt": self.opt.state_dict(),
            "obs_norm": self._obs_norm_state(),
            "counters": {"num_updates": self.num_updates},
        })

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        missing = [k for k in ("encoder", "actor", "opt") if k not in state]
        if missing:
            raise ConfigError(f"BC state is missing {missing}; is it a BC checkpoint?")
        self.encoder.load_state_dict(state["encoder"])
        self.actor.load_state_dict(state["actor"])
        self._load_obs_norm_state(state.get("obs_norm", {}))
        self.opt.load_state_dict(state["opt"])
        align_moments((self.opt,))
        self.num_updates = int(state.get("counters", {}).get("num_updates", 0))
