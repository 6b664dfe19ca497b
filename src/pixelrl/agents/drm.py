"""DrM (Xu et al. 2024, "DrM: Mastering Visual Reinforcement Learning through Dormant Ratio Minimization").

DrM is DrQ-v2 plus three mechanisms driven by the actor's dormant ratio (``pixelrl.mechanisms.drm``):

* dormant-ratio-guided shrink-and-perturb of the actor and critic every ``drm.perturb_interval`` agent steps
  (``perturb='dormant'``), with alpha_max and lambda_max per task from the authors' task files
  (``pixelrl.mechanisms.drm.DRM_TASK_SETTINGS``; 0.95 Meta-World);
* awakened exploration: the exploration std follows the dormant ratio (``exploration='awakened'``);
* dormant-ratio-guided exploitation: an expectile value net blended into the TD target (``value_blend='expectile'``).

Everything else (networks, augmentation, n-step) is DrQ-v2's. The per-task settings (class, lr, feature_dim, batch,
replay size) are DrM's own task files' (``pixelrl.agents.presets.DRM_TASKS``): dog_* and manipulator_bring_ball
run hard (sigma over 2M agent steps; lr 8e-5; feature_dim 100 for dog), reacher_easy medium, walker_run keeps
n = 3 with batch 512.
"""

from __future__ import annotations

SUMMARY = "DrM: DrQ-v2 + dormant-ratio perturbation, awakened exploration, expectile value blend"


def preset(env_id: str) -> dict:
    """DrM's overrides of the DrQ-v2 config for ``env_id`` ('' = no task: the DMC defaults)."""
    from pixelrl.mechanisms.drm import task_settings

    task = task_settings(env_id)
    over = {"exploration": "awakened", "perturb": "dormant", "value_blend": "expectile", "log_dormant": True,
            "drm.alpha_max": task["alpha_max"], "drm.lambda_max": task["lambda_max"]}
    if env_id.startswith("metaworld/"):
        over["drm.lambda_const"] = 0.5  # the paper's Meta-World setting: a constant blend weight
    return over
