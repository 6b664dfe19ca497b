"""HL-Gauss value head: Q as a histogram trained by classification (Farebrother et al. 2024, "Stop Regressing:
Training Value Functions via Classification for Scalable Deep RL"; the loss is Imani & White 2018's HL-Gauss).

Instead of one scalar per Q head regressed with MSE, the critic outputs ``m`` logits per Q head over ``m`` bins that
evenly cover the value support ``[v_min, v_max]``:

    edges   e_0 < e_1 < ... < e_m,  e_i = v_min + i * w,  w = (v_max - v_min) / m        (bin width, the paper's zeta)
    centres c_i = (e_{i-1} + e_i) / 2,  i = 1..m
    value   Q(s, a) = sum_i softmax(logits)_i * c_i

The scalar TD target ``y`` (clipped into ``[v_min, v_max]``) becomes a distribution: the mass that a Gaussian
``N(y, sigma^2)`` puts on each bin, renormalised to the support (paper, section 3.1 and appendix A):

    p_i = (Phi((e_i - y) / sigma) - Phi((e_{i-1} - y) / sigma)) / (Phi((e_m - y) / sigma) - Phi((e_0 - y) / sigma))

with ``Phi(x) = (1 + erf(x / sqrt 2)) / 2`` (the ``1/2`` and ``+1`` cancel in the differences and the ratio, so the code
takes erf differences). The critic is trained with the cross-entropy ``-sum_i p_i log softmax(logits)_i``; the paper
recommends ``sigma / w = 0.75`` (spreads the mass over about six bins) and reports it robust across domains.

``symlog=True`` places the bins evenly in ``symlog(v) = sign(v) log(1 + |v|)`` space (as DreamerV3 does for its
two-hot critic): targets are mapped through ``symlog`` before the Gaussian, ``sigma`` is ``sigma_ratio`` times the
bin width in symlog space, and the value is ``symexp(sum_i p_i c_i)``. ``v_min`` / ``v_max`` are always given in
return units.

Where the pieces go: :func:`make_head` builds an :class:`HLGaussHead`, a :class:`pixelrl.nets.critic.QHead` that the
agent passes to its critic (``critic='hl-gauss'``). Nothing else of the agent changes, so the head composes with any
agent built on the DrQ-v2 core (DrQ-v2, DrM, TACO, MENTOR, SAC).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from pixelrl.errors import ConfigError

__all__ = [
    "HLGaussConfig",
    "HLGaussHead",
    "auto_range",
    "hl_gauss_target",
    "make_head",
    "resolve_range",
    "symexp",
    "symlog",
]


@dataclass(frozen=True)
class HLGaussConfig:
    """HL-Gauss value head (used when ``critic='hl-gauss'``). Defaults: 101 bins, sigma = 0.75 bin widths."""

    num_bins: int = 101
    """Number of histogram bins m over [v_min, v_max] (the logits per Q head). 101 bins over DMC's [-10, 210] at
    action repeat 2 give a bin width of ~2.2 return units."""
    v_min: float | None = None
    """Lower end of the value support in return units; None = auto: the trainer sets it from the env's reward scale
    with ``auto_range`` (DMC, rewards in [0, 1] per frame: -0.05 * action_repeat / (1 - discount))."""
    v_max: float | None = None
    """Upper end of the value support in return units; None = auto (DMC: 1.05 * action_repeat / (1 - discount),
    i.e. [-10, 210] at action repeat 2 and discount 0.99). TD targets outside the support are clipped into it."""
    sigma_ratio: float = 0.75
    """Std of the Gaussian that smooths each target, in bin widths (paper: sigma / zeta = 0.75)."""
    symlog: bool = False
    """Space the bins evenly in symlog(v) = sign(v) log(1 + |v|) instead of v (finer bins near 0, coarser far away);
    targets go through symlog, values through symexp. Off by default (the paper's bins are linear)."""

    def __post_init__(self) -> None:
        if self.num_bins < 2:
            raise ConfigError(f"hl_gauss.num_bins must be >= 2, got {self.num_bins}")
        if not (self.sigma_ratio > 0 and math.isfinite(self.sigma_ratio)):
            raise ConfigError(f"hl_gauss.sigma_ratio must be a positive number of bin widths, got {self.sigma_ratio}")
        if (self.v_min is None) != (self.v_max is None):
            raise ConfigError(
                f"hl_gauss.v_min={self.v_min} and v_max={self.v_max}: set both (a fixed value range) or neither "
                "(auto: the trainer derives the range from the env's reward scale)"
            )
        if self.v_min is not None:
            if not (math.isfinite(self.v_min) and math.isfinite(self.v_max)) or not self.v_min < self.v_max:
                raise ConfigError(
                    f"hl_gauss needs finite v_min < v_max, got [{self.v_min}, {self.v_max}]; e.g. --agent.hl-gauss.v-min "
                    "-10 --agent.hl-gauss.v-max 210 for DMC at action repeat 2"
                )


# ---------------------------------------------------------------------------------------------------------- range


def auto_range(max_step_reward: float, discount: float, min_step_reward: float = 0.0,
               margin: float = 0.05) -> tuple[float, float]:
    """Value support from the reward bounds of one agent step: ``[R_min, R_max] / (1 - discount)`` widened by
    ``margin`` of its span on each side.

    DMC rewards lie in [0, 1] per frame, so one agent step earns at most ``action_repeat``:
    ``auto_range(action_repeat, 0.99)`` = ``(-0.05 * ar / 0.01, 1.05 * ar / 0.01)`` = ``(-10, 210)`` at ar = 2. The
    margin keeps targets near the true bounds away from the clipped edge bins (an edge-clipped target's smoothed
    mean sits ~0.7 bin inside the support).
    """
    if not 0.0 < discount < 1.0:
        raise ConfigError(f"auto_range needs a discount in (0, 1), got {discount}")
    if not max_step_reward > min_step_reward:
        raise ConfigError(f"auto_range needs max_step_reward > min_step_reward, got {max_step_reward} <= "
                          f"{min_step_reward}")
    if margin < 0:
        raise ConfigError(f"auto_range margin must be >= 0, got {margin}")
    lo, hi = min_step_reward / (1.0 - discount), max_step_reward / (1.0 - discount)
    pad = margin * (hi - lo)
    return lo - pad, hi + pad


def resolve_range(cfg: HLGaussConfig, max_step_reward: float, discount: float,
                  min_step_reward: float = 0.0) -> HLGaussConfig:
    """``cfg`` with an unset (auto) range filled by :func:`auto_range`; a fixed range is returned unchanged."""
    if cfg.v_min is not None:
        return cfg
    v_min, v_max = auto_range(max_step_reward, discount, min_step_reward)
    return replace(cfg, v_min=v_min, v_max=v_max)


# ---------------------------------------------------------------------------------------------------------- math


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`: ``sign(x) * (exp(|x|) - 1)``."""
    return torch.sign(x) * torch.expm1(x.abs())


def hl_gauss_target(y: torch.Tensor, edges: torch.Tensor, sigma: float) -> torch.Tensor:
    """HL-Gauss target distribution ``[..., m]`` of scalar targets ``y`` ``[...]`` over bins with ``edges`` ``[m+1]``.

    ``y`` is clipped into ``[edges[0], edges[-1]]`` first, then each bin gets the mass of ``N(y, sigma^2)`` on it,
    renormalised to the support (CDF differences via erf). Rows sum to 1.
    """
    y = y.clamp(edges[0], edges[-1]).unsqueeze(-1)
    cdf = torch.special.erf((edges - y) / (math.sqrt(2.0) * sigma))
    mass = cdf[..., 1:] - cdf[..., :-1]
    return mass / (cdf[..., -1:] - cdf[..., :1])


# ---------------------------------------------------------------------------------------------------------- head


class HLGaussHead(nn.Module):
    """A :class:`pixelrl.nets.critic.QHead`: logits ``[num_q, B, num_bins]`` -> Q ``[num_q, B, 1]``, cross-entropy loss.

    A parameter-free module: the bin edges and centres are non-persistent buffers, so they follow the critic's
    ``.to(device)`` and stay out of checkpoints.
    """

    def __init__(self, num_bins: int, v_min: float, v_max: float, sigma_ratio: float = 0.75,
                 use_symlog: bool = False) -> None:
        super().__init__()
        if num_bins < 2 or not v_min < v_max or not sigma_ratio > 0:
            raise ConfigError(f"HLGaussHead needs num_bins >= 2, v_min < v_max and sigma_ratio > 0; got {num_bins}, "
                              f"[{v_min}, {v_max}], {sigma_ratio}")
        self.out_dim = int(num_bins)
        self.v_min, self.v_max, self.symlog = float(v_min), float(v_max), bool(use_symlog)
        lo, hi = torch.tensor([self.v_min, self.v_max], dtype=torch.float64)
        if self.symlog:
            lo, hi = symlog(lo), symlog(hi)
        edges = torch.linspace(float(lo), float(hi), num_bins + 1, dtype=torch.float64)
        self.bin_width = float(edges[1] - edges[0])
        self.sigma = sigma_ratio * self.bin_width
        self.register_buffer("edges", edges.float(), persistent=False)
        self.register_buffer("centres", ((edges[1:] + edges[:-1]) / 2).float(), persistent=False)

    def target_probs(self, target: torch.Tensor) -> torch.Tensor:
        """HL-Gauss distribution ``[B, num_bins]`` of scalar targets ``[B, 1]`` (in return units)."""
        y = target.float().squeeze(-1)
        if self.symlog:
            y = symlog(y)
        return hl_gauss_target(y, self.edges, self.sigma)

    def value(self, raw: torch.Tensor) -> torch.Tensor:
        """Q ``[..., 1]`` = expectation of the bin centres under ``softmax(raw)`` (symexp'd in symlog mode)."""
        v = (raw.float().softmax(dim=-1) * self.centres).sum(dim=-1, keepdim=True)
        return symexp(v) if self.symlog else v

    def loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of every Q head's logits to the target distribution: mean over the batch, sum over heads
        (the same reduction as :class:`~pixelrl.nets.critic.ScalarQHead`'s MSE)."""
        probs = self.target_probs(target.detach())
        ce = -(probs * F.log_softmax(raw.float(), dim=-1)).sum(dim=-1)  # [num_q, B]
        return ce.mean(dim=-1).sum()

    def extra_repr(self) -> str:
        space = "symlog" if self.symlog else "linear"
        return (f"num_bins={self.out_dim}, range=[{self.v_min:g}, {self.v_max:g}], {space}, "
                f"sigma={self.sigma:.4g} ({space} units)")


def make_head(cfg: HLGaussConfig) -> HLGaussHead:
    """The HL-Gauss head of ``cfg``; its value range must be set (fixed, or filled by :func:`resolve_range`)."""
    if cfg.v_min is None or cfg.v_max is None:
        raise ConfigError(
            "hl_gauss has no value range (v_min / v_max are auto): the trainer fills them from the env's reward "
            "scale; when building an agent by hand set them, e.g. HLGaussConfig(v_min=-10, v_max=210) for DMC at "
            "action repeat 2, or use hl_gauss.resolve_range(cfg, max_step_reward, discount)"
        )
    return HLGaussHead(cfg.num_bins, cfg.v_min, cfg.v_max, cfg.sigma_ratio, cfg.symlog)
