"""RL fine-tuning of image generators on diffusers (optional extra ``pixelrl[genrl]``).

* :mod:`pixelrl.genrl.model` -- :func:`load_generator`: any diffusers folder (pixel space, or latent with a VAE);
* :mod:`pixelrl.genrl.sampler` -- the denoising MDP: trajectories with per-step log-probabilities (DDIM with
  eta > 0, LCM), recomputed exactly as sampled;
* :mod:`pixelrl.genrl.losses` -- DDPO / RLCM, PRDP, GRPO, Parrot and preference losses and advantages;
* :mod:`pixelrl.genrl.config`, :mod:`pixelrl.genrl.trainer` -- :class:`GenRLConfig` and :func:`train`
  (``pixelrl genrl train``);
* :mod:`pixelrl.genrl.generator` and :mod:`pixelrl.genrl.rewards` -- the locally trained generator, consistency
  model and rewards (JPEG compressibility, the shapes verifier, aesthetic MLP, any pixelrl reward model).

Names are imported lazily, so ``import pixelrl.genrl`` costs nothing until one is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Generator": "model", "load_generator": "model",
    "Schedule": "sampler", "Trajectory": "sampler", "make_schedule": "sampler", "sample": "sampler",
    "step_log_prob": "sampler",
    "GenRLConfig": "config", "ALGOS": "config",
    "train": "trainer", "read_prompts": "trainer",
    "init_generator": "generator",
    "make_reward": "rewards",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"pixelrl.genrl.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'pixelrl.genrl' has no attribute {name!r}")
