"""Per-task presets from the authors' task configs, and ``cpu_fast`` for quick CPU runs.

Keys are :class:`~pixelrl.agents.drqv2.DrQv2Config` fields, plus ``frames`` (trainer: total env frames) and
env options (``size``, ``action_repeat``); the trainer splits them.

Each method's repository has its own ``cfgs/task/*.yaml``; the preset of each agent follows its own repository
(:data:`TASKS`): ``drqv2`` (and every agent without a table of its own) DrQ-v2's, ``drm`` DrM's, ``taco`` TACO's,
``mentor`` MENTOR's. A task file names a class (``easy`` / ``medium`` / ``hard``: the exploration-std decay and the
run length, :data:`DIFFICULTY`) and a few per-task overrides (learning rate, feature_dim, batch size, n-step,
replay size). A task that a method's repository has no file for (DrM on walker_walk, TACO on humanoid_run, ...) uses
DrQ-v2's file for it, the file all three forks started from.
Per-task mechanism settings (DrM's / MENTOR's alpha_max and lambda) are applied by the agents' own presets
(``pixelrl.agents.drm``, ``pixelrl.agents.mentor``), which read :data:`pixelrl.mechanisms.drm.DRM_TASK_SETTINGS`.
"""

from __future__ import annotations

import re

__all__ = ["EASY", "MEDIUM", "HARD_PREFIXES", "DIFFICULTY", "TASKS", "METAWORLD_TASK", "task_difficulty", "task_preset",
           "cpu_fast"]

_HARD_LR = {"lr": 8e-5, "feature_dim": 100}  # the humanoid / dog task files: lr 8e-5 and a 100-d bottleneck

DRQV2_TASKS: dict[str, tuple[str, dict]] = {
    # facebookresearch/drqv2 cfgs/task/*.yaml
    "cartpole_balance": ("easy", {}),
    "cartpole_balance_sparse": ("easy", {}),
    "cartpole_swingup": ("easy", {}),
    "cup_catch": ("easy", {}),
    "finger_spin": ("easy", {}),
    "hopper_stand": ("easy", {}),
    "pendulum_swingup": ("easy", {}),
    "walker_stand": ("easy", {"nstep": 1, "batch_size": 512}),
    "walker_walk": ("easy", {"nstep": 1, "batch_size": 512}),
    "acrobot_swingup": ("medium", {}),
    "cartpole_swingup_sparse": ("medium", {}),
    "cheetah_run": ("medium", {}),
    "finger_turn_easy": ("medium", {}),
    "finger_turn_hard": ("medium", {}),
    "hopper_hop": ("medium", {}),
    "quadruped_run": ("medium", {"replay_capacity": 100_000}),
    "quadruped_walk": ("medium", {}),
    "reach_duplo": ("medium", {}),
    "reacher_easy": ("medium", {}),  # medium in the authors' file (reacher_easy.yaml: defaults medium)
    "reacher_hard": ("medium", {}),
    "walker_run": ("medium", {"nstep": 1, "batch_size": 512}),
    "humanoid_run": ("hard", _HARD_LR),
    "humanoid_stand": ("hard", _HARD_LR),
    "humanoid_walk": ("hard", _HARD_LR),
}
"""DrQ-v2's task files: task -> (class, per-task overrides)."""

DRM_TASKS: dict[str, tuple[str, dict]] = {
    # XuGW-Kevin/DrM cfgs/task/*.yaml (DMC). Global config: nstep 3, batch 256 -- walker_run keeps n = 3.
    "acrobot_swingup": ("medium", {}),
    "acrobot_swingup_sparse": ("hard", {}),  # hard with DrQ-v2's lr and feature_dim
    "cartpole_swingup_sparse": ("medium", {}),
    "cheetah_run": ("medium", {}),
    "hopper_hop": ("medium", {}),
    "quadruped_run": ("medium", {"replay_capacity": 100_000}),
    "quadruped_walk": ("medium", {"replay_capacity": 100_000}),
    "reacher_easy": ("medium", {}),
    "reacher_hard": ("medium", {}),
    "walker_run": ("medium", {"batch_size": 512}),
    "dog_run": ("hard", _HARD_LR),
    "dog_stand": ("hard", _HARD_LR),
    "dog_trot": ("hard", _HARD_LR),
    "dog_walk": ("hard", _HARD_LR),
    "humanoid_run": ("hard", _HARD_LR),
    "humanoid_stand": ("hard", _HARD_LR),
    "humanoid_walk": ("hard", _HARD_LR),
    "manipulator_bring_ball": ("hard", {"lr": 8e-5}),  # lr 8e-5, feature_dim stays 50
}
"""DrM's task files: task -> (class, per-task overrides)."""

