"""DrM (Xu et al., ICLR 2024, "DrM: Mastering Visual RL through Dormant Ratio Minimization") as mechanisms.

DrM keeps DrQ-v2 and steers it with one signal: the dormant ratio ``beta`` of the actor
(:mod:`pixelrl.mechanisms.dormant`), measured after every update on that update's encoder features. Three
mechanisms read it; each is switched on by a selector of the agent config and can be combined with others:

1. Dormant-ratio-guided perturbation (paper section 4.1; ``perturb='dormant'``). Every ``perturb_interval``
   agent steps, with ``alpha = clip(1 - k * beta, alpha_min, alpha_max)``, every Linear layer of the actor, the
   critic, the target critic and the value net (if any) is shrunk and perturbed,
   ``theta <- alpha * theta + (1 - alpha) * theta_fresh``, and all optimizer state is dropped. The conv encoder is
   not perturbed (the authors' perturb function touches only ``nn.Linear`` parameters, and their encoder has
   none). As in the authors' code the target critic gets its *own* fresh draw (it is not re-synced to the
   critic), and the encoder's Adam moments are reset too.

2. Awakened exploration (section 4.2; ``exploration='awakened'``). The exploration std (also used for
   target-policy smoothing and the actor-update noise, as in DrQ-v2) is

       sigma(beta) = sigma_max / (1 + exp(-10 (beta - 0.2))),   sigma_max = 1 (DrM's code; MENTOR's is 0.8)

   until ``beta`` first drops below 0.2 after the seed steps (the agent is "awake"); from then on it is
   ``max(sigma(beta), schedule(step - awaken_step))`` where ``schedule`` is the std the agent had before DrM was
   installed (DrQ-v2's linear decay, restarted at the awakening step).

3. Dormant-ratio-guided exploitation (section 4.3; ``value_blend='expectile'``). A value net ``V(s)`` on the
   (detached) encoder features is trained by expectile regression on the online critic's ``min_i Q_i(s, a)`` at
   the batch actions,

       L_V = E[ |tau - 1(Q - V < 0)| (Q - V)^2 ],   tau = 0.9,

   and blended into the TD target with a weight that falls as the actor wakes up:

       y = r + gamma^n [ lambda V(s') + (1 - lambda) min_i Qbar_i(s', a') ],
       lambda = lambda_max / (1 + exp(50 (beta - 0.2)))      (Meta-World: constant lambda = 0.5).

   Implemented as ``y = (1 - lambda) y_base + lambda (r + gamma^n V(s'))`` around whatever ``critic_target`` is
   installed (identical for DrQ-v2's target, and composes with other target transforms).

``install(agent)`` wires the selected pieces through the agent's hooks only (``update_hooks``, ``stddev``,
``critic_target``, ``add_aux_loss``, ``register_state``, ``reset_optimizer_state``); it never imports the agent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pixelrl.errors import ConfigError
from pixelrl.mechanisms.dormant import MODES, dormant_tracker, perturb_alpha, shrink_perturb_
from pixelrl.nets.layers import mlp, weight_init

__all__ = [
    "DrMConfig",
    "ALPHA_MAX_BY_DOMAIN",
    "DRM_TASK_SETTINGS",
    "alpha_max_for",
    "task_settings",
    "awakened_std",
    "blend_lambda",
    "expectile_loss",
    "ValueNet",
    "install",
]


@dataclass(frozen=True)
class DrMConfig:
    """DrM's knobs. Defaults are the authors' DMC configuration (``cfgs/agent/drm.yaml``); step counts are agent
    steps (one policy decision = action_repeat frames)."""

    dormant_threshold: float = 0.025
    """A unit is dormant when its mean |activation| over the batch is below this fraction of its layer's mean."""
    dormant_mode: str = "drm"
    """Which activation is measured: 'drm' (the authors' code: after an activation that directly follows the
    layer, else the layer output), 'pre' (every Linear output) or 'post' (after the following activation, past a
    LayerNorm: the ReDo definition). See pixelrl.mechanisms.dormant."""
    target_dormant_ratio: float = 0.2
    """beta_hat: the dormant ratio at which the exploration std and the value-blend weight switch, and below which
    the agent counts as awake."""
    perturb_interval: int = 100_000
    """Agent steps between two perturbations (the authors' ``dormant_perturb_interval``; their update is called with
    the agent step, so 100k agent steps = 200k frames at action repeat 2)."""
    perturb_rate: float = 2.0
    """k in alpha = clip(1 - k * beta, alpha_min, alpha_max)."""
    alpha_min: float = 0.2
    """Smallest shrink factor (the hardest reset)."""
    alpha_max: float = 1.0
    """Largest shrink factor (1 = a fully awake actor is left untouched). The ``drm`` preset sets it per task from
    the authors' task files (DRM_TASK_SETTINGS: 1.0 medium DMC tasks, 0.6 dog_run/stand/walk and humanoid_run,
    0.9 dog_trot, humanoid_stand/walk, manipulator, acrobot_swingup_sparse; 0.95 Meta-World). The paper's text
    gives 0.6 for all dog and humanoid tasks."""
    awaken_std_max: float = 1.0
    """sigma_max of the awakened std sigma_max * sigmoid(slope * (beta - beta_hat)). 1.0 is DrM's code for every
    domain (``1 / (1 + exp(-temp * (beta - beta_hat)))``: ``dormant_stddev`` in agents/drm.py and drm_mw.py,
    ``stddev`` in drm_adroit.py, at the repository's head); the repository's first commit had 0.8 in agents/drm.py, changed to 1
    the next day. 0.8 is MENTOR's value (``mentor.stddev_scale``): pass 0.8 to reproduce that variant."""
    awaken_slope: float = 10.0
    """Slope of the awakened-exploration sigmoid in beta."""
    expectile: float = 0.9
    """tau of the value net's expectile regression on min Q (the authors' Adroit config uses 0.7)."""
    lambda_max: float = 0.6
    """lambda_hat: the value-blend weight is lambda_hat / (1 + exp(slope * (beta - beta_hat)))."""
    lambda_slope: float = 50.0
    """Slope of the value-blend weight in beta."""
    lambda_const: float = 0.0
    """If > 0, a constant value-blend weight instead of the dormant-ratio formula (paper, Meta-World: 0.5)."""

    def __post_init__(self) -> None:
        if self.dormant_mode not in MODES:
            raise ConfigError(f"drm.dormant_mode must be one of {list(MODES)}, got {self.dormant_mode!r}")
        if not 0.0 <= self.dormant_threshold < 1.0:
            raise ConfigError(f"drm.dormant_threshold must be in [0, 1), got {self.dormant_threshold}")
        if not 0.0 < self.target_dormant_ratio < 1.0:
            raise ConfigError(f"drm.target_dormant_ratio must be in (0, 1), got {self.target_dormant_ratio}")
        if self.perturb_interval < 1:
            raise ConfigError(f"drm.perturb_interval must be >= 1 agent step, got {self.perturb_interval}")
        if not 0.0 <= self.alpha_min <= self.alpha_max <= 1.0:
            raise ConfigError(
                f"need 0 <= drm.alpha_min <= drm.alpha_max <= 1, got alpha_min={self.alpha_min}, "
                f"alpha_max={self.alpha_max}"
            )
        for name in ("perturb_rate", "awaken_slope", "lambda_slope"):
            if getattr(self, name) < 0:
                raise ConfigError(f"drm.{name} must be >= 0, got {getattr(self, name)}")
        if not self.awaken_std_max > 0:
            raise ConfigError(f"drm.awaken_std_max must be > 0, got {self.awaken_std_max}")
        if not 0.0 < self.expectile < 1.0:
            raise ConfigError(f"drm.expectile must be in (0, 1), got {self.expectile}")
        if not 0.0 <= self.lambda_max <= 1.0:
            raise ConfigError(f"drm.lambda_max must be in [0, 1], got {self.lambda_max}")
        if not 0.0 <= self.lambda_const <= 1.0:
            raise ConfigError(f"drm.lambda_const must be in [0, 1] (0 = use the dormant-ratio formula), got "
                              f"{self.lambda_const}")


