"""SAC: soft actor-critic with a learned temperature (Haarnoja et al. 2018), on pixels as in DrQ (Kostrikov et al.
2020) or on states.

SAC is the DrQ-v2 core with a stochastic policy and an entropy bonus. Everything that is not the policy is shared
with :class:`~pixelrl.agents.drqv2.DrQv2Agent`: the encoder and its random-shift augmentation, the twin-Q critic and
its value head (so ``critic='hl-gauss'`` works), the auxiliary losses (``aux=('taco',)``), the target-value hook
(DrM's ``value_blend`` wraps :meth:`SACAgent.critic_target`), the replay, the trainer and the checkpoint format.
The overrides, top to bottom:

* policy ``pi(a|s)``: :class:`~pixelrl.nets.gaussian_actor.GaussianActor`, ``a = tanh(u)``, ``u ~ N(m(s), std(s))``
  with a log std squashed into ``[log_std_min, log_std_max]``; acting samples from it (uniform actions for the first
  ``num_seed_steps``), evaluation takes ``tanh(m(s))``;
* TD target (under no_grad): ``y = r + discount * (min_i Qbar_i(s', a') - alpha * log pi(a'|s'))``, ``a' ~ pi(s')``
  (``batch.discount`` holds ``gamma^n`` and the termination mask); without the entropy term when
  ``backup_entropy=False`` (pixel RLPD); with ``target_augs = K > 1`` the mean of the targets of K independently
  augmented copies of ``s'``, each with its own ``a'`` (DrQ);
* critic + encoder: the core's loss on ``y`` (MSE, or the configured head's loss), every update; with
  ``loss_augs = M > 1`` summed over M independently augmented copies of ``s`` (DrQ);
* actor, every ``actor_update_every`` updates (or once per RLPD cycle, ``utd_cycle``), on detached features of the
  first augmented copy: ``E[alpha * log pi(a|s) - min_i Q_i(s, a)]``, ``a ~ pi(s)`` reparameterised (``mean_i`` with
  ``actor_q='mean'``, RLPD);
* temperature, right after each actor step: ``J(alpha) = E[alpha * (-log pi(a|s) - target_entropy)]`` (Haarnoja et al.
  2018b, eq. 18) on the actor step's samples, one Adam step on ``log alpha`` (so alpha stays positive); when the
  policy's entropy is below ``target_entropy`` the gradient is negative and alpha grows;
* target critic EMA with ``critic_target_tau`` every ``target_update_every`` updates.

The exploration std schedule of DrQ-v2 (``stddev_schedule``, ``stddev`` hook) is not used by SAC: its exploration
is the policy's own, learned std. Mechanisms that only change that std (``exploration='awakened' | 'dormant'``)
are therefore refused by :class:`SACConfig`; MENTOR's MoE layer (``moe``) goes into the Gaussian actor as into
DrQ-v2's.

Defaults are DrQ's published pixel hyper-parameters (its ``config.yaml``) with ONE augmentation (K = M = 1, i.e. the
plain pixel SAC that DrQ's ablations start from, at half the critic cost); the ``drq`` agent (:func:`drq_preset`) is
DrQ itself: K = M = 2 and the per-task action repeats of its PlaNet-benchmark runs. :data:`STATE_OVERRIDES` holds the
state-based SAC configuration of Haarnoja et al. 2018b for ``--obs state`` runs, :func:`rlpd_preset` RLPD's (Ball et
al. 2023) for the ``rlpd`` agent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from pixelrl.agents.drqv2 import AuxInputs, DrQv2Agent, DrQv2Config, critic_metrics
from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError
from pixelrl.nets.critic import QHead
from pixelrl.nets.gaussian_actor import GaussianActor

__all__ = ["SACConfig", "SACAgent", "STATE_OVERRIDES", "SUMMARY", "DRQ_SUMMARY", "RLPD_SUMMARY", "DRQ_ACTION_REPEAT",
           "preset", "drq_preset", "rlpd_preset"]

SUMMARY = "SAC with a learned temperature, on pixels (DrQ's hyper-parameters, one augmentation) or states"
DRQ_SUMMARY = "DrQ (Kostrikov et al. 2020): SAC with K = M = 2 augmentations and DrQ's per-task action repeat"
RLPD_SUMMARY = "RLPD (Ball et al. 2023): SAC with a LayerNorm 10-head critic, mean-Q actor, UTD cycle; use with --demos"


@dataclass(frozen=True)
class SACConfig(DrQv2Config):
    """SAC hyper-parameters. Defaults are DrQ's (Kostrikov et al. 2020, pixel SAC on DMC, authors' config.yaml and
    drq.py, denisyarats/drq) except K = M = 1 augmentations (DrQ: 2 and 2; the ``drq`` agent sets them); fields not
    redefined here keep DrQ-v2's values, which DrQ shares: 4 conv layers of 32 channels with strides 2, 1, 1, 1 (35x35
    maps), a 50-d Linear-LayerNorm-tanh trunk per net with the convs trained by the critic only, 1024-unit MLPs of depth
    2, orthogonal init, critic tau 0.01, discount 0.99, replicate-pad-4 random shift.

    Deviations from DrQ's code: its target critic is a full EMA copy of the critic *including the encoder*
    (``soft_update_params(critic, critic_target, 0.01)`` in ``drq.py``), so its TD target reads s' through a slowly
    moving target encoder; here, as in DrQ-v2, the target Q nets read the online encoder's features (no target
    encoder: one encoder pass fewer per update). Smaller ones: pixels enter the encoder as ``x/255 - 0.5`` (DrQ-v2's
    scaling; DrQ: ``x/255``, a constant shift the first conv's bias absorbs); the actor and target intervals count
    updates (DrQ counts env steps, ``step % 2 == 0``: the same parity at one update per step after its 1000 seed
    steps); action repeat comes from the trainer (default 2 as DrQ's Dreamer-benchmark runs; DrQ's config.yaml: 4;
    PlaNet benchmark per task: the ``drq`` agent)."""

    lr: float = 1e-3
    """Adam learning rate of the encoder, critic and actor (DrQ: 1e-3; state SAC: 3e-4)."""
    batch_size: int = 512
    """Transitions per update (DrQ paper: 512; its config.yaml ships 128 and says 512 reproduces the paper)."""
    nstep: int = 1
    """n of the n-step return (DrQ: 1). With n > 1 the entropy bonus of the n - 1 intermediate steps is left out of
    the target (the replay sums rewards only), so n = 1 is the exact soft Bellman target."""
    update_every_steps: int = 1
    """Agent steps between update points (DrQ and SAC: one update per agent step)."""
    num_seed_steps: int = 1000
    """Agent steps of uniform random actions at the start (DrQ: 1000)."""
    replay_capacity: int = 100_000
    """Replay size in transitions (DrQ: 100k)."""
    stddev_schedule: str = "0.0"
    """Unused by SAC (its exploration is the policy's learned std); kept so mechanisms and logs see a valid value."""
    init_temperature: float = 0.1
    """Initial entropy temperature alpha (DrQ: 0.1; CleanRL's state SAC starts at 1.0)."""
    temperature_lr: float = 1e-3
    """Adam learning rate of log alpha (DrQ: 1e-3, the same as its other learning rates)."""
    target_entropy: float | None = None
    """Entropy target of the temperature loss, in nats; None = ``-target_entropy_scale * |A|``."""
    target_entropy_scale: float = 1.0
    """With ``target_entropy=None`` the target is ``-target_entropy_scale * |A|`` (SAC's heuristic -|A|, used by DrQ:
    1.0; RLPD: 0.5, ``sac_learner.py`` ``target_entropy = -action_dim / 2``)."""
    log_std_min: float = -10.0
    """Lower bound of the policy's log std (DrQ: -10)."""
    log_std_max: float = 2.0
    """Upper bound of the policy's log std (DrQ: 2)."""
    actor_update_every: int = 2
    """Updates between actor + temperature steps (DrQ: 2; state SAC: 1). The critic steps every update."""
    target_update_every: int = 2
    """Updates between target-critic EMA steps with ``critic_target_tau`` (DrQ: 2; state SAC: 1)."""
    backup_entropy: bool = True
    """Include ``- alpha log pi(a'|s')`` in the TD target (SAC, DrQ: yes). RLPD's pixel config sets False
    (ikostrikov/rlpd ``configs/rlpd_pixels_config.py``; also its AntMaze / Adroit commands): the target is then
    ``r + discount * min Qbar(s', a')``, the entropy term stays in the actor loss."""
    target_augs: int = 1
    """K: independently augmented copies of ``s'`` whose TD targets are averaged, each with its own ``a' ~ pi(s')``
    (DrQ's code and paper: K = 2, ``drq.py update_critic``). 1 = one augmentation, as DrQ-v2."""
    loss_augs: int = 1
    """M: independently augmented copies of ``s`` whose critic losses against the (shared) target are summed (DrQ's
    code: M = 2, the sum of both copies' MSE terms; its paper writes the mean, 1/M, which differs only by a constant
    factor that Adam normalises away). The actor and the auxiliary losses use the first copy (as DrQ's actor uses
    ``obs``). 1 = one augmentation."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.init_temperature > 0 and math.isfinite(self.init_temperature)):
            raise ConfigError(f"init_temperature must be > 0, got {self.init_temperature}")
        if not (self.temperature_lr > 0 and math.isfinite(self.temperature_lr)):
            raise ConfigError(f"temperature_lr must be a finite number > 0, got {self.temperature_lr}")
        if not (math.isfinite(self.log_std_min) and math.isfinite(self.log_std_max)
                and self.log_std_min < self.log_std_max):
            raise ConfigError(f"log_std_min ({self.log_std_min}) must be < log_std_max ({self.log_std_max}), both "
                              "finite")
        for name in ("actor_update_every", "target_update_every", "target_augs", "loss_augs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.target_entropy_scale >= 0 and math.isfinite(self.target_entropy_scale)):
            raise ConfigError(f"target_entropy_scale must be a finite number >= 0, got {self.target_entropy_scale}")
        if self.target_entropy is not None and not math.isfinite(self.target_entropy):
            raise ConfigError(f"target_entropy must be a finite number of nats or None (= -|A|), got "
                              f"{self.target_entropy}")
        if self.utd_cycle and self.actor_update_every != 1:
            raise ConfigError(f"utd_cycle runs the actor once per updates_per_step={self.updates_per_step} critic "
                              f"updates (RLPD's cycle); set --agent.actor-update-every 1 (got {self.actor_update_every})")
        if self.exploration != "schedule":
            raise ConfigError(
                f"exploration={self.exploration!r} sets DrQ-v2's exploration std, which SAC does not use (its policy "
                "learns its own std, tuned by the temperature); drop --agent.exploration with --agent sac"
            )


STATE_OVERRIDES: dict = {
    "lr": 3e-4,
    "temperature_lr": 3e-4,
    "batch_size": 256,
    "hidden_dim": 256,
    "critic_target_tau": 0.005,
    "actor_update_every": 1,
    "target_update_every": 1,
    "replay_capacity": 1_000_000,
    "num_seed_steps": 5000,
    "init_temperature": 1.0,
}
"""State-based SAC (Haarnoja et al. 2018b, "Soft Actor-Critic Algorithms and Applications", hyperparameter table): Adam lr 3e-4
for every net and alpha, batch 256, 256-unit MLPs, tau 0.005, target and actor updated every gradient step, replay
1M, one update per env step, n = 1, target entropy -|A|. The paper does not list the random-action warm-up or the
initial alpha: 5000 steps and alpha 1.0 (log alpha initialised to 0) as CleanRL's sac_continuous_action.
Kept from the core: the 50-d Linear-LayerNorm-tanh trunk in front of both MLPs (the paper feeds the state straight
into the MLPs)."""


def preset(env_id: str) -> dict:
    """SAC's overrides for ``env_id``: re-assert DrQ's values on the fields that DrQ-v2's per-task preset changes
    (lr / feature_dim for humanoid, n-step / batch for walker, replay for quadruped_run), since DrQ uses one
    configuration for every task."""
    return {"lr": 1e-3, "feature_dim": 50, "nstep": 1, "batch_size": 512, "replay_capacity": 100_000}


def _task_name(env_id: str) -> str:
    """'dmc/cartpole-swingup' -> 'cartpole_swingup'."""
    return env_id.replace(":", "/").split("/")[-1].strip().lower().replace("-", "_")


DRQ_ACTION_REPEAT: dict[str, int] = {
    "cartpole_swingup": 8, "reacher_easy": 4, "cheetah_run": 4, "ball_in_cup_catch": 4, "cup_catch": 4,
    "finger_spin": 2, "walker_walk": 2,
}
"""DrQ's action repeat on the PlaNet benchmark tasks (denisyarats/drq: README ``action_repeat=8`` for cartpole; its
``data/dmc_planet_bench.csv`` logs every 2000 agent steps at 16k frames for cartpole, 8k for cup / reacher / cheetah,
4k for finger / walker, i.e. repeats 8 / 4 / 2). Other tasks keep the trainer's repeat (2, as the repo's
Dreamer-benchmark data, which logs every 5000 agent steps at 10k frames on every task)."""


def drq_preset(env_id: str, obs: str = "pixels") -> dict:
    """DrQ (the ``drq`` agent): SAC's values (:func:`preset`) plus K = M = 2 augmentations and, for the PlaNet
    benchmark tasks, their action repeat (:data:`DRQ_ACTION_REPEAT`; a trainer field, applied by the trainer's
    config resolution). Batch 512 is the paper's (config.yaml ships 128 and says 512 reproduces the paper). With
    ``obs='state'`` there is nothing to augment: state SAC's values (:data:`STATE_OVERRIDES`) instead of K and M."""
    out = {**preset(env_id), **({"target_augs": 2, "loss_augs": 2} if obs != "state" else STATE_OVERRIDES)}
    repeat = DRQ_ACTION_REPEAT.get(_task_name(env_id))
    if repeat is not None:
        out["action_repeat"] = repeat
    return out