MENTOR_TASKS: dict[str, tuple[str, dict]] = dict(DRM_TASKS)
"""MENTOR's DMC task files (suninghuang19/mentor cfgs/task/*.yaml) are DrM's, value for value."""

TACO_TASKS: dict[str, tuple[str, dict]] = {
    # FrankZheng2022/TACO cfgs/task/*.yaml. The walker files set nstep 1 (batch 512, but cfgs/agent/taco.yaml's
    # batch_size 1024 is composed after the task file and wins: the TACO agent preset sets it).
    **{k: v for k, v in DRQV2_TASKS.items() if not k.startswith("humanoid_")},
    "acrobot_swingup_sparse": ("medium", {}),
    "manipulator_bring_ball": ("hard", {}),  # hard with DrQ-v2's lr and feature_dim
}
"""TACO's task files: DrQ-v2's (no humanoid) plus acrobot_swingup_sparse (medium) and manipulator_bring_ball."""

TASKS: dict[str, dict[str, tuple[str, dict]]] = {
    "drqv2": DRQV2_TASKS,
    "drm": DRM_TASKS,
    "mentor": MENTOR_TASKS,
    "taco": TACO_TASKS,
}
"""agent name -> its repository's task table; agents not listed use DrQ-v2's."""

DIFFICULTY = {
    "easy": {"stddev_schedule": "linear(1.0,0.1,100000)", "frames": 1_100_000},
    "medium": {"stddev_schedule": "linear(1.0,0.1,500000)", "frames": 3_100_000},
    "hard": {"stddev_schedule": "linear(1.0,0.1,2000000)", "frames": 30_100_000},
}
"""DrQ-v2's (and TACO's) class files: sigma decays over 100k / 500k / 2M agent steps, 1.1M / 3.1M / 30.1M frames.
lr 8e-5 and feature_dim 100 are per-task (humanoid, dog), not part of the hard class. DrM's and MENTOR's medium and
hard files are the same; their ``easy.yaml`` (210k frames, sigma over 40k agent steps) is named by none of their task
files, so it is not used here."""

METAWORLD_TASK = {"stddev_schedule": "linear(1.0,0.1,500000)", "frames": 2_100_000, "nstep": 10, "discount": 0.97}
"""DrM's and MENTOR's ``cfgs/task/metaworld.yaml`` (the same file in both) for every ``metaworld/`` task, as their
``train_mw.py`` applies it: 2.1M frames, sigma over 500k agent steps, and the replay built once with
n = floor(nstep + nstep_alpha) = floor(3 + 7) = 10 and gamma = discount - discount_alpha - discount_beta =
0.997 - 0.02 - 0.007 = 0.97. The file's schedules that would decay n and raise gamma over training are never applied
there (``update_buffer`` is never called; its ``update_discount`` line is commented out), so these constants are what
their Meta-World runs used."""

EASY = frozenset(k for k, (c, _) in DRQV2_TASKS.items() if c == "easy")
"""DrQ-v2's easy tasks: sigma decays over 100k agent steps, 1.1M frames."""

MEDIUM = frozenset(k for k, (c, _) in DRQV2_TASKS.items() if c == "medium")
"""DrQ-v2's medium tasks: sigma decays over 500k agent steps, 3.1M frames."""

HARD_PREFIXES = ("humanoid_",)
"""DrQ-v2's hard tasks (humanoid_*): sigma over 2M agent steps, lr 8e-5, feature_dim 100, 30.1M frames."""


