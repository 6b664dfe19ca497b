"""PPO: proximal policy optimisation with a clipped surrogate objective (Schulman et al. 2017), as CleanRL writes it
(``cleanrl/ppo_atari.py`` for pixels and discrete actions, ``cleanrl/ppo_continuous_action.py`` for states and
continuous actions; Huang et al. 2022, "The 37 implementation details of PPO").

One update (:meth:`PPOAgent.update`), top to bottom, on a finished rollout (:class:`pixelrl.data.rollout.
RolloutBuffer`, whose GAE advantages and lambda-returns the trainer computed with this agent's ``gamma`` and
``gae_lambda``):

* learning rate ``lr * (1 - progress)`` when ``anneal_lr`` (``progress`` = share of the frame budget done before
  this rollout; CleanRL: ``1 - (iteration - 1) / num_iterations``);
* ``update_epochs`` passes over the ``num_envs * rollout_steps`` rows, each a fresh random permutation cut into
  ``num_minibatches`` minibatches; per minibatch:
  - ``ratio = exp(log pi(a|s) - log pi_old(a|s))``; advantages normalised over the minibatch (``norm_adv``);
  - policy loss ``mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))`` (:func:`clipped_policy_loss`);
  - value loss ``0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))`` with ``clip_vloss``,
    else ``0.5 * mean((V - R)^2)`` (:func:`value_loss`);
  - ``loss = policy_loss - ent_coef * entropy + vf_coef * value_loss``, one Adam step after clipping the global
    gradient norm to ``max_grad_norm``;
  - after each epoch, stop early if ``target_kl`` is set and the last minibatch's approximate KL exceeds it.

Networks: pixels go through a NatureCNN trunk (32 8x8/4, 64 4x4/2, 64 3x3/1, 512) shared by a policy head and a
value head; states through two separate 64-64 tanh MLPs (actor and critic). Orthogonal init with bias 0: gain
sqrt(2) for hidden layers, 0.01 for the policy output, 1 for the value output. Discrete actions: a Categorical over
logits; continuous: a diagonal Normal with a state-independent log std (a parameter, initialised to 0). The env's
continuous actions lie in [-1, 1]: sampled actions are clipped to it before they reach the env (Gymnasium's
``ClipAction``, as CleanRL), while the log-prob is of the unclipped sample.

Observation and reward normalisation (CleanRL's MuJoCo wrappers ``NormalizeObservation`` + clip and
``NormalizeReward`` + clip) live here, in the main process, with their statistics in :meth:`state_dict`, so a
resumed run continues with exactly the statistics it had; evaluation (``act``) normalises with the statistics
without changing them.
"""

from __future__ import annotations

import contextlib

import math
from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Normal

from pixelrl.errors import ConfigError
from pixelrl.nets import NatureCNN, orthogonal_init
from pixelrl.utils.adam import LeanAdam
from pixelrl.utils.torch_state import align_moments, snapshot

__all__ = ["PPOConfig", "PPOAgent", "RunningMeanStd", "SUMMARY", "ATARI", "MUJOCO", "CARTPOLE", "SHAPES", "preset",
           "load_slot_encoder",
           "clipped_policy_loss", "value_loss"]

