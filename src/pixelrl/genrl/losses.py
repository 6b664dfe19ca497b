"""The algorithms' losses and advantages, as small pure functions over per-step log-probabilities.

Every algorithm shares the sampler (:mod:`pixelrl.genrl.sampler`); what differs is how rewards become weights and
which per-timestep loss is minimised. ``logp`` is the log-probability of one step of a trajectory under the current
weights (with gradients), ``old_logp`` the one recorded when it was sampled, ``ref_logp`` under the reference
(pre-fine-tuning) model. Each loss returns ``(loss, info)`` with ``info`` a dict of detached scalars to log.

* DDPO / RLCM (:func:`ppo_clip_loss`, :class:`PerPromptStatTracker`): PPO's clipped surrogate per timestep;
  advantages from per-prompt reward statistics (``kvablack/ddpo-pytorch``, ``Owen-Oertell/rlcm``).
* Group-relative (:func:`group_advantages`, :func:`grpo_loss`): GRPO as in Visual-RFT, with the k3 KL estimator
  to the reference model.
* PRDP (:func:`prdp_loss`): regression of the reward difference of two trajectories of one prompt on their
  log-ratio difference, per timestep and proximal (ratios clipped).
* Parrot (:func:`pareto_mask`, :func:`parrot_weights`): REINFORCE on the batch's Pareto set over several rewards.
* Preference (:func:`preference_loss`): a DPO-form loss on (winner, loser) pairs of one prompt with the previous
  policy as reference, as in SePPO.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PerPromptStatTracker", "batch_advantages", "ppo_clip_loss", "reinforce_loss", "group_advantages", "k3_kl", "grpo_loss",
           "prdp_loss", "pareto_mask", "parrot_weights", "preference_loss", "pair_up"]


class PerPromptStatTracker:
    """DDPO's per-prompt reward statistics (``ddpo_pytorch/stat_tracking.py``): a deque of the last ``buffer_size``
    rewards of each prompt that persists across epochs; ``A = (r - mean_buf) / (std_buf + 1e-6)``, and until a
    prompt has ``min_count`` rewards the batch's mean and std are used instead."""

    def __init__(self, buffer_size: int = 16, min_count: int = 16) -> None:
        self.buffer_size, self.min_count = int(buffer_size), int(min_count)
        self.stats: dict[str, deque] = {}

    def update(self, prompts: list[str], rewards: np.ndarray) -> np.ndarray:
        prompts_a = np.asarray(prompts, dtype=object)
        rewards = np.asarray(rewards, dtype=np.float64)
        adv = np.empty_like(rewards)
        for p in dict.fromkeys(prompts):  # first-seen order: deterministic
            mask = prompts_a == p
            r = rewards[mask]
            buf = self.stats.setdefault(p, deque(maxlen=self.buffer_size))
            buf.extend(r.tolist())
            ref = rewards if len(buf) < self.min_count else np.asarray(buf)
            adv[mask] = (r - ref.mean()) / (ref.std() + 1e-6)
        return adv

    def state_dict(self) -> dict[str, Any]:
        return {"buffer_size": self.buffer_size, "min_count": self.min_count,
                "stats": [[p, list(map(float, d))] for p, d in self.stats.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats = {p: deque(v, maxlen=self.buffer_size) for p, v in state["stats"]}


def batch_advantages(rewards: np.ndarray) -> np.ndarray:
    """DDPO with the tracker off: ``(r - mean) / (std + 1e-8)`` over the epoch's samples."""
    rewards = np.asarray(rewards, dtype=np.float64)
    return (rewards - rewards.mean()) / (rewards.std() + 1e-8)


def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, *, clip_range: float,
                  adv_clip: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DDPO's per-timestep loss ``mean(max(-A rho, -A clip(rho, 1 - eps, 1 + eps)))`` with ``rho = exp(logp -
    old_logp)`` and ``A`` clipped to ``+-adv_clip``; logs ``approx_kl = mean(dlogp^2) / 2`` and ``clipfrac``."""
    adv = adv.clamp(-adv_clip, adv_clip)
    ratio = torch.exp(logp - old_logp)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        info = {"approx_kl": 0.5 * ((logp - old_logp) ** 2).mean(),
                "clipfrac": ((ratio - 1.0).abs() > clip_range).float().mean(), "ratio": ratio.mean()}
    return loss, info


def reinforce_loss(logp: torch.Tensor, old_logp: torch.Tensor,
                   weight: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """REINFORCE per timestep without clipping (Parrot): ``-mean(w rho)`` with ``rho = exp(logp - old_logp)``,
    whose gradient at ``rho = 1`` is ``-mean(w grad logp)``."""
    ratio = torch.exp(logp - old_logp)
    loss = -(weight * ratio).mean()
    with torch.no_grad():
        info = {"approx_kl": 0.5 * ((logp - old_logp) ** 2).mean(), "ratio": ratio.mean()}
    return loss, info


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-relative advantages (Visual-RFT): rewards laid out as consecutive groups of ``group_size``
    samples of one prompt; ``A_i = (r_i - mean_G) / (std_G + eps)`` with the unbiased std (``torch.std``). Each
    group's advantages sum to zero."""
    r = torch.as_tensor(rewards, dtype=torch.float64)
    if r.numel() % group_size:
        raise ValueError(f"{r.numel()} rewards do not split into groups of {group_size}")
    g = r.reshape(-1, group_size)
    std = g.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(g[:, :1])
    return ((g - g.mean(dim=1, keepdim=True)) / (std + eps)).reshape(-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(pi || pi_ref) from a sample of pi: ``exp(ref - logp) - (ref - logp) - 1`` (>= 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, adv: torch.Tensor, *,
              beta: float, clip_range: float, adv_clip: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Group-relative policy loss per timestep: PPO's clipped surrogate of the group advantages plus ``beta`` times
    the k3 KL to the reference. With one update per batch (``old_logp`` = the detached current log-prob) the ratio
    is 1 and this is Visual-RFT's ``-(rho A - beta KL)``; with more inner updates the clip keeps them proximal
    (Flow-GRPO)."""
    pg, info = ppo_clip_loss(logp, old_logp, adv, clip_range=clip_range, adv_clip=adv_clip)
    kl = k3_kl(logp, ref_logp).mean()
    info["kl"] = kl.detach()
    return pg + beta * kl, info


def pair_up(n: int, group_size: int) -> torch.Tensor:
    """``(n_pairs, 2)`` indices: consecutive pairs inside each group of ``group_size`` consecutive samples (the
    pairs PRDP and the preference loss compare: two trajectories of one prompt)."""
    if group_size < 2 or group_size % 2 or n % group_size:
        raise ValueError(f"pairs need an even group size >= 2 dividing the batch, got {group_size} for {n} samples")
    return torch.arange(n).reshape(-1, 2)


def prdp_loss(logp: torch.Tensor, old_logp: torch.Tensor, reward_diff: torch.Tensor, *, beta: float,
              clip_range: float, steps: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PRDP's proximal per-timestep reward-difference regression for pairs ``(a, b)`` at one timestep.

    ``logp`` / ``old_logp`` are ``(P, 2)`` (column 0: a, column 1: b). The trajectory-level prediction
    ``r_hat = beta [log pi/pi_old (a) - log pi/pi_old (b)]`` sums the per-step log-ratios over the ``steps`` steps;
    a per-timestep estimate of it is ``steps`` times one step's term. Proximal: the log-ratio is also computed
    with the ratio clipped to ``[1 - eps, 1 + eps]`` and the larger of the two squared errors is minimised (as
    PPO's max of surrogates). ``reward_diff = r(a) - r(b)``."""
    log_ratio = logp - old_logp
    clipped = log_ratio.clamp(float(np.log1p(-clip_range)), float(np.log1p(clip_range)))
    pred = beta * steps * (log_ratio[:, 0] - log_ratio[:, 1])
    pred_c = beta * steps * (clipped[:, 0] - clipped[:, 1])
    loss = torch.maximum((reward_diff - pred) ** 2, (reward_diff - pred_c) ** 2).mean()
    with torch.no_grad():
        info = {"approx_kl": 0.5 * (log_ratio**2).mean(), "pred_diff": pred.abs().mean(),
                "clipfrac": ((log_ratio.exp() - 1).abs() > clip_range).float().mean()}
    return loss, info


def pareto_mask(rewards: torch.Tensor) -> torch.Tensor:
    """``bool[N]``: the non-dominated rows of ``rewards (N, K)`` -- no other row is >= on every reward and > on
    one (Parrot's Pareto set). Identical rows do not dominate each other."""
    r = torch.as_tensor(rewards)
    ge = (r[:, None, :] >= r[None, :, :]).all(-1)  # ge[j, i]: j >= i everywhere
    gt = (r[:, None, :] > r[None, :, :]).any(-1)
    dominated = (ge & gt).any(0)
    return ~dominated


def parrot_weights(rewards: torch.Tensor, *, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Parrot's REINFORCE weights: ``w_i = (1/|P|) sum_k r_k(x_i)`` for images in the batch's Pareto set P and 0
    for dominated ones; ``normalize`` standardises each reward over the batch first (see the config's
    ``parrot_normalize``). Returns ``(weights, pareto mask)``."""
    r = torch.as_tensor(rewards, dtype=torch.float64)
    mask = pareto_mask(r)
    if normalize:
        r = (r - r.mean(0)) / (r.std(0, unbiased=False) + 1e-8)
    w = torch.where(mask, r.sum(1), torch.zeros(()))
    return w / mask.sum().clamp(min=1), mask


def preference_loss(logp: torch.Tensor, old_logp: torch.Tensor, *, beta: float,
                    steps: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO on the denoising MDP for (winner, loser) pairs at one timestep: ``logp``/``old_logp`` are ``(P, 2)``
    with column 0 the winner; ``-log sigmoid(beta * steps * [(logp_w - old_w) - (logp_l - old_l)])``, the
    previous policy (the one that sampled the pair) acting as reference, as in SePPO."""
    d = logp - old_logp
    margin = beta * steps * (d[:, 0] - d[:, 1])
    loss = -F.logsigmoid(margin).mean()
    with torch.no_grad():
        info = {"approx_kl": 0.5 * (d**2).mean(), "pref_acc": (margin > 0).float().mean()}
    return loss, info