def rlpd_preset(env_id: str, obs: str = "pixels") -> dict:
    """RLPD (the ``rlpd`` agent; ikostrikov/rlpd ``configs/``, ``sac_learner.py``, ``drq_learner.py``): SAC with a
    10-head critic with LayerNorm in its MLPs, the actor on the MEAN of the heads, the TD target's min over a random
    subset of 2 heads (states) or 1 (pixels), RLPD's UTD cycle, Adam 3e-4 for every net and the temperature, tau
    0.005 after every critic update, 256-unit MLPs, batch 256, target entropy -|A|/2, initial temperature 1.0
    (states) / 0.1 (pixels, drq_config), and on pixels no entropy term in the TD target (rlpd_pixels_config).

    Mix prior data into every batch with ``--demos PATH --demo-ratio 0.5`` (or ``--dataset ... --offline-ratio
    0.5``); the UTD ratio is ``--agent.updates-per-step`` (RLPD: 20 on states, the README's commands; 1 on pixels,
    train_finetuning_pixels.py's default). On pixels also the pixel script's 64x64 images, its action repeats
    (PlaNet's: cartpole 8, reacher / cheetah / cup 4, finger / walker 2, else 2; ``PLANET_ACTION_REPEAT``) and its
    D4PG encoder (3x3 convs of 32, 64, 128, 256 channels, all stride 2, no padding, ReLU), whose convs the critic
    trains and the actor reads detached, each net with its own Dense(50)-LayerNorm-tanh latent -- as here. Remaining
    deviation: pixels enter as ``x/255 - 0.5`` (RLPD: ``x/255``; a constant shift the first conv's bias absorbs)."""
    pixels = obs != "state"
    train = {}
    if pixels:  # the pixel script's image size, PlaNet action repeats (else 2) and D4PG-style encoder
        train = {"size": 64, "action_repeat": DRQ_ACTION_REPEAT.get(_task_name(env_id), 2),
                 "encoder_channels": (32, 64, 128, 256), "encoder_strides": (2, 2, 2, 2)}
    return {**train,
        "lr": 3e-4, "temperature_lr": 3e-4, "batch_size": 256, "hidden_dim": 256, "feature_dim": 50,
        "critic_target_tau": 0.005, "actor_update_every": 1, "target_update_every": 1, "nstep": 1,
        "num_q": 10, "target_q_subset": 1 if pixels else 2, "critic_layernorm": True, "actor_q": "mean",
        "utd_cycle": True, "backup_entropy": not pixels, "init_temperature": 0.1 if pixels else 1.0,
        "target_entropy_scale": 0.5, "replay_capacity": 1_000_000, "num_seed_steps": 5000,
    }


