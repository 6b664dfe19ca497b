"""TD3+BC (Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning"), on pixels (DrQ-v2
encoder + random-shift augmentation) or on states.

TD3 with a behaviour-cloning term in the actor loss and normalised states. One update (:meth:`TD3BCAgent._update`)
on a batch of dataset transitions ``(s, a, r, s')``, top to bottom:

1. states normalised with the dataset's mean / std + 1e-3 (``obs_norm``, set by the trainer through
   ``set_obs_normalizer``); pixels randomly shifted (pad ``augment_pad``);
2. critic + encoder (the core's ``_critic_step``): ``sum_i MSE(Q_i(s, a), y)``,
   ``y = r + discount * min_i Qbar_i(s', a')``, ``a' = clip(pi_bar(s') + clip(N(0, sigma), +-c), -1, 1)`` with the
   *target actor* ``pi_bar`` (target policy smoothing; ``sigma = stddev_schedule`` = 0.2, ``c = stddev_clip`` = 0.5);
3. every ``actor_update_every`` (2) updates, on detached features:
   ``L_pi = -lambda * mean Q_1(s, pi(s)) + mean (pi(s) - a)^2`` with ``lambda = alpha / mean|Q_1(s, pi(s))|``
   (detached, ``alpha`` = 2.5) -- the BC term keeps the policy near the data, lambda makes the Q term scale-free;
   then both target nets (critic and actor) move by ``critic_target_tau``.

Acting: evaluation returns ``pi(s)``; training (offline -> online) adds TD3's Gaussian exploration noise
``N(0, expl_noise)`` and clips to [-1, 1], after ``num_seed_steps`` uniform actions when that is > 0 (default 0).

Defaults are the authors' (``main.py`` / ``TD3_BC.py``). On pixels the encoder is trained by the critic loss only
(DrQ-v2); this is TD3+BC on the DrQ-v2 core, close to the "DrQ+BC" baseline of V-D4RL (Lu et al. 2022), which
keeps DrQ-v2's own actor-critic details.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from pixelrl.agents.bc import (
    CoreObsNormMixin,
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
from pixelrl.nets.actor import Actor, sample_action
from pixelrl.nets.critic import QHead

__all__ = ["TD3BCConfig", "TD3BCAgent", "SUMMARY", "td3bc_actor_loss", "preset"]

SUMMARY = "TD3+BC: TD3 with a normalised Q term and a BC term in the actor loss, pixels or states"


def td3bc_actor_loss(q: torch.Tensor, pi: torch.Tensor, action: torch.Tensor, alpha: float):
    """TD3+BC's actor loss ``-lambda * mean(q) + mean((pi - action)^2)`` with ``lambda = alpha / mean|q|`` (detached).

    ``q`` = ``Q_1(s, pi(s))`` ``[B, 1]``; returns ``(loss, lambda)``.
    """
    lam = alpha / q.abs().mean().detach()
    return -lam * q.mean() + F.mse_loss(pi, action), lam


@dataclass(frozen=True)
class TD3BCConfig(OfflineAgentConfig):
    """TD3+BC hyper-parameters. Defaults are the authors' (``main.py``: D4RL MuJoCo); the learning rate, batch, MLP
    sizes, target rate and n-step are the offline agents' shared ones (:class:`pixelrl.agents.bc.OfflineAgentConfig`).
    """

    stddev_schedule: str = "0.2"
    """Std of the target policy smoothing noise (TD3+BC's ``policy_noise``: 0.2; actions are in [-1, 1]). A number or
    a schedule 'linear(init,final,duration)' in agent steps."""
    stddev_clip: float = 0.5
    """Clip of the target policy smoothing noise (TD3+BC's ``noise_clip``: 0.5)."""
    alpha: float = 2.5
    """alpha of lambda = alpha / mean|Q|: the weight of the Q term against the BC term (TD3+BC: 2.5)."""
    actor_update_every: int = 2
    """Critic updates per actor + target update (TD3's policy delay: 2)."""
    target_actor: bool = True
    """Use a target actor for a' in the TD target (TD3). False = the online actor, as DrQ-v2 (no target actor)."""
    expl_noise: float = 0.1
    """Std of the Gaussian exploration noise added when acting in training mode (online phase; TD3: 0.1)."""
    obs_norm: bool = True
    """Normalise states with the dataset's mean / std + 1e-3 (TD3+BC: on; ``agent.set_obs_normalizer``). Pixels are
    never normalised."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ConfigError(f"alpha must be a finite number > 0, got {self.alpha}")
        if self.actor_update_every < 1:
            raise ConfigError(f"actor_update_every must be >= 1, got {self.actor_update_every}")
        if not (self.expl_noise >= 0 and math.isfinite(self.expl_noise)):
            raise ConfigError(f"expl_noise must be a finite number >= 0, got {self.expl_noise}")
        check_offline_mechanisms(self, "TD3+BC")
        if self.actor_q != "min" or self.utd_cycle:
            raise ConfigError("TD3+BC does not use actor_q / utd_cycle (RLPD's actor objective and update cycle): "
                              "its actor maximises Q_1 (as the authors) every actor_update_every updates (TD3's policy "
                              "delay); drop --agent.actor-q / --agent.utd-cycle")


def preset(env_id: str, obs: str = "state") -> dict:
    """TD3+BC's overrides for ``env_id``: the authors use one configuration for every task, so this re-asserts it on
    the fields DrQ-v2's per-task preset changes (exploration schedule, humanoid lr / feature_dim, walker n-step /
    batch, quadruped_run replay). ``obs`` does not change them."""
    return offline_preset(stddev_schedule="0.2")


class TD3BCAgent(CoreObsNormMixin, DrQv2Agent):
    """TD3+BC on the DrQ-v2 core: same ``act`` / ``update`` / ``state_dict`` API; adds ``target_actor`` (saved under
    ``mech/td3bc``) and the state normaliser (``mech/obs_norm``)."""

    cfg: TD3BCConfig

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        cfg: TD3BCConfig | None = None,
        device: str | torch.device = "cpu",
        *,
        critic_head: QHead | None = None,
    ) -> None:
        cfg = cfg if cfg is not None else TD3BCConfig()
        if not isinstance(cfg, TD3BCConfig):
            raise ConfigError(f"TD3BCAgent needs a TD3BCConfig, got {type(cfg).__name__}")
        super().__init__(observation_space, action_space, cfg, device, critic_head=critic_head)
        self.target_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self._target_actor_params = list(self.target_actor.parameters())
        self._install_obs_norm()
        self.register_state("td3bc", self._td3bc_state, self._load_td3bc_state)
        self._bc_actor_loss_fn = self._bc_actor_loss
        if cfg.compile:
            self._bc_actor_loss_fn = torch.compile(self._bc_actor_loss, dynamic=False)

    # ------------------------------------------------------------------ networks and hooks
    def _build_actor(self, repr_dim: int) -> torch.nn.Module:
        """TD3's deterministic tanh actor: the core's :class:`~pixelrl.nets.Actor`, without its trunk on states."""
        if use_state_trunk(self):
            return Actor(repr_dim, self.action_dim, self.cfg.feature_dim, self.cfg.hidden_dim)
        return plain(Actor(repr_dim, self.action_dim, repr_dim, self.cfg.hidden_dim))

    def _install_mechanisms(self) -> None:
        """On states (without ``state_trunk``) swap in the plain twin-Q MLP first, then the core's mechanisms."""
        if not use_state_trunk(self):
            rebuild_plain_critic(self)
        super()._install_mechanisms()

    def critic_target(self, batch: Batch, next_feat: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """TD3's target ``[B, 1]``: ``r + discount * min_i Qbar_i(s', clip(pi_bar(s') + clip(N(0, std), +-c), -1, 1))``.
        Called under no_grad."""
        actor = self.target_actor if self.cfg.target_actor else self.actor
        next_action = sample_action(actor(next_feat), std, clip=self.cfg.stddev_clip)
        target_q = self._target_min(self.target_critic.values(next_feat, self.action_encoder(next_action)))
        return batch.reward + batch.discount * target_q.float()

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs, *, step: int, eval_mode: bool) -> np.ndarray:
        """Action for one unbatched observation: float32 ``[A]`` in [-1, 1]. Evaluation: ``pi(s)``. Training: uniform
        for the first ``num_seed_steps`` agent steps, then ``clip(pi(s) + N(0, expl_noise), -1, 1)`` (TD3)."""
        if not eval_mode and step < self.cfg.num_seed_steps:
            return torch.empty(self.action_dim).uniform_(-1.0, 1.0).numpy().astype(np.float32)
        x = self._obs_to_tensor(obs)
        with self._autocast():
            action = self.actor(self.encoder(x)).float()
        if not eval_mode and self.cfg.expl_noise > 0:
            action = action + self.cfg.expl_noise * torch.randn_like(action)
        return action[0].clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ update
    def _bc_actor_loss(self, feat: torch.Tensor, action: torch.Tensor):
        with self._autocast():
            pi = self.actor(feat)
            q = self.critic.values(feat, self.action_encoder(pi))[0].float()  # Q_1, as the authors
        loss, lam = td3bc_actor_loss(q, pi.float(), action.float(), self.cfg.alpha)
        bc = F.mse_loss(pi.detach().float(), action.float())
        return loss, {"actor_loss": loss.detach(), "actor_q": q.detach().mean(), "bc_mse": bc, "lambda": lam}

    def _td3bc_actor_step(self, feat: torch.Tensor, action: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        loss, metrics = self._bc_actor_loss_fn(feat, action)
        loss, metrics = self._add_actor_aux(loss, metrics, feat, step)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward(inputs=self._actor_params)  # no gradient computed for critic weights
        if cfg.actor_grad_clip > 0:
            metrics["actor_grad_norm"] = torch.nn.utils.clip_grad_norm_(self._actor_params, cfg.actor_grad_clip)
        self.actor_opt.step()
        return metrics

    def _update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """Critic every update; actor (+ BC term) and both target nets every ``actor_update_every`` updates."""
        std = torch.tensor(self.stddev(step), device=self.device)
        feat, metrics = self._critic_step(batch, std, step)  # the core's critic + encoder (+ aux) step
        if (self.num_updates + 1) % self.cfg.actor_update_every == 0:  # TD3: total_it += 1 first, then the check
            metrics.update(self._td3bc_actor_step(feat, batch.action, step))
            self._target_step()
            with torch.no_grad():
                torch._foreach_lerp_(self._target_actor_params, self._actor_params, self.cfg.critic_target_tau)
        metrics["target_noise_std"] = std
        return metrics

    # ------------------------------------------------------------------ checkpoint state
    def _td3bc_state(self) -> dict:
        return {"target_actor": self.target_actor.state_dict()}

    def _load_td3bc_state(self, state: dict) -> None:
        self.target_actor.load_state_dict(state["target_actor"])
