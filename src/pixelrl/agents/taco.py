"""TACO (Zheng et al. 2023, "TACO: Temporal Latent Action-Driven Contrastive Loss for Visual RL").

TACO is DrQ-v2 plus one auxiliary loss (``pixelrl.mechanisms.taco``): a temporal contrastive objective between the
current latent state with the next K actions and the latent state K steps later, plus CURL and reward-prediction
terms; the critic works on a learned latent action. Batch 1024 (``cfgs/agent/taco.yaml``, composed after the task
file, so also on walker) and K = 3, as published; the n-step return is the task file's (3; walker tasks 1, with
K = 3 still: the replay gives the K-step window separately). Per-task classes follow TACO's own task files
(``pixelrl.agents.presets.TACO_TASKS``). Everything else is DrQ-v2's. ``--agent.taco.optimizer separate``
reproduces the authors' second Adam step on the encoder (see ``pixelrl.mechanisms.taco``).
"""

from __future__ import annotations

SUMMARY = "TACO: DrQ-v2 + temporal action-driven contrastive loss on latent states and actions"


def preset(env_id: str) -> dict:
    """TACO's overrides of the DrQ-v2 config (the same for every task; n-step comes from the task preset)."""
    return {"aux": ("taco",), "batch_size": 1024}
