"""The batch container shared by replay buffers, datasets and agents."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Union

import torch

Obs = Union[torch.Tensor, dict[str, torch.Tensor]]


@dataclass
class Batch:
    """A batch of transitions, already on the training device.

    Shapes (B = batch size):
      obs / next_obs: uint8 ``[B, frame_stack*C, H, W]`` for pixels, float32 ``[B, d]`` for states, or a flat
        dict of those keyed like the environment's Dict observation space.
      action: float32 ``[B, A]`` (continuous) or int64 ``[B]`` (discrete).
      reward: float32 ``[B, 1]``, the discounted n-step return ``sum_k gamma^k r_{t+k}``.
      discount: float32 ``[B, 1]``, ``gamma^m`` for the m steps summed, 0 where the episode terminated inside
        them (never 0 for a truncation).
      extras: optional per-sample tensors (``source``, ``intervened``, ...), each with leading dim B.
    """

    obs: Obs
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: Obs
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "Batch":
        def move(x):
            if isinstance(x, dict):
                return {k: v.to(device, non_blocking=non_blocking) for k, v in x.items()}
            return x.to(device, non_blocking=non_blocking)

        return Batch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})
