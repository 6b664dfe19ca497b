"""Relabelling stored transitions with a reward model: a replay buffer in place, a dataset on disk into a new one.

The reward of a transition ``(o_t, a_t, o_{t+1})`` is ``model(o_t, actions=a_t, next_obs=o_{t+1})`` combined with the
stored (env) reward as the model's ``mode`` says (``replace`` or ``add``): the same rule the trainer applies online
(:mod:`pixelrl.rewards.wrapper`), so a buffer relabelled after the fact holds what an online run would have stored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from pixelrl.data.dataset import DATA_DIR, METADATA_FILE, DatasetWriter, OfflineDataset, load_dataset
from pixelrl.data.replay import parse_obs_space
from pixelrl.errors import ConfigError
from pixelrl.rewards.base import RewardModel, bind_model, combine

__all__ = ["relabel_replay", "relabel_dataset"]


# ------------------------------------------------------------------------------------------- replay


def relabel_replay(replay: Any, model: RewardModel, *, chunk: Optional[int] = None,
                   base_rewards: Optional[np.ndarray] = None) -> dict[str, float]:
    """Replace the reward of every step stored in ``replay`` (a :class:`~pixelrl.data.replay.ReplayBuffer`) by the
    model's (``mode='replace'``) or add it to the stored one (``add``), in place; the n-step returns sampled
    afterwards use the new rewards. Observations, actions, flags, the sampler's RNG state and every other field stay
    as they were.

    Goes through the buffer's public ``state_dict`` / ``load_state_dict``, so the buffer's next ``save`` writes every
    slot again (no stale chunk on disk keeps an old reward); that holds a copy of the buffer in memory while it runs.
    Frame stacks are rebuilt as the sampler builds them (clamped to the episode's first frame); where the oldest
    frames of a stack were already evicted from the ring they are replaced by the oldest frame still stored (only
    models that read more than the newest frame see the difference; VLM-RM does not).

    ``base_rewards`` (float ``[hi - lo]``, one per live slot): combine the model's rewards with these instead of the
    stored ones (a model that relabels the same buffer repeatedly, e.g. a preference model after each fit, passes the
    env's own rewards so that ``add`` does not add twice).

    Returns ``{"steps": relabelled steps, "mean_reward": mean of the new rewards, "seconds": time taken}``.
    """
    t0 = time.perf_counter()
    bind_model(model, replay.observation_space, replay.frame_stack, replay.action_space, where="the replay")
    state = replay.state_dict()
    meta, arrays = state["meta"], state["arrays"]
    lo, hi = int(meta["lo"]), int(meta["hi"])
    count = hi - lo
    keys = parse_obs_space(replay.observation_space, replay.frame_stack, store="the replay buffer stores")
    first, ep_start = arrays["first"], arrays["ep_start"]
    steps = np.flatnonzero(~first)  # rows holding a step record (the step that led into that observation)
    reward = arrays["reward"].copy()
    if base_rewards is not None:
        base_rewards = np.asarray(base_rewards, dtype=np.float32)
        if base_rewards.shape != reward.shape:
            raise ValueError(f"base_rewards has shape {base_rewards.shape}, the replay holds {reward.shape[0]} slots")
        reward = base_rewards.copy()
    if steps.size:
        offsets = np.arange(-replay.frame_stack + 1, 1, dtype=np.int64)
        floor = np.maximum(ep_start - lo, 0)  # rows of each slot's episode start, clamped to the oldest stored
        chunk = int(chunk or max(model.batch_size, 1))

        def stacks(rows: np.ndarray) -> Any:
            idx = np.maximum(rows[:, None] + offsets[None, :], floor[rows][:, None])  # [b, S]
            out = {}
            for i, k in enumerate(keys):
                a = arrays[f"obs_{i}"]
                out[k.name] = a[idx].reshape(len(rows), *k.env_shape) if k.pixel else a[rows]
            return out if keys[0].name is not None or len(keys) > 1 else out[None]

        needs = model.needs
        for s in range(0, steps.size, chunk):
            rows = steps[s:s + chunk]
            r = model(stacks(np.maximum(rows - 1, 0)) if "obs" in needs else None,
                      actions=arrays["action"][rows] if "actions" in needs else None,
                      next_obs=stacks(rows) if "next_obs" in needs else None)
            reward[rows] = combine(model, reward[rows], r)
    arrays = {**arrays, "reward": reward.astype(np.float32)}
    replay.load_state_dict({"meta": meta, "arrays": arrays})
    new = reward[steps]
    return {"steps": int(steps.size), "slots": int(count),
            "mean_reward": float(new.mean()) if new.size else float("nan"),
            "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------- dataset


def _at(obs: Any, rows: slice) -> Any:
    return {k: v[rows] for k, v in obs.items()} if isinstance(obs, dict) else obs[rows]


def relabel_dataset(src: Any, out: str | Path, model: RewardModel, *, spec: Optional[dict] = None,
                    dataset_id: Optional[str] = None,
                    progress: Optional[Callable[[int, int], None]] = None) -> dict[str, Any]:
    """Write a new dataset at ``out`` whose rewards are the model's (``replace``) or the source's plus the model's
    (``add``); everything else -- frames, actions, terminations, truncations, episode seeds, the env id, frame stack,
    the source's metadata -- is copied bit for bit. The source is verified first (checksums) and only read.

    The new dataset is written under a hidden temporary name next to ``out`` and renamed into place when complete
    (:class:`~pixelrl.data.dataset.DatasetWriter`): an interrupted relabel leaves nothing at ``out``. Its metadata
    records the source and the reward (``spec``) under ``relabel``. ``progress(done, total)`` is called after each
    episode. ``src`` is a dataset folder or an :class:`~pixelrl.data.dataset.OfflineDataset` already loaded. Returns a
    summary (episodes, transitions, returns before and after, seconds)."""
    t0 = time.perf_counter()
    ds = src if isinstance(src, OfflineDataset) else load_dataset(src)
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} already exists; choose a new --out folder (relabelling never overwrites a dataset)")
    if out.resolve() == ds.path.resolve():
        raise ConfigError("--out must be a new folder, not the source dataset")
    bind_model(model, ds.observation_space, ds.frame_stack, ds.action_space, where="the dataset")
    src_meta = json.loads((ds.path / DATA_DIR / METADATA_FILE).read_text())
    block = src_meta.get("pixelrl", {})
    user = dict(ds.metadata)
    user["relabel"] = {"source": str(ds.path.resolve()), "source_dataset_id": ds.dataset_id,
                       "source_sha256": block.get("file", {}).get("sha256"), "reward": spec,
                       "previous": user.get("relabel")}
    seeds = _episode_seeds(ds)
    before, after = [], []
    writer = DatasetWriter(out, ds.observation_space, ds.action_space, env_id=ds.env_id, frame_stack=ds.frame_stack,
                           dataset_id=dataset_id, metadata=user, compression=block.get("compression", "gzip"))
    try:
        needs = model.needs
        for ep in ds.iter_episodes(stacked=True):
            obs, actions, rewards = ep["observations"], ep["actions"], ep["rewards"]
            steps = len(rewards)
            new = np.empty(steps, dtype=np.float64)
            for s in range(0, steps, max(model.batch_size, 1)):
                e = min(s + model.batch_size, steps)
                r = model(_at(obs, slice(s, e)) if "obs" in needs else None,
                          actions=actions[s:e] if "actions" in needs else None,
                          next_obs=_at(obs, slice(s + 1, e + 1)) if "next_obs" in needs else None)
                new[s:e] = combine(model, rewards[s:e], r)
            writer.add_episode(obs, actions, new, ep["terminations"], ep["truncations"], seed=seeds.get(ep["id"]))
            before.append(float(rewards.sum()))
            after.append(float(new.sum()))
            if progress is not None:
                progress(len(after), ds.num_episodes)
        path = writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"src": str(ds.path), "out": str(path), "dataset_id": writer.dataset_id, "episodes": len(after),
            "transitions": ds.num_transitions, "mean_return_before": float(np.mean(before)),
            "mean_return_after": float(np.mean(after)), "seconds": time.perf_counter() - t0}


def _episode_seeds(ds: Any) -> dict[int, int]:
    """The ``seed`` attribute of each episode group (Minari's), to copy it to the relabelled dataset."""
    import h5py

    seeds = {}
    with h5py.File(ds.file, "r") as f:
        for i in range(ds.num_episodes):
            s = f[f"episode_{i}"].attrs.get("seed")
            if s is not None:
                seeds[i] = int(s)
    return seeds
