"""Evaluation videos (mp4 via imageio-ffmpeg)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def frame_from_obs(obs, channels: int = 3) -> np.ndarray:
    """The newest RGB (or grey) frame of a stacked channel-first observation, as ``uint8[H, W, 3]``."""
    if isinstance(obs, dict):
        obs = obs["pixels"]
    obs = np.asarray(obs)
    if obs.ndim != 3 or obs.dtype != np.uint8:
        raise ValueError("video frames need pixel observations (uint8 [C, H, W])")
    c = channels if obs.shape[0] % channels == 0 else 1
    frame = obs[-c:].transpose(1, 2, 0)
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    return frame


def write_video(path: str | os.PathLike, frames: list[np.ndarray], fps: int = 30, min_size: int = 256) -> Path:
    """Write RGB frames to an H.264 mp4, upscaled (nearest) so the short side is at least ``min_size``.

    Frames are padded to a multiple of 16 pixels so every player accepts the file.
    """
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    scale = max(1, int(np.ceil(min_size / min(h, w))))
    out = []
    for f in frames:
        f = np.repeat(np.repeat(f, scale, axis=0), scale, axis=1)
        ph, pw = (-f.shape[0]) % 16, (-f.shape[1]) % 16
        if ph or pw:
            f = np.pad(f, ((0, ph), (0, pw), (0, 0)))
        out.append(f)
    tmp = path.with_name(path.stem + ".tmp.mp4")
    with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=16) as writer:
        for f in out:
            writer.append_data(f)
    os.replace(tmp, path)
    return path
