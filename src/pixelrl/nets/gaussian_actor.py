"""Tanh-Gaussian (squashed Gaussian) policy for SAC.

The network is DrQ-v2's actor shape (``Linear(repr_dim -> feature_dim) -> LayerNorm -> tanh`` trunk, then an MLP with
two ``hidden_dim`` ReLU layers) with ``2 * action_dim`` outputs: the mean ``m`` and a raw ``s`` of the log std of a
diagonal Gaussian over the *pre-squash* action ``u``. As in DrQ (Kostrikov et al. 2020), the log std is squashed into
``[log_std_min, log_std_max]`` by ``log_std = lo + (hi - lo) * (tanh(s) + 1) / 2``.

The action is ``a = tanh(u)``, ``u = m + std * eps``, ``eps ~ N(0, I)`` (reparameterised, so gradients reach ``m`` and
``std``). Its log-density is the Gaussian's minus the log-determinant of the tanh Jacobian (SAC, Haarnoja et al. 2018,
appendix C):

    log pi(a|s) = sum_j [ log N(u_j; m_j, std_j) - log(1 - tanh(u_j)^2) ]

with the correction written in the overflow-free form ``log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u))``.
That form is exact and finite for any ``u``; the textbook ``log(1 - tanh(u)^2 + eps)`` is biased by ``eps`` and
clips at ``log(eps)`` once ``tanh(u)`` saturates to 1 in floating point (|u| > ~9 in fp32).

``forward(feat)`` returns the deterministic action ``tanh(m)`` (the SAC evaluation action) so code that treats the
actor as "features -> action in (-1, 1)" (like DrQ-v2's ``Actor``) keeps working; :meth:`GaussianActor.sample` draws
an action with its log-probability.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pixelrl.errors import ConfigError
from pixelrl.nets.layers import mlp, weight_init
from pixelrl.nets.moe import MoE, MoEConfig

__all__ = ["GaussianActor", "tanh_gaussian_log_prob", "squash_log_std"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG2 = math.log(2.0)


def squash_log_std(raw: torch.Tensor, log_std_min: float, log_std_max: float) -> torch.Tensor:
    """Map an unbounded ``raw`` into ``[log_std_min, log_std_max]`` smoothly (DrQ's tanh rescaling)."""
    return log_std_min + 0.5 * (log_std_max - log_std_min) * (torch.tanh(raw) + 1.0)


def tanh_gaussian_log_prob(eps: torch.Tensor, log_std: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``log pi(tanh(u))`` summed over the action dimension, ``[B, 1]``.

    ``u = mean + exp(log_std) * eps`` is the pre-squash sample; the Gaussian term is written with ``eps`` directly
    (``-eps^2 / 2 - log_std - log sqrt(2 pi)``), which avoids dividing by a tiny std.
    """
    gauss = -0.5 * eps.pow(2) - log_std - _LOG_SQRT_2PI
    log_det = 2.0 * (_LOG2 - u - F.softplus(-2.0 * u))  # = log(1 - tanh(u)^2), stable for any u
    return (gauss - log_det).sum(dim=-1, keepdim=True)


class GaussianActor(nn.Module):
    """Features ``[B, repr_dim]`` -> tanh-squashed diagonal Gaussian over actions in ``(-1, 1)^A``.

    ``moe`` (MENTOR): the MLP's middle ``hidden_dim x hidden_dim`` layer (``policy[2]``) becomes a
    :class:`~pixelrl.nets.moe.MoE` layer, exactly as in :class:`~pixelrl.nets.actor.Actor`.
    """

    def __init__(
        self,
        repr_dim: int,
        action_dim: int,
        feature_dim: int = 50,
        hidden_dim: int = 1024,
        log_std_min: float = -10.0,
        log_std_max: float = 2.0,
        moe: MoEConfig | None = None,
    ) -> None:
        super().__init__()
        if not log_std_min < log_std_max:
            raise ConfigError(f"log_std_min ({log_std_min}) must be < log_std_max ({log_std_max})")
        self.action_dim = action_dim
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.policy = mlp(feature_dim, hidden_dim, 2 * action_dim, depth=2)
        if moe is not None:  # MENTOR's mixture of experts in place of the middle hidden layer, as in nets.Actor
            self.policy[2] = MoE(hidden_dim, hidden_dim, moe)
        self.apply(weight_init)

    def dist_params(self, obs_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-squash mean and bounded log std, each ``[B, A]``."""
        mean, raw_log_std = self.policy(self.trunk(obs_feat)).chunk(2, dim=-1)
        return mean, squash_log_std(raw_log_std, self.log_std_min, self.log_std_max)

    def forward(self, obs_feat: torch.Tensor) -> torch.Tensor:
        """Deterministic action ``tanh(mean)`` in (-1, 1), ``[B, A]`` (the evaluation action)."""
        mean, _ = self.dist_params(obs_feat)
        return torch.tanh(mean)

    def sample(
        self, obs_feat: torch.Tensor, noise: torch.Tensor | None = None, *, with_mean: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """Reparameterised sample ``a = tanh(mean + std * eps)`` and ``log pi(a|s)`` ``[B, 1]`` (and the pre-squash
        ``mean`` ``[B, A]`` as a third element when ``with_mean``).

        The sampling and the log-probability are computed in float32 even under bf16 autocast (a log-density summed
        over action dimensions loses too much in bf16). ``noise`` overrides the standard-normal ``eps`` (tests).
        """
        mean, log_std = (x.float() for x in self.dist_params(obs_feat))
        eps = torch.randn_like(mean) if noise is None else noise.to(mean)
        u = mean + log_std.exp() * eps
        out = (torch.tanh(u), tanh_gaussian_log_prob(eps, log_std, u))
        return (*out, mean) if with_mean else out
