"""TACO: temporal latent-action-driven contrastive loss (Zheng et al., NeurIPS 2023, "TACO: Temporal Latent
Action-Driven Contrastive Loss for Visual Reinforcement Learning").

TACO learns a state representation and an *action* representation together by making the representation of the
current state paired with the next K actions predictive of the representation of the state K steps later.

Pieces (names as in the paper / the authors' code)::

    u_t     = phi(a_t)                       action encoder: Linear(|A|, 64) -> tanh -> Linear(64, L)
                                             L = floor(1.25 |A|) + 1 (the authors' heuristic)
    U_t     = psi([u_t, ..., u_{t+K-1}])     sequence encoder: Linear(K L, K L) -> LayerNorm -> tanh
    z_t     = proj_s(e(o_t))                 e: the agent's conv encoder; proj_s: Linear(repr, 50) -> LayerNorm -> tanh
    g_t     = proj_sa([z_t, U_t])            Linear(50 + K L, 1024) -> ReLU -> Linear(1024, 50)
    h_{t+K} = sg(proj_s(e(o_{t+K})))         target side: stop-gradient (the authors' ``ema=True`` is only no_grad)

    logits_ij = g_i^T W h_j   (W: learned 50 x 50 bilinear similarity, W ~ U[0, 1) as in CURL)
    L_TACO   = CE(logits - rowmax, labels = diagonal)                   InfoNCE over the batch (B - 1 negatives)
    L_CURL   = InfoNCE(z_t, sg(proj_s(e(aug'(o_t)))), same W)           two augmentations of the same frame
    L_reward = MSE(reward_head([z_t, U_t]), R_t),  R_t = sum_{k<n} gamma^k r_{t+k}   (the batch's n-step reward)

    L_aux = taco_weight * L_TACO + curl_weight * L_CURL + reward_weight * L_reward     (weights 1, 1, 1)

The critic takes the latent action: ``Q(s, phi(a))`` everywhere — in the TD target (online ``phi``, no target
copy, as the reference), in the critic loss, and in the actor loss, where the gradient flows through ``phi`` into
the actor (the actor optimizer steps only the actor). The agent builds ``phi`` with :func:`make_action_encoder`
before its critic (``agent.action_encoder``) and trains it with ``critic_opt``.

Where it plugs in: :func:`install` asks the replay for the K-step action window (``agent.batch_extras``: the
replay then returns ``a_t .. a_{t+K-1}`` and a mask, see :meth:`pixelrl.data.replay.ReplayBuffer.sample`) and
registers ``L_aux`` through ``agent.add_aux_loss`` with a :class:`TACOModule` holding ``proj_s``, ``psi``,
``proj_sa``, the reward head and ``W``. K and the agent's n-step return are independent, as in the reference
(its walker tasks: n = 1, K = 3): when K = n the target ``o_{t+K}`` is the batch's ``next_obs`` and its features
are the agent's ``next_feat`` (same encoder, no gradient); otherwise the replay also returns ``o_{t+K}``
(``extras["seq_next_obs"]``), encoded under no_grad from a fresh augmentation. The reward head predicts the
batch's n-step reward, as the reference (with n = 1: the one-step reward, from the K-step action window).

The double-optimizer trap: the authors' agent has ``encoder_opt`` (encoder + action encoder, stepped on the critic
loss) *and* ``taco_opt`` over ``TACO.parameters()`` -- which include the encoder and the action encoder again,
because the TACO module holds references to them -- stepped on the TACO loss after the critic and actor updates.
So the encoder and the action encoder get two Adam steps per update from two sets of moments (about twice the
intended step size). By default (``optimizer='joint'``) ``L_aux`` is added to the critic loss: one backward and one
``critic_opt`` step per update moves the encoder, the critic, ``phi`` and the TACO module once each.
``optimizer='separate'`` reproduces the reference instead (see :class:`TACOConfig`), so the published curve can be
checked against both.

Deviations from the reference in the default ``'joint'`` mode (each also named on the config field it concerns, or
in ``docs/agents/taco.md``):

* one optimizer step on the encoder per update (above); the TACO loss is computed with the update's pre-step
  parameters, not after the critic and actor steps;
* the anchor view ``aug(o_t)`` is the critic's augmented observation (the reference draws a third augmentation and
  runs the encoder on it again with gradient), and, when K = n, the target view is the critic's ``next_obs``
  augmentation; CURL's positive is a fresh augmentation of ``o_t`` as in the reference;
* the reference only samples windows that fit inside the episode; our replay also returns windows cut by the
  episode end (zero-padded, ``seq_mask``); those rows are left out of ``L_TACO`` and ``L_reward`` (they stay in
  CURL and as negatives);
* logits are computed in fp32 under bf16 autocast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pixelrl.errors import ConfigError
from pixelrl.nets.augment import random_shift_index
from pixelrl.nets.layers import weight_init

__all__ = [
    "TACOConfig",
    "ActionEncoder",
    "TACOModule",
    "latent_action_dim",
    "make_action_encoder",
    "bilinear_logits",
    "info_nce",
    "info_nce_from_logits",
    "taco_loss",
    "install",
]


@dataclass(frozen=True)
class TACOConfig:
    """TACO auxiliary loss (used when ``'taco'`` is in the agent's ``aux``). Defaults are the authors' (K = 3,
    all three terms with weight 1). The paper trains with batch 1024: set the agent's ``batch_size``."""

    multistep: int = 3
    """K, the number of actions between the anchor state and the target state (paper and every task file: 3).
    Independent of the agent's ``nstep`` (the authors' walker files: nstep 1, multistep 3): the replay returns the
    K-step window and o_{t+K} besides the n-step transition."""
    latent_action_dim: int = 0
    """Size L of one latent action; 0 uses the authors' rule L = floor(1.25 * |A|) + 1."""
    action_hidden_dim: int = 64
    """Hidden width of the per-action encoder Linear(|A|, h) -> tanh -> Linear(h, L) (reference: 64)."""
    z_dim: int = 0
    """Size of the state projection z and of the bilinear W (z_dim x z_dim); 0 uses the agent's ``feature_dim``
    (reference: feature_dim = 50, W 50 x 50)."""
    proj_hidden_dim: int = 0
    """Hidden width of the state-action projection g and of the reward head; 0 uses the agent's ``hidden_dim``
    (reference: 1024)."""
    taco_weight: float = 1.0
    """Weight of the temporal contrastive (InfoNCE) term."""
    curl: bool = True
    """Add the CURL term: InfoNCE between two augmentations of the same observation (reference: on)."""
    curl_weight: float = 1.0
    """Weight of the CURL term."""
    reward_prediction: bool = True
    """Add the reward-prediction term: MSE of a head on [z_t, U_t] to the batch's n-step discounted reward
    (reference: on)."""
    reward_weight: float = 1.0
    """Weight of the reward-prediction term."""
    optimizer: str = "joint"
    """How the TACO loss is optimised. 'joint' (default; a deviation from the authors' code, kept on purpose): added
    to the critic loss, one backward and one step of the critic optimizer per update, so the encoder and action
    encoder move once per update with one set of Adam moments -- the reference's second step on them comes from
    ``taco_opt`` holding the encoder again through the TACO module, about twice the intended step, which the paper
    does not describe. 'separate': the authors' code --
    after the critic, actor and target updates, the TACO loss is computed again with the updated encoder on fresh
    augmentations of o_t (anchor, with gradient; CURL positive and o_{t+K} target without) and stepped by a second
    Adam (lr = the agent's lr) over the encoder, the action encoder and the TACO module, with moments of its own:
    the encoder and action encoder get two Adam steps per update, as in the published runs."""

    def __post_init__(self) -> None:
        if self.multistep < 1:
            raise ConfigError(f"taco.multistep must be >= 1 (paper: 3), got {self.multistep}")
        if self.action_hidden_dim < 1:
            raise ConfigError(f"taco.action_hidden_dim must be >= 1 (reference: 64), got {self.action_hidden_dim}")
        for name in ("latent_action_dim", "z_dim", "proj_hidden_dim"):
            if getattr(self, name) < 0:
                raise ConfigError(f"taco.{name} must be >= 0 (0 = the default rule), got {getattr(self, name)}")
        if self.optimizer not in ("joint", "separate"):
            raise ConfigError(f"taco.optimizer must be 'joint' or 'separate' (the authors' double step), got "
                              f"{self.optimizer!r}")
        for name in ("taco_weight", "curl_weight", "reward_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"taco.{name} must be a finite number >= 0, got {value}")


# ---------------------------------------------------------------------- action encoder (the critic's input)
def latent_action_dim(action_dim: int, cfg: TACOConfig) -> int:
    """L: ``cfg.latent_action_dim`` if set, else the authors' heuristic ``floor(1.25 * |A|) + 1``."""
    if cfg.latent_action_dim > 0:
        return cfg.latent_action_dim
    return int(1.25 * action_dim) + 1


class ActionEncoder(nn.Module):
    """phi: one action -> latent action, ``Linear(A, h) -> tanh -> Linear(h, L)`` (no output nonlinearity, as the
    reference). Works on any leading shape: ``[..., A] -> [..., L]``."""

    def __init__(self, action_dim: int, latent_dim: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.out_dim = int(latent_dim)
        self.net = nn.Sequential(nn.Linear(action_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, latent_dim))
        self.apply(weight_init)

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        return self.net(action)


def make_action_encoder(action_dim: int, cfg: TACOConfig) -> ActionEncoder:
    """The action encoder the agent puts in front of its critic (``agent.action_encoder``)."""
    return ActionEncoder(action_dim, latent_action_dim(action_dim, cfg), cfg.action_hidden_dim)


# ---------------------------------------------------------------------- InfoNCE with a bilinear similarity
def bilinear_logits(anchors: torch.Tensor, positives: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``logits[i, j] = anchors_i^T W positives_j`` minus each row's max, in fp32 (also under autocast).

    Subtracting the row max (detached) does not change the cross-entropy or its gradient; it keeps the
    exponentials finite.
    """
    with torch.autocast(anchors.device.type, enabled=False):
        logits = anchors.float() @ (W.float() @ positives.float().T)
        return logits - logits.max(dim=1, keepdim=True).values.detach()


def info_nce_from_logits(logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each row against its diagonal entry, averaged over rows (weighted by ``weights`` [B] when
    given: rows of weight 0 do not count; the mean is over the weight sum, 0 if it is 0)."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    if weights is None:
        return F.cross_entropy(logits, labels)
    per_row = F.cross_entropy(logits, labels, reduction="none")
    w = weights.to(per_row.dtype)
    return (per_row * w).sum() / w.sum().clamp_min(1.0)


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, W: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE with a learned bilinear similarity: row ``i``'s positive is ``positives[i]``, the other rows of
    ``positives`` are its negatives. ``anchors``, ``positives``: ``[B, d]``; ``W``: ``[d, d]``."""
    return info_nce_from_logits(bilinear_logits(anchors, positives, W), weights)


# ---------------------------------------------------------------------- the TACO module (aux parameters)
class TACOModule(nn.Module):
    """The parameters TACO adds besides the action encoder: ``proj_s``, the action-sequence encoder ``psi``, the
    state-action projection ``proj_sa``, the reward head and ``W``. Trained by the agent's critic optimizer."""

    def __init__(self, repr_dim: int, latent_dim: int, multistep: int, z_dim: int = 50, hidden_dim: int = 1024,
                 reward_prediction: bool = True) -> None:
        super().__init__()
        seq_dim = latent_dim * multistep
        self.multistep = multistep
        self.proj_s = nn.Sequential(nn.Linear(repr_dim, z_dim), nn.LayerNorm(z_dim), nn.Tanh())
        self.seq_encoder = nn.Sequential(nn.Linear(seq_dim, seq_dim), nn.LayerNorm(seq_dim), nn.Tanh())
        self.proj_sa = nn.Sequential(nn.Linear(z_dim + seq_dim, hidden_dim), nn.ReLU(inplace=True),
                                     nn.Linear(hidden_dim, z_dim))
        self.reward_head = None
        if reward_prediction:
            self.reward_head = nn.Sequential(nn.Linear(z_dim + seq_dim, hidden_dim), nn.ReLU(inplace=True),
                                             nn.Linear(hidden_dim, 1))
        self.apply(weight_init)  # orthogonal Linear weights, zero biases; W below keeps its U[0, 1) init
        self.W = nn.Parameter(torch.rand(z_dim, z_dim))

    def encode_action_seq(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, K, L]`` latent actions -> ``U`` ``[B, K*L]`` (concatenated in time order, then psi)."""
        return self.seq_encoder(latents.reshape(latents.shape[0], -1))


def taco_loss(
    module: TACOModule,
    action_encoder: nn.Module,
    cfg: TACOConfig,
    *,
    feat: torch.Tensor,
    next_feat: torch.Tensor,
    action_seq: torch.Tensor,
    seq_mask: torch.Tensor,
    reward: torch.Tensor,
    pos_feat: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted TACO loss and its terms.

    Args:
        feat: encoder features of the anchor view of ``o_t`` ``[B, repr]`` (with gradient to the encoder).
        next_feat: encoder features of ``o_{t+K}`` ``[B, repr]``; the target side is computed under no_grad.
        action_seq: ``[B, K, A]`` actions ``a_t .. a_{t+K-1}``; ``seq_mask`` ``[B, K]`` 1 inside the episode.
        reward: ``[B, 1]`` the n-step discounted reward the reward head predicts.
        pos_feat: encoder features of a second augmentation of ``o_t`` (CURL's positive); required when
            ``cfg.curl`` (treated as a target: no gradient).

    Rows whose window was cut by the episode end (any ``seq_mask`` 0) are left out of the temporal and reward
    terms. Returns ``(loss, {"contrastive", "accuracy", ["curl"], ["reward"]})``.
    """
    complete = seq_mask.float().min(dim=1).values  # [B]: 1 when all K actions are inside the episode
    z = module.proj_s(feat)
    with torch.no_grad():
        z_next = module.proj_s(next_feat)
    u_seq = module.encode_action_seq(action_encoder(action_seq))
    zu = torch.cat([z, u_seq.to(z.dtype)], dim=-1)
    logits = bilinear_logits(module.proj_sa(zu), z_next, module.W)
    contrastive = info_nce_from_logits(logits, complete)
    hits = (logits.argmax(dim=1) == torch.arange(logits.shape[0], device=logits.device)).float()
    metrics = {"contrastive": contrastive.detach(),
               "accuracy": (hits * complete).sum() / complete.sum().clamp_min(1.0)}
    loss = cfg.taco_weight * contrastive
    if cfg.curl:
        if pos_feat is None:
            raise ConfigError("taco.curl is on but no positive view (pos_feat) was given")
        with torch.no_grad():
            z_pos = module.proj_s(pos_feat)
        curl = info_nce(z, z_pos, module.W)
        loss = loss + cfg.curl_weight * curl
        metrics["curl"] = curl.detach()
    if module.reward_head is not None:
        pred = module.reward_head(zu).float()
        sq = (pred - reward.float()).pow(2).squeeze(-1)
        reward_loss = (sq * complete).sum() / complete.sum().clamp_min(1.0)
        loss = loss + cfg.reward_weight * reward_loss
        metrics["reward"] = reward_loss.detach()
    return loss, metrics


# ---------------------------------------------------------------------- wiring into the agent
def _second_view(obs: Any, pad: int) -> Any:
    """A fresh random shift of the raw batch observation (pixels only; state vectors pass through as float)."""
    if isinstance(obs, dict):
        return {k: (_second_view(v, pad) if k == "pixels" else v.float()) for k, v in obs.items()}
    if obs.dim() == 4:
        return random_shift_index(obs, pad, channels_last=True)
    return obs.float()


def _request_window(agent: Any, horizon: int) -> None:
    """Ask the replay for the K-step action window: ``action_seq=True`` (the n-step window) when K = n, else
    ``action_seq=K`` (``batch_extras`` becomes a name -> value mapping, see ``pixelrl.data.replay.sample_kwargs``)."""
    extras = agent.batch_extras
    if horizon == int(agent.cfg.nstep) and not isinstance(extras, dict):
        extras.add("action_seq")
        return
    if not isinstance(extras, dict):
        extras = agent.batch_extras = dict.fromkeys(extras, True)
    extras["action_seq"] = horizon if horizon != int(agent.cfg.nstep) else True


def install(agent: Any) -> TACOModule:
    """Wire TACO into ``agent`` (duck-typed DrQ-v2 agent) through its hooks; returns the TACO module.

    Needs ``agent.action_encoder`` to be the one :func:`make_action_encoder` builds (the agent does this before
    its critic when ``'taco'`` is in ``aux``).
    """
    cfg: TACOConfig = agent.cfg.taco
    nstep = int(agent.cfg.nstep)
    latent = latent_action_dim(agent.action_dim, cfg)
    if getattr(agent.action_encoder, "out_dim", None) != latent or not any(
        True for _ in agent.action_encoder.parameters()
    ):
        raise ConfigError(
            "TACO needs the agent's critic to read latent actions: build agent.action_encoder with "
            f"pixelrl.mechanisms.taco.make_action_encoder (latent size {latent}) before the critic"
        )
    module = TACOModule(
        agent.encoder.repr_dim,
        latent,
        cfg.multistep,
        z_dim=cfg.z_dim or agent.cfg.feature_dim,
        hidden_dim=cfg.proj_hidden_dim or agent.cfg.hidden_dim,
        reward_prediction=cfg.reward_prediction,
    )
    pad = int(getattr(agent.cfg, "augment_pad", 0))
    separate_target = cfg.multistep != nstep

    def window(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        extras = batch.extras
        if "action_seq" not in extras or "seq_mask" not in extras:
            want = "action_seq=True" if not separate_target else f"action_seq={cfg.multistep}"
            raise ConfigError(
                "TACO needs batch.extras['action_seq'] and ['seq_mask'] (agent.batch_extras lists them): sample "
                f"the replay with ReplayBuffer.sample(batch_size, {want})"
            )
        action_seq = extras["action_seq"]
        if action_seq.shape[1] != cfg.multistep:
            raise ConfigError(
                f"batch action_seq holds {action_seq.shape[1]} steps, TACO's multistep is {cfg.multistep}; sample "
                f"the replay with action_seq={cfg.multistep}"
            )
        if separate_target and "seq_next_obs" not in extras:
            raise ConfigError(
                f"TACO's K={cfg.multistep} differs from nstep={nstep}: the batch needs extras['seq_next_obs'] (the "
                f"observation K steps on): sample the replay with action_seq={cfg.multistep}"
            )
        return action_seq, extras["seq_mask"]

    def encode_view(obs: Any) -> torch.Tensor:
        """Encoder features of a fresh random shift of raw observations, without gradient."""
        with torch.no_grad():
            return agent.encoder(_second_view(obs, pad))

    def target_feat(batch: Any, next_feat: torch.Tensor | None) -> torch.Tensor:
        if separate_target:
            return encode_view(batch.extras["seq_next_obs"])
        if next_feat is None:
            return encode_view(batch.next_obs)
        return next_feat

    def loss_fn(inp):
        action_seq, seq_mask = window(inp.batch)
        return taco_loss(
            module,
            inp.agent.action_encoder,
            cfg,
            feat=inp.feat,
            next_feat=target_feat(inp.batch, inp.next_feat),
            action_seq=action_seq,
            seq_mask=seq_mask,
            reward=inp.batch.reward,
            pos_feat=encode_view(inp.batch.obs) if cfg.curl else None,
        )

    _request_window(agent, cfg.multistep)
    if cfg.optimizer == "joint":
        agent.add_aux_loss(loss_fn, module=module, name="taco")
        return module
    _install_separate(agent, module, cfg, window, encode_view, target_feat, pad)
    return module


def _install_separate(agent: Any, module: TACOModule, cfg: TACOConfig, window, encode_view, target_feat,
                      pad: int) -> None:
    """``optimizer='separate'``: the authors' second Adam step on the TACO loss after the agent's update.

    The aux-loss entry only records the update's batch (it adds nothing to the critic loss); the update hook then
    computes the TACO loss with the updated encoder on fresh augmentations and steps its own optimizer over the
    encoder, the action encoder and the TACO module (the reference's ``taco_opt`` over ``TACO.parameters()``).
    """
    module.to(agent.device)
    params = [*agent.encoder.parameters(), *agent.action_encoder.parameters(), *module.parameters()]
    opt = torch.optim.Adam(params, lr=float(agent.cfg.lr))
    last: dict[str, Any] = {}

    def record(inp):
        last["batch"] = inp.batch
        window(inp.batch)  # fail early (in the update) when the batch lacks the window
        return inp.feat.new_zeros(())

    def hook(agent_: Any, step: int) -> dict[str, float]:
        batch = last.pop("batch")
        # in fp32 (no autocast): this path reproduces the reference, it is not tuned for speed
        feat = agent_.encoder(_second_view(batch.obs, pad))  # anchor: a fresh augmentation, with gradient
        action_seq, seq_mask = window(batch)
        loss, metrics = taco_loss(
            module, agent_.action_encoder, cfg, feat=feat, next_feat=target_feat(batch, None),
            action_seq=action_seq, seq_mask=seq_mask, reward=batch.reward,
            pos_feat=encode_view(batch.obs) if cfg.curl else None,
        )
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()
        values = torch.stack([loss.detach().float(), *[v.float() for v in metrics.values()]]).tolist()
        return dict(zip(["taco_loss", *[f"taco_{k}" for k in metrics]], values))

    def state_fn() -> dict[str, Any]:
        return {"module": module.state_dict(), "opt": opt.state_dict()}

    def load_fn(state: dict[str, Any]) -> None:
        module.load_state_dict(state["module"])
        opt.load_state_dict(state["opt"])

    agent.add_aux_loss(record, module=None, name="taco")
    agent.update_hooks.append(hook)
    agent.register_state("taco_separate", state_fn, load_fn)
