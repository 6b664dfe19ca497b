"""IQL: implicit Q-learning (Kostrikov, Nair & Levine 2021, "Offline Reinforcement Learning with Implicit
Q-Learning"), on pixels (DrQ-v2 encoder + random-shift augmentation) or on states.

IQL never queries the critic at actions outside the dataset. One update (:meth:`IQLAgent._update`) on a batch of
dataset transitions ``(s, a, r, s')``, top to bottom:

1. rewards: ``r <- reward_scale * return_scale * r + reward_shift`` (the authors' dataset preprocessing: locomotion
   rewards scaled by ``1000 / (max - min episode return)``, AntMaze rewards shifted by -1);
2. critic + encoder (the core's critic loss): ``sum_i MSE(Q_i(s, a), y)`` with
   ``y = r + discount * V(s')`` -- the target uses the value net at ``s'``, not a Q at a policy action
   (``batch.discount`` holds ``gamma^n`` and the termination mask, so ``(1 - d)`` is in it);
3. value: expectile regression of ``V(s)`` on ``Qbar(s, a) = min_i Qbar_i(s, a)`` (target critic, dataset action):
   ``L_V = E[|tau - 1(u < 0)| u^2]``, ``u = Qbar(s, a) - V(s)``, ``tau = expectile``;
   steps 2 and 3 share one backward pass (:meth:`IQLAgent._critic_value_step`; their graphs share no parameter);
4. policy (advantage-weighted regression): ``L_pi = -E[w * log pi(a|s)]``,
   ``w = min(exp(beta * (Qbar(s, a) - V(s))), max_weight)`` with the freshly updated V; the actor's learning rate
   follows a cosine decay over ``lr_decay_steps`` updates (``actor_lr_schedule``);
5. target critic EMA with ``critic_target_tau``.

On pixels the encoder is trained by the critic loss only (as in DrQ-v2); the value net and the policy see detached
features. The authors update V, then the policy, then Q (each with the V just updated); here Q is updated first with
the V of the previous update (as d3rlpy does, which steps Q and V together), then V, then the policy with the new V.

Acting: evaluation returns the policy's mean ``tanh(m(s))`` (the authors sample at temperature 0); training
(offline -> online) samples ``N(tanh(m(s)), std)`` clipped to [-1, 1], after ``num_seed_steps`` uniform actions when
that is > 0 (default 0).

Defaults are the authors' MuJoCo locomotion configuration (``configs/mujoco_config.py``); :func:`preset` gives the
AntMaze and Kitchen / Adroit ones.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from pixelrl.agents.bc import (
    CoreObsNormMixin,
    GaussianPolicy,
    OfflineAgentConfig,
    check_offline_mechanisms,
    offline_preset,
    plain,
    rebuild_plain_critic,
    use_state_trunk,
)
from pixelrl.agents.drqv2 import DrQv2Agent
from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError
from pixelrl.mechanisms.drm import ValueNet, expectile_loss
from pixelrl.nets.critic import QHead

__all__ = ["IQLConfig", "IQLAgent", "SUMMARY", "advantage_weights", "awr_loss", "cosine_lr", "expectile_loss",
           "preset"]

SUMMARY = "IQL: expectile value, advantage-weighted policy (offline and offline->online), pixels or states"


def advantage_weights(q: torch.Tensor, v: torch.Tensor, beta: float, max_weight: float = 100.0) -> torch.Tensor:
    """IQL's policy weights ``min(exp(beta * (q - v)), max_weight)`` (computed without overflow)."""
    return torch.exp((beta * (q - v)).clamp(max=math.log(max_weight)))


