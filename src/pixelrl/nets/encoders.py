"""Observation encoders: the DrQ-v2 conv encoder, and a wrapper for pixel / state / dict observations."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelrl.nets.layers import weight_init

__all__ = ["conv_output_size", "ConvEncoder", "NatureCNN", "ObsEncoder", "orthogonal_init"]


def conv_output_size(size: int, strides: Sequence[int], kernel: int = 3) -> int:
    """Spatial size after unpadded ``kernel``x``kernel`` convolutions with ``strides``: ``(s - k) // stride + 1``."""
    for s in strides:
        size = (size - kernel) // s + 1
        if size <= 0:
            raise ValueError(f"image too small for strides {tuple(strides)}")
    return size


class ConvEncoder(nn.Module):
    """DrQ-v2 pixel encoder: ``x/255 - 0.5``, then 3x3 convs with ReLU and no padding, flattened.

    84x84 input with channels ``(32,)*4`` and strides ``(2, 1, 1, 1)`` gives 32x35x35 = 39,200 features.
    The flattened features are in (H, W, C) order (free when activations are channels_last); this is a fixed
    permutation of the reference's (C, H, W) order, so the math is the same but weights are not interchangeable
    with reference checkpoints.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        channels: Sequence[int] = (32, 32, 32, 32),
        strides: Sequence[int] = (2, 1, 1, 1),
    ) -> None:
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ValueError(f"encoder channels {tuple(channels)} and strides {tuple(strides)} must have equal length")
        layers: list[nn.Module] = []
        c = in_channels
        for out_c, s in zip(channels, strides):
            layers += [nn.Conv2d(c, out_c, 3, stride=s), nn.ReLU(inplace=True)]
            c = out_c
        self.convnet = nn.Sequential(*layers)
        h, w = image_size
        self.out_hw = (conv_output_size(h, strides), conv_output_size(w, strides))
        self.repr_dim = channels[-1] * self.out_hw[0] * self.out_hw[1]
        self.apply(weight_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: pixels in [0, 255] (uint8 or float) ``[B, C, H, W]`` -> features ``[B, repr_dim]``.

        The scaling ``x/255 - 0.5`` is folded into the first convolution (``W/255``, ``b - 0.5*sum(W)``), which is
        the same function without two passes over the input.
        """
        x = x.float() if x.dtype == torch.uint8 else x
        conv0 = self.convnet[0]
        w = conv0.weight
        h = F.conv2d(x, w / 255.0, conv0.bias - 0.5 * w.sum(dim=(1, 2, 3)), conv0.stride)
        h = self.convnet[1:](h)
        return h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)


class NatureCNN(nn.Module):
    """The Nature-DQN encoder (Mnih et al. 2015), used by DQN-family agents and by PPO on Atari: ``x/255``, then
    32 8x8/4, 64 4x4/2, 64 3x3/1 convolutions with ReLU, flattened (3136 features at 84x84), then a linear layer to
    ``out_dim`` (512) with ReLU. ``out_dim=0`` leaves the flattened conv features (``repr_dim`` = their size).

    Initialisation is PyTorch's default; an agent that follows a reference with another init (CleanRL's PPO:
    orthogonal, gain sqrt(2), bias 0) applies it itself (:func:`orthogonal_init`)."""

    def __init__(self, in_channels: int, image_size: tuple[int, int] = (84, 84), out_dim: int = 512) -> None:
        super().__init__()
        self.convnet = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(inplace=True),
            nn.Flatten())
        h, w = image_size
        for k, s in ((8, 4), (4, 2), (3, 1)):
            h, w = (h - k) // s + 1, (w - k) // s + 1
            if h <= 0 or w <= 0:
                raise ValueError(f"image {image_size} too small for the Nature CNN (needs at least 36x36)")
        self.conv_dim = 64 * h * w
        self.fc = nn.Sequential(nn.Linear(self.conv_dim, out_dim), nn.ReLU(inplace=True)) if out_dim else None
        self.repr_dim = out_dim or self.conv_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: pixels in [0, 255] (uint8 or float) ``[B, C, H, W]`` -> features ``[B, repr_dim]``."""
        h = self.convnet(x.float() / 255.0)
        return self.fc(h) if self.fc is not None else h


def orthogonal_init(module: nn.Module, gain: float = 2 ** 0.5, bias: float = 0.0) -> nn.Module:
    """Orthogonal weights with ``gain`` and constant ``bias`` for every Linear / Conv2d in ``module`` (CleanRL's
    ``layer_init``); returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(m.weight, gain)
            if m.bias is not None:
                nn.init.constant_(m.bias, bias)
    return module


class ObsEncoder(nn.Module):
    """Encodes an observation into a flat feature vector.

    Handles three observation kinds:
      * pixels ``[B, C, H, W]``: :class:`ConvEncoder`;
      * state ``[B, d]`` float: identity (``repr_dim = d``);
      * dict with ``"pixels"`` and optional ``"state"``: conv features of the pixels concatenated with the state.
    """

    def __init__(
        self,
        kind: str,
        *,
        pixel_shape: tuple[int, int, int] | None = None,
        state_dim: int = 0,
        channels: Sequence[int] = (32, 32, 32, 32),
        strides: Sequence[int] = (2, 1, 1, 1),
    ) -> None:
        super().__init__()
        if kind not in ("pixels", "state", "dict"):
            raise ValueError(f"unknown observation kind {kind!r}")
        self.kind = kind
        self.state_dim = state_dim
        self.conv: ConvEncoder | None = None
        repr_dim = state_dim
        if kind in ("pixels", "dict"):
            assert pixel_shape is not None
            c, h, w = pixel_shape
            self.conv = ConvEncoder(c, (h, w), channels, strides)
            repr_dim += self.conv.repr_dim
        self.repr_dim = repr_dim

    def forward(self, obs) -> torch.Tensor:
        if self.kind == "state":
            return obs.float()
        if self.kind == "pixels":
            return self.conv(obs)
        feat = self.conv(obs["pixels"])
        if self.state_dim:
            feat = torch.cat([feat, obs["state"].to(feat.dtype).reshape(feat.shape[0], -1)], dim=-1)
        return feat
