"""Collect a Snapshot RL (S3RL) bank from a teacher: ``pixelrl snapshots collect``.

The teacher is what ``pixelrl collect`` runs (:func:`pixelrl.train.collect.behaviour_policy`): uniform random
actions, or a trained run's checkpoint acting in eval mode, optionally with Gaussian action noise. Its episodes go
through :func:`pixelrl.envs.snapshot.collect_snapshots` (full simulator states every ``every`` agent steps, tagged
with a value, the best episodes kept, values clustered with k-means), and the bank is written as the folder that
``pixelrl train --snapshot-bank`` reads (``snapshots.npz`` + ``snapshots.json``, no pickle), appearing at ``out``
only once complete.

Values (``value``): ``"q"`` is the teacher critic's ``min_j Q_j(s, a)`` of the action it takes (the paper's);
``"return-to-go"`` the discounted Monte-Carlo return from the snapshot's step (for teachers without a critic, such
as the random policy); ``"auto"`` picks ``"q"`` when the teacher has a critic, else ``"return-to-go"``.

Determinism: the same arguments on the same machine write the same bank (episode ``i`` is reset with
``seed + i``, random actions and noise come from generators seeded from ``seed``, k-means is seeded by ``seed``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from pixelrl.errors import ConfigError
from pixelrl.train.collect import COLLECT_STREAM, _Progress, behaviour_policy, policy_env_settings
from pixelrl.utils.seeding import derive_seed, seed_everything

__all__ = ["VALUE_CHOICES", "collect_snapshot_bank"]

VALUE_CHOICES = ("auto", "q", "return-to-go")
"""Accepted values of ``value`` (see the module docstring)."""


def collect_snapshot_bank(
    env_id: str | None,
    policy: str,
    episodes: int,
    out: str | Path,
    *,
    clusters: int = 6,
    every: int = 10,
    keep_episodes: int | None = None,
    seed: int = 0,
    noise_std: float = 0.0,
    value: str = "auto",
    discount: float = 0.99,
    max_steps: int | None = None,
    size: int | None = None,
    action_repeat: int | None = None,
    frame_stack: int | None = None,
    obs: str | None = None,
    fast_render: bool | None = None,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Run the teacher ``policy`` for ``episodes`` episodes of ``env_id`` and write a snapshot bank folder ``out``.

    Args:
        env_id: pixelrl env id (``dmc/...`` or a Gymnasium MuJoCo ``gym/...``); with a run folder, None means the
            run's env (another id is an error).
        policy: ``"random"`` or a run folder made by ``pixelrl train``.
        episodes: teacher episodes (S3RL: 10).
        out: the bank folder to create (must not exist).
        clusters: k of the k-means over values (S3RL: 6; lowered if there are fewer distinct values).
        every: agent steps between snapshots (S3RL: 10).
        keep_episodes: the best episodes by return whose snapshots are kept (None = all; S3RL: the best 10 of 10).
        seed: seed of the episodes, random actions, noise and k-means.
        noise_std: std of Gaussian noise added to every teacher action, clipped to the bounds (0 = none).
        value: ``"auto"``, ``"q"`` or ``"return-to-go"`` (module docstring).
        discount: per-agent-step discount of the return-to-go (DrQ-v2's 0.99).
        max_steps: cut teacher episodes after this many agent steps (None = the env's time limit).
        size, action_repeat, frame_stack, obs, fast_render: env options; with a run folder they are the run's and a
            different value is an error. With the random policy the default observation is ``state`` (nothing is
            rendered: the bank holds simulator states, whatever the student observes).
        checkpoint: a checkpoint folder, or the name of one of the run's checkpoints; None = the latest.
        device: where the teacher's networks run (``cpu``, ``cuda``, ``auto``).
        progress: show a progress bar over episodes.

    Returns :meth:`SnapshotBank.summary` plus ``out``, ``policy``, ``env_kwargs`` and ``wall_s``.
    """
    from pixelrl.envs import make
    from pixelrl.envs.snapshot import agent_value_fn, check_restorable, collect_snapshots

    episodes = int(episodes)
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    keep = episodes if keep_episodes is None else int(keep_episodes)
    if not 1 <= keep <= episodes:
        raise ConfigError(f"--keep-episodes must be in [1, episodes={episodes}], got {keep_episodes}")
    if int(clusters) < 1:
        raise ConfigError(f"--clusters must be >= 1, got {clusters}")
    if int(every) < 1:
        raise ConfigError(f"--every must be >= 1 agent step, got {every}")
    if not (noise_std >= 0.0 and np.isfinite(noise_std)):
        raise ConfigError(f"--noise-std must be a finite number >= 0, got {noise_std}")
    if value not in VALUE_CHOICES:
        raise ConfigError(f"--value must be one of {list(VALUE_CHOICES)}, got {value!r}")
    if not 0.0 <= discount <= 1.0:
        raise ConfigError(f"--discount must be in [0, 1], got {discount}")
    if Path(out).exists():
        raise ConfigError(f"{out} already exists; delete it or choose another --out")
    given = {k: v for k, v in {"size": size, "action_repeat": action_repeat, "frame_stack": frame_stack, "obs": obs,
                               "fast_render": fast_render}.items() if v is not None}
    defaults = {"obs": "state"} if policy == "random" else {}
    env_id, env_kwargs, run_cfg = policy_env_settings(policy, env_id, {**defaults, **given})
    if run_cfg is None and value == "q":
        raise ConfigError("--value q needs a teacher with a critic; --policy random has none. Use --value "
                          "return-to-go (or auto), or pass a run folder as --policy")
    seed_everything(seed)
    env = make(env_id, seed=derive_seed(seed, COLLECT_STREAM), **env_kwargs)
    bar = None
    try:
        check_restorable(env)  # before loading a teacher: ale/ and other simulators cannot be saved
        teacher = behaviour_policy(env, run_cfg, policy, seed=seed, noise_std=noise_std, checkpoint=checkpoint,
                                   device=device, given=given)
        agent = teacher.agent
        has_critic = agent is not None and hasattr(agent, "encoder") and hasattr(agent, "critic")
        if value == "q" and not has_critic:
            raise ConfigError(f"--value q needs a teacher with a critic; the {teacher.meta.get('agent')} agent of "
                              f"{policy} has none. Use --value return-to-go (or auto)")
        value_fn = agent_value_fn(agent) if value == "q" or (value == "auto" and has_critic) else None
        resolved_kwargs = {**env_kwargs, "action_repeat": int(env.get_wrapper_attr("action_repeat")),
                           "frame_stack": int(env.get_wrapper_attr("frame_stack"))}
        meta = {"teacher": {**teacher.meta, "label": teacher.label, "noise_std": float(noise_std)},
                "env_kwargs": resolved_kwargs, "clusters_requested": int(clusters)}
        bar = _Progress(episodes, enabled=progress)
        t0 = time.perf_counter()
        bank = collect_snapshots(env, teacher.act, value_fn, episodes=episodes, every=int(every), keep_episodes=keep,
                                 k=int(clusters), seed=int(seed), max_steps=max_steps, discount=float(discount),
                                 on_episode=bar.episode, meta=meta)
    finally:
        if bar is not None:
            bar.close()
        env.close()
    path = bank.save(out, new=True)
    return {"out": str(path), "policy": str(policy), **bank.summary(), "env_kwargs": resolved_kwargs,
            "wall_s": time.perf_counter() - t0}
