"""Residual RL on a frozen behaviour-cloning policy (ResiP: Ankile et al. 2024, "From Imitation to Refinement --
Residual RL for Precise Assembly").

A BC policy ``pi_base`` (a pixelrl ``bc`` run) is loaded and frozen; a residual policy ``pi_res`` is learned by RL on
top of it. The action sent to the environment (and stored in the replay) is

    a = clip(a_base(s) + residual_scale * a_res(s, a_base(s)), -1, 1),      a_res in [-1, 1]^A

The residual sees the observation features of its own encoder (trained by the critic, as in DrQ-v2) and, with
``residual_sees_base`` (ResiP: yes), the base action; its last layer is scaled by ``residual_init_scale`` at
initialisation (ResiP: 0), so a fresh agent acts like the base policy. The critic ``Q(s, a)`` evaluates the executed
action ``a``.

ResiP trains the residual with PPO on thousands of parallel simulators. pixelrl's trainer is off-policy, so here
the residual is learned by the off-policy core, chosen by ``learner``:

* ``'sac'`` (default): the residual is a tanh-Gaussian ``a_res ~ pi_res(.|s, a_base)`` (a stochastic policy with
  its own std, like ResiP's Gaussian residual), with SAC's entropy bonus and learned temperature; the entropy is
  that of ``a_res`` (residual units, before scaling);
* ``'drqv2'``: the residual is DrQ-v2's deterministic tanh actor with the scheduled exploration noise
  (``stddev_schedule``) added in residual units, so the executed action moves by at most ``residual_scale``.

One update (the core's order, :meth:`DrQv2Agent._update` / :meth:`SACAgent._update`):

1. base actions of ``obs`` and ``next_obs`` (frozen net, no grad, un-augmented observations: what was executed);
2. TD target ``r + discount * min_i Qbar_i(s', a')`` with ``a' = clip(a_base(s') + scale * a_res')`` and
   ``a_res'`` from the residual on ``s'`` (DrQ-v2's clipped smoothing noise, or SAC's sample and ``- alpha log pi``);
3. critic + encoder step on the stored (executed) actions;
4. residual actor step: maximise ``min_i Q_i(s, clip(a_base(s) + scale * a_res))`` (SAC: minus ``alpha log pi``;
   ``mean_i`` with ``actor_q='mean'``, RLPD), the gradient reaching ``a_res`` through a straight-through clip; the
   base gets no gradient.

The base policy: its encoder, actor and state normaliser come from ``base_run`` (latest checkpoint, or
``base_checkpoint``); requires_grad is off, it stays in eval mode and is in no optimizer. Its weights are also saved
in this agent's checkpoints (``state_dict()['mech']['residual_base']``) and restored from them, so a resumed or
evaluated run uses exactly the base it was trained with, even if ``base_run`` has gained checkpoints since; the
``base_run`` folder is still read when the agent is built (its config gives the BC architecture).

Seed phase: for the first ``num_seed_steps`` agent steps the *residual* is uniform in [-1, 1] (not the action), so
early data stays near the base policy's behaviour.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from pixelrl.agents.bc import BCAgent, BCConfig, check_offline_mechanisms
from pixelrl.agents.drqv2 import DrQv2Agent
from pixelrl.agents.sac import STATE_OVERRIDES, SACAgent, SACConfig
from pixelrl.agents.sac import preset as sac_preset
from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError, CorruptFileError
from pixelrl.nets.actor import Actor, clamp_straight_through, sample_action
from pixelrl.nets.critic import QHead
from pixelrl.nets.gaussian_actor import GaussianActor
from pixelrl.nets.layers import weight_init
from pixelrl.utils.dataclass_io import from_dict

__all__ = ["ResidualConfig", "ResidualAgent", "ResidualActor", "SUMMARY", "load_base_policy", "preset"]

SUMMARY = "Residual RL (ResiP): a frozen BC policy plus a residual policy learned off-policy (SAC or DrQ-v2)"

LEARNERS = ("sac", "drqv2")


@dataclass(frozen=True)
class ResidualConfig(SACConfig):
    """Residual-RL hyper-parameters: the residual's own knobs, then the off-policy learner's (SAC's fields, with
    DrQ's defaults; DrQ-v2's fields for ``learner='drqv2'``).

    Deviation from ResiP: the residual is trained off-policy by SAC or DrQ-v2 instead of PPO with many parallel
    environments -- pixelrl has one (off-policy, single-env) trainer and no PPO yet, and off-policy learning is far
    more sample-efficient with one environment. ResiP's residual MLP is 256x2 on the state; here the residual and
    critic keep the learner's network sizes (pixel SAC / DrQ-v2: 1024, state SAC preset: 256).
    """

    base_run: str = ""
    """Run folder of the frozen BC policy (made by ``pixelrl train --agent bc``; its ``config.json`` and
    ``checkpoints/``). Required: the agent refuses to start without it, with a run of another agent, or with a
    policy whose observation / action spaces differ from this environment's."""
    base_checkpoint: str = ""
    """Checkpoint folder name under ``base_run/checkpoints`` to load; '' = the run's latest checkpoint."""
    residual_scale: float = 0.1
    """Factor on the residual action (in [-1, 1]) before it is added to the base action (ResiP: ``action_scale:
    0.1`` in the authors' residual configs), so the residual moves the action by at most this much."""
    residual_sees_base: bool = True
    """Feed the base action to the residual policy next to the observation features (ResiP: the residual's input
    is the state concatenated with the base action)."""
    residual_init_scale: float = 0.0
    """Factor on the orthogonally initialised weights (and zero biases) of the residual's mean output layer; 0 =
    the residual starts at exactly 0, so the agent starts as the base policy (ResiP's configs: ``action_head_std:
    0.0``; its code's default is 0.01). For SAC the log-std outputs keep their usual initialisation."""
    learner: str = "sac"
    """Off-policy learner of the residual: 'sac' (stochastic tanh-Gaussian residual with entropy bonus; closest to
    ResiP's Gaussian PPO residual) or 'drqv2' (deterministic residual + scheduled noise). Deviation: ResiP uses PPO."""
    stddev_schedule: str = "linear(1.0,0.1,500000)"
    """``learner='drqv2'`` only: exploration / smoothing std of the residual, in residual units (the executed action
    moves by ``residual_scale`` times this); DrQ-v2's medium-task schedule. Unused by SAC."""

    def __post_init__(self) -> None:
        check_offline_mechanisms(self, "residual", allowed=("critic", "aux"))
        super().__post_init__()
        if self.actor_pre_tanh_penalty > 0:
            raise ConfigError("the residual agent does not support actor_pre_tanh_penalty (its residual actor has "
                              "no pre-tanh penalty); set it to 0")
        if self.learner not in LEARNERS:
            raise ConfigError(f"learner must be one of {list(LEARNERS)}, got {self.learner!r}")
        if not (self.residual_scale > 0 and math.isfinite(self.residual_scale)):
            raise ConfigError(f"residual_scale must be > 0 (ResiP: 0.1), got {self.residual_scale}")
        if not (self.residual_init_scale >= 0 and math.isfinite(self.residual_init_scale)):
            raise ConfigError(f"residual_init_scale must be >= 0 (0 = start exactly at the base policy), got "
                              f"{self.residual_init_scale}")
        if self.log_dormant:
            raise ConfigError("residual does not support log_dormant (the dormant-ratio measurement expects the "
                              "core's actor, not the residual's two-input one); drop it")
        if self.target_augs != 1 or self.loss_augs != 1:
            raise ConfigError("residual does not support target_augs / loss_augs > 1 (DrQ's K / M augmentations: its "
                              "base actions are computed for one copy of the batch); set both to 1")
        if self.compile:
            raise ConfigError("residual does not support compile=True (its losses read the batch's base actions "
                              "outside the compiled region); drop --agent.compile")