SUMMARY = "PPO (Schulman et al. 2017) as CleanRL: NatureCNN on Atari pixels, 64-64 tanh MLPs on states; on-policy"


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters. Defaults are CleanRL's ``ppo_atari.py`` (Atari, pixels, discrete actions); the
    ``ppo`` agent's preset switches to ``ppo_continuous_action.py``'s values for state observations (see
    :data:`MUJOCO`) and to a quick setting for ``gym/CartPole-v1`` (:data:`CARTPOLE`).

    Deviations from CleanRL, each for a reason: a truncated episode (time limit, or the trainer's reset of every env
    at a checkpoint so that resume is exact) is bootstrapped from its final observation's value (CleanRL treats it
    as a termination); with several envs the observation / reward statistics are shared by all envs (CleanRL's
    wrappers keep one set per env; with the MuJoCo setting's single env they are the same); on Atari a lost life
    ends the return for GAE while the game runs on (CleanRL's ``EpisodicLifeEnv`` resets with a no-op and
    ``FireResetEnv`` presses FIRE after each lost life, so there the agent never has to press FIRE itself)."""

    num_envs: int = 8
    """Envs stepped in parallel (CleanRL Atari: 8; MuJoCo: 1)."""
    rollout_steps: int = 128
    """Agent steps per env per rollout (CleanRL ``num_steps``; Atari: 128, MuJoCo: 2048). One update per rollout
    of ``num_envs * rollout_steps`` rows."""
    num_minibatches: int = 4
    """Minibatches per epoch (Atari: 4 of 256 rows; MuJoCo: 32 of 64). Must divide ``num_envs * rollout_steps``."""
    update_epochs: int = 4
    """Passes over the rollout per update (Atari: 4; MuJoCo: 10)."""
    lr: float = 2.5e-4
    """Adam learning rate at the start (Atari: 2.5e-4; MuJoCo: 3e-4)."""
    adam_eps: float = 1e-5
    """Adam epsilon (CleanRL: 1e-5, not PyTorch's 1e-8)."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over the frame budget (CleanRL: on), from the share of
    ``--frames`` done before each rollout. A resume with a larger ``--frames`` stretches the rest of the decay."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """lambda of GAE(lambda)."""
    clip_coef: float = 0.1
    """epsilon of the clipped surrogate, held constant (Atari: 0.1; MuJoCo: 0.2). Also the value clip range."""
    clip_vloss: bool = True
    """Clip the value update to ``clip_coef`` around the rollout's values (CleanRL: on)."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus (Atari: 0.01; MuJoCo: 0)."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm to this before each Adam step."""
    norm_adv: bool = True
    """Normalise advantages to mean 0, std 1 within each minibatch (std + 1e-8)."""
    target_kl: Optional[float] = None
    """Stop the epochs of an update early once the approximate KL of an epoch's last minibatch exceeds this (None:
    never, CleanRL's default)."""
    normalize_obs: bool = False
    """Normalise state observations by a running mean and variance (updated with every observation the training
    envs return), then clip to ``+-clip_obs`` (MuJoCo: on; pixels are never normalised, they are divided by
    255)."""
    clip_obs: float = 10.0
    """Clip of the normalised observations."""
    normalize_reward: bool = False
    """Divide rewards by the running std of the discounted return (per env, reset when an episode ends), then clip
    to ``+-clip_reward`` (MuJoCo: on). Learning only: logged returns are the env's."""
    clip_reward: float = 10.0
    """Clip of the normalised rewards."""
    sign_reward: bool = False
    """Learn from ``sign(reward)`` (Atari's reward clipping, CleanRL ``ClipRewardEnv``: on in the Atari preset).
    Logged returns are the raw scores."""
    eval_sample: bool = False
    """Evaluate with actions sampled from the policy instead of its most likely action / mean (CleanRL's
    ``cleanrl_utils/evals/ppo_eval.py`` samples; on in the Atari preset, where an argmax policy that never presses
    FIRE after a lost life stalls until ALE's 108k-frame cap). The samples come from a generator seeded by the agent
    step the evaluation is at, so evaluations repeat exactly and leave the training RNG untouched."""
    life_loss_terminal: bool = False
    """Atari: treat ``info['life_loss']`` as a termination for GAE while the game runs on to game over (CleanRL's
    ``EpisodicLifeEnv``; on in the Atari preset). Logged episodes are whole games."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layers of the actor and the critic MLPs on states (CleanRL: 64, 64 with tanh)."""
    cnn_features: int = 512
    """Width of the NatureCNN's last (linear) layer on pixels (CleanRL: 512)."""
    precision: str = "auto"
    """Arithmetic of the networks: ``auto`` (default), ``fp32`` or ``bf16``. ``bf16`` runs the forward passes of
    acting and of the update under bf16 autocast (convolutions and linear layers in bf16, their outputs cast back
    to fp32 before the distributions, losses, gradient clipping and Adam, which stay fp32). ``auto`` is fp32 unless
    the device computes bf16 natively (AVX512-BF16 / AMX CPUs, CUDA 8.0+) *and* a timed forward + backward pass of
    this network on a minibatch-sized synthetic batch is at least 1.15x faster in bf16
    (:func:`pixelrl.utils.precision.choose_precision`); the choice and its timing are recorded in the run's
    config.json. The state MLPs (64-64) always resolve to fp32 (a probe pass this small gains nothing); the
    NatureCNN on pixels is where bf16 can pay. A deviation from CleanRL (fp32 throughout), named because it
    changes the arithmetic: bf16 keeps 8 bits of mantissa in the network's matmuls; ``--agent.precision fp32``
    gives CleanRL's arithmetic on every machine."""
    channels_last: bool = True
    """Run the NatureCNN trunk in channels_last memory format (weights, and each pixel batch before its float
    conversion), as DrQ-v2 does: the same maths (only the summation order inside the convolutions differs, at
    float rounding level), and the layout oneDNN's CPU convolutions and cuDNN work in, so no layout conversion per
    call. Measured on a 2-core EPYC at 1 thread: one 256-row NatureCNN update step 270 -> 210 ms, the first
    convolution's forward and backward 159 -> 59 ms. No effect on state networks or the slot encoder."""
    encoder: str = "nature"
    """Pixel trunk: ``nature`` (the NatureCNN, trained end to end) or ``slots`` (a frozen pretrained Slot Attention
    encoder from ``slot_encoder``, then ``pooling``; the object-centric benchmark, ``builtin/shapes-*``). The policy
    and value heads are linear layers on the trunk's features in both cases."""
    slot_encoder: Optional[str] = None
    """With ``encoder=slots``: the folder ``pixelrl pretrain slots --out DIR`` wrote (``slots.json`` +
    ``encoder.safetensors``). The encoder is frozen (no gradients) and deterministic (one fixed initial-slot noise
    draw); its weights are also saved in the run's checkpoints."""
    pooling: str = "transformer"
    """With ``encoder=slots``: how the slots become one feature vector (trained with PPO): ``transformer`` (a CLS
    token, 1 layer, 8 heads, d 128, no positional encoding), ``relation`` (a relation network) or ``mlp`` (MLP on
    the concatenated slots); the benchmark's poolings (``pixelrl.nets.slots``)."""

    def __post_init__(self) -> None:
        for name in ("num_envs", "rollout_steps", "num_minibatches", "update_epochs", "cnn_features"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        rows = self.num_envs * self.rollout_steps
        if rows % self.num_minibatches:
            raise ConfigError(f"a rollout of num_envs * rollout_steps = {self.num_envs} * {self.rollout_steps} = "
                              f"{rows} rows does not split into num_minibatches = {self.num_minibatches} equal "
                              "minibatches; choose values whose product the number of minibatches divides")
        for name in ("lr", "adam_eps", "clip_coef", "max_grad_norm", "clip_obs", "clip_reward"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("gamma", "gae_lambda"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {v!r}")
        for name in ("vf_coef", "ent_coef"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.target_kl is not None and not (math.isfinite(self.target_kl) and self.target_kl > 0):
            raise ConfigError(f"target_kl must be a number > 0 or None (no early stop), got {self.target_kl!r}")
        if not self.hidden_sizes or any(isinstance(h, bool) or not isinstance(h, int) or h < 1
                                        for h in self.hidden_sizes):
            raise ConfigError(f"hidden_sizes must be one or more integers >= 1, got {self.hidden_sizes!r}")
        if not isinstance(self.channels_last, bool):
            raise ConfigError(f"channels_last must be true or false, got {self.channels_last!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.encoder not in ("nature", "slots"):
            raise ConfigError(f"encoder must be 'nature' or 'slots', got {self.encoder!r}")
        if self.encoder == "slots" and self.precision == "bf16":
            raise ConfigError("precision bf16 does not apply to encoder=slots (the frozen slot encoder and its feature "
                              "cache run in fp32); use --agent.precision auto or fp32")
        if self.encoder == "slots" and not self.slot_encoder:
            raise ConfigError("encoder=slots needs slot_encoder=DIR (a folder from `pixelrl pretrain slots --out DIR`)")
        if self.pooling not in ("transformer", "relation", "mlp"):
            raise ConfigError(f"pooling must be 'transformer', 'relation' or 'mlp', got {self.pooling!r}")


ATARI: dict = {}
"""CleanRL ``ppo_atari.py`` = the config defaults, plus the Atari protocol: sign rewards, episodic life for GAE."""

MUJOCO: dict = {
    "num_envs": 1, "rollout_steps": 2048, "num_minibatches": 32, "update_epochs": 10, "lr": 3e-4,
    "clip_coef": 0.2, "ent_coef": 0.0, "normalize_obs": True, "normalize_reward": True,
}
"""CleanRL ``ppo_continuous_action.py``: 1 env x 2048 steps, 32 minibatches of 64, 10 epochs, lr 3e-4 annealed,
clip 0.2, no entropy bonus, observation and reward normalisation with clips at 10."""

CARTPOLE: dict = {
    "num_envs": 4, "rollout_steps": 128, "num_minibatches": 4, "update_epochs": 4, "lr": 2.5e-3,
    "clip_coef": 0.2, "ent_coef": 0.01,
}
"""A quick setting for ``gym/CartPole-v1`` (CleanRL's ``ppo.py`` defaults -- 4 envs x 128 steps, 4 minibatches,
4 epochs, clip 0.2, entropy 0.01 -- with lr 2.5e-3 instead of 2.5e-4), which balances the pole (return 500) within
~50k steps on one CPU core."""

SHAPES: dict = {
    "num_envs": 4, "rollout_steps": 2048, "num_minibatches": 256, "update_epochs": 10, "lr": 3e-4,
    "anneal_lr": False, "clip_coef": 0.2, "clip_vloss": False, "ent_coef": 0.01, "gamma": 0.99,
    "gae_lambda": 0.95,
}
"""The object-centric benchmark (Yoon et al. 2023, ``builtin/shapes-*``; the authors run Stable-Baselines3 PPO,
``configs/sb3/ppo.yaml``): 4 envs x 2048 steps, minibatches of 32 (256 per rollout), lr 3e-4 constant, gamma 0.99,
clip 0.2, entropy 0.01, and SB3's defaults for the rest (10 epochs, lambda 0.95, no value clipping, max grad norm
0.5, advantage normalisation). The paper states entropy 0.01; the authors' ``ppo.yaml`` has ``ent_coef: 0.0``
(runs may override it): the paper's value is kept."""


def preset(env_id: str, obs: str = "pixels") -> dict:
    """PPO's settings for ``env_id``: agent fields and the trainer fields of the protocol.

    * ``ale/<Game>``: CleanRL's Atari settings (:class:`PPOConfig` defaults), learning from reward signs with a lost
      life ending the return; ALE v5 without sticky actions, FIRE after reset, up to 30 no-ops; 10M agent steps =
      40M frames; evaluation every 1M frames on 10 episodes, checkpoints every 2M frames (each checkpoint is a
      reset point of the training envs, see ``pixelrl.train.onpolicy``).
    * ``gym/CartPole-v1``: :data:`CARTPOLE`, 200k frames.
    * any other state observation (``--obs state``, e.g. ``gym/HalfCheetah-v5``): CleanRL's MuJoCo settings
      (:data:`MUJOCO`), 1M steps, evaluation every 20k frames.
    * ``builtin/shapes-*`` (pixels or ground-truth state): :data:`SHAPES`, 2M steps, 64x64 frames without stacking,
      in-process envs (the NumPy renderer is faster than a pipe round trip), 100 evaluation episodes (the success
      rate is the mean return: +1 only on success) every 100k frames.
    """
    if env_id.startswith("builtin/shapes-"):  # the object-centric benchmark: 2M steps, 64x64 RGB, no frame stack
        return {**SHAPES, "frames": 2_000_000, "size": 64, "frame_stack": 1, "async_env": False,
                "eval_every_frames": 100_000, "eval_episodes": 100, "checkpoint_every_frames": 500_000}
    if env_id.startswith("ale/"):
        return {**ATARI, "sign_reward": True, "life_loss_terminal": True, "eval_sample": True,
                "env_options": {"repeat_action_probability": 0.0, "fire_reset": True, "noop_max": 30},
                "frames": 40_000_000, "eval_every_frames": 1_000_000, "checkpoint_every_frames": 2_000_000,
                "eval_episodes": 10}
    if env_id.split("/")[-1].lower().startswith("cartpole-"):
        return {**CARTPOLE, "frames": 200_000, "eval_every_frames": 10_000, "eval_episodes": 10}
    if obs == "state":
        return {**MUJOCO, "frames": 1_000_000, "eval_every_frames": 20_000, "eval_episodes": 10,
                "checkpoint_every_frames": 100_000}
    return {}


# ---------------------------------------------------------------------------------------------------- losses


def clipped_policy_loss(new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor,
                        clip_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, as a loss: ``mean(max(-A * r, -A * clip(r, 1 - eps, 1 + eps)))`` with ``r =
    exp(new - old)``. Returns ``(loss, log ratio)``. Its gradient is zero for rows whose ratio is already past the
    clip in the direction the advantage pushes (``r > 1 + eps`` with ``A > 0``, ``r < 1 - eps`` with ``A < 0``)."""
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()
    loss = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)).mean()
    return loss, logratio


def value_loss(new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               clip_coef: float | None) -> torch.Tensor:
    """``0.5 * mean((V - R)^2)``, or with ``clip_coef`` the pessimistic clipped form
    ``0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))``."""
    unclipped = (new_values - returns) ** 2
    if clip_coef is None:
        return 0.5 * unclipped.mean()
    clipped = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    return 0.5 * torch.max(unclipped, (clipped - returns) ** 2).mean()


# ------------------------------------------------------------------------------------------- normalisation


class RunningMeanStd:
    """Running mean and variance of batches (Chan et al.'s parallel update, as Gymnasium's ``RunningMeanStd``:
    mean 0, variance 1 and count 1e-4 at the start), in float64."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        b_mean, b_var, b_count = x.mean(axis=0), x.var(axis=0), x.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        m2 = self.var * self.count + b_var * b_count + delta ** 2 * self.count * b_count / total
        self.mean = self.mean + delta * b_count / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": float(self.count)}

    def load_state_dict(self, state: dict) -> None:
        mean, var = np.asarray(state["mean"], np.float64), np.asarray(state["var"], np.float64)
        if mean.shape != self.mean.shape or var.shape != self.var.shape:
            raise ValueError(f"normaliser statistics of shape {mean.shape}, expected {self.mean.shape}")
        self.mean, self.var, self.count = mean.copy(), var.copy(), float(state["count"])


# -------------------------------------------------------------------------------------------------- networks


def _mlp(sizes: list[int], out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        last = i == len(sizes) - 2
        layers.append(orthogonal_init(nn.Linear(sizes[i], sizes[i + 1]), out_gain if last else 2 ** 0.5))
        if not last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class PPONetwork(nn.Module):
    """Policy and value: a shared NatureCNN trunk on pixels, separate tanh MLPs on states."""

    def __init__(self, obs_shape: tuple[int, ...], pixels: bool, action_dim: int, discrete: bool,
                 cfg: PPOConfig) -> None:
        super().__init__()
        self.pixels, self.discrete = pixels, discrete
        self.channels_last = False
        """The trunk runs in channels_last (``cfg.channels_last`` with the NatureCNN): inputs are converted first."""
        if pixels and cfg.encoder == "slots":
            from pixelrl.nets.slots import FrozenSlotEncoder, make_pooling

            frozen = FrozenSlotEncoder(load_slot_encoder(cfg.slot_encoder), cache_size=65536)  # >= a rollout
            if frozen.encoder.cfg.image_size != obs_shape[-1]:
                raise ConfigError(f"the slot encoder in {cfg.slot_encoder} takes {frozen.encoder.cfg.image_size}px "
                                  f"images, the env gives {obs_shape[-1]}px; use --size "
                                  f"{frozen.encoder.cfg.image_size}")
            pool = make_pooling(cfg.pooling, frozen.slot_dim, frozen.num_slots * (obs_shape[0] // 3))
            self.trunk = nn.Sequential(frozen, pool)
            self.actor = orthogonal_init(nn.Linear(pool.out_dim, action_dim), 0.01)
            self.critic = orthogonal_init(nn.Linear(pool.out_dim, 1), 1.0)
        elif pixels:
            self.trunk = orthogonal_init(NatureCNN(obs_shape[0], tuple(obs_shape[1:]), out_dim=cfg.cnn_features))
            if cfg.channels_last:
                self.trunk = self.trunk.to(memory_format=torch.channels_last)
                self.channels_last = True
            self.actor = orthogonal_init(nn.Linear(cfg.cnn_features, action_dim), 0.01)
            self.critic = orthogonal_init(nn.Linear(cfg.cnn_features, 1), 1.0)
        else:
            sizes = [int(np.prod(obs_shape)), *cfg.hidden_sizes]
            self.trunk = None
            self.actor = _mlp([*sizes, action_dim], 0.01)
            self.critic = _mlp([*sizes, 1], 1.0)
        if not discrete:
            self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim))
        self.bf16 = False
        """Run the trunk and heads under bf16 autocast (set by the agent from its resolved precision); outputs are
        cast back to fp32."""

    def _autocast(self, device_type: str):
        if self.bf16:
            return torch.autocast(device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def outputs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(policy head output [B, A], value [B])`` in fp32: logits or means, before the distribution."""
        with self._autocast(obs.device.type):
            h = self.trunk(self._layout(obs)) if self.trunk is not None else obs
            out = self.actor(h)
            value = self.critic(h).squeeze(-1)
        return out.float(), value.float()

    def forward(self, obs: torch.Tensor) -> tuple[torch.distributions.Distribution, torch.Tensor]:
        """``(policy distribution, value [B])`` of a batch of (normalised) observations."""
        out, value = self.outputs(obs)
        if self.discrete:  # no argument validation: it costs more than the tiny state networks' forward pass
            return Categorical(logits=out, validate_args=False), value
        return Normal(out, self.actor_logstd.expand_as(out).exp(), validate_args=False), value

    def _layout(self, obs: torch.Tensor) -> torch.Tensor:
        # uint8 pixels are made channels_last before the trunk's float conversion (a quarter of the bytes to move)
        return obs.contiguous(memory_format=torch.channels_last) if self.channels_last and obs.dim() == 4 else obs

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        with self._autocast(obs.device.type):
            h = self.trunk(self._layout(obs)) if self.trunk is not None else obs
            return self.critic(h).squeeze(-1).float()


def load_slot_encoder(path: str, device: str | torch.device = "cpu"):
    """The Slot Attention encoder that ``pixelrl pretrain slots`` saved in folder ``path`` (``slots.json`` with its
    architecture + ``encoder.safetensors``)."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from pixelrl.errors import CorruptFileError, NotFoundError
    from pixelrl.nets.slots import SlotConfig, SlotEncoder

    folder = Path(path)
    meta_path, weights = folder / "slots.json", folder / "encoder.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise NotFoundError(f"{folder} is not a pretrained slot encoder (it needs slots.json and encoder.safetensors; "
                            "make one with `pixelrl pretrain slots --out DIR`)")
    try:
        cfg = SlotConfig(**json.loads(meta_path.read_text())["model"])
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptFileError(meta_path, f"unreadable slot encoder description ({e})") from None
    enc = SlotEncoder(cfg)
    try:
        enc.load_state_dict(load_file(str(weights)))
    except Exception as e:  # a damaged safetensors header, missing or unexpected keys
        raise CorruptFileError(weights, f"does not hold this encoder's weights ({e})") from None
    return enc.to(device)


def _logprob(dist, action, discrete: bool) -> torch.Tensor:
    return dist.log_prob(action) if discrete else dist.log_prob(action).sum(-1)


def _entropy(dist, discrete: bool) -> torch.Tensor:
    return dist.entropy() if discrete else dist.entropy().sum(-1)


# ----------------------------------------------------------------------------------------------------- agent


class PPOAgent:
    """PPO with the agent API of pixelrl: ``act`` for one observation (evaluation, ``pixelrl eval``),
    ``policy_step`` / ``value`` for the trainer's batched rollouts, ``update(rollout, step=, progress=)``,
    ``state_dict`` / ``load_state_dict``."""

    precision: str = "fp32"
    """The precision in use: ``cfg.precision``, or what ``'auto'`` resolved to."""
    precision_reason: str = ""
    """Why: ``'set in the config'``, or the capability check and timing behind ``'auto'``'s choice."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: PPOConfig,
                 device: str | torch.device = "cpu") -> None:
        if isinstance(observation_space, gym.spaces.Dict):
            raise ConfigError("PPO takes pixel observations or state observations, not both; use --obs pixels or "
                              "--obs state")
        if not isinstance(observation_space, gym.spaces.Box):
            raise ConfigError(f"PPO needs a Box observation space, got {type(observation_space).__name__}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.obs_shape = tuple(observation_space.shape)
        self.pixels = observation_space.dtype == np.uint8 and len(self.obs_shape) == 3
        if not self.pixels and len(self.obs_shape) != 1:
            raise ConfigError(f"PPO needs uint8 [C, H, W] pixels or a flat float state, got an observation of shape "
                              f"{self.obs_shape} and dtype {observation_space.dtype}")
        if isinstance(action_space, gym.spaces.Discrete):
            self.discrete, action_dim = True, int(action_space.n)
            self.action_shape: tuple[int, ...] = ()
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.discrete, action_dim = False, int(action_space.shape[0])
            self.action_shape = (action_dim,)
            self.action_low = np.asarray(action_space.low, np.float32)
            self.action_high = np.asarray(action_space.high, np.float32)
        else:
            raise ConfigError(f"PPO needs a Discrete or a 1-d Box action space, got {action_space}")
        self.net = PPONetwork(self.obs_shape, self.pixels, action_dim, self.discrete, cfg).to(self.device)
        # fused Adam (one kernel per step where torch has one for the device; the same update rule up to float
        # rounding): on the MuJoCo setting's 64-row minibatches of 64-64 MLPs a step costs ~30% less
        self.opt = LeanAdam(self.net.parameters(), lr=cfg.lr, eps=cfg.adam_eps,
                            fused=self.device.type in ("cpu", "cuda"))
        self.obs_rms = RunningMeanStd(self.obs_shape) if cfg.normalize_obs and not self.pixels else None
        self.ret_rms = RunningMeanStd(()) if cfg.normalize_reward else None
        self.returns = np.zeros(cfg.num_envs, np.float64)
        """Per-env discounted return of the reward normaliser (reset when an episode ends)."""
        self.num_updates = 0
        self._eval_gen = torch.Generator(device=self.device)
        self._eval_step: int | None = None
        self._resolve_precision()

    def _resolve_precision(self) -> None:
        """Set ``precision`` (and the network's autocast): the config's value, or for ``'auto'`` what
        :func:`pixelrl.utils.precision.choose_precision` decides from the device and a timed forward + backward pass
        of this network on a synthetic minibatch (random streams and ``.grad`` left as they were)."""
        from pixelrl.utils.precision import choose_precision, probe_update_fn

        cfg = self.cfg
        if cfg.precision != "auto":
            self.precision, self.precision_reason = cfg.precision, f"{cfg.precision}: set in the config"
        elif self.pixels and cfg.encoder == "slots":
            self.precision, self.precision_reason = "fp32", "fp32: the frozen slot encoder path runs in fp32"
        else:
            rows = cfg.num_envs * cfg.rollout_steps // cfg.num_minibatches
            gen = torch.Generator().manual_seed(0)
            inputs: list[torch.Tensor] = []  # built at the first probe call (never where bf16 is not timed)

            def loss() -> torch.Tensor:
                if not inputs:
                    x = (torch.randint(0, 256, (rows, *self.obs_shape), generator=gen, dtype=torch.uint8)
                         if self.pixels else torch.randn((rows, *self.obs_shape), generator=gen))
                    inputs.append(x.to(self.device))
                out, value = self.net.outputs(inputs[0])  # bf16 = False here: the probe sets the autocast
                return out.sum() + value.sum()

            key = ("ppo", self.pixels, self.obs_shape, cfg.encoder, cfg.cnn_features, tuple(cfg.hidden_sizes), rows,
                   self.net.channels_last)
            self.precision, self.precision_reason = choose_precision(
                self.device, probe_update_fn([self.net], loss, self.device), key=key)
        self.net.bf16 = self.precision == "bf16"

    # ---- observations and rewards ---------------------------------------------------------------------------
    @property
    def obs_dtype(self) -> torch.dtype:
        """Dtype of the observations :meth:`observe` returns (what the rollout stores)."""
        return torch.uint8 if self.pixels else torch.float32

    def observe(self, obs: np.ndarray, *, update: bool) -> torch.Tensor:
        """A batch of env observations ``[B, ...]`` as the networks' input on the device: pixels as uint8 (the trunk
        divides by 255), states as float32, normalised with the running statistics when ``normalize_obs`` (which
        ``update`` first updates with this batch, as Gymnasium's ``NormalizeObservation`` does on every step)."""
        if self.pixels:
            return torch.as_tensor(np.asarray(obs, np.uint8), device=self.device)
        x = np.asarray(obs, np.float64 if self.obs_rms is not None else np.float32)
        if self.obs_rms is not None:
            if update:
                self.obs_rms.update(x)
            x = np.clip((x - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + 1e-8), -self.cfg.clip_obs,
                        self.cfg.clip_obs)
        return torch.as_tensor(np.asarray(x, np.float32), device=self.device)

    def learn_rewards(self, rewards: np.ndarray, done: np.ndarray) -> np.ndarray:
        """The rewards the learner sees for one step of every env (``done``: the env's episode ended at this step):
        ``sign(r)`` with ``sign_reward``; with ``normalize_reward``, ``r / sqrt(var(discounted return) + 1e-8)``
        clipped to ``+-clip_reward`` (Gymnasium's ``NormalizeReward``: ``G = gamma * G + r`` per env, the
        statistics updated with ``G``, ``G`` reset to 0 when the episode ends)."""
        r = np.asarray(rewards, np.float64)
        if self.cfg.sign_reward:
            r = np.sign(r)
        if self.ret_rms is not None:
            self.returns = self.returns * self.cfg.gamma + r
            self.ret_rms.update(self.returns)
            r = np.clip(r / np.sqrt(self.ret_rms.var + 1e-8), -self.cfg.clip_reward, self.cfg.clip_reward)
            self.returns = np.where(np.asarray(done, bool), 0.0, self.returns)
        return r.astype(np.float32)

    def reset_returns(self) -> None:
        """Every env starts a new episode (the trainer's reset at a checkpoint boundary)."""
        self.returns = np.zeros(self.cfg.num_envs, np.float64)

    def env_action(self, action: torch.Tensor) -> np.ndarray:
        """The actions a batch of sampled actions sends to the envs: ints, or floats clipped to the action bounds
        (Gymnasium's ``ClipAction``)."""
        a = action.cpu().numpy()
        if self.discrete:
            return a.astype(np.int64)
        return np.clip(a, self.action_low, self.action_high).astype(np.float32)

    # ---- acting -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def policy_step(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample actions for a batch of observations from :meth:`observe`: ``(action, log-prob, value)``."""
        dist, value = self.net(obs)
        action = dist.sample()
        return action, _logprob(dist, action, self.discrete), value

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """The critic's values ``[B]`` of a batch of observations from :meth:`observe`."""
        return self.net.value(obs)

    @torch.no_grad()
    def act(self, obs: Any, *, step: int, eval_mode: bool) -> Any:
        """The action for one (unbatched) env observation: the most likely action / the mean in ``eval_mode``
        (with ``eval_sample``: a sample from a generator seeded anew whenever ``step`` changes), a sample from
        torch's RNG otherwise. Observation statistics are used, not updated."""
        x = self.observe(np.asarray(obs)[None], update=False)
        dist, _ = self.net(x)
        if eval_mode and self.cfg.eval_sample:
            if step != self._eval_step:
                self._eval_gen.manual_seed(int(np.random.SeedSequence([7, int(step)]).generate_state(1)[0]))
                self._eval_step = step
            if self.discrete:
                a = torch.multinomial(dist.probs, 1, generator=self._eval_gen).squeeze(-1)
            else:
                a = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=self._eval_gen,
                                                          device=self.device)
        elif eval_mode:
            a = dist.probs.argmax(-1) if self.discrete else dist.mean
        else:
            a = dist.sample()
        out = self.env_action(a)[0]
        return int(out) if self.discrete else out

    # ---- learning ---------------------------------------------------------------------------------------------
    def update(self, rollout, *, step: int, progress: float, data_parallel=None) -> dict[str, float]:
        """One PPO update on a finished rollout (advantages and returns computed). ``progress`` in [0, 1] is the
        share of the frame budget done before the rollout (for ``anneal_lr``). Returns the means over the
        minibatches of ``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl``, ``old_approx_kl``,
        ``clipfrac``, plus ``explained_variance``, ``lr`` and ``epochs`` (fewer than ``update_epochs`` after a
        ``target_kl`` stop).

        ``data_parallel`` (``pixelrl.distributed.ddp``; None in one process): this process is one of several learners,
        ``rollout`` its shard and each minibatch its part of the global one. It supplies ``module`` (the network
        wrapped in DDP, whose backward all-reduces the gradients), ``mean_std(x)`` (mean and std of the global
        minibatch's advantages) and ``mean(x)`` (the mean over learners of a tensor of metrics)."""
        cfg = self.cfg
        dp = data_parallel
        forward = self.net if dp is None else dp.module
        lr = cfg.lr * (1.0 - min(max(float(progress), 0.0), 1.0)) if cfg.anneal_lr else cfg.lr
        for group in self.opt.param_groups:
            group["lr"] = lr
        sums: dict[str, torch.Tensor] = {}
        n = 0
        epochs = 0
        params = list(self.net.parameters())
        for _ in range(cfg.update_epochs):
            epochs += 1
            for mb in rollout.minibatches(cfg.num_minibatches):
                dist, new_v = forward(mb["obs"])
                new_logprob = _logprob(dist, mb["actions"], self.discrete)
                entropy = _entropy(dist, self.discrete).mean()
                adv = mb["advantages"]
                if cfg.norm_adv and dp is None:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                elif cfg.norm_adv:  # the global minibatch's statistics, as one learner would compute them
                    mean, std = dp.mean_std(adv)
                    adv = (adv - mean) / (std + 1e-8)
                pg_loss, logratio = clipped_policy_loss(new_logprob, mb["logprobs"], adv, cfg.clip_coef)
                v_loss = value_loss(new_v, mb["values"], mb["returns"], cfg.clip_coef if cfg.clip_vloss else None)
                loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                self.opt.step()
                with torch.no_grad():
                    ratio = logratio.exp()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    m = {"policy_loss": pg_loss.detach(), "value_loss": v_loss.detach(),
                         "entropy": entropy.detach(), "approx_kl": approx_kl, "old_approx_kl": (-logratio).mean(),
                         "clipfrac": ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()}
                for k, v in m.items():
                    sums[k] = sums[k] + v if k in sums else v
                n += 1
            if cfg.target_kl is not None and float(approx_kl if dp is None else dp.mean(approx_kl)) > cfg.target_kl:
                break
        self.num_updates += 1
        means = torch.stack(list(sums.values())) / n
        out = dict(zip(sums, (means if dp is None else dp.mean(means)).tolist()))
        y_pred, y_true = rollout.values.reshape(-1), rollout.returns.reshape(-1)
        var_y = float(y_true.var(unbiased=False))
        out["explained_variance"] = float("nan") if var_y == 0 else float(
            1 - (y_true - y_pred).var(unbiased=False) / var_y)
        out.update(lr=lr, epochs=float(epochs))
        return out

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Networks, optimizer, normaliser statistics and counters (copies; no RNG state: the trainer keeps it)."""
        return snapshot({
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "obs_rms": self.obs_rms.state_dict() if self.obs_rms is not None else {},
            "ret_rms": self.ret_rms.state_dict() if self.ret_rms is not None else {},
            "returns": self.returns.copy(),
            "counters": {"num_updates": self.num_updates},
        })

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        missing = [k for k in ("net", "opt") if k not in state]
        if missing:
            raise ConfigError(f"PPO state is missing {missing}; is it a PPO checkpoint?")
        self.net.load_state_dict(state["net"])
        for name in ("obs_rms", "ret_rms"):
            rms = getattr(self, name)
            if rms is not None:
                if not state.get(name):
                    raise ConfigError(f"the checkpoint has no {name} statistics; it was saved with normalisation off")
                rms.load_state_dict(state[name])
        returns = np.asarray(state.get("returns", np.zeros(self.cfg.num_envs)), np.float64)
        if returns.shape != self.returns.shape:
            raise ValueError(f"reward normaliser returns for {returns.shape[0]} envs, expected {self.cfg.num_envs}")
        self.returns = returns.copy()
        self.opt.load_state_dict(state["opt"])
        align_moments((self.opt,))
        self.num_updates = int(state.get("counters", {}).get("num_updates", 0))
