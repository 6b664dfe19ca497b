"""DrQ-v2 actor: a deterministic tanh policy with externally scheduled Gaussian exploration noise."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from pixelrl.nets.layers import mlp, weight_init
from pixelrl.nets.moe import MoE, MoEConfig

__all__ = ["Actor", "sample_action", "clamp_straight_through", "supplied_noise"]

_EPS = 1e-6
_NOISE_SUPPLY: list[Callable[[torch.Tensor], torch.Tensor]] = []


@contextlib.contextmanager
def supplied_noise(supply: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Inside the block, :func:`sample_action` calls without ``noise`` take their standard-normal draw from
    ``supply(mu)`` instead of torch's global RNG. The batched learner (:mod:`pixelrl.agents.batched`) runs an agent's
    own loss code under ``vmap`` this way, feeding each agent the numbers its own generator drew."""
    _NOISE_SUPPLY.append(supply)
    try:
        yield
    finally:
        _NOISE_SUPPLY.pop()


def clamp_straight_through(x: torch.Tensor, low: float = -1.0, high: float = 1.0, eps: float = _EPS) -> torch.Tensor:
    """Clamp to ``[low + eps, high - eps]`` in the forward pass, identity gradient in the backward pass.

    This is DrQ-v2's ``TruncatedNormal._clamp``: the actor still gets gradient through saturated actions.
    """
    clamped = torch.clamp(x, low + eps, high - eps)
    return x + (clamped - x).detach()


def sample_action(
    mu: torch.Tensor, std: float | torch.Tensor, clip: float | None = None, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """DrQ-v2's truncated-normal sample: ``clamp(mu + clip(N(0, std), +-clip), -1, 1)`` (straight-through clamp).

    ``clip=None`` leaves the noise unclipped (the reference's exploration sample in ``act``); the update uses
    ``clip = stddev_clip``. ``noise`` overrides the standard-normal draw (tests); so does :func:`supplied_noise`.
    """
    if noise is None:
        noise = _NOISE_SUPPLY[-1](mu) if _NOISE_SUPPLY else torch.randn_like(mu)
    eps = noise * std
    if clip is not None:
        eps = torch.clamp(eps, -clip, clip)
    return clamp_straight_through(mu + eps)


class Actor(nn.Module):
    """``Linear(repr_dim -> feature_dim) -> LayerNorm -> tanh`` trunk, then an MLP (``hidden_dim`` x2, ReLU) whose
    tanh output is the mean action. The exploration std comes from the agent's schedule, not the network.

    ``moe`` (MENTOR): the MLP's middle ``hidden_dim x hidden_dim`` layer (``policy[2]``) becomes a
    :class:`~pixelrl.nets.moe.MoE` layer ``hidden_dim -> hidden_dim``; everything else is unchanged. With
    ``moe=None`` the module (names, init, outputs) is exactly DrQ-v2's actor.
    """

    def __init__(
        self,
        repr_dim: int,
        action_dim: int,
        feature_dim: int = 50,
        hidden_dim: int = 1024,
        moe: MoEConfig | None = None,
    ) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.policy = mlp(feature_dim, hidden_dim, action_dim, depth=2)
        if moe is not None:
            self.policy[2] = MoE(hidden_dim, hidden_dim, moe)
        self.apply(weight_init)

    def pre_tanh(self, obs_feat: torch.Tensor) -> torch.Tensor:
        """The mean action before the tanh, ``[B, action_dim]``."""
        return self.policy(self.trunk(obs_feat))

    def forward(self, obs_feat: torch.Tensor) -> torch.Tensor:
        """Mean action in (-1, 1), ``[B, action_dim]``."""
        return torch.tanh(self.pre_tanh(obs_feat))
