"""The SQIRL trainer: horizon step by horizon step, random rollouts after frozen greedy prefixes, k-step fitted
Q-iteration, one frozen policy per timestep (see :mod:`pixelrl.agents.sqirl` for the algorithm).

One horizon step ``i`` (:meth:`SQIRLTrainer._horizon_step`):

1. collect ``m`` (``episodes_per_timestep``) episodes on ``min(num_envs, m)`` envs stepped in lockstep (all reset
   together, as the authors' code; fewer on the last round when ``m`` is not a multiple): timestep ``t < i`` acts
   greedily with the policy frozen for ``t``, ``t >= i`` uniformly at random;
2. store each episode's transitions from timestep ``i`` on with their Monte-Carlo returns (:class:`SegmentReplay`);
3. ``ceil(env steps collected * n_epochs / batch_size)`` gradient steps on batches drawn uniformly from everything
   stored so far; then the network is frozen as the policy of timestep ``i``.

Training ends at ``frames``, at the time budget, or -- the authors' rule -- when ``idle_iterations`` horizon steps in
a row took no random step (every episode ended before timestep ``i``: the learned horizon covers the episodes).

The run folder is :class:`pixelrl.train.loop.Trainer`'s: ``config.json`` (with ``decisions``), ``metrics.jsonl`` /
``train.csv`` (one row per horizon step) / ``eval.csv``, TensorBoard, ``checkpoints/``, ``replay/``, ``curve.png``,
``summary.json``. Evaluation (:func:`pixelrl.train.evaluate.evaluate_agent`) runs the time-indexed policy: the agent
counts timesteps from ``begin_episode``, and timesteps beyond the learned horizon act greedily with the current
network (the last frozen policy).

Checkpoints are written at the end of every horizon step (or every ``checkpoint_every_frames`` frames when set),
and hold the agent (network, optimizer, loss scales and every frozen policy), the counters, every RNG (Python, NumPy,
torch, the random-action generator, the replay's sampler), the replay manifest and the log's size and copy. Episode
resets are seeded from ``(seed, episode index)``, so a run killed at any moment and resumed with ``pixelrl resume``
writes the same rows (timing columns aside) and ends with the same networks as a run never interrupted.

The summary and the last train row report the effective-horizon estimate of the run
(:func:`pixelrl.agents.sqirl.horizon_estimate`, ``effective_horizon`` in ``summary.json``).
"""

from __future__ import annotations

import io
import json
import math
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from pixelrl.agents import make_agent
from pixelrl.agents.sqirl import horizon_estimate
from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError, CorruptFileError, DivergenceError, PixelRLError
from pixelrl.train.config import TrainConfig
from pixelrl.train.episode import EnvRunner, check_finite_parameters, env_step_error
from pixelrl.train.loop import Trainer
from pixelrl.train.progress import TrainProgress
from pixelrl.train.setup import record_machine_choices
from pixelrl.utils.atomic import sha256_file, write_bytes_atomic
from pixelrl.utils.seeding import derive_seed, restore_rng_state

__all__ = ["SQIRLTrainer", "SegmentReplay", "mc_returns"]

TRAIN_STREAM, REPLAY_STREAM, ACTION_STREAM = 1, 4, 7


def mc_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """``G_t = r_t + gamma G_{t+1}`` backwards over one whole episode (``G`` after the last step is 0)."""
    out = np.zeros(len(rewards), dtype=np.float64)
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = float(rewards[t]) + gamma * g
        out[t] = g
    return out


