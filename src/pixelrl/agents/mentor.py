"""MENTOR (Huang et al. 2024, "MENTOR: Mixture-of-Experts Network with Task-Oriented Perturbation for Visual RL").

MENTOR is DrQ-v2 plus (``pixelrl.mechanisms.mentor``): a mixture-of-experts layer in the actor, exploration std set
by the dormant ratio (0.8 * sigmoid(10 (beta - 0.2))), task-oriented perturbation towards the best snapshots by
episode return, a clipped actor gradient (norm 0.001, the authors' value) and DrM's expectile value
blend. Everything else is DrQ-v2's.
"""

from __future__ import annotations

SUMMARY = "MENTOR: DrQ-v2 + MoE actor, dormant-ratio exploration, task-oriented perturbation"


def preset(env_id: str) -> dict:
    """MENTOR's overrides of the DrQ-v2 config for ``env_id``. As in the authors' agent, DrM's expectile value
    blend is on too, and alpha_max / lambda_max are set per task from its task files (DrM's values; Meta-World:
    perturbation every 50k updates, alpha_max 0.95, constant blend weight 0.5). The per-task class, lr,
    feature_dim, batch and replay size come from ``pixelrl.agents.presets.MENTOR_TASKS``."""
    from pixelrl.mechanisms.drm import task_settings
    from pixelrl.mechanisms.mentor import ACTOR_GRAD_CLIP

    task = task_settings(env_id)  # MENTOR's DMC task files carry DrM's values
    over = {"moe": "actor", "exploration": "dormant", "perturb": "task", "value_blend": "expectile",
            "log_dormant": True, "actor_grad_clip": ACTOR_GRAD_CLIP, "mentor.alpha_max": task["alpha_max"],
            "drm.lambda_max": task["lambda_max"]}
    if env_id.startswith("metaworld/"):
        over.update({"mentor.perturb_interval": 50_000, "drm.lambda_const": 0.5})
    return over