def preset(env_id: str, obs: str = "pixels") -> dict:
    """Residual RL's overrides: the learner's published values -- DrQ's pixel-SAC values, or state SAC's
    (``sac.STATE_OVERRIDES``) for ``obs='state'``. ResiP's own values are the config's defaults."""
    return {**sac_preset(env_id), **(STATE_OVERRIDES if obs == "state" else {})}


# ---------------------------------------------------------------------------------------------------------- base


def load_base_policy(run_dir: str | Path, observation_space: gym.Space, action_space: gym.Space,
                     device: str | torch.device = "cpu", checkpoint: str = "") -> BCAgent:
    """The BC policy of the pixelrl run folder ``run_dir``, frozen (no grad, eval mode), on ``device``.

    Raises ConfigError when ``run_dir`` is empty, missing, not a run folder, a run of another agent, without a
    checkpoint, or holds a policy for other observation / action spaces; CorruptFileError (naming the file) when
    its ``config.json`` or checkpoint is unreadable, truncated or corrupt. Nothing is half-loaded.
    """
    hint = "pass the run folder of a BC policy: --agent.base-run runs/<bc run> (train one with `pixelrl train " \
           "--agent bc --dataset <data>`)"
    if not str(run_dir):
        raise ConfigError(f"the residual agent needs a frozen base policy and base_run is not set; {hint}")
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"base_run {run} does not exist or is not a folder; {hint}")
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"base_run {run} is not a pixelrl run folder (no config.json); {hint}")
    try:
        doc = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(cfg_path, f"unreadable run config ({e})") from None
    if not isinstance(doc, dict):
        raise CorruptFileError(cfg_path, f"expected a JSON object, got {type(doc).__name__}")
    name = doc.get("agent_name")
    if name != "bc":
        raise ConfigError(f"base_run {run} is a run of agent {name!r}, not a BC policy ('bc'); {hint}")
    bc_cfg = from_dict(BCConfig, doc.get("agent") or {}, where=f"{cfg_path} agent")
    from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint

    ckpt_dir = run / "checkpoints"
    ckpt = (ckpt_dir / checkpoint) if checkpoint else latest_checkpoint(ckpt_dir)
    if ckpt is None:
        raise ConfigError(f"base_run {run} has no checkpoint yet (no {ckpt_dir}/latest.json); train the BC policy "
                          "first or point base_run at a finished run")
    if not ckpt.is_dir():
        raise ConfigError(f"base_checkpoint {checkpoint!r} is not a checkpoint of {run}: {ckpt} does not exist")
    state = load_checkpoint(ckpt)
    agent_state = state.get("agent") if isinstance(state, dict) else None
    if not isinstance(agent_state, dict):
        raise CorruptFileError(ckpt / "state.json", "the checkpoint holds no agent state")
    base = BCAgent(observation_space, action_space, bc_cfg, device)
    try:
        base.load_state_dict(agent_state)
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"the BC policy in {ckpt} does not fit this environment (observation space {observation_space}, action "
            f"space {action_space}): {first}. Train the base policy on the same env, observation type, image size "
            "and frame stack") from None
    return freeze(base)