ALPHA_MAX_BY_DOMAIN: dict[str, float] = {
    "dmc/dog": 0.6,
    "dmc/humanoid": 0.6,
    "dmc/manipulator": 0.9,
    "metaworld": 0.95,
    "adroit": 0.9,
}
"""The paper's alpha_max per domain (Adroit: the authors' ``drm_adroit.yaml``; Meta-World: ``drm_mw.yaml``), used
for a task without its own entry in :data:`DRM_TASK_SETTINGS`; every other task uses 1.0."""

DRM_TASK_SETTINGS: dict[str, dict[str, float]] = {
    # XuGW-Kevin/DrM cfgs/task/<task>.yaml at its head, ``agent: {max_perturb_factor, target_lambda}``
    # (MENTOR's DMC task files carry the same values). Where they differ from the paper's per-domain alpha_max
    # (dog_trot, humanoid_stand, humanoid_walk: 0.9, not 0.6) the files win; ``--agent.drm.alpha-max`` sets any.
    **{t: {"alpha_max": 1.0, "lambda_max": 0.6} for t in (
        "acrobot_swingup", "cartpole_swingup_sparse", "cheetah_run", "hopper_hop", "quadruped_run",
        "quadruped_walk", "reacher_easy", "reacher_hard", "walker_run")},
    **{t: {"alpha_max": 0.9, "lambda_max": 0.6} for t in (
        "acrobot_swingup_sparse", "dog_trot", "humanoid_stand", "humanoid_walk", "manipulator_bring_ball")},
    **{t: {"alpha_max": 0.6, "lambda_max": 0.6} for t in ("dog_run", "dog_stand", "dog_walk", "humanoid_run")},
}
"""DMC task -> DrM's per-task ``alpha_max`` and ``lambda_max`` (lambda_hat: 0.6 in every file)."""


