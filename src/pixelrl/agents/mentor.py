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
    blend is on too, and alpha_max is chosen per domain like DrM's (Meta-World: perturbation every 50k updates,
    alpha_max 0.95, constant blend weight 0.5)."""
    from pixelrl.mechanisms.drm import alpha_max_for
    from pixelrl.mechanisms.mentor import ACTOR_GRAD_CLIP

    over = {"moe": "actor", "exploration": "dormant", "perturb": "task", "value_blend": "expectile",
            "log_dormant": True, "actor_grad_clip": ACTOR_GRAD_CLIP, "mentor.alpha_max": alpha_max_for(env_id)}
    if env_id.startswith("metaworld/"):
        over.update({"mentor.perturb_interval": 50_000, "drm.lambda_const": 0.5})
    return over