def freeze(base: BCAgent) -> BCAgent:
    """Turn off gradients of the base policy's encoder and actor, put them in eval mode, drop its optimizer state."""
    for module in (base.encoder, base.actor):
        module.requires_grad_(False)
        module.eval()
    base.opt.state.clear()
    return base


# ---------------------------------------------------------------------------------------------------------- actor


class ResidualActor(nn.Module):
    """The residual policy: trunk ``Linear(repr_dim -> feature_dim) -> LayerNorm -> tanh`` on the observation
    features, then (with ``base_input``) the base action concatenated, then the learner's policy MLP (``hidden_dim``
    x2, ReLU) to a tanh-bounded residual in (-1, 1)^A: DrQ-v2's deterministic :class:`~pixelrl.nets.actor.Actor`
    head, or SAC's :class:`~pixelrl.nets.gaussian_actor.GaussianActor` head (``gaussian=True``). The base action
    enters after the trunk so that it is not drowned among thousands of pixel features.

    The mean rows of the last layer are multiplied by ``init_scale`` (0: the residual's mean is exactly 0).
    """

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int, *, base_input: bool,
                 init_scale: float, gaussian: bool, log_std_min: float = -10.0, log_std_max: float = 2.0) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.base_input = base_input
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.trunk.apply(weight_init)
        in_dim = feature_dim + (action_dim if base_input else 0)
        head = (GaussianActor(in_dim, action_dim, in_dim, hidden_dim, log_std_min, log_std_max) if gaussian
                else Actor(in_dim, action_dim, in_dim, hidden_dim))
        head.trunk = nn.Identity()  # the trunk is ours (above); the head's MLP takes [trunk(feat), a_base]
        self.head = head
        last = head.policy[-1]
        with torch.no_grad():  # rows [:A] are the mean (SAC's layer also outputs the log std in rows [A:])
            last.weight[:action_dim].mul_(init_scale)
            last.bias[:action_dim].mul_(init_scale)

    def _input(self, feat: torch.Tensor, base_action: torch.Tensor | None) -> torch.Tensor:
        h = self.trunk(feat)
        if not self.base_input:
            return h
        if base_action is None:  # a caller that only needs the net's shape and cost (the precision probe)
            base_action = h.new_zeros(h.shape[0], self.action_dim)
        return torch.cat([h, base_action.to(h.dtype)], dim=-1)

    def forward(self, feat: torch.Tensor, base_action: torch.Tensor | None = None) -> torch.Tensor:
        """The residual's mean ``[B, A]`` in (-1, 1) (DrQ-v2: ``tanh(mu)``; SAC: ``tanh(mean)``). ``base_action``
        None = a zero base action: the agent always passes the real one; generic callers that run ``actor(feat)``
        on the core's one-input actor (``precision='auto'``'s timing probe) get a pass of the same cost."""
        return self.head(self._input(feat, base_action))

    def sample(self, feat: torch.Tensor, base_action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAC head only: a reparameterised residual sample in (-1, 1) and its ``log pi`` ``[B, 1]``."""
        return self.head.sample(self._input(feat, base_action))


# ---------------------------------------------------------------------------------------------------------- agent


class ResidualAgent:
    """Residual RL agent: ``ResidualAgent(obs_space, action_space, cfg, device)`` builds the variant for
    ``cfg.learner`` (a subclass of this class and of :class:`SACAgent` or :class:`DrQv2Agent`), with the usual
    ``act`` / ``update`` / ``state_dict`` API.

    Attributes besides the learner's: ``base`` (the frozen :class:`BCAgent`), ``residual_scale``. ``base_policy=``
    gives an already loaded BC agent instead of reading ``cfg.base_run`` (it is frozen here).
    """

    cfg: ResidualConfig
    base: BCAgent

    def __new__(cls, observation_space=None, action_space=None, cfg=None, device="cpu", **kwargs):
        if cls is ResidualAgent:
            cfg = cfg if cfg is not None else ResidualConfig()
            if not isinstance(cfg, ResidualConfig):
                raise ConfigError(f"ResidualAgent needs a ResidualConfig, got {type(cfg).__name__}")
            cls = _ResidualSAC if cfg.learner == "sac" else _ResidualDrQv2
        return object.__new__(cls)

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: ResidualConfig | None = None,
                 device: str | torch.device = "cpu", *, base_policy: BCAgent | None = None,
                 critic_head: QHead | None = None) -> None:
        cfg = cfg if cfg is not None else ResidualConfig()
        if not isinstance(cfg, ResidualConfig):
            raise ConfigError(f"ResidualAgent needs a ResidualConfig, got {type(cfg).__name__}")
        if base_policy is None:
            base_policy = load_base_policy(cfg.base_run, observation_space, action_space, device,
                                           cfg.base_checkpoint)
        elif not isinstance(base_policy, BCAgent):
            raise ConfigError(f"base_policy must be a BCAgent, got {type(base_policy).__name__}")
        elif base_policy.action_dim != int(np.prod(action_space.shape)):
            raise ConfigError(f"base_policy acts in {base_policy.action_dim} dimensions, the action space has "
                              f"{action_space.shape}")
        self.base = freeze(base_policy)
        self.residual_scale = float(cfg.residual_scale)
        self._base_obs_action: torch.Tensor | None = None
        super().__init__(observation_space, action_space, cfg, device,  # type: ignore[call-arg]
                         critic_head=critic_head)
        self.register_state("residual_base", self._base_state, self._load_base_state)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ networks
    def _build_actor(self, repr_dim: int) -> nn.Module:
        cfg = self.cfg
        return ResidualActor(repr_dim, self.action_dim, cfg.feature_dim, cfg.hidden_dim,  # type: ignore[attr-defined]
                             base_input=cfg.residual_sees_base, init_scale=cfg.residual_init_scale,
                             gaussian=cfg.learner == "sac", log_std_min=cfg.log_std_min, log_std_max=cfg.log_std_max)

    @torch.no_grad()
    def base_actions(self, obs) -> torch.Tensor:
        """The frozen base policy's (mean) actions ``[B, A]`` float32 for a batch of raw observations (uint8 pixels,
        float states or a dict of those); the base normalises states with its own dataset statistics."""
        base = self.base
        x = obs.float() if (base.obs_kind == "state" and obs.dtype != torch.float32) else obs
        with self._autocast():  # type: ignore[attr-defined]
            return base.actor(base.encoder(base._norm_obs(x))).float()

    def combine(self, base_action: torch.Tensor, residual: torch.Tensor, *, straight_through: bool = False):
        """Executed action ``clip(a_base + residual_scale * a_res, -1, 1)``; ``straight_through``: the clip passes the
        gradient unchanged (DrQ-v2's clamp in its losses) so a saturated action still teaches the residual."""
        a = base_action.float() + self.residual_scale * residual.float()
        return clamp_straight_through(a) if straight_through else a.clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs, *, step: int, eval_mode: bool) -> np.ndarray:
        """Action for one unbatched observation: float32 ``[A]`` in [-1, 1], ``clip(a_base + scale * a_res)``.

        Evaluation: the residual's mean. Training: a uniform residual in [-1, 1] for the first ``num_seed_steps``
        agent steps, then a sample of the residual policy (SAC) or its mean plus the scheduled noise (DrQ-v2).
        """
        base = self.base_actions(self.base._obs_to_tensor(obs))
        if not eval_mode and step < self.cfg.num_seed_steps:
            res = torch.empty(self.action_dim).uniform_(-1.0, 1.0).to(base.device).unsqueeze(0)
        else:
            x = self._obs_to_tensor(obs)  # type: ignore[attr-defined]
            self.actor.eval()
            with self._autocast():  # type: ignore[attr-defined]
                feat = self.encoder(x)
                res = self._act_residual(feat, base, step, eval_mode)
            self.actor.train()
        return self.combine(base, res)[0].cpu().numpy().astype(np.float32)

    def _act_residual(self, feat, base, step, eval_mode):  # pragma: no cover - defined by the variants
        raise NotImplementedError

    # ------------------------------------------------------------------ update
    def _batch_base_actions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Base actions of ``batch.obs`` (kept for the actor step) and ``batch.next_obs``."""
        self._base_obs_action = self.base_actions(batch.obs)
        return self._base_obs_action, self.base_actions(batch.next_obs)

    def _obs_base_action(self) -> torch.Tensor:
        if self._base_obs_action is None:
            raise RuntimeError("the actor step needs the batch's base actions, computed in critic_target")
        return self._base_obs_action

    def _residual_metrics(self, res: torch.Tensor, metrics: dict) -> dict:
        metrics["residual_abs"] = (self.residual_scale * res.detach().float()).abs().mean()
        return metrics

    # ------------------------------------------------------------------ checkpoint state
    def _base_state(self) -> dict:
        b = self.base
        return {"encoder": b.encoder.state_dict(), "actor": b.actor.state_dict(), "obs_norm": b._obs_norm_state()}

    def _load_base_state(self, state: dict) -> None:
        b = self.base
        try:
            b.encoder.load_state_dict(state["encoder"])
            b.actor.load_state_dict(state["actor"])
        except (RuntimeError, KeyError) as e:
            raise ConfigError(f"the checkpoint's base policy does not fit the BC policy of base_run "
                              f"{self.cfg.base_run!r} (another architecture?): {str(e).splitlines()[0]}") from None
        b._load_obs_norm_state(state.get("obs_norm", {}))


class _ResidualSAC(ResidualAgent, SACAgent):
    """Residual trained by SAC: tanh-Gaussian residual, entropy bonus in residual units, learned temperature."""

    def critic_target(self, batch: Batch, next_feat: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """``r + discount * (min_i Qbar_i(s', a') - alpha log pi(a_res'|s'))``, ``a' = clip(a_base' + scale a_res')``
        (under no_grad; also computes the batch's base actions for the actor step)."""
        _, base_next = self._batch_base_actions(batch)
        res, log_prob = self.actor.sample(next_feat, base_next)
        a = self.combine(base_next, res)
        target_q = self._target_min(self.target_critic.values(next_feat, self.action_encoder(a)))
        return batch.reward + batch.discount * self._soft_value(target_q, log_prob)

    def _act_residual(self, feat, base, step, eval_mode):
        return self.actor(feat, base) if eval_mode else self.actor.sample(feat, base)[0]

    def _actor_loss(self, feat: torch.Tensor, std: torch.Tensor, step: int = 0):
        """``E[alpha log pi(a_res|s) - min_i Q_i(s, clip(a_base + scale a_res))]`` on detached features (``mean_i``
        with ``actor_q='mean'``)."""
        base = self._obs_base_action()
        with self._autocast():
            res, log_prob = self.actor.sample(feat, base)
            a = self.combine(base, res, straight_through=True)
            q = self._actor_q(self.critic.values(feat, self.action_encoder(a))).float()
            loss = (self.alpha * log_prob - q).mean()
        metrics = self._residual_metrics(res, {"actor_loss": loss.detach(), "actor_entropy": -log_prob.detach().mean()})
        return self._add_actor_aux(loss, metrics, feat, step)


class _ResidualDrQv2(ResidualAgent, DrQv2Agent):
    """Residual trained by DrQ-v2: deterministic tanh residual, scheduled Gaussian noise in residual units."""

    def critic_target(self, batch: Batch, next_feat: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """``r + discount * min_i Qbar_i(s', clip(a_base' + scale * a_res'))``, ``a_res'`` with clipped noise."""
        _, base_next = self._batch_base_actions(batch)
        res = sample_action(self.actor(next_feat, base_next), std, clip=self.cfg.stddev_clip)
        a = self.combine(base_next, res)
        target_q = self._target_min(self.target_critic.values(next_feat, self.action_encoder(a)))
        return batch.reward + batch.discount * target_q

    def _act_residual(self, feat, base, step, eval_mode):
        mu = self.actor(feat, base)
        return mu if eval_mode else sample_action(mu, self.stddev(step), clip=None)

    def _actor_loss(self, feat: torch.Tensor, std: torch.Tensor, step: int = 0):
        """``-min_i Q_i(s, clip(a_base + scale * a_res))``, ``a_res`` = residual mean + clipped noise (``mean_i`` with
        ``actor_q='mean'``)."""
        base = self._obs_base_action()
        with self._autocast():
            res = sample_action(self.actor(feat, base), std, clip=self.cfg.stddev_clip)
            a = self.combine(base, res, straight_through=True)
            q = self._actor_q(self.critic.values(feat, self.action_encoder(a))).float()
            loss = -q.mean()
        metrics = self._residual_metrics(res, {"actor_loss": loss.detach()})
        return self._add_actor_aux(loss, metrics, feat, step)
