"""Image augmentation used by DrQ / DrQ-v2: random shift.

``random_shift`` replicate-pads a batch of images by ``pad`` pixels and crops it back to its size at a random
integer offset per sample. Like the DrQ-v2 reference it is written as a bilinear ``grid_sample`` whose sampling
grid sits exactly on pixel centres, so the result is an integer shift up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["random_shift", "random_shift_index", "RandomShift"]


def _base_grid(n: int, h: int, w: int, pad: int, device, dtype) -> torch.Tensor:
    """The zero-shift sampling grid ``[1, h, w, 2]`` (x, y) in the padded image's normalised coordinates."""
    eps_w = 1.0 / (w + 2 * pad)
    eps_h = 1.0 / (h + 2 * pad)
    xs = torch.linspace(-1.0 + eps_w, 1.0 - eps_w, w + 2 * pad, device=device, dtype=dtype)[:w]
    ys = torch.linspace(-1.0 + eps_h, 1.0 - eps_h, h + 2 * pad, device=device, dtype=dtype)[:h]
    grid = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)], dim=-1)
    return grid.unsqueeze(0)


def random_shift(x: torch.Tensor, pad: int = 4, shifts: torch.Tensor | None = None) -> torch.Tensor:
    """Randomly shift each image of ``x`` by up to ``pad`` pixels in x and y (replicate padding).

    Args:
      x: float tensor ``[N, C, H, W]`` (uint8 is converted to float32).
      pad: maximum shift in pixels; ``0`` returns ``x`` unchanged.
      shifts: optional integer tensor ``[N, 2]`` of (dx, dy) offsets into the padded image, each in
        ``[0, 2*pad]`` (``pad`` means no shift). Drawn uniformly from torch's global RNG when omitted.

    Returns a float tensor of the same shape as ``x``: ``out[n, c, i, j] = padded[n, c, i + dy, j + dx]``.
    """
    if x.dtype == torch.uint8:
        x = x.float()
    if pad == 0:
        return x
    n, _, h, w = x.shape
    if shifts is None:
        shifts = torch.randint(0, 2 * pad + 1, size=(n, 2), device=x.device)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    scale = torch.tensor([2.0 / (w + 2 * pad), 2.0 / (h + 2 * pad)], device=x.device, dtype=x.dtype)
    grid = _base_grid(n, h, w, pad, x.device, x.dtype) + (shifts.to(x.dtype) * scale).view(n, 1, 1, 2)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class RandomShift(nn.Module):
    """Module form of :func:`random_shift` (no parameters)."""

    def __init__(self, pad: int = 4) -> None:
        super().__init__()
        self.pad = int(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return random_shift(x, self.pad)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


def random_shift_index(
    x: torch.Tensor,
    pad: int = 4,
    shifts: torch.Tensor | None = None,
    channels_last: bool = True,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The same random shift as :func:`random_shift`, computed exactly by gathering pixels (no interpolation).

    Replicate padding followed by an integer crop is an index clamp, so the image is gathered directly from
    ``x`` (uint8 stays uint8 until the single float conversion). Equal to the bilinear version up to its float
    rounding (``|diff| < 1e-2`` on 0..255 pixels) and about 3x faster on CPU.

    Args:
      x: ``[N, C, H, W]`` uint8 or float.
      pad, shifts: as in :func:`random_shift` (``shifts[:, 0]`` = dx, ``shifts[:, 1]`` = dy, each in ``[0, 2*pad]``).
      channels_last: return a channels_last tensor (a free view of the gathered NHWC data); otherwise contiguous.
      out: optional float buffer ``[N, H, W, C]`` (contiguous) to write into and return a view of; reusing one
        across calls avoids re-faulting a fresh allocation each time (large on CPU). Only with channels_last.

    Returns float32 ``[N, C, H, W]`` (or ``x.dtype`` if floating).
    """
    n, c, h, w = x.shape
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    if pad == 0:
        y = x.to(out_dtype)
        return y.contiguous(memory_format=torch.channels_last) if channels_last else y.contiguous()
    if shifts is None:
        shifts = torch.randint(0, 2 * pad + 1, size=(n, 2), device=x.device)
    dev = x.device
    rows = (torch.arange(h, device=dev).view(1, h) + (shifts[:, 1:2] - pad)).clamp_(0, h - 1)
    cols = (torch.arange(w, device=dev).view(1, w) + (shifts[:, 0:1] - pad)).clamp_(0, w - 1)
    lin = torch.arange(n, device=dev).view(n, 1, 1) * (h * w) + rows.view(n, h, 1) * w + cols.view(n, 1, w)
    nhwc = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # free if x is already channels_last
    gathered = nhwc.index_select(0, lin.view(-1)).view(n, h, w, c)
    if out is not None and channels_last:
        return out.copy_(gathered).permute(0, 3, 1, 2)
    y = gathered.to(out_dtype).permute(0, 3, 1, 2)
    return y if channels_last else y.contiguous()
