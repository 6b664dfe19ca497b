"""Twin-Q critic with a pluggable value head.

The critic is ``Linear(repr_dim -> feature_dim) -> LayerNorm -> tanh`` on the observation features, concatenated
with the action, then ``num_q`` independent MLPs (``hidden_dim`` x2, ReLU) evaluated as one batched ensemble. With
``layernorm=True`` (RLPD, Ball et al. 2023) each hidden Linear of those MLPs is followed by a LayerNorm (one
gamma / beta per Q head) before its ReLU.
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

from pixelrl.nets.layers import EnsembleLayerNorm, EnsembleLinear, weight_init
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

    ``layernorm`` (RLPD option): an :class:`~pixelrl.nets.layers.EnsembleLayerNorm` (per-member gamma / beta)
    after each hidden ``EnsembleLinear`` of the Q MLPs, before the ReLU. With ``moe`` the middle layer is the MoE
    (built of Linear layers of its own) and gets none, so only the first hidden layer is normalised. The layer list
    ``q`` is then ``[Linear, LN, ReLU, Linear|MoE, (LN), ReLU, Linear]``: the middle layer sits at
    :attr:`middle_index`, the output layer is always ``q[-1]``. ``layernorm=False`` is DrQ-v2's critic (indices as
    documented above).
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
        layernorm: bool = False,
    ) -> None:
        super().__init__()
        self.head = head if head is not None else ScalarQHead()
        self.num_q = num_q
        self.layernorm = bool(layernorm)
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())

        def norm() -> list[nn.Module]:
            return [EnsembleLayerNorm(num_q, hidden_dim)] if self.layernorm else []

        # Layers are built in this order (the MoE last) whatever the options, so that a given seed draws the same
        # initial weights as the critic always did.
        first = [EnsembleLinear(num_q, feature_dim + action_dim, hidden_dim), *norm(), nn.ReLU(inplace=True)]
        middle: list[nn.Module] = [EnsembleLinear(num_q, hidden_dim, hidden_dim), *norm()]
        last = EnsembleLinear(num_q, hidden_dim, self.head.out_dim)
        if moe is not None:
            middle = [MoE(hidden_dim, hidden_dim, moe, num_members=num_q)]
        self.middle_index = len(first)
        """Index in ``q`` of the middle hidden layer (the MoE with ``moe``): 2, or 3 with ``layernorm``."""
        self.q = nn.Sequential(*first, *middle, nn.ReLU(inplace=True), last)
        self.apply(weight_init)

    def forward(self, obs_feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Raw head outputs ``[num_q, B, head.out_dim]``."""
        h = self.trunk(obs_feat)
        return self.q(torch.cat([h, action.to(h.dtype)], dim=-1))

    def values(self, obs_feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q values ``[num_q, B, 1]``."""
        return self.head.value(self(obs_feat, action))