class SegmentReplay:
    """Every stored transition of a SQIRL run, each frame stored once, sampled uniformly.

    A *segment* is the part of one episode from the horizon step's timestep ``i`` to its end. Its observations are
    stored as frames: the ``S`` frames of its first observation's stack, then the one new frame of each following
    observation (``S`` = the env's frame stack; a state vector is one frame, ``S = 1``), so transition ``j`` of a
    segment reads frames ``[j, j + S)`` as ``obs`` and ``[j + 1, j + S + 1)`` as ``next_obs``. Frames and transitions
    live in rings of ``capacity`` rows addressed by ever-growing absolute indices; adding past the capacity evicts the
    oldest frames and the transitions that read them.

    Persistence: :meth:`save` writes what was added since the last save as one chunk file
    (``chunk_f<first frame>.npz``, written atomically) and returns the manifest (counters, chunk names and sha256,
    sampler RNG state) that the trainer stores in its checkpoint; :meth:`load` rebuilds the rings from the chunks a
    manifest lists, after checking each one's sha256. Chunks written after the checkpoint are ignored (and rewritten
    identically by the resumed run)."""

    def __init__(self, observation_space: spaces.Box, frame_stack: int, capacity: int, seed: int) -> None:
        shape = tuple(observation_space.shape)
        self.pixels = len(shape) == 3
        self.S = int(frame_stack) if self.pixels else 1
        if self.pixels and shape[0] % self.S:
            raise ConfigError(f"observation channels {shape[0]} are not a multiple of frame_stack {self.S}")
        self.obs_shape = shape
        self.frame_shape = (shape[0] // self.S, *shape[1:]) if self.pixels else shape
        self.capacity = int(capacity)
        self.frames = np.zeros((self.capacity, *self.frame_shape), dtype=observation_space.dtype)
        self.tf = np.zeros(self.capacity, np.int64)  # absolute frame index of each transition's obs
        self.action = np.zeros(self.capacity, np.int64)
        self.reward = np.zeros(self.capacity, np.float32)
        self.discount = np.zeros(self.capacity, np.float32)
        self.mc_return = np.zeros(self.capacity, np.float32)
        self.timestep = np.zeros(self.capacity, np.int64)
        self.f_lo = self.f_hi = self.t_lo = self.t_hi = 0
        self.saved_f = self.saved_t = 0
        self.chunks: list[dict[str, Any]] = []
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def __len__(self) -> int:
        return self.t_hi - self.t_lo

    def split_frames(self, obs: np.ndarray) -> np.ndarray:
        """``[S, *frame_shape]``: an observation's stack as frames (oldest first)."""
        return np.asarray(obs).reshape(self.S, *self.frame_shape)

    def add_segment(self, observations: list[np.ndarray], actions: np.ndarray, rewards: np.ndarray,
                    discounts: np.ndarray, returns: np.ndarray, first_timestep: int) -> None:
        """Store one segment: ``observations`` ``obs_i .. obs_L`` (``L - i + 1`` of them, the last the episode's final
        observation) and the per-step arrays of its ``L - i`` transitions."""
        n = len(actions)
        if n == 0:
            return
        frames = [self.split_frames(observations[0])]
        c = self.frame_shape[0]
        for prev, nxt in zip(observations[:-1], observations[1:]):
            if self.S > 1 and not np.array_equal(np.asarray(nxt)[:-c], np.asarray(prev)[c:]):
                raise ConfigError("SQIRL stores each frame once and needs a sliding frame stack (each observation's "
                                  "older frames are the previous one's newer frames); this env's observations are "
                                  "not stacked that way -- use --frame-stack 1")
            frames.append(self.split_frames(nxt)[-1:])
        block = np.concatenate(frames, axis=0)  # [S + n, *frame_shape]
        if len(block) > self.capacity:
            raise ConfigError(f"an episode segment of {n} steps does not fit a replay of {self.capacity} frames; raise "
                              "--agent.replay-capacity")
        base = self.f_hi
        self.frames[np.arange(base, base + len(block)) % self.capacity] = block
        self.f_hi += len(block)
        rows = np.arange(self.t_hi, self.t_hi + n) % self.capacity
        self.tf[rows] = base + np.arange(n)
        self.action[rows] = actions
        self.reward[rows] = rewards
        self.discount[rows] = discounts
        self.mc_return[rows] = returns
        self.timestep[rows] = first_timestep + np.arange(n)
        self.t_hi += n
        self._evict()

    def _evict(self) -> None:
        self.f_lo = max(self.f_lo, self.f_hi - self.capacity)
        while self.t_lo < self.t_hi and self.tf[self.t_lo % self.capacity] < self.f_lo:
            self.t_lo += 1

    def _stack(self, start: np.ndarray) -> np.ndarray:
        idx = (start[:, None] + np.arange(self.S)[None]) % self.capacity
        x = self.frames[idx]  # [B, S, *frame_shape]
        return x.reshape(len(start), *self.obs_shape)

    def sample(self, batch_size: int, device: torch.device) -> Batch:
        """``batch_size`` transitions drawn uniformly (with replacement); ``extras['mc_return']`` holds the
        Monte-Carlo returns, ``discount`` gamma or 0 at an episode's last step."""
        if len(self) == 0:
            raise RuntimeError("the replay is empty")
        g = self.rng.integers(self.t_lo, self.t_hi, size=batch_size)
        rows = g % self.capacity
        start = self.tf[rows]

        def t(x):
            return torch.from_numpy(np.ascontiguousarray(x)).to(device)

        return Batch(obs=t(self._stack(start)), action=t(self.action[rows]), reward=t(self.reward[rows])[:, None],
                     discount=t(self.discount[rows])[:, None], next_obs=t(self._stack(start + 1)),
                     extras={"mc_return": t(self.mc_return[rows])[:, None]})

    # ---- persistence ----------------------------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        """Write the frames and transitions added since the last save as one chunk; return the manifest."""
        directory.mkdir(parents=True, exist_ok=True)
        if self.f_hi > self.saved_f:
            fr = np.arange(self.saved_f, self.f_hi)
            tr = np.arange(self.saved_t, self.t_hi)
            arrays = {"frames": self.frames[fr % self.capacity]}
            for name in ("tf", "action", "reward", "discount", "mc_return", "timestep"):
                arrays[name] = getattr(self, name)[tr % self.capacity]
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            name = f"chunk_f{self.saved_f:012d}.npz"
            path = directory / name
            write_bytes_atomic(path, buf.getvalue())
            self.chunks.append({"name": name, "f_from": int(self.saved_f), "f_to": int(self.f_hi),
                                "t_from": int(self.saved_t), "t_to": int(self.t_hi), "sha256": sha256_file(path)})
            self.saved_f, self.saved_t = self.f_hi, self.t_hi
        self.chunks = [c for c in self.chunks if c["f_to"] > self.f_lo]  # wholly evicted chunks are not needed
        return {"counters": [self.f_lo, self.f_hi, self.t_lo, self.t_hi], "chunks": list(self.chunks),
                "rng": _json_state(self.rng.bit_generator.state), "capacity": self.capacity,
                "frame_shape": list(self.frame_shape), "S": self.S}

    def load(self, directory: Path, manifest: dict[str, Any]) -> None:
        """Rebuild from ``manifest`` (as :meth:`save` returned it) and the chunk files it names; nothing changes
        unless every chunk is present and intact."""
        if manifest.get("capacity") != self.capacity or list(manifest.get("frame_shape", [])) != list(
                self.frame_shape) or manifest.get("S") != self.S:
            raise ConfigError(f"the replay in the checkpoint (capacity {manifest.get('capacity')}, frames "
                              f"{manifest.get('frame_shape')} x {manifest.get('S')}) does not fit this run's "
                              f"(capacity {self.capacity}, frames {list(self.frame_shape)} x {self.S})")
        f_lo, f_hi, t_lo, t_hi = (int(v) for v in manifest["counters"])
        loaded = []
        for c in manifest["chunks"]:
            path = directory / c["name"]
            if not path.is_file():
                raise CorruptFileError(path, "replay chunk named by the checkpoint is missing")
            if sha256_file(path) != c["sha256"]:
                raise CorruptFileError(path, "sha256 does not match the checkpoint's replay manifest")
            try:
                with np.load(path, allow_pickle=False) as z:
                    loaded.append((c, {k: z[k] for k in z.files}))
            except (OSError, ValueError, zipfile.BadZipFile) as e:
                raise CorruptFileError(path, f"unreadable replay chunk ({e})") from None
        for c, arr in loaded:
            fr = np.arange(c["f_from"], c["f_to"])
            keep = fr >= max(f_lo, f_hi - self.capacity)
            self.frames[fr[keep] % self.capacity] = arr["frames"][keep]
            tr = np.arange(c["t_from"], c["t_to"])
            keep = tr >= t_lo
            for name in ("tf", "action", "reward", "discount", "mc_return", "timestep"):
                getattr(self, name)[tr[keep] % self.capacity] = arr[name][keep]
        self.f_lo, self.f_hi, self.t_lo, self.t_hi = f_lo, f_hi, t_lo, t_hi
        self.saved_f, self.saved_t = f_hi, t_hi
        self.chunks = [dict(c) for c in manifest["chunks"]]
        rng = manifest["rng"]
        self.rng.bit_generator.state = {**rng, "state": {k: int(v) for k, v in rng["state"].items()}}


def _json_state(state: dict) -> dict:
    return json.loads(json.dumps(state, default=int))


class SQIRLTrainer(Trainer):
    """Builds envs, agent and replay from a resolved :class:`TrainConfig` (agent ``sqirl``) and runs or resumes
    SQIRL. ``run()`` returns the summary (also written to ``summary.json``): :class:`~pixelrl.train.loop.Trainer`'s,
    whose run folder, evaluation, checkpoint and resume pieces, run / Ctrl-C / divergence handling and summary it
    inherits, with ``ended_by`` ``horizon_covered`` where the learned horizon covers the episodes and the
    ``effective_horizon`` estimate."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, checkpoint: str | None = None) -> None:
        self.envs: list[EnvRunner] = []  # the lockstep training envs (Trainer's train_env stays None)
        super().__init__(cfg, resume=resume, checkpoint=checkpoint)

    def _close(self, *, release: bool = True) -> None:
        try:
            for env in self.envs:
                env.close()
        finally:
            self.envs = []
            super()._close(release=release)

    def _init(self, cfg: TrainConfig, resume: bool, checkpoint: str | None) -> None:
        self._begin(cfg, resume)
        if cfg.offline is not None and cfg.offline.active:
            raise ConfigError("SQIRL collects its own random rollouts; it takes no --dataset / --demos")
        if cfg.snapshot_bank is not None:
            raise ConfigError("SQIRL does not use snapshot resets (--snapshot-bank)")
        env_kwargs = self._make_eval_env(cfg)
        frame_stack = int(self.eval_env.get_wrapper_attr("frame_stack"))
        a = cfg.agent
        self.agent = make_agent(cfg.agent_name, self.obs_space, self.action_space, a, self.device)
        self.n_envs = min(a.num_envs, a.episodes_per_timestep)
        # A subprocess per env pays off for rendered / emulated envs; a state env's step is cheaper than the IPC.
        self.async_envs = bool(cfg.async_env and cfg.obs != "state" and self.n_envs > 1)
        if not resume:
            cfg = record_machine_choices(cfg, self.agent)
            decisions = dict(cfg.decisions or {})
            decisions.setdefault("sqirl_envs", {
                "num_envs": self.n_envs, "subprocesses": self.async_envs,
                "why": "min(num_envs, episodes_per_timestep) envs in lockstep (the authors' n_envs); subprocesses "
                       "only for pixel envs with --async-env (a state env steps faster than the IPC)"})
            import dataclasses

            cfg = self.cfg = dataclasses.replace(cfg, decisions=decisions)
        self.envs = [EnvRunner(cfg.env, asynchronous=self.async_envs, seed=derive_seed(cfg.seed, TRAIN_STREAM, j),
                               env_kwargs=env_kwargs) for j in range(self.n_envs)]
        self.replay = SegmentReplay(self.obs_space, frame_stack, a.replay_capacity,
                                    seed=derive_seed(cfg.seed, REPLAY_STREAM))
        self.action_rng = np.random.default_rng(derive_seed(cfg.seed, ACTION_STREAM))
        self.counters: dict[str, Any] = {
            "frames": 0, "agent_steps": 0, "episodes": 0, "evals": 0, "next_eval": 0, "next_checkpoint": 0,
            "last_eval_frames": -1, "last_checkpoint_frames": -1, "wall_s": 0.0, "horizon_step": 0, "idle": 0,
            "updates": 0, "stopped": ""}
        self._open_run(resume, checkpoint)

    def commit_resume(self) -> None:
        """After a resume has loaded everything: cut the log back to (or repair it from) the checkpoint."""
        restored, self._restored = self._restored, None
        self._resume_log(*restored)

    # ---- checkpoint / resume ---------------------------------------------------------------------------------
    def _checkpoint(self) -> Path:
        state = self._checkpoint_state({"actions": self.action_rng},
                                       lambda: json.dumps(self.replay.save(self.run_dir / "replay")))
        return self._save_checkpoint(state)

    def _restore(self, checkpoint: str | None = None) -> tuple[int, bytes | None]:
        """Load the latest checkpoint (or the one named ``checkpoint``) into the replay, agent, RNGs and counters,
        writing nothing. Returns the log's size at the checkpoint and the checkpoint's copy of the log."""
        ckpt, state, saved_cfg, now_cfg = self._load_checkpoint(checkpoint)
        self.replay.load(self.run_dir / "replay", json.loads(state["replay_manifest"]))
        self._restore_agent(state, ckpt, saved_cfg, now_cfg)
        restore_rng_state(state["rng"], {"actions": self.action_rng})
        restored = self._restore_counters(state)
        if self.counters["stopped"] == "time_budget":  # a resume gets a new budget; a covered horizon stays covered
            self.counters["stopped"] = ""
        return restored

    # ---- one horizon step -------------------------------------------------------------------------------------
    def _step_envs(self, active: list[int], actions: np.ndarray, t: int) -> list[tuple]:
        where = f"timestep {t} of a rollout of horizon step {self.counters['horizon_step']}"
        for j, act in zip(active, actions):
            self.envs[j].step_async(int(act))
        out = []
        for j, act in zip(active, actions):
            try:
                out.append(self.envs[j].step_wait())
            except PixelRLError:
                raise
            except Exception as e:
                for other in active:
                    if other != j:
                        self.envs[other].discard()
                raise env_step_error(self.cfg.env, e, where, act) from None
        return out

    def _collect(self) -> dict[str, Any]:
        """m episodes for the current horizon step: greedy frozen prefix, random from timestep i; stores the
        segments. Returns the row fields of the collection."""
        cfg, a, c = self.cfg, self.cfg.agent, self.counters
        i = c["horizon_step"]
        m, gamma = a.episodes_per_timestep, a.discount
        steps = explore = 0
        returns, lengths = [], []
        done_eps = 0
        while done_eps < m:
            n = min(self.n_envs, m - done_eps)
            obs = []
            for j in range(n):
                seed = derive_seed(cfg.seed, TRAIN_STREAM, c["episodes"] + j)
                try:
                    obs.append(self.envs[j].reset(seed=seed))
                except PixelRLError:
                    raise
                except Exception as e:
                    raise env_step_error(cfg.env, e, f"the reset of a rollout of horizon step {i}") from None
            seg_obs = [[o] if i == 0 else [] for o in obs]
            seg_act: list[list[int]] = [[] for _ in range(n)]
            rewards: list[list[float]] = [[] for _ in range(n)]
            ends = [False] * n
            active = list(range(n))
            t = 0
            while active:
                if t < i:
                    actions = self.agent.greedy(np.stack([obs[j] for j in active]), t)
                else:
                    actions = self.agent.action_start + self.action_rng.integers(self.agent.num_actions,
                                                                                  size=len(active))
                    explore += len(active)
                results = self._step_envs(active, actions, t)
                still = []
                for j, act, (o, r, term, trunc, frames) in zip(active, actions, results):
                    frames = self.action_repeat if frames is None else frames
                    c["frames"] += frames
                    c["agent_steps"] += 1
                    steps += 1
                    rewards[j].append(float(r))
                    if t >= i:
                        seg_act[j].append(int(act))
                        seg_obs[j].append(o)
                    elif t + 1 == i:
                        seg_obs[j].append(o)  # obs_i: the first observation of the segment
                    obs[j] = o
                    if term or trunc:
                        ends[j] = True
                    else:
                        still.append(j)
                active = still
                t += 1
            for j in range(n):
                r = np.asarray(rewards[j], np.float64)
                train_r = np.sign(r) if a.clip_rewards else r
                g = mc_returns(train_r, gamma)
                L = len(r)
                if L > i:
                    disc = np.full(L - i, gamma, np.float32)
                    disc[-1] = 0.0  # the episode's last step (terminated or truncated: the authors' dones)
                    self.replay.add_segment(seg_obs[j], np.asarray(seg_act[j], np.int64), train_r[i:], disc, g[i:],
                                            first_timestep=i)
                returns.append(float(r.sum()))
                lengths.append(L)
            c["episodes"] += n
            done_eps += n
        return {"steps": steps, "explore": explore, "returns": returns, "lengths": lengths}

    def _horizon_step(self, progress: TrainProgress) -> None:
        cfg, a, c = self.cfg, self.cfg.agent, self.counters
        t0 = time.perf_counter()
        i = c["horizon_step"]
        col = self._collect()
        t1 = time.perf_counter()
        c["idle"] = 0 if col["explore"] else c["idle"] + 1
        if c["idle"] > a.idle_iterations:  # the authors stop here, before training on this collection
            c["stopped"] = "horizon_covered"
            return
        updates = math.ceil(col["steps"] * a.n_epochs / a.batch_size)
        sums: dict[str, float] = {}
        for u in range(updates):
            m = self.agent.update(self.replay.sample(a.batch_size, self.device), step=c["agent_steps"])
            bad = [k for k, v in m.items() if "loss" in k and not math.isfinite(v)]
            if bad:
                raise DivergenceError(f"{', '.join(f'{k} = {m[k]}' for k in bad)} at update {u + 1} of horizon step "
                                      f"{i} (frame {c['frames']:,}): the training diverged")
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
        self.agent.freeze()
        c["horizon_step"] += 1
        c["updates"] += updates
        check_finite_parameters(self.agent, f"after horizon step {i} (frame {c['frames']:,})")
        t2 = time.perf_counter()
        row = {"frames": c["frames"], "agent_steps": c["agent_steps"], "horizon_step": i,
               "episodes": c["episodes"], "episode_return": float(np.mean(col["returns"])),
               "episode_length": float(np.mean(col["lengths"])),
               "explore_fraction": col["explore"] / max(col["steps"], 1), "updates": updates,
               "replay_size": len(self.replay),
               **{k: v / max(updates, 1) for k, v in sorted(sums.items())},
               "fps": col["steps"] * self.action_repeat / max(t2 - t0, 1e-9), "env_s": t1 - t0, "update_s": t2 - t1,
               "wall_s": time.perf_counter() - self._wall_start}
        self.logger.log("train", row)
        progress.update(c["frames"], env_s=t1 - t0, act_s=0.0, update_s=t2 - t1)

    def _train_episode(self, progress: TrainProgress) -> None:
        """One horizon step: the unit :func:`~pixelrl.train.episode.train_until` alternates with evaluations and
        checkpoints."""
        self._horizon_step(progress)

    # ---- Trainer's hooks -------------------------------------------------------------------------------------
    def _eval_row(self) -> dict[str, Any]:
        return {**super()._eval_row(), "horizon_steps": self.counters["horizon_step"]}

    def _eval_note(self, extra: str) -> str:
        return f"{extra} [{self.counters['horizon_step']} timesteps learned]"

    def _progress_title(self) -> str:
        cfg = self.cfg
        return f"{cfg.env} sqirl k={cfg.agent.planning_depth} m={cfg.agent.episodes_per_timestep} s{cfg.seed}"

    def _checkpoint_every(self) -> int:
        return self.cfg.checkpoint_every_frames or 1  # 0: at the end of every horizon step

    def _position(self) -> str:
        return f"{super()._position()} (horizon step {self.counters['horizon_step']})"

    def _over_budget(self) -> bool:
        """Whether to stop: the horizon is covered, or the time budget is spent (recorded in ``stopped``)."""
        c = self.counters
        if not c["stopped"] and super()._over_budget():
            c["stopped"] = "time_budget"
        return bool(c["stopped"])

    def _summary_extra(self, evals: list[dict[str, Any]]) -> dict[str, Any]:
        extra = {"ended_by": self.counters["stopped"]} if self.counters["stopped"] else {}
        extra["effective_horizon"] = self.effective_horizon(evals)
        return extra

    def effective_horizon(self, evals: list[dict[str, Any]]) -> dict[str, Any]:
        """What the run says about the effective horizon (see docs/agents/sqirl.md): the (k, m) it ran with, the
        estimate ``max(k, log_A m)`` that success certifies, and the learned horizon."""
        a = self.cfg.agent
        A = int(self.action_space.n)
        return {
            "k": a.planning_depth, "m": a.episodes_per_timestep, "num_actions": A,
            "estimate_if_solved": horizon_estimate(a.planning_depth, a.episodes_per_timestep, A),
            "timesteps_learned": self.counters["horizon_step"],
            "final_eval_return": evals[-1]["eval_return"] if evals else None,
            "random_return": next((r["random_return"] for r in evals if "random_return" in r), None),
            "meaning": "H <= max(k, log_A m) is suggested if this run solved the task (judge final_eval_return "
                       "against the task's optimum); SQIRL needs about A^H episodes per timestep",
        }
