"""Q-networks for discrete actions: a torso (Nature-DQN convolutions on pixels, or an MLP on states) and a plain or
dueling head with one output, or a histogram of ``bins`` logits, per action.

This is the network of Dopamine's DQN-family agents (``dopamine/jax/networks.py``: ``NatureDQNNetwork`` and
``FullRainbowNetwork``, the latter being what DrQ(eps) runs with ``num_atoms=1``):

* pixels ``[B, C, 84, 84]`` in [0, 255] -> ``x / 255`` -> conv 32 8x8/4 -> ReLU -> conv 64 4x4/2 -> ReLU -> conv 64
  3x3/1 -> ReLU -> flatten -> Linear 512 -> ReLU. Flax's ``nn.Conv`` pads ``'SAME'`` by default, so Dopamine's
  feature maps are 21x21, 11x11, 11x11 (7,744 features); the Nature paper (and CleanRL) use no padding, ``'VALID'``
  (20x20, 9x9, 7x7: 3,136 features). ``padding`` picks one; TF's SAME pads ``k - s`` (or more) pixels, the odd one on
  the right / bottom, reproduced here with an explicit zero pad;
* states ``[B, d]`` -> MLP with ReLU (Dopamine's classic-control networks: two hidden layers of 512);
* head: ``Linear(512, A * bins)``, or dueling (Wang et al. 2016): ``V = Linear(512, bins)``,
  ``A = Linear(512, A * bins)``, ``Q = V + A - mean_a A`` (per bin, as Dopamine's ``FullRainbowNetwork`` does for its
  atoms; with ``bins > 1`` the outputs are logits of a value histogram, e.g. HL-Gauss).

Every Linear / Conv2d is initialised as in Dopamine (Flax defaults as it uses them): Xavier-uniform weights, zero
biases.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["QNetwork", "same_padding"]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TF / Flax ``'SAME'`` padding of one spatial dimension: ``(before, after, output size)``.

    The output has ``ceil(size / stride)`` positions; the total padding is what that needs, split evenly with the odd
    pixel after (``(84, 8, 4) -> (2, 2, 21)``, ``(21, 4, 2) -> (1, 2, 11)``, ``(11, 3, 1) -> (1, 1, 11)``)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def _xavier(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return module


class _PixelTorso(nn.Module):
    def __init__(self, in_channels: int, image_size: tuple[int, int], hidden: int, padding: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        h, w = image_size
        c = in_channels
        for out_c, k, s in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
            if padding == "same":
                top, bottom, h = same_padding(h, k, s)
                left, right, w = same_padding(w, k, s)
                if top or bottom or left or right:
                    layers.append(nn.ZeroPad2d((left, right, top, bottom)))
            else:
                h, w = (h - k) // s + 1, (w - k) // s + 1
                if h <= 0 or w <= 0:
                    raise ValueError(f"image {image_size} too small for the Nature-DQN convolutions without padding "
                                     "(needs at least 36x36); use padding='same'")
            layers += [nn.Conv2d(c, out_c, k, stride=s), nn.ReLU(inplace=True)]
            c = out_c
        layers.append(nn.Flatten())
        self.convnet = nn.Sequential(*layers)
        self.conv_dim = c * h * w
        self.fc = nn.Sequential(nn.Linear(self.conv_dim, hidden), nn.ReLU(inplace=True))
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convnet(x.float() / 255.0))


class _StateTorso(nn.Module):
    def __init__(self, in_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for width in hidden:
            layers += [nn.Linear(d, width), nn.ReLU(inplace=True)]
            d = width
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())


class QNetwork(nn.Module):
    """Torso + (dueling) head: observations -> Q ``[B, A]`` (``bins == 1``) or logits ``[B, A, bins]``.

    Args:
      obs_shape: ``(C, H, W)`` for pixels (uint8 or float in [0, 255]), ``(d,)`` for state vectors.
      num_actions: ``A``.
      dueling: dueling head (``V + A - mean A``) instead of one linear layer.
      bins: outputs per action: 1 for a scalar Q, ``m`` for the logits of an ``m``-bin value histogram.
      padding: ``'same'`` (Dopamine / Flax) or ``'valid'`` (Nature DQN, CleanRL) for the pixel torso.
      hidden: width of the pixel torso's linear layer (512).
      mlp_hidden: hidden widths of the state torso.
    """

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, *, dueling: bool = False, bins: int = 1,
                 padding: str = "same", hidden: int = 512, mlp_hidden: tuple[int, ...] = (512, 512)) -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if num_actions < 1 or bins < 1:
            raise ValueError(f"num_actions and bins must be >= 1, got {num_actions}, {bins}")
        self.num_actions, self.bins, self.dueling = int(num_actions), int(bins), bool(dueling)
        if len(obs_shape) == 3:
            self.torso: nn.Module = _PixelTorso(obs_shape[0], (obs_shape[1], obs_shape[2]), hidden, padding)
        elif len(obs_shape) == 1:
            self.torso = _StateTorso(obs_shape[0], tuple(mlp_hidden))
        else:
            raise ValueError(f"observations must be pixels [C, H, W] or a state vector [d], got shape {obs_shape}")
        feat = self.torso.out_dim
        self.advantage = nn.Linear(feat, self.num_actions * self.bins)
        self.value = nn.Linear(feat, self.bins) if self.dueling else None
        _xavier(self)

    @property
    def repr_dim(self) -> int:
        """Width of the torso's features (the head's input)."""
        return self.torso.out_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Torso features ``[B, repr_dim]``."""
        return self.torso(x)

    def head(self, feat: torch.Tensor) -> torch.Tensor:
        """Head outputs from features: ``[B, A]`` when ``bins == 1``, else ``[B, A, bins]``."""
        adv = self.advantage(feat).view(-1, self.num_actions, self.bins)
        if self.value is not None:
            adv = self.value(feat).view(-1, 1, self.bins) + adv - adv.mean(dim=1, keepdim=True)
        return adv.squeeze(-1) if self.bins == 1 else adv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
