"""DrM (Xu et al. 2024, "DrM: Mastering Visual Reinforcement Learning through Dormant Ratio Minimization").

DrM is DrQ-v2 plus three mechanisms driven by the actor's dormant ratio (``pixelrl.mechanisms.drm``):

* dormant-ratio-guided shrink-and-perturb of the actor and critic every ``drm.perturb_interval`` agent steps
  (``perturb='dormant'``), with alpha_max chosen per domain (1.0 for DMC, 0.6 dog/humanoid, 0.9 manipulator,
  0.95 Meta-World);
* awakened exploration: the exploration std follows the dormant ratio (``exploration='awakened'``);
* dormant-ratio-guided exploitation: an expectile value net blended into the TD target (``value_blend='expectile'``).

Everything else (networks, augmentation, n-step, learning rate, per-task settings) is DrQ-v2's.
"""

from __future__ import annotations

SUMMARY = "DrM: DrQ-v2 + dormant-ratio perturbation, awakened exploration, expectile value blend"


def preset(env_id: str) -> dict:
    """DrM's overrides of the DrQ-v2 config for ``env_id`` ('' = no task: the DMC defaults)."""
    from pixelrl.mechanisms.drm import alpha_max_for

    over = {"exploration": "awakened", "perturb": "dormant", "value_blend": "expectile", "log_dormant": True,
            "drm.alpha_max": alpha_max_for(env_id)}
    if env_id.startswith("metaworld/"):
        over["drm.lambda_const"] = 0.5  # the paper's Meta-World setting: a constant blend weight
    return over