def _dmc_task(env_id: str) -> str | None:
    """'dmc/dog-run' -> 'dog_run'; None for another suite."""
    suite, _, task = env_id.strip().lower().rpartition("/")
    return task.replace("-", "_") if suite == "dmc" else None


def task_settings(env_id: str) -> dict[str, float]:
    """DrM's per-task ``{'alpha_max', 'lambda_max'}`` for ``env_id``: the task file's values, else alpha_max by
    domain (:func:`alpha_max_for`) and lambda_max 0.6."""
    return dict(DRM_TASK_SETTINGS.get(_dmc_task(env_id) or "", {"alpha_max": alpha_max_for(env_id),
                                                                  "lambda_max": 0.6}))


def alpha_max_for(env_id: str) -> float:
    """alpha_max for an env id: the task's file value ('dmc/dog-trot' -> 0.9), else by domain ('dmc/dog-foo' -> 0.6,
    'metaworld/...' -> 0.95), else 1.0 ('dmc/cartpole-swingup' or '')."""
    task = _dmc_task(env_id)
    if task in DRM_TASK_SETTINGS:
        return DRM_TASK_SETTINGS[task]["alpha_max"]
    env = env_id.strip().lower()
    suite, _, task = env.rpartition("/")
    if suite in ALPHA_MAX_BY_DOMAIN:
        return ALPHA_MAX_BY_DOMAIN[suite]
    domain = re.split(r"[-_]", task, maxsplit=1)[0]
    return ALPHA_MAX_BY_DOMAIN.get(f"{suite}/{domain}", 1.0)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def awakened_std(beta: float, std_max: float = 1.0, slope: float = 10.0, target: float = 0.2) -> float:
    """sigma(beta) = std_max / (1 + exp(-slope (beta - target))): std_max / 2 at beta = target, -> std_max as beta
    -> 1."""
    return std_max * _sigmoid(slope * (beta - target))


def blend_lambda(beta: float, lambda_max: float = 0.6, slope: float = 50.0, target: float = 0.2) -> float:
    """lambda(beta) = lambda_max / (1 + exp(slope (beta - target))): lambda_max/2 at beta = target, -> 0 when the
    actor is very dormant (trust the critic's exploration target), -> lambda_max when it is awake."""
    return lambda_max * _sigmoid(-slope * (beta - target))


def expectile_loss(v: torch.Tensor, q: torch.Tensor, tau: float) -> torch.Tensor:
    """mean(|tau - 1(q - v < 0)| (q - v)^2): weight tau where V under-estimates Q, 1 - tau where it over-estimates
    (tau > 0.5 pulls V towards an upper expectile of Q)."""
    diff = q - v
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.pow(2)).mean()


class ValueNet(nn.Module):
    """DrM's V(s): ``Linear(repr_dim -> feature_dim) -> LayerNorm -> tanh`` then an MLP (``hidden_dim`` x2, ReLU)
    to one output -- the critic's architecture without the action (the authors' ``VNetwork``)."""

    def __init__(self, repr_dim: int, feature_dim: int = 50, hidden_dim: int = 1024) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.v = mlp(feature_dim, hidden_dim, 1, depth=2)
        self.apply(weight_init)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """``[B, 1]``."""
        return self.v(self.trunk(feat))