def awr_loss(log_prob: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Advantage-weighted regression loss ``-mean(w * log pi(a|s))`` (``weights`` carry no gradient)."""
    return -(weights.detach() * log_prob).mean()


def cosine_lr(base_lr: float, t: int, decay_steps: int) -> float:
    """``base_lr * (1 + cos(pi * min(t, T) / T)) / 2``: optax's ``cosine_decay_schedule(base_lr, T)`` at count ``t``
    (the authors' actor schedule; 0 from ``T`` on)."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(t, decay_steps) / decay_steps))


@dataclass(frozen=True)
class IQLConfig(OfflineAgentConfig):
    """IQL hyper-parameters. Defaults are the authors' MuJoCo locomotion values (``configs/mujoco_config.py``,
    ``train_offline.py``); the learning rate, batch, MLP sizes, target rate and n-step are the offline agents' shared
    ones (:class:`~pixelrl.agents.bc.OfflineAgentConfig`)."""

    stddev_schedule: str = "0.0"
    """Unused by IQL (its policy has its own learned std); kept for the core's hooks and logs."""
    expectile: float = 0.7
    """Expectile tau of the value regression (locomotion and Kitchen/Adroit: 0.7; AntMaze: 0.9)."""
    beta: float = 3.0
    """Inverse temperature of the advantage weights exp(beta * (Q - V)) (the authors' ``temperature``; locomotion
    3.0, AntMaze 10.0, Kitchen/Adroit 0.5). 0 gives behaviour cloning with the Gaussian policy."""
    max_weight: float = 100.0
    """Clip of the advantage weights (IQL: 100)."""
    dropout: float = 0.0
    """Dropout rate after each hidden layer of the policy (IQL: none; Kitchen/Adroit: 0.1)."""
    log_std_min: float = -5.0
    """Lower clip of the policy's state-independent log std (IQL: -5)."""
    log_std_max: float = 2.0
    """Upper clip of the policy's log std (IQL: 2)."""
    actor_lr_schedule: str = "cosine"
    """Actor learning rate: 'cosine' (decay from ``lr`` to 0 over ``lr_decay_steps`` updates, the authors' offline
    setting) or 'constant' (the authors' fine-tuning config, ``opt_decay_schedule=None``: use it for offline -> online
    runs, where a decayed actor would stop learning)."""
    lr_decay_steps: int = 1_000_000
    """Updates over which the cosine actor schedule decays (IQL: 1M = its number of offline steps); the actor's
    learning rate is 0 after that."""
    reward_scale: float = 1.0
    """Multiplier of every reward the agent trains on (after the dataset-return normalisation, if any)."""
    reward_shift: float = 0.0
    """Added to every reward the agent trains on (IQL AntMaze: -1, applied to each sampled batch as in the authors'
    fine-tuning script). Needs nstep = 1 (a shift of an n-step return depends on the steps summed)."""
    normalize_returns: bool = False
    """Scale rewards by 1000 / (max - min episode return of the offline dataset), the authors' preprocessing for
    MuJoCo locomotion (on in the preset for hopper / halfcheetah / walker2d). The trainer passes the dataset's
    episode returns with ``agent.set_dataset_returns``; training without them raises."""
    obs_norm: bool = False
    """Normalise states with the dataset's mean / std + 1e-3 (``agent.set_obs_normalizer``). IQL: off."""
    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.expectile < 1.0:
            raise ConfigError(f"expectile must be in (0, 1), got {self.expectile}")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ConfigError(f"beta must be a finite number >= 0, got {self.beta}")
        if not (self.max_weight > 0 and math.isfinite(self.max_weight)):
            raise ConfigError(f"max_weight must be a finite number > 0, got {self.max_weight}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.log_std_min) and math.isfinite(self.log_std_max)
                and self.log_std_min < self.log_std_max):
            raise ConfigError(f"log_std_min ({self.log_std_min}) must be < log_std_max ({self.log_std_max}), both "
                              "finite")
        if self.actor_lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"actor_lr_schedule must be 'cosine' or 'constant', got {self.actor_lr_schedule!r}")
        if self.lr_decay_steps < 1:
            raise ConfigError(f"lr_decay_steps must be >= 1, got {self.lr_decay_steps}")
        if not (math.isfinite(self.reward_scale) and self.reward_scale > 0):
            raise ConfigError(f"reward_scale must be a finite number > 0, got {self.reward_scale}")
        if not math.isfinite(self.reward_shift):
            raise ConfigError(f"reward_shift must be finite, got {self.reward_shift}")
        if self.reward_shift != 0 and self.nstep != 1:
            raise ConfigError(f"reward_shift={self.reward_shift} needs nstep=1 (got {self.nstep}): the shift of an "
                              "n-step return depends on how many steps it sums")
        check_offline_mechanisms(self, "IQL")
        if self.actor_q != "min" or self.utd_cycle:
            raise ConfigError("IQL does not use actor_q / utd_cycle (RLPD's actor objective and update cycle): "
                              "its policy is weighted by the target critic's min_i Qbar_i(s, a) (the authors' twin-Q "
                              "min) and every update steps critic, value and policy once; drop --agent.actor-q / "
                              "--agent.utd-cycle")


_LOCOMOTION = ("halfcheetah", "hopper", "walker2d")
_ADROIT_KITCHEN = ("kitchen", "adroit", "pen-", "door-", "hammer-", "relocate-", "/pen", "/door", "/hammer",
                   "/relocate")


def preset(env_id: str, obs: str = "state") -> dict:
    """IQL's overrides for ``env_id`` (the authors' configs by domain):

    * AntMaze (``antmaze`` in the id): expectile 0.9, beta 10, rewards shifted by -1;
    * Franka Kitchen / Adroit (pen, door, hammer, relocate): expectile 0.7, beta 0.5, policy dropout 0.1;
    * MuJoCo locomotion (hopper, halfcheetah, walker2d): expectile 0.7, beta 3 (the defaults) and the rewards
      normalised by the dataset's return range (``normalize_returns``);
    * anything else: the defaults.

    It also re-asserts IQL's values on the fields DrQ-v2's per-task preset changes (humanoid lr / feature_dim, walker
    n-step / batch, quadruped_run replay, the unused exploration schedule), since IQL uses one configuration per
    domain. ``obs`` does not change them.
    """
    name = env_id.lower()
    over = offline_preset(stddev_schedule="0.0")
    if "antmaze" in name:
        over.update(expectile=0.9, beta=10.0, reward_shift=-1.0)
    elif not name.startswith("metaworld/") and any(k in name for k in _ADROIT_KITCHEN):
        over.update(expectile=0.7, beta=0.5, dropout=0.1)
    elif any(k in name for k in _LOCOMOTION):
        over.update(expectile=0.7, beta=3.0, normalize_returns=True)
    return over


class IQLAgent(CoreObsNormMixin, DrQv2Agent):
    """IQL on the DrQ-v2 core: same ``act`` / ``update`` / ``state_dict`` API; adds ``value`` (V(s)) with its own Adam
    optimizer ``value_opt`` and the Gaussian policy :class:`~pixelrl.agents.bc.GaussianPolicy`. Saved in checkpoints
    under ``mech/iql`` (value net, its optimizer, the reward normalisation) and ``mech/obs_norm``."""

    cfg: IQLConfig

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        cfg: IQLConfig | None = None,
        device: str | torch.device = "cpu",
        *,
        critic_head: QHead | None = None,
    ) -> None:
        cfg = cfg if cfg is not None else IQLConfig()
        if not isinstance(cfg, IQLConfig):
            raise ConfigError(f"IQLAgent needs an IQLConfig, got {type(cfg).__name__}")
        super().__init__(observation_space, action_space, cfg, device, critic_head=critic_head)
        trunk = use_state_trunk(self)
        repr_dim = self.encoder.repr_dim
        self.value = ValueNet(repr_dim, cfg.feature_dim if trunk else repr_dim, cfg.hidden_dim)
        if not trunk:
            plain(self.value)
        self.value.to(self.device)
        self.value_opt = self._make_adam([{"params": list(self.value.parameters())}])
        self.return_scale = 1.0
        self._returns_set = False
        self._zero = torch.zeros((), device=self.device)
        self._install_obs_norm()
        self.register_state("iql", self._iql_state, self._load_iql_state)
        self._value_loss_fn = self._value_loss
        self._policy_loss_fn = self._policy_loss
        if cfg.compile:
            self._value_loss_fn = torch.compile(self._value_loss, dynamic=False)
            self._policy_loss_fn = torch.compile(self._policy_loss, dynamic=False)

    # ------------------------------------------------------------------ networks and hooks
    def _build_actor(self, repr_dim: int) -> torch.nn.Module:
        """IQL's Gaussian policy (tanh mean, state-independent log std, optional dropout)."""
        cfg = self.cfg
        trunk = use_state_trunk(self)
        return GaussianPolicy(repr_dim, self.action_dim, cfg.feature_dim if trunk else repr_dim, cfg.hidden_dim,
                              trunk=trunk, dropout=cfg.dropout, log_std_min=cfg.log_std_min,
                              log_std_max=cfg.log_std_max)

    def _install_mechanisms(self) -> None:
        """On states (without ``state_trunk``) swap in the plain twin-Q MLP first, then the core's mechanisms."""
        if not use_state_trunk(self):
            rebuild_plain_critic(self)
        super()._install_mechanisms()

    def critic_target(self, batch: Batch, next_feat: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """IQL's TD target ``[B, 1]``: ``r + discount * V(s')`` (no policy action, no target critic). No grad."""
        return batch.reward + batch.discount * self.value(next_feat).float()

    def set_dataset_returns(self, episode_returns) -> None:
        """Give the offline dataset's episode returns (undiscounted, one per episode) for ``normalize_returns``:
        rewards are then scaled by ``1000 / (max - min)``. Saved with the agent."""
        r = np.asarray(episode_returns, dtype=np.float64).reshape(-1)
        if r.size < 2 or not np.isfinite(r).all():
            raise ConfigError(f"set_dataset_returns needs the finite returns of at least 2 episodes, got {r.size} "
                              f"value(s){'' if np.isfinite(r).all() else ' with NaN / inf'}")
        spread = float(r.max() - r.min())
        if spread <= 0:
            raise ConfigError(f"every episode of the dataset has return {r.max()}: the return range is 0, so rewards "
                              "cannot be normalised by it; set normalize_returns=False")
        self.return_scale = 1000.0 / spread
        self._returns_set = True

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs, *, step: int, eval_mode: bool) -> np.ndarray:
        """Action for one unbatched observation: float32 ``[A]`` in [-1, 1]. Evaluation: the policy's mean
        ``tanh(m(s))``. Training: uniform for the first ``num_seed_steps`` agent steps, then a sample of the policy."""
        if not eval_mode and step < self.cfg.num_seed_steps:
            return torch.empty(self.action_dim).uniform_(-1.0, 1.0).numpy().astype(np.float32)
        x = self._obs_to_tensor(obs)
        self.actor.eval()  # no dropout when acting (the authors act with training=False)
        with self._autocast():
            feat = self.encoder(x)
            action = self.actor(feat) if eval_mode else self.actor.sample(feat)
        self.actor.train()
        return action[0].float().clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ update
    def _transform_reward(self, batch: Batch) -> Batch:
        cfg = self.cfg
        if cfg.normalize_returns and not self._returns_set:
            raise ConfigError("normalize_returns=True needs the offline dataset's episode returns: call "
                              "agent.set_dataset_returns(returns) before training, or set normalize_returns=False")
        scale = cfg.reward_scale * self.return_scale
        if cfg.reward_shift == 0.0:
            return batch if scale == 1.0 else dataclasses.replace(batch, reward=batch.reward * scale)
        return dataclasses.replace(batch, reward=batch.reward * scale + cfg.reward_shift)

    def _target_q(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``Qbar(s, a) = min_i Qbar_i(s, a)`` of the target critic at the dataset action, ``[B, 1]`` float32."""
        with torch.no_grad(), self._autocast():
            return self.target_critic.values(feat, self.action_encoder(action)).min(dim=0).values.float()

    def _value_loss(self, feat: torch.Tensor, q: torch.Tensor):
        with self._autocast():
            v = self.value(feat).float()
        loss = expectile_loss(v, q, self.cfg.expectile)
        return loss, {"value_loss": loss.detach(), "v": v.detach().mean()}

    def _policy_loss(self, feat: torch.Tensor, action: torch.Tensor, q: torch.Tensor):
        with torch.no_grad(), self._autocast():
            v = self.value(feat).float()
        adv = q - v
        weights = advantage_weights(q, v, self.cfg.beta, self.cfg.max_weight)
        with self._autocast():
            log_prob = self.actor.log_prob(feat, action)
        loss = awr_loss(log_prob, weights)
        metrics = {"actor_loss": loss.detach(), "adv": adv.mean(), "adv_weight": weights.mean(),
                   "policy_log_prob": log_prob.detach().mean(), "policy_log_std": self.actor.log_std.detach().mean()}
        return loss, metrics

    def _critic_value_step(self, batch: Batch, step: int):
        """Critic + encoder (+ aux) step and value step with one backward pass: the core's critic loss (its target
        uses V(s') before V moves) plus the expectile loss of V on detached features against the target critic's
        ``min_i Qbar_i(s, a)``. The two graphs share no parameter, so each optimizer gets exactly the gradient of
        its own loss, as with two separate backward passes (bit-identical), for one autograd call instead of two.
        Returns the detached features, ``q`` (the policy's advantage uses it too: the target critic moves only in
        the EMA at the end of the update) and the metrics."""
        critic_loss, feat, metrics = self._critic_loss_fn(batch, self._zero, step)
        q = self._target_q(feat, batch.action)
        value_loss, value_metrics = self._value_loss_fn(feat, q)
        self.critic_opt.zero_grad(set_to_none=True)
        self.value_opt.zero_grad(set_to_none=True)
        (critic_loss + value_loss).backward()
        self.critic_opt.step()
        self.value_opt.step()
        self.last_feat = feat
        metrics.update(value_metrics)
        return feat, q, metrics

    def _policy_step(self, feat: torch.Tensor, action: torch.Tensor, q: torch.Tensor, step: int):
        cfg = self.cfg
        lr = cfg.lr if cfg.actor_lr_schedule == "constant" else cosine_lr(cfg.lr, self.num_updates, cfg.lr_decay_steps)
        for group in self.actor_opt.param_groups:
            group["lr"] = lr
        loss, metrics = self._policy_loss_fn(feat, action, q)
        loss, metrics = self._add_actor_aux(loss, metrics, feat, step)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward(inputs=self._actor_params)
        if cfg.actor_grad_clip > 0:
            metrics["actor_grad_norm"] = torch.nn.utils.clip_grad_norm_(self._actor_params, cfg.actor_grad_clip)
        self.actor_opt.step()
        metrics["actor_lr"] = torch.tensor(lr, device=self.device)
        return metrics

    def _update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """Rewards, critic (target ``r + discount * V(s')``), value (expectile), policy (AWR), target EMA."""
        batch = self._transform_reward(batch)
        feat, q, metrics = self._critic_value_step(batch, step)  # q: the target critic's min_i Qbar_i(s, a)
        metrics.update(self._policy_step(feat, batch.action, q, step))
        self._target_step()
        return metrics

    # ------------------------------------------------------------------ checkpoint state
    def _iql_state(self) -> dict:
        return {"value": self.value.state_dict(), "value_opt": self.value_opt.state_dict(),
                "return_scale": float(self.return_scale), "returns_set": bool(self._returns_set)}

    def _load_iql_state(self, state: dict) -> None:
        self.value.load_state_dict(state["value"])
        self.value_opt.load_state_dict(state["value_opt"])
        self.return_scale = float(state["return_scale"])
        self._returns_set = bool(state["returns_set"])
