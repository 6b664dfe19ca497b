"""Small building blocks shared by encoders and heads: DrQ-v2 weight init and an ensemble linear layer."""

from __future__ import annotations


import torch
from torch import nn

__all__ = ["weight_init", "EnsembleLinear", "mlp"]


def weight_init(m: nn.Module) -> None:
    """DrQ-v2 init: orthogonal weights (gain ``relu`` for convolutions), zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        if m.bias is not None:
            m.bias.data.fill_(0.0)
    elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        gain = nn.init.calculate_gain("relu")
        nn.init.orthogonal_(m.weight.data, gain)
        if m.bias is not None:
            m.bias.data.fill_(0.0)
    elif isinstance(m, EnsembleLinear):
        m.reset_parameters()


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers evaluated with one batched matmul.

    Input ``[B, in]`` (shared by all members) or ``[E, B, in]``; output ``[E, B, out]``. Each member is initialised
    like ``nn.Linear`` under :func:`weight_init` (orthogonal weight, zero bias), so an ``EnsembleLinear(E, ...)``
    computes exactly what ``E`` separate ``nn.Linear`` layers would.
    """

    def __init__(self, ensemble_size: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.ensemble_size = ensemble_size
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for e in range(self.ensemble_size):
            w = torch.empty(self.out_features, self.in_features)
            nn.init.orthogonal_(w)
            self.weight.data[e].copy_(w.t())
        self.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            # shared input: one [B, in] x [in, E*out] matmul instead of E small ones.
            b = x.shape[0]
            w = self.weight.transpose(0, 1).reshape(self.in_features, -1)
            out = (x @ w).view(b, self.ensemble_size, self.out_features).transpose(0, 1)
            return out + self.bias
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"ensemble_size={self.ensemble_size}, in_features={self.in_features}, out_features={self.out_features}"


def mlp(in_dim: int, hidden_dim: int, out_dim: int, depth: int = 2) -> nn.Sequential:
    """``depth`` hidden layers of ``hidden_dim`` with ReLU, then a linear output (the DrQ-v2 head shape)."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, hidden_dim), nn.ReLU(inplace=True)]
        d = hidden_dim
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


