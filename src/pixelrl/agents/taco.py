"""TACO (Zheng et al. 2023, "TACO: Temporal Latent Action-Driven Contrastive Loss for Visual RL").

TACO is DrQ-v2 plus one auxiliary loss (``pixelrl.mechanisms.taco``): a temporal contrastive objective between the
current latent state with the next K actions and the latent state K steps later, plus CURL and reward-prediction
terms; the critic works on a learned latent action. Batch 1024 and K = n-step = 3, as published; everything else
is DrQ-v2's.
"""

from __future__ import annotations

SUMMARY = "TACO: DrQ-v2 + temporal action-driven contrastive loss on latent states and actions"


def preset(env_id: str) -> dict:
    """TACO's overrides of the DrQ-v2 config (the same for every task)."""
    return {"aux": ("taco",), "batch_size": 1024, "nstep": 3}
