"""DrQ-v2 presets: per-task overrides from the paper's task lists, and ``cpu_fast`` for quick CPU runs.

Keys are :class:`~pixelrl.agents.drqv2.DrQv2Config` fields, plus ``frames`` (trainer: total env frames) and
env options (``size``, ``action_repeat``); the trainer splits them.
"""

from __future__ import annotations

import re

__all__ = ["EASY", "MEDIUM", "HARD_PREFIXES", "DIFFICULTY", "task_difficulty", "task_preset", "cpu_fast"]

EASY = frozenset(
    {
        "cartpole_balance", "cartpole_balance_sparse", "cartpole_swingup", "cup_catch", "finger_spin",
        "hopper_stand", "pendulum_swingup", "walker_stand", "walker_walk", "reacher_easy",
    }
)
"""DrQ-v2's easy tasks: sigma decays over 100k agent steps, 1.1M frames."""

MEDIUM = frozenset(
    {
        "acrobot_swingup", "cartpole_swingup_sparse", "cheetah_run", "finger_turn_easy", "finger_turn_hard",
        "hopper_hop", "quadruped_run", "quadruped_walk", "reach_duplo", "reacher_hard", "walker_run",
    }
)
"""DrQ-v2's medium tasks: sigma decays over 500k agent steps, 3.1M frames."""

HARD_PREFIXES = ("humanoid_",)
"""DrQ-v2's hard tasks (humanoid_*): sigma over 2M agent steps, lr 8e-5, feature_dim 100, 30.1M frames."""

DIFFICULTY = {
    "easy": {"stddev_schedule": "linear(1.0,0.1,100000)", "frames": 1_100_000},
    "medium": {"stddev_schedule": "linear(1.0,0.1,500000)", "frames": 3_100_000},
    "hard": {"stddev_schedule": "linear(1.0,0.1,2000000)", "frames": 30_100_000, "lr": 8e-5, "feature_dim": 100},
}


def _task_name(env_id: str) -> str:
    """'dmc/walker-walk', 'walker_walk', 'dmc:Walker-Walk' -> 'walker_walk'."""
    name = re.split(r"[/:]", env_id)[-1]
    return name.strip().lower().replace("-", "_")


def task_difficulty(env_id: str) -> str | None:
    """'easy' / 'medium' / 'hard' for a DrQ-v2 DMC task, None for a task outside the paper's lists."""
    name = _task_name(env_id)
    if name in EASY:
        return "easy"
    if name in MEDIUM:
        return "medium"
    if name.startswith(HARD_PREFIXES):
        return "hard"
    return None


def task_preset(env_id: str) -> dict:
    """DrQ-v2's per-task overrides for ``env_id`` (``{}`` for a task outside the paper's lists).

    Difficulty sets ``stddev_schedule`` and ``frames`` (and lr / feature_dim for hard tasks); walker tasks use
    ``nstep=1`` and ``batch_size=512``; quadruped_run uses ``replay_capacity=100_000``.
    """
    difficulty = task_difficulty(env_id)
    if difficulty is None:
        return {}
    out = dict(DIFFICULTY[difficulty])
    name = _task_name(env_id)
    if name.startswith("walker_"):
        out.update(nstep=1, batch_size=512)
    if name == "quadruped_run":
        out.update(replay_capacity=100_000)
    return out


cpu_fast: dict = {
    "frames": 110_000,
    "eval_episodes": 5,
    "size": 64,
    "action_repeat": 8,
    "fast_render": True,
    "encoder_channels": (32, 32, 32, 32),
    "encoder_strides": (2, 2, 1, 1),
    "update_every_steps": 1,
    "batch_size": 128,
    "hidden_dim": 256,
    "lr": 3e-4,
    "feature_dim": 50,
    "stddev_schedule": "linear(1.0,0.1,10000)",
    "num_seed_steps": 500,
    "precision": "bf16",
    "actor_pre_tanh_penalty": 1e-3,
}
"""CPU default for ``make train`` (not the paper's configuration): 110k frames of 64x64 pixels rendered without
shadows, reflections and anti-aliasing, action repeat 8, strides (2, 2, 1, 1) (64 -> 11x11x32 = 3,872 features), an
update every agent step, batch 128, hidden 256, lr 3e-4, 5 evaluation episodes. sigma decays over 10k of the run's
13.75k agent steps and the 500 seed steps are DrQ-v2's 4,000 seed frames at action repeat 8; both scaled down with the
short CPU budget. bf16 autocast: the update is ~1.5x faster than fp32 on 2 cores (47 vs 70 ms); learning check on
dmc/cartpole-swingup seed 1: bf16 eval 312 at 80k frames vs fp32 225 (one seed each, so "does not hurt", not
"helps"). Eval at 110k frames without the penalty: seed 1 510 (3.7x random), seed 3 445 (3.9x); seed 2 stalls
(saturated actor) - see benchmarks/results/cpu_default_learning*.json. ``actor_pre_tanh_penalty`` 1e-3 (DrQ-v2-style
agents; SAC and residual skip it): without it the deterministic actor saturates at +-1 in the first ~1k updates on
some seeds and the run stalls at ~75; see benchmarks/results/cpu_fast_actor_penalty_states.json. With it, `make train`
on seed 2 (the stalled seed): eval 641 at 110k frames (4.9x random) in 13.8 min
(benchmarks/results/cpu_default_learning_seed2_penalty.json)."""