class SACAgent(DrQv2Agent):
    """SAC on the DrQ-v2 core: same ``act`` / ``update`` / ``state_dict`` API, a tanh-Gaussian actor and a learned
    temperature (``log_alpha``, its own Adam optimizer, saved in checkpoints under ``mech/sac``)."""

    cfg: SACConfig

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        cfg: SACConfig | None = None,
        device: str | torch.device = "cpu",
        *,
        critic_head: QHead | None = None,
    ) -> None:
        cfg = cfg if cfg is not None else SACConfig()
        if not isinstance(cfg, SACConfig):
            raise ConfigError(f"SACAgent needs a SACConfig, got {type(cfg).__name__}")
        super().__init__(observation_space, action_space, cfg, device, critic_head=critic_head)
        self.target_entropy = (float(cfg.target_entropy) if cfg.target_entropy is not None
                               else -cfg.target_entropy_scale * float(self.action_dim))
        self.log_alpha = torch.nn.Parameter(torch.tensor(math.log(cfg.init_temperature), device=self.device))
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.temperature_lr)
        self.register_state("sac", self._temperature_state, self._load_temperature_state)

    # ------------------------------------------------------------------ networks and hooks
    def _build_actor(self, repr_dim: int) -> torch.nn.Module:
        """The tanh-Gaussian policy (trunk Linear-LayerNorm-tanh, then an MLP to mean and log std; with ``moe`` set,
        MENTOR's mixture-of-experts layer in the middle of the MLP)."""
        moe = self.cfg.mentor.moe if self.cfg.moe != "none" else None  # MENTOR's MoE layer, as DrQ-v2's actor
        return GaussianActor(repr_dim, self.action_dim, self.cfg.feature_dim, self.cfg.hidden_dim,
                             self.cfg.log_std_min, self.cfg.log_std_max, moe=moe)

    @property
    def alpha(self) -> torch.Tensor:
        """The temperature ``exp(log_alpha)``, detached (a 0-d tensor on the agent's device)."""
        return self.log_alpha.detach().exp()

    def critic_target(self, batch: Batch, next_feat: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Soft TD target ``[B, 1]``: ``r + discount * (min_i Qbar_i(s', a') - alpha log pi(a'|s'))``, ``a' ~ pi(s')``
        (no ``alpha log pi`` term with ``backup_entropy=False``).

        ``std`` (DrQ-v2's smoothing noise) is unused. Called under no_grad.
        """
        next_action, log_prob = self.actor.sample(next_feat)
        target_q = self._target_min(self.target_critic.values(next_feat, self.action_encoder(next_action)))
        return batch.reward + batch.discount * self._soft_value(target_q, log_prob)

    def _soft_value(self, target_q: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
        """The next state's value in the TD target: ``min Qbar - alpha log pi``, or ``min Qbar`` without
        ``backup_entropy`` (pixel RLPD)."""
        v = target_q.float()
        return v - self.alpha * log_prob if self.cfg.backup_entropy else v

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs, *, step: int, eval_mode: bool) -> np.ndarray:
        """Action for one unbatched observation: float32 ``[A]`` in [-1, 1].

        Training: uniform in [-1, 1] for the first ``num_seed_steps`` agent steps, then a sample of ``pi(.|s)``.
        Evaluation: the deterministic ``tanh(mean)``.
        """
        if not eval_mode and step < self.cfg.num_seed_steps:
            return torch.empty(self.action_dim).uniform_(-1.0, 1.0).numpy().astype(np.float32)
        x = self._obs_to_tensor(obs)
        with self._autocast():
            feat = self.encoder(x)
            action = self.actor(feat) if eval_mode else self.actor.sample(feat)[0]
        return action[0].float().clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ update
    def _critic_loss(self, batch: Batch, std: torch.Tensor, step: int):
        """The core's critic loss (one augmentation), or DrQ's with K = ``target_augs`` augmented copies of ``s'``
        (their targets averaged) and M = ``loss_augs`` copies of ``s`` (their losses summed, as DrQ's code)."""
        k, m = self.cfg.target_augs, self.cfg.loss_augs
        if k == 1 and m == 1:
            return super()._critic_loss(batch, std, step)
        b, n = batch.reward.shape[0], max(k, m)
        # n copies of each sample, every copy shifted independently (one augmentation kernel for all)
        obs, next_obs = self._augment(_tile(batch.obs, n), _tile(batch.next_obs, n))
        with self._autocast():
            feat = self.encoder(_head(obs, m * b))
            with torch.no_grad():
                next_feat = self.encoder(_head(next_obs, k * b))
                target = torch.stack([self.critic_target(batch, f, std).float()
                                      for f in next_feat.split(b)]).mean(dim=0)
            raw = self.critic(feat, self.action_encoder(batch.action.repeat(m, 1)))
            q = self.critic.head.value(raw[:, :b]).float()
            loss = m * self.critic.head.loss(raw.float(), target.repeat(m, 1))
        metrics = critic_metrics(target, q, loss, batch)
        if self.aux_losses:  # on the first copy, as the actor
            inputs = AuxInputs(self, batch, _head(obs, b), _head(next_obs, b), feat[:b], next_feat[:b], step,
                               raw[:, :b])
            loss = self._add_aux(self.aux_losses, inputs, loss, metrics)
        return loss, feat[:b].detach(), metrics

    def _actor_loss(self, feat: torch.Tensor, std: torch.Tensor, step: int = 0):
        """``E[alpha log pi(a|s) - min_i Q_i(s, a)]`` on detached features (``mean_i`` with ``actor_q='mean'``,
        RLPD); ``std`` is unused."""
        penalty = self.cfg.actor_pre_tanh_penalty
        with self._autocast():
            action, log_prob, mean = self.actor.sample(feat, with_mean=True)
            q = self._actor_q(self.critic.values(feat, self.action_encoder(action))).float()
            loss = (self.alpha * log_prob - q).mean()
        metrics = {"actor_loss": loss.detach(), "actor_entropy": -log_prob.detach().mean()}
        if penalty > 0:  # rlkit's policy_mean_reg_weight: mean(m^2) of the pre-squash mean
            mean_sq = mean.pow(2).mean()
            loss = loss + penalty * mean_sq
            metrics["actor_pre_tanh_sq"] = mean_sq.detach()
        return self._add_actor_aux(loss, metrics, feat, step)

    def _temperature_loss(self, entropy: torch.Tensor) -> torch.Tensor:
        """``alpha * (H(pi) - target_entropy)`` with the batch entropy estimate ``-mean log pi`` (detached): its
        gradient raises alpha when the policy's entropy is below the target and lowers it above."""
        return self.log_alpha.exp() * (entropy.detach() - self.target_entropy)

    def _update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """The core's critic / actor / target steps, with DrQ's actor and target intervals (or RLPD's cycle:
        ``utd_cycle``) and a temperature step after each actor step."""
        cfg = self.cfg
        std = torch.tensor(self.stddev(step), device=self.device)  # unused by SAC's losses; passed for the hooks
        feat, metrics = self._critic_step(batch, std, step)
        if self._actor_due() and self.num_updates % cfg.actor_update_every == 0:
            actor_metrics = self._actor_step(feat, std, step)
            alpha_loss = self._temperature_loss(actor_metrics["actor_entropy"])
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
            metrics.update(actor_metrics)
            metrics["alpha_loss"] = alpha_loss.detach()
        if self.num_updates % cfg.target_update_every == 0:
            self._target_step()
        metrics["alpha"] = self.alpha
        return metrics

    # ------------------------------------------------------------------ checkpoint state
    def _temperature_state(self) -> dict:
        return {"log_alpha": self.log_alpha.detach().clone(), "alpha_opt": self.alpha_opt.state_dict()}

    def _load_temperature_state(self, state: dict) -> None:
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"].to(self.device))
        self.alpha_opt.load_state_dict(state["alpha_opt"])


def _tile(x, n: int):
    """``n`` copies of a batch along the batch dimension (each entry of a dict observation)."""
    if isinstance(x, dict):
        return {k: _tile(v, n) for k, v in x.items()}
    return x if n == 1 else torch.cat([x] * n)


def _head(x, rows: int):
    """The first ``rows`` rows of a batch (each entry of a dict observation)."""
    if isinstance(x, dict):
        return {k: v[:rows] for k, v in x.items()}
    return x[:rows]