def _task_name(env_id: str) -> str:
    """'dmc/walker-walk', 'walker_walk', 'dmc:Walker-Walk' -> 'walker_walk'."""
    name = re.split(r"[/:]", env_id)[-1]
    return name.strip().lower().replace("-", "_")


def _lookup(env_id: str, agent: str) -> tuple[str, dict] | None:
    """(class, per-task overrides) of ``env_id`` in ``agent``'s table, else in DrQ-v2's."""
    if env_id.startswith(("metaworld/", "adroit/")):
        return None
    name = _task_name(env_id)
    table = TASKS.get(agent, DRQV2_TASKS)
    return table.get(name, DRQV2_TASKS.get(name))


def task_difficulty(env_id: str, agent: str = "drqv2") -> str | None:
    """'easy' / 'medium' / 'hard' for a DMC task in ``agent``'s repository (or DrQ-v2's), None for a task outside
    the lists."""
    found = _lookup(env_id, agent)
    return None if found is None else found[0]


def task_preset(env_id: str, agent: str = "drqv2") -> dict:
    """The per-task overrides of ``agent``'s repository for ``env_id`` (``{}`` for a task outside the lists).

    The class sets ``stddev_schedule`` and ``frames``; per-task entries add e.g. lr / feature_dim (humanoid, dog,
    manipulator), ``nstep=1`` and ``batch_size=512`` (DrQ-v2's and TACO's walker tasks; DrM's walker_run: batch 512
    with n = 3), ``replay_capacity=100_000`` (quadruped_run; DrM/MENTOR also quadruped_walk). DrM and MENTOR on a
    ``metaworld/`` task get their Meta-World task file, :data:`METAWORLD_TASK`.
    """
    if env_id.startswith("metaworld/") and agent in ("drm", "mentor"):
        return dict(METAWORLD_TASK)
    found = _lookup(env_id, agent)
    if found is None:
        return {}
    difficulty, extra = found
    return {**DIFFICULTY[difficulty], **extra}


