"""Twin-Q critic with a pluggable value head.

The critic is ``Linear(repr_dim -> feature_dim) -> LayerNorm -> tanh`` on the observation features, concatenated
with the action, then ``num_q`` independent MLPs (``hidden_dim`` x2, ReLU) evaluated as one batched ensemble.
The last layer's output size and meaning belong to a :class:`QHead`:

* :class:`ScalarQHead` (DrQ-v2): one output per Q, the value itself, MSE loss.
* a distributional head (e.g. HL-Gauss, later in ``pixelrl.mechanisms``) outputs logits over bins, maps them to a
  value with ``value`` and trains them with cross-entropy in ``loss``. Nothing else in the agent changes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from pixelrl.nets.layers import EnsembleLinear, weight_init
from pixelrl.nets.moe import MoE, MoEConfig

__all__ = ["QHead", "ScalarQHead", "Critic"]


@runtime_checkable
class QHead(Protocol):
    """What the critic needs from a value head. ``raw`` is the critic's output ``[num_q, B, out_dim]``."""

    out_dim: int

    def value(self, raw: torch.Tensor) -> torch.Tensor:
        """Q values ``[num_q, B, 1]`` from raw outputs."""
        ...

    def loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of all heads against the (detached) scalar target ``[B, 1]``."""
        ...


class ScalarQHead:
    """DrQ-v2's head: the output is Q; loss = sum over Q heads of the mean squared error to the target."""

    out_dim = 1

    def value(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(raw, target.unsqueeze(0).expand_as(raw), reduction="none").mean(dim=(1, 2)).sum()


class Critic(nn.Module):
    """Observation trunk + ``num_q`` Q MLPs on ``[trunk(obs_feat), action]``; returns raw head outputs.

    ``moe`` (MENTOR option): the Q MLPs' middle ``hidden_dim x hidden_dim`` layer (``q[2]``) becomes an ensemble
    :class:`~pixelrl.nets.moe.MoE` with one gate and one set of experts per Q head. ``moe=None`` is DrQ-v2's critic.
    """

    def __init__(
        self,
        repr_dim: int,
        action_dim: int,
        feature_dim: int = 50,
        hidden_dim: int = 1024,
        num_q: int = 2,
        head: QHead | None = None,
        moe: MoEConfig | None = None,
    ) -> None:
        super().__init__()
        self.head = head if head is not None else ScalarQHead()
        self.num_q = num_q
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.q = nn.Sequential(
            EnsembleLinear(num_q, feature_dim + action_dim, hidden_dim),
            nn.ReLU(inplace=True),
            EnsembleLinear(num_q, hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            EnsembleLinear(num_q, hidden_dim, self.head.out_dim),
        )
        if moe is not None:
            self.q[2] = MoE(hidden_dim, hidden_dim, moe, num_members=num_q)
        self.apply(weight_init)

    def forward(self, obs_feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Raw head outputs ``[num_q, B, head.out_dim]``."""
        h = self.trunk(obs_feat)
        return self.q(torch.cat([h, action.to(h.dtype)], dim=-1))

    def values(self, obs_feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q values ``[num_q, B, 1]``."""
        return self.head.value(self(obs_feat, action))
