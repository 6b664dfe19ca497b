"""DQN family: one value-based core for discrete actions whose parts are switches -- double Q, dueling head, n-step
returns, a target network by period or EMA, DrQ(eps)'s augmentation, epsilon-greedy with a linear decay, Huber / MSE
loss or an HL-Gauss value head.

``dqn`` is the core with Dopamine's JAX DQN settings (``dopamine/jax/agents/dqn/configs/dqn.gin``); ``drq-eps`` is
DrQ(eps) on the Atari-100k protocol (``dopamine/labs/atari_100k/configs/DrQ_eps.gin``; :func:`drq_eps_preset`). The
protocol and every deviation from the authors' code are in ``docs/agents/dqn.md``.

The update reads top to bottom in :meth:`DQNAgent._update`:

1. pixels of ``obs`` and ``next_obs`` augmented independently (``augment``: replicate pad 4, random crop back to
   84 with one offset per image, intensity ``x * (1 + 0.05 * clip(N(0, 1), -2, 2))`` per image), as floats in
   [0, 255] (the network divides by 255);
2. torso features of ``obs`` (with grad) and the head's Q values (or per-action histogram logits);
3. TD target (:meth:`DQNAgent.td_target`, under ``no_grad``): ``y = r + discount * Q_target(s', a*)`` with
   ``a* = argmax_a Q_online(s', a)`` (double Q) or ``argmax_a Q_target(s', a)``; ``batch.discount`` already holds
   ``gamma^n`` and the (learner) termination mask, rewards were clipped when stored (``reward_clip``);
4. loss on the chosen action's Q: Huber (delta 1, Dopamine's DQN and DrQ(eps)), MSE, or HL-Gauss cross-entropy
   (plus auxiliary losses), one Adam step;
5. target network: a copy every ``target_update_period`` updates, or EMA with ``target_tau``; period 1 without EMA
   means the online network itself is the target (DrQ(eps): Dopamine syncs after every update, so its target net
   always equals the online net of the moment), and no copy is kept.

Hooks, for mechanisms added later (SPR's self-prediction loss, BBF's resets, ...) without copying the agent (those
the DrQ-v2 core has too -- ``add_aux_loss``, ``register_state``, ``update_hooks``, ``episode_hooks``,
``batch_extras``, ``last_feat`` -- are written once, in :class:`pixelrl.agents.hooks.MechanismHooks`):

* ``add_aux_loss(fn, module=None, name=None)`` -- ``fn(DQNAuxInputs) -> loss | (loss, {name: tensor})`` is added to
  the TD loss before the single optimizer step; ``module``'s parameters join the optimizer and its state the
  checkpoint (SPR's transition model and projection heads).
* ``td_target(batch, next_obs) -> Tensor[B, 1]`` -- override (subclass or instance) to change the target.
* ``update_hooks`` -- ``fn(agent, step) -> dict | None`` run after each update (BBF's periodic shrink-and-perturb
  resets of ``q_net.torso`` / ``q_net`` heads, with :meth:`reset_optimizer_state`); ``last_feat`` holds the detached
  torso features of the last update's batch.
* ``episode_hooks`` -- ``fn(agent, episode_return, step) -> dict | None`` run by the trainer after each training
  episode.
* ``register_state(name, state_fn, load_fn)`` -- a mechanism's own state in checkpoints (schedules, RNGs).
* ``batch_extras`` -- replay fields a mechanism needs (``{"action_seq": K}``: SPR's K-step action window).
* ``q_net`` (``torso``, ``advantage``, ``value``), ``target_net`` (None while the online net is the target),
  ``optimizer`` are public attributes.

What the trainer reads from the agent: ``reward_clip`` and ``life_loss_terminal`` (the learner's view of a step,
:func:`pixelrl.train.episode.train_episode`), and from the config ``batch_size``, ``nstep``, ``discount``,
``replay_capacity``, ``num_seed_steps``, ``update_every_steps``, ``updates_per_step``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from pixelrl.agents.hooks import MechanismHooks
from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError
from pixelrl.mechanisms.hl_gauss import HLGaussConfig, make_head
from pixelrl.nets.augment import random_shift_index
from pixelrl.nets.dueling import QNetwork
from pixelrl.utils.adam import LeanAdam
from pixelrl.utils.torch_state import align_moments, finish_update, snapshot

__all__ = ["DQNConfig", "DQNAgent", "DQNAuxInputs", "linearly_decaying_epsilon", "drq_augment", "drq_eps_preset",
           "SUMMARY", "DRQ_EPS_SUMMARY", "ATARI_100K_ENV_OPTIONS"]

SUMMARY = "DQN core for discrete actions (Dopamine's JAX DQN defaults; double, dueling, n-step, DrQ aug as switches)"
DRQ_EPS_SUMMARY = "DrQ(eps) on the Atari-100k protocol (Agarwal et al. 2021; Dopamine's DrQ_eps.gin)"

ATARI_100K_ENV_OPTIONS: dict[str, Any] = {"repeat_action_probability": 0.0, "max_num_frames_per_episode": 108_000,
                                          "noop_max": 30}
"""``ale/`` options of the Atari-100k protocol: no sticky actions, episodes capped at 108k frames (27k agent steps),
up to 30 no-op frames after each reset."""


@dataclass(frozen=True)
class DQNConfig:
    """DQN hyper-parameters. Defaults are Dopamine's JAX DQN (``dopamine/jax/agents/dqn/configs/dqn.gin``, Nature DQN
    as modified for the Rainbow comparison); ``--agent drq-eps`` sets DrQ(eps)'s Atari-100k values."""

    lr: float = 6.25e-5
    """Adam learning rate (Dopamine DQN: 6.25e-5; DrQ(eps) / DER: 1e-4)."""
    adam_eps: float = 1.5e-4
    """Adam epsilon (Dopamine: 1.5e-4, i.e. 0.01 / batch 32 as in Rainbow)."""
    batch_size: int = 32
    """Transitions per update (Dopamine: 32). Read by the trainer's replay sampler."""
    nstep: int = 1
    """n of the n-step return built by the replay (Dopamine DQN: 1; DrQ(eps): 10)."""
    discount: float = 0.99
    """Per-step discount gamma; the replay folds gamma^n and termination into ``batch.discount``."""
    replay_capacity: int = 1_000_000
    """Replay size in transitions (Dopamine: 1M; on Atari-100k 1M is "a proxy for unbounded memory")."""
    num_seed_steps: int = 20_000
    """Agent steps of uniform random actions, without updates, at the start (Dopamine's ``min_replay_history``: 20k
    for DQN, 1600 for DrQ(eps)). Dopamine starts updating once *more* than this many transitions are stored, one
    step later than here. Also the warm-up of the epsilon schedule."""
    update_every_steps: int = 4
    """Agent steps between update points (Dopamine's ``update_period``: 4 for DQN, 1 for DrQ(eps))."""
    updates_per_step: int = 1
    """Gradient updates at each update point (the replay ratio; DrQ(eps): 1)."""
    target_update_period: int = 8_000
    """Agent steps between copies of the online network into the target network, as Dopamine counts them (DQN:
    8000; DrQ(eps): 1): the copy follows the first update at or after each multiple. 1 with ``target_tau == 0``:
    the online network is the target (DrQ(eps): Dopamine syncs after every update, so its target always equals the
    online network of the moment) and no copy is kept."""
    target_tau: float = 0.0
    """EMA rate of the target network after every update (BBF: 0.005); 0 = hard copies every
    ``target_update_period`` updates instead."""
    double_q: bool = False
    """Double Q-learning (van Hasselt et al. 2016): the online network picks the next action, the target network
    values it (DrQ(eps): True; Dopamine DQN: False)."""
    dueling: bool = False
    """Dueling head ``Q = V + A - mean A`` (Wang et al. 2016; DrQ(eps): True)."""
    loss: str = "huber"
    """TD loss on the chosen action's Q: 'huber' (delta 1; Nature DQN, Dopamine's DQN in 2021 and DrQ(eps)'s
    ``full_rainbow_agent.train`` with ``mse_loss=False``) or 'mse' (``(y - Q)^2``; Dopamine's current JAX DQN
    default). Ignored with ``critic='hl-gauss'``."""
    critic: str = "mse"
    """Value head: 'mse' (a scalar Q per action trained with ``loss``) or 'hl-gauss' (a histogram of logits per action
    trained with cross-entropy to a Gaussian-smoothed target; knobs under ``hl_gauss``; outside DeepMind Control set
    ``--agent.hl-gauss.v-min`` / ``v-max``, the range of discounted clipped returns)."""
    hl_gauss: HLGaussConfig = field(default_factory=HLGaussConfig)
    """HL-Gauss head's knobs (bins, value range or symlog, sigma / bin width)."""
    epsilon_train: float = 0.01
    """Final epsilon of epsilon-greedy exploration (Dopamine DQN and DrQ(eps): 0.01; DrQ: 0.1)."""
    epsilon_eval: float = 0.001
    """Epsilon when evaluating (Dopamine DQN and DrQ(eps): 0.001; DrQ: 0.05)."""
    epsilon_decay_steps: int = 250_000
    """Agent steps over which epsilon falls linearly from 1 to ``epsilon_train`` after the ``num_seed_steps`` warm-up
    (Dopamine's ``linearly_decaying_epsilon``; DQN: 250k, DrQ(eps): 5000). 0: ``epsilon_train`` right after it."""
    augment: bool = False
    """DrQ's augmentation of ``obs`` and ``next_obs`` (independently): replicate pad ``augment_pad``, random crop back
    to the frame size with one offset per image, then intensity ``x * (1 + 0.05 * clip(N(0, 1), -2, 2))`` per image
    (Dopamine's ``drq_image_augmentation``; DrQ(eps): True). Pixels only."""
    augment_pad: int = 4
    """Padding of the random crop in pixels."""
    augment_offsets: str = "dopamine"
    """Crop offsets per axis: 'dopamine' = uniform in [0, 2 * pad) (``jax.random.randint``'s ``maxval`` is exclusive,
    so shifts run from -pad to pad - 1), 'drq' = [0, 2 * pad] (DrQ's PyTorch ``RandomShiftsAug``)."""
    intensity_scale: float = 0.05
    """Scale of the intensity augmentation (0 turns it off)."""
    reward_clip: float = 1.0
    """Rewards are clipped to [-c, c] when stored for learning (Dopamine's runners: 1); scores and logged returns stay
    raw. 0 turns clipping off."""
    terminal_on_life_loss: bool = False
    """Store a step that lost a life (``ale/`` envs) as terminal for the learner -- no bootstrap across it, n-step
    returns stop there -- while the scored episode runs on to game over (Atari-100k / DrQ(eps): True; Dopamine's DQN
    gin: False)."""
    padding: str = "same"
    """Convolution padding of the Nature-DQN torso: 'same' (Dopamine's Flax networks: 7,744 features at 84x84) or
    'valid' (the Nature paper, CleanRL: 3,136)."""
    hidden_dim: int = 512
    """Width of the pixel torso's linear layer (Nature DQN: 512)."""
    mlp_hidden: tuple[int, ...] = (512, 512)
    """Hidden widths of the torso on state observations (Dopamine's classic-control networks: 512, 512)."""
    precision: str = "fp32"
    """'fp32' (Dopamine), 'bf16' (autocast of the forward passes; parameters and Adam state stay fp32) or 'auto' (bf16
    only where the device computes it natively and a short timing of this network's forward + backward shows it
    faster; see ``pixelrl.utils.precision``)."""

    def __post_init__(self) -> None:
        for name in ("lr", "adam_eps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("batch_size", "nstep", "replay_capacity", "update_every_steps", "updates_per_step",
                     "target_update_period", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("num_seed_steps", "epsilon_decay_steps", "augment_pad"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.discount <= 1.0:
            raise ConfigError(f"discount must be in [0, 1], got {self.discount}")
        if not 0.0 <= self.target_tau <= 1.0:
            raise ConfigError(f"target_tau must be in [0, 1] (0 = copies every target_update_period updates), got "
                              f"{self.target_tau}")
        for name in ("epsilon_train", "epsilon_eval"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not (self.reward_clip >= 0 and math.isfinite(self.reward_clip)):
            raise ConfigError(f"reward_clip must be a finite number >= 0 (0 = no clipping), got {self.reward_clip}")
        if not (self.intensity_scale >= 0 and math.isfinite(self.intensity_scale)):
            raise ConfigError(f"intensity_scale must be a finite number >= 0, got {self.intensity_scale}")
        choices = {"loss": ("huber", "mse"), "critic": ("mse", "hl-gauss"), "augment_offsets": ("dopamine", "drq"),
                   "padding": ("same", "valid"), "precision": ("fp32", "bf16", "auto")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {getattr(self, name)!r}")
        if not self.mlp_hidden or min(self.mlp_hidden) < 1:
            raise ConfigError(f"mlp_hidden must be one or more widths >= 1, got {self.mlp_hidden}")


def drq_eps_preset(env_id: str = "", obs: str = "pixels") -> dict:
    """DrQ(eps)'s published Atari-100k settings (``dopamine/labs/atari_100k/configs/DrQ_eps.gin``) and the protocol's
    trainer fields: 100k agent steps (400k frames), no sticky actions and 27k-step (108k-frame) episodes on ``ale/``
    envs, 100 evaluation episodes at the start and after training (Dopamine evaluates after every 10k steps too;
    ``--eval-every-frames 40000`` does that)."""
    train: dict[str, Any] = {"frames": 400_000, "eval_episodes": 100, "eval_every_frames": 400_000}
    if env_id.startswith("ale/"):
        train["env_options"] = dict(ATARI_100K_ENV_OPTIONS)
    return {
        # agent (DrQ_eps.gin)
        "nstep": 10, "discount": 0.99, "num_seed_steps": 1600, "update_every_steps": 1, "updates_per_step": 1,
        "target_update_period": 1, "target_tau": 0.0, "epsilon_train": 0.01, "epsilon_eval": 0.001,
        "epsilon_decay_steps": 5000, "lr": 1e-4, "adam_eps": 1.5e-4, "double_q": True, "dueling": True,
        "augment": obs != "state", "loss": "huber", "batch_size": 32, "replay_capacity": 1_000_000,
        "reward_clip": 1.0, "terminal_on_life_loss": True,
        # trainer: the Atari-100k protocol (the ale/ options only on ale/ envs)
        **train,
    }


def linearly_decaying_epsilon(step: int, *, warmup: int, decay: int, final: float) -> float:
    """Dopamine's ``linearly_decaying_epsilon``: 1 for the first ``warmup`` agent steps, then linear to ``final`` over
    ``decay`` steps, then ``final``: ``final + clip((1 - final) * (decay + warmup - step) / decay, 0, 1 - final)``."""
    if decay <= 0:
        return 1.0 if step < warmup else float(final)
    bonus = (1.0 - final) * (decay + warmup - step) / decay
    return float(final + min(max(bonus, 0.0), 1.0 - final))


def drq_augment(x: torch.Tensor, *, pad: int = 4, intensity: float = 0.05, offsets: str = "dopamine",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ(eps)'s augmentation of a batch of frame stacks ``[B, C, H, W]`` (uint8 or float in [0, 255]) -> float32.

    Replicate ("edge") padding by ``pad`` and a crop back to ``H x W`` at one random offset per image (the same for
    every stacked frame), uniform in ``[0, 2 * pad)`` per axis (``offsets='dopamine'``) or ``[0, 2 * pad]``
    (``'drq'``); then every image is scaled by ``1 + intensity * clip(n, -2, 2)``, ``n ~ N(0, 1)`` per image
    (``_intensity_aug``; a scale commutes with Dopamine's ``/ 255``, so it is applied on the 0..255 scale here)."""
    n = x.shape[0]
    dev = x.device
    if pad > 0:
        high = 2 * pad + (1 if offsets == "drq" else 0)
        shifts = torch.randint(0, high, (n, 2), generator=generator, device="cpu").to(dev)
        x = random_shift_index(x, pad, shifts=shifts, channels_last=False)
    else:
        x = x.float()
    if intensity > 0:
        r = torch.randn((n, 1, 1, 1), generator=generator, device="cpu").to(dev)
        x = x * (1.0 + intensity * r.clamp(-2.0, 2.0))
    return x


class DQNAuxInputs(NamedTuple):
    """What an auxiliary loss (:meth:`DQNAgent.add_aux_loss`) receives."""

    agent: "DQNAgent"
    batch: Batch
    obs: torch.Tensor
    """Augmented float observations of the batch."""
    next_obs: torch.Tensor
    feat: torch.Tensor
    """Torso features of ``obs`` (with grad: the auxiliary loss trains the torso too)."""
    step: int


class DQNAgent(MechanismHooks):
    """The DQN-family agent: ``act`` (epsilon-greedy), ``update`` (one gradient step), ``state_dict`` (checkpoints)."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: DQNConfig | None = None,
                 device: str | torch.device = "cpu") -> None:
        cfg = cfg if cfg is not None else DQNConfig()
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ConfigError(f"the DQN agent needs a Discrete action space, got {action_space}; for continuous "
                              "actions use drqv2, sac or another continuous-action agent")
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) not in (1, 3):
            raise ConfigError(f"the DQN agent takes pixels (uint8 [C, H, W]) or a state vector ([d]), got "
                              f"{observation_space}; use --obs pixels or --obs state")
        self.cfg = cfg
        self.device = torch.device(device)
        self.observation_space, self.action_space = observation_space, action_space
        self.num_actions = int(action_space.n)
        self.action_start = int(getattr(action_space, "start", 0))
        self.pixels = len(observation_space.shape) == 3
        if cfg.augment and not self.pixels:
            raise ConfigError("augment=True needs pixel observations; turn it off (--agent.no-augment) for "
                              "state observations")
        self.value_head = make_head(cfg.hl_gauss).to(self.device) if cfg.critic == "hl-gauss" else None
        bins = self.value_head.out_dim if self.value_head is not None else 1
        self.q_net = QNetwork(tuple(observation_space.shape), self.num_actions, dueling=cfg.dueling, bins=bins,
                              padding=cfg.padding, hidden=cfg.hidden_dim, mlp_hidden=tuple(cfg.mlp_hidden)
                              ).to(self.device)
        self.online_is_target = cfg.target_update_period == 1 and cfg.target_tau == 0.0
        self.target_net: QNetwork | None = None
        if not self.online_is_target:
            self.target_net = QNetwork(tuple(observation_space.shape), self.num_actions, dueling=cfg.dueling,
                                       bins=bins, padding=cfg.padding, hidden=cfg.hidden_dim,
                                       mlp_hidden=tuple(cfg.mlp_hidden)).to(self.device)
            self.target_net.load_state_dict(self.q_net.state_dict())
            self.target_net.requires_grad_(False)
        self.optimizer = LeanAdam([{"params": list(self.q_net.parameters())}], lr=cfg.lr, eps=cfg.adam_eps,
                                  fused=self.device.type in ("cpu", "cuda"))
        # What the trainer reads (the learner's view of a step):
        self.reward_clip = float(cfg.reward_clip)
        self.life_loss_terminal = bool(cfg.terminal_on_life_loss)
        self._init_hooks()  # aux_losses, update_hooks, episode_hooks, batch_extras, last_feat, mechanism states
        self.num_updates = 0
        self._synced_block = 0  # step // target_update_period at the last copy into the target network
        # Own random streams for acting, drawn from torch's global RNG (seeded by the trainer), so that evaluation
        # never shifts the exploration stream and a resumed run continues both exactly.
        seeds = torch.randint(0, 2 ** 62, (2,)).tolist()
        self._explore_gen = torch.Generator().manual_seed(int(seeds[0]))
        self._eval_gen = torch.Generator().manual_seed(int(seeds[1]))
        self.precision, self.precision_reason = "fp32", ""
        self._resolve_precision()

    # ------------------------------------------------------------------ precision
    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _resolve_precision(self) -> None:
        cfg = self.cfg
        if cfg.precision != "auto":
            self.precision, self.precision_reason = cfg.precision, f"{cfg.precision}: set in the config"
            return
        from pixelrl.utils.precision import choose_precision, probe_update_fn

        shape = (int(cfg.batch_size), *self.observation_space.shape)
        gen = torch.Generator().manual_seed(0)
        x = (torch.randint(0, 256, shape, generator=gen).float() if self.pixels else torch.randn(shape, generator=gen))
        x = x.to(self.device)
        key = ("dqn", str(self.observation_space), self.num_actions, cfg.padding, cfg.hidden_dim, cfg.dueling,
               int(cfg.batch_size))
        self.precision, self.precision_reason = choose_precision(
            self.device, probe_update_fn([self.q_net], lambda: self.q_net(x).float().sum(), self.device), key=key)

    # ------------------------------------------------------------------ hooks
    def _aux_optimizer(self) -> torch.optim.Optimizer:
        """``add_aux_loss``'s modules join the one optimizer (the TD loss's)."""
        return self.optimizer

    def reset_optimizer_state(self) -> None:
        """Drop Adam's moments (after a reset of weights, as BBF does)."""
        self.optimizer.state.clear()

    def epsilon(self, step: int) -> float:
        """Exploration epsilon at agent step ``step`` (:func:`linearly_decaying_epsilon`)."""
        cfg = self.cfg
        return linearly_decaying_epsilon(step, warmup=cfg.num_seed_steps, decay=cfg.epsilon_decay_steps,
                                         final=cfg.epsilon_train)

    def q_values(self, out: torch.Tensor) -> torch.Tensor:
        """Q ``[B, A]`` from the network's outputs (scalars, or histogram logits through the HL-Gauss head)."""
        if self.value_head is None:
            return out.float()
        return self.value_head.value(out).squeeze(-1)

    def td_target(self, batch: Batch, next_obs: torch.Tensor) -> torch.Tensor:
        """``r + discount * Q_target(s', a*)`` ``[B, 1]`` (called under ``no_grad``); ``a*`` from the online network
        with ``double_q``, else from the target network."""
        online_next = self.q_values(self.q_net(next_obs))
        if self.target_net is None:
            target_next = online_next
        else:
            target_next = self.q_values(self.target_net(next_obs))
        chooser = online_next if self.cfg.double_q else target_next
        best = chooser.argmax(dim=1, keepdim=True)
        return batch.reward + batch.discount * target_next.gather(1, best)

    # ------------------------------------------------------------------ acting
    def _obs_tensor(self, obs) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(obs), device=self.device).unsqueeze(0)
        return t if self.pixels else t.float()

    @torch.no_grad()
    def greedy(self, obs) -> int:
        """``argmax_a Q(obs, a)`` for one unbatched observation (an index into the action space)."""
        self.q_net.eval()
        with self._autocast():
            q = self.q_values(self.q_net(self._obs_tensor(obs)))
        self.q_net.train()
        return int(q[0].argmax())

    @torch.no_grad()
    def act(self, obs, *, step: int, eval_mode: bool) -> np.int64:
        """Epsilon-greedy action for one unbatched observation: ``epsilon_eval`` when evaluating, else
        :meth:`epsilon` at ``step`` (agent steps); the coin and the random action come from the agent's own
        generators (one for training, one for evaluation)."""
        eps = self.cfg.epsilon_eval if eval_mode else self.epsilon(step)
        gen = self._eval_gen if eval_mode else self._explore_gen
        if eps > 0 and float(torch.rand((), generator=gen)) < eps:
            a = int(torch.randint(0, self.num_actions, (), generator=gen))
        else:
            a = self.greedy(obs)
        return np.int64(a + self.action_start)

    # ------------------------------------------------------------------ update
    def _augment(self, obs: torch.Tensor, next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if not self.pixels:
            return obs.float(), next_obs.float()
        if not cfg.augment:
            return obs.float(), next_obs.float()
        aug = dict(pad=cfg.augment_pad, intensity=cfg.intensity_scale, offsets=cfg.augment_offsets)
        return drq_augment(obs, **aug), drq_augment(next_obs, **aug)

    def _value_loss(self, chosen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of the chosen actions' outputs (``[B]`` scalars or ``[B, bins]`` logits) against targets ``[B, 1]``."""
        if self.value_head is not None:
            return self.value_head.loss(chosen.float().unsqueeze(0), target)
        if self.cfg.loss == "huber":
            return F.huber_loss(chosen.float(), target.squeeze(1), delta=1.0)
        return (target.squeeze(1) - chosen.float()).pow(2).mean()

    def _update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        obs, next_obs = self._augment(batch.obs, batch.next_obs)
        action = batch.action.long().view(-1) - self.action_start
        with self._autocast():
            feat = self.q_net.features(obs)
            out = self.q_net.head(feat)
            with torch.no_grad():
                target = self.td_target(batch, next_obs).float()
            rows = torch.arange(out.shape[0], device=out.device)
            chosen = out[rows, action]
            loss = self._value_loss(chosen, target)
            q = self.q_values(out.detach())
        metrics: dict[str, torch.Tensor] = {"td_loss": loss.detach(), "q": q.gather(1, action[:, None]).mean(),
                                            "target_q": target.mean()}
        if self.aux_losses:
            loss = self._add_aux(self.aux_losses, DQNAuxInputs(self, batch, obs, next_obs, feat, step), loss, metrics)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.last_feat = feat.detach()
        self._target_step(step)
        metrics["loss"] = loss.detach()
        return metrics

    def _target_step(self, step: int) -> None:
        """Target network after an update: EMA with ``target_tau``, or a copy after the first update at or after
        each multiple of ``target_update_period`` agent steps."""
        if self.target_net is None:
            return
        with torch.no_grad():
            target, online = list(self.target_net.parameters()), list(self.q_net.parameters())
            if self.cfg.target_tau > 0:
                torch._foreach_lerp_(target, online, self.cfg.target_tau)
            elif int(step) // self.cfg.target_update_period > self._synced_block:
                self._synced_block = int(step) // self.cfg.target_update_period
                torch._foreach_copy_(target, online)

    def update(self, batch: Batch, *, step: int) -> dict[str, float]:
        """One gradient update of the Q network (and the target network's schedule). Returns float metrics."""
        self.q_net.train()
        metrics = self._update(batch, step)
        self.num_updates += 1
        return finish_update(self, metrics, step, self.update_hooks)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Networks, Adam state, counters and the acting generators; tensors are copies later updates do not change."""
        state: dict[str, Any] = {
            "q_net": self.q_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "counters": {"num_updates": self.num_updates, "synced_block": self._synced_block},
            "rng": {"explore": self._explore_gen.get_state(), "eval": self._eval_gen.get_state()},
        }
        if self.target_net is not None:
            state["target_net"] = self.target_net.state_dict()
        self._save_aux(state)
        self._save_mech(state)
        return snapshot(state)

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (register the same auxiliary losses and states first)."""
        need = ["q_net", "optimizer", "rng"] + (["target_net"] if self.target_net is not None else [])
        missing = [k for k in need if k not in state]
        if missing:
            raise ConfigError(f"DQN state is missing {missing}; is it a checkpoint of a DQN agent with the same "
                              "target-network settings (target_update_period, target_tau)?")
        self._check_hook_state(state)
        self.q_net.load_state_dict(state["q_net"])
        if self.target_net is not None:
            self.target_net.load_state_dict(state["target_net"])
        self._load_aux(state)
        self._load_mech(state)
        self.optimizer.load_state_dict(state["optimizer"])
        align_moments((self.optimizer,))
        self._explore_gen.set_state(state["rng"]["explore"].to(torch.uint8).cpu())
        self._eval_gen.set_state(state["rng"]["eval"].to(torch.uint8).cpu())
        self.num_updates = int(state.get("counters", {}).get("num_updates", 0))
        self._synced_block = int(state.get("counters", {}).get("synced_block", 0))