cpu_fast: dict = {
    "frames": 250_000,
    "time_budget_min": 13.5,
    "eval_episodes": 5,
    "size": 48,
    "action_repeat": 8,
    "fast_render": True,
    "encoder_channels": (32, 32, 32, 32),
    "encoder_strides": (2, 2, 1, 1),
    "update_every_steps": 1,
    "batch_size": 128,
    "hidden_dim": 256,
    "lr": 3e-4,
    "feature_dim": 50,
    "stddev_schedule": "linear(1.0,0.1,3000)",
    "num_seed_steps": 500,
    "actor_pre_tanh_penalty": 1e-3,
    "augment_pad": 2,
}
"""CPU default for ``make train`` (not the paper's configuration; its numbers do not compare with published ones).

What it is: 48x48 pixels rendered without shadows, reflections and anti-aliasing, action repeat 8, four 32-channel
3x3 convs with strides (2, 2, 1, 1) (48 -> 7x7x32 = 1,568 features), one update per agent step at batch 128, hidden
256, lr 3e-4, sigma decaying from 1.0 to 0.1 over the first 3k agent steps, 500 seed steps (DrQ-v2's 4,000 seed
frames at action repeat 8), 5 evaluation episodes, a 1e-3 penalty on the actor's squared pre-tanh mean, and random
shifts of up to 2 pixels (pad 2; DrQ-v2 pads 4 at 84x84). Training
stops after 13.5 minutes or at 250k frames, whichever comes first (``time_budget_min``), then runs the final
evaluation, so that `make train` (start-up and final evaluation included) ends within 15 minutes on any CPU and
trains as long as that allows: how many frames a CPU reaches in the budget depends on its speed (the summary
records it).
Precision is not set here: the agent's ``auto`` picks bf16 only where the CPU runs it natively and faster.

Why each choice (cartpole-swingup, fp32, measured on 2 cores; details in benchmarks/README.md):

* 48x48 instead of 64x64 (the preset before): the update costs about half (fp32 on an AVX-512 EPYC: 38 vs 74 ms;
  with the kernels limited to AVX2: 48 vs 94 ms; benchmarks/results/cpu_fast_cost_cpu.json) and seed 1 learned no
  worse per frame (eval 383 at 90k frames vs 349 for the 64x64 bf16 run of seed 1). The cheaper update buys frames:
  on an AVX2-only CPU the 64x64 fp32 preset reached only 50k frames in 15 minutes.
* sigma over 3k agent steps instead of 10k: the 10k schedule spent 70% of the old run exploring with sigma > 0.1.
* A time budget rather than a frame count: the curves still rise at 110k-150k frames, so the best use of 15
  minutes is to train for all of them; a fixed frame count either wastes a fast CPU's time or overruns a slow one.
* Tried and not kept (seed 1, eval at 60k frames, same settings otherwise): pre-tanh penalty 1e-2 (193) and 1e-1
  (270) against 1e-3 (318) - the actor does saturate (mean squared pre-tanh ~12) but un-saturating it did not speed
  learning; lr 1e-3 (210 vs 215 at 40k).
* ``actor_pre_tanh_penalty`` 1e-3 (DrQ-v2-style agents; SAC and residual skip it): without it the deterministic
  actor could saturate at +-1 within the first thousand updates and the run stalled at ~75 on some seeds
  (benchmarks/results/cpu_fast_actor_penalty_states.json).
* ``augment_pad`` 2 instead of DrQ-v2's 4 (a named deviation): pad 4 at 48x48 shifts the image 1.75 times as far,
  relative to its size, as DrQ-v2's pad 4 at 84x84 (4.2% of the side with pad 2, 4.8% in the paper). Measured by env
  frames, fp32, one run per seed (benchmarks/results/cpu_default_learning_candidates.json): at 120k frames seeds
  1 / 2 / 3 reached 700 / 620 / 677 against 573 / 778 / 307 with pad 4 (mean 665 vs 553, worst seed 620 vs 307;
  at 110k 718 / 746 / 737), at the same CPU time per update (53.0 vs 55.5 ms at one thread). Seed 2 is behind its
  pad-4 run, so this narrows the spread between seeds rather than lifting every seed; one run per seed and setting.
* Tried for the slow seed 3 and not kept (same file):

  - RLPD's LayerNorm in the Q MLPs (``critic_layernorm=True``; the same CPU time per update, 54.4 vs 55.5 ms at one
    thread), seeds 1-3 to 120k frames with pad 4: seed 3 went from the slowest to 759 at 120k (pad 4 alone: 307)
    and seed 1 to 685 (573), but seed 2 stalled at 204-351 from 50k to 120k frames where pad 4 alone reached 778
    (mean 595, worst seed 342: one seed far below 750, now a different one).
  - critic target tau 0.05 instead of 0.01: seed 3 at 123 at 20k frames (152), stopped there.
  - DrQ's SAC instead of DrQ-v2 (``--agent sac`` with this preset: a stochastic tanh-Gaussian actor with a learned
    temperature, which cannot stall on a saturated deterministic actor), seed 3 to 120k frames
    (benchmarks/results/cpu_default_learning_sac_seed3.json): 590 / 560 / 672 at 100k / 110k / 120k against
    553 / 737 / 677 for DrQ-v2 with pad 2: no faster, so the default stays DrQ-v2.

Measured with pad 4 (fp32, by env frames; benchmarks/results/cpu_default_learning_48px_fp32_seeds123.json): eval at
110k / 160k frames, seed 1 447 / 800, seed 2 788 / 746, seed 3 276 / 337 (random ~125); with pad 2 see above (to
120k only). The 13.5-minute budget allows ~215k
frames on the AVX-512 EPYC (bf16) and ~115-140k on an AVX2-only CPU (fp32), so the goal of eval >= 750 on every seed
within 15 minutes is not met yet: with pad 2 every seed is at 620-750 by 110-120k frames but not above 750 on all
three, no `make train` run with the time budget has been made with pad 2, and slower CPUs stop before the curves
level."""