class _DrMState:
    """What DrM remembers between updates (saved with the agent: resuming continues exactly)."""

    def __init__(self) -> None:
        self.awaken_step = -1  # agent step at which beta first fell below beta_hat; -1 = not yet
        self.last_perturb_step = 0
        self.num_perturbs = 0

    def state_dict(self) -> dict[str, int]:
        return {"awaken_step": self.awaken_step, "last_perturb_step": self.last_perturb_step,
                "num_perturbs": self.num_perturbs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.awaken_step = int(state["awaken_step"])
        self.last_perturb_step = int(state["last_perturb_step"])
        self.num_perturbs = int(state["num_perturbs"])


def install(agent: Any) -> None:
    """Install the DrM pieces that ``agent.cfg`` selects (``exploration='awakened'``, ``perturb='dormant'``,
    ``value_blend='expectile'``) and the dormant-ratio measurement they need (also installed alone by
    ``log_dormant``: then ``dormant_ratio`` is only logged)."""
    cfg = agent.cfg
    d: DrMConfig = cfg.drm
    tracker = dormant_tracker(agent, threshold=d.dormant_threshold, mode=d.dormant_mode)
    awakened = cfg.exploration == "awakened"
    perturb = cfg.perturb == "dormant"
    blend = cfg.value_blend == "expectile"
    if not (awakened or perturb or blend):
        return
    st = _DrMState()
    seed_steps = int(getattr(cfg, "num_seed_steps", 0))

    # ---- awakened exploration: wrap whatever std is installed
    if awakened:
        base_stddev = agent.stddev

        def stddev(step: int) -> float:
            s = awakened_std(tracker.beta, d.awaken_std_max, d.awaken_slope, d.target_dormant_ratio)
            if st.awaken_step >= 0:
                s = max(s, base_stddev(step - st.awaken_step))
            return s

        agent.stddev = stddev

    # ---- expectile value net + blended target. lambda lives in a 0-d tensor updated in place, so a compiled
    # critic loss reads the new value without recompiling.
    vnet: ValueNet | None = None
    lam = torch.zeros((), device=agent.device)

    def current_lambda() -> float:
        if d.lambda_const > 0:
            return d.lambda_const
        return blend_lambda(tracker.beta, d.lambda_max, d.lambda_slope, d.target_dormant_ratio)

    if blend:
        vnet = ValueNet(agent.encoder.repr_dim, cfg.feature_dim, cfg.hidden_dim).to(agent.device)
        lam.fill_(current_lambda())

        def value_loss(inp: Any):
            with torch.no_grad():
                raw = inp.critic_raw
                if raw is None:
                    raw = agent.critic(inp.feat, agent.action_encoder(inp.batch.action))
                q = agent.critic.head.value(raw.detach()).min(dim=0).values.float()
            v = vnet(inp.feat.detach()).float()
            return expectile_loss(v, q, d.expectile), {"v": v.mean()}

        agent.add_aux_loss(value_loss, module=vnet, name="drm_value")
        base_target = agent.critic_target

        def critic_target(batch: Any, next_feat: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
            y = base_target(batch, next_feat, std)
            y_v = batch.reward + batch.discount * vnet(next_feat).to(y.dtype)
            return (1.0 - lam) * y + lam * y_v

        agent.critic_target = critic_target

    # ---- one hook after the measurement (the tracker's hook was appended first, so beta is fresh here)
    def hook(agent: Any, step: int) -> dict[str, float] | None:
        out: dict[str, float] = {}
        beta = tracker.beta
        if awakened and st.awaken_step < 0 and step > seed_steps and beta < d.target_dormant_ratio:
            st.awaken_step = int(step)
            out["drm_awaken_step"] = float(step)
        if blend:
            value = current_lambda()
            lam.fill_(value)
            out["drm_lambda"] = value
        if perturb and step // d.perturb_interval > st.last_perturb_step // d.perturb_interval:
            alpha = perturb_alpha(beta, d.alpha_max, d.alpha_min, d.perturb_rate)
            for net in (agent.actor, agent.critic, agent.target_critic, vnet):
                if net is not None:
                    shrink_perturb_(net, alpha)
            agent.reset_optimizer_state("all")
            st.last_perturb_step = int(step)
            st.num_perturbs += 1
            out["drm_perturb_alpha"] = alpha
        return out or None

    agent.update_hooks.append(hook)

    def load(state: dict[str, Any]) -> None:
        st.load_state_dict(state)
        lam.fill_(current_lambda() if blend else 0.0)  # the tracker's beta is restored before (registered first)

    agent.register_state("drm", st.state_dict, load)
