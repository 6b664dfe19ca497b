"""Offline RL from a dataset, offline->online fine-tuning (D5RL protocol), and demos mixed into online runs
(RLPD / SERL).

One trainer, up to two phases:

1. **Offline phase** (when ``dataset`` is given and ``offline_steps > 0``): ``offline_steps`` gradient updates on
   batches drawn from the dataset (and from the demos, ``demo_ratio`` of every batch, if given), with an
   evaluation in the environment every ``eval_every_steps`` updates. No environment step is taken for training.
2. **Online phase** (when the online budget is positive): the agent acts in the environment exactly as in the
   online trainer (the same :mod:`pixelrl.train.episode` code: act -> env step -> update(s) -> store, whole
   episodes, evaluation every ``eval_every_frames`` env frames) and every batch mixes the sources:

   * ``offline_ratio=None`` -- D5RL / IQL fine-tuning: new episodes are appended to the buffer that holds the
     offline data and batches are drawn uniformly from it (source ``"offline+online"``);
   * ``offline_ratio=x`` -- new episodes go to a separate online buffer; exactly ``x`` of every batch comes from
     the offline data and the rest from the online data (RLPD's 50/50 is ``x = 0.5``), through
     :class:`~pixelrl.data.mixing.MixedSampler`;
   * ``demos`` -- ``demo_ratio`` of every batch (both phases) comes from a demo dataset; with no ``dataset`` this
     is an online run with demos (RLPD / SERL): one online phase of ``TrainConfig.frames`` frames.

   Until the online buffer holds a complete transition, its share of the batch goes to the other sources
   (``on_empty='redistribute'``); every train row logs the realised share of each source (``frac_<source>``).

Step units. Offline rows have ``frames = agent_steps = 0`` and count ``updates``; online rows count ``frames``
and ``agent_steps`` from the start of the online phase. Every row also has ``step``: the offline updates done,
plus the online agent steps -- the x axis of D5RL's curves and the ``step`` the agent sees in ``act`` and
``update`` (so schedules continue across the switch, and DrQ-v2's warm-up is not repeated after pretraining).

Exactness as in the online trainer: buffers filled from files are refilled on resume and only their sampler RNG
state is checkpointed; buffers that receive online data are saved incrementally (``replay/<name>/``) and their
manifest recorded in each checkpoint. A run killed at any moment and resumed from its last checkpoint writes the
same metric rows (timing columns aside) as a run never interrupted, on the same machine and thread count.
See ``docs/offline.md``.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pixelrl.agents import make_agent
from pixelrl.data.mixing import MixedSampler
from pixelrl.data.replay import ReplayBuffer, sample_kwargs
from pixelrl.envs import make
from pixelrl.errors import ConfigError, DivergenceError, Interrupted
from pixelrl.train.config import OfflineConfig
from pixelrl.train.episode import (EnvRunner, check_finite_parameters, train_episode, train_until,
                                   where_to_resume)
from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from pixelrl.train.evaluate import EVAL_STREAM, evaluate_agent
from pixelrl.train.logger import Logger
from pixelrl.train.plot import save_figure
from pixelrl.utils.atomic import RunLock, storage_errors, write_json_atomic
from pixelrl.utils.dataclass_io import to_dict
from pixelrl.utils.seeding import capture_rng_state, derive_seed, restore_rng_state, seed_everything

if TYPE_CHECKING:  # train.config imports OfflineConfig from here: no runtime import of config/loop/setup
    from pixelrl.train.config import TrainConfig

__all__ = ["OfflineConfig", "OfflineTrainer", "SOURCES"]

# Seed streams (the online trainer uses 1 train env, 2 eval, 3 random policy, 4 replay, 5 warm-up).
TRAIN_STREAM, REPLAY_STREAM, WARMUP_STREAM, OFFLINE_STREAM, DEMO_STREAM = 1, 4, 5, 6, 7
SOURCES = ("offline", "offline+online", "online", "demos")
"""Source names of the batch mix (``batch.extras['source']`` indexes the mix's ``names``; rows log ``frac_<name>``)."""


def _load(path: str, what: str):
    """Open a dataset file with :func:`pixelrl.data.dataset.load_dataset` (which names corrupt files)."""
    if not str(path).startswith("hf://") and not Path(path).exists():  # hf://: load_dataset downloads it
        raise ConfigError(f"{what} {path} does not exist; pass a dataset written by `pixelrl collect` or "
                          "`pixelrl dataset convert`")
    from pixelrl.data.dataset import load_dataset

    return load_dataset(path)


def open_for_env(path: str, what: str, *, env: Any, run_env: str, allow_env_mismatch: bool = False):
    """Open a dataset file and check that it fits ``env`` (the run's env, id ``run_env``): the same observation and
    action spaces and frame stack, recorded on the same env (unless ``allow_env_mismatch``), at least one transition.
    Each mismatch is one ConfigError line saying what to pass. Used for ``--dataset`` / ``--demos`` here and for the
    demos that seed the intervention buffer (:mod:`pixelrl.train.loop`)."""
    ds = _load(path, what)
    obs_space, action_space = env.observation_space, env.action_space
    frame_stack, env_id = int(env.get_wrapper_attr("frame_stack")), str(env.get_wrapper_attr("env_id"))
    if ds.observation_space != obs_space or ds.action_space != action_space:
        raise ConfigError(
            f"{what} {path} does not fit env {run_env}: it holds observations "
            f"{_space_text(ds.observation_space)} and actions {_space_text(ds.action_space)}, the env gives "
            f"{_space_text(obs_space)} and {_space_text(action_space)}. Build the env as the data was "
            "collected (--obs, --size, --frame-stack, --action-repeat)")
    if getattr(ds, "pixel_keys", None) and int(ds.frame_stack) != frame_stack:
        raise ConfigError(f"{what} {path} was stored with frame_stack={ds.frame_stack}, the env stacks "
                          f"{frame_stack}; pass --frame-stack {ds.frame_stack}")
    ds_env = getattr(ds, "env_id", None)
    if ds_env and ds_env not in (env_id, run_env) and not allow_env_mismatch:
        raise ConfigError(f"{what} {path} was collected on {ds_env}, but the run's env is {run_env}; pass "
                          f"--env {ds_env} (or allow_env_mismatch if the data really comes from this env)")
    if int(ds.num_transitions) < 1:
        raise ConfigError(f"{what} {path} holds no transition")
    return ds


def _fingerprint(ds) -> dict[str, Any]:
    return {"episodes": int(ds.num_episodes), "transitions": int(ds.num_transitions),
            "return_sum": round(float(np.sum(ds.episode_returns())), 3)}


def _space_text(space) -> str:
    return str(space).replace("\n", " ")


class OfflineTrainer:
    """Offline, offline->online and demo-mixed training from a :class:`TrainConfig` and an :class:`OfflineConfig`.

    ``offline`` defaults to ``cfg.offline``. ``run()`` trains until both phase budgets are spent and returns a
    summary; ``resume=True`` continues the run in ``cfg.run_dir`` from its last checkpoint.
    """

    def __init__(self, cfg: "TrainConfig", offline: OfflineConfig | None = None, *, resume: bool = False) -> None:
        offline = offline if offline is not None else getattr(cfg, "offline", None)
        if not isinstance(offline, OfflineConfig):
            raise ConfigError("OfflineTrainer needs an OfflineConfig (TrainConfig.offline or the offline argument)")
        if not offline.active:
            raise ConfigError("nothing to learn from: give a dataset (--dataset PATH) or demos (--demos PATH); for a "
                              "plain online run use the online trainer")
        if cfg.run_dir is None:
            raise ConfigError("TrainConfig.run_dir must be set (the CLI fills it in)")
        if cfg.agent is None:
            raise ConfigError("TrainConfig.agent must be an agent config (the CLI fills it in)")
        if getattr(cfg, "intervention", None) is not None:
            raise ConfigError("--intervention.* runs in the online trainer (pixelrl.train.loop.Trainer), whose "
                              "intervention buffer --demos seeds; this trainer does not apply interventions")
        self.cfg, self.offline = cfg, offline
        self.run_dir = Path(cfg.run_dir)
        self.changed_settings: list[str] = []
        self._lock = RunLock(self.run_dir)  # one writer per run folder, released by the OS if this process dies
        try:
            self._init(cfg, offline, resume)
        except BaseException:
            self._lock.release()
            raise

    def _init(self, cfg: "TrainConfig", offline: OfflineConfig, resume: bool) -> None:
        from pixelrl.train.loop import resolve_device
        from pixelrl.utils.malloc import tune_glibc_malloc

        o = offline
        if not resume and (self.run_dir / "metrics.jsonl").exists():
            raise ConfigError(f"{self.run_dir} already holds a run; use `pixelrl resume {self.run_dir}` to "
                              "continue it or choose another --run-dir")
        self.offline_steps, self.online_frames = o.phase_budgets(cfg.frames)
        if self.offline_steps == 0 and self.online_frames == 0:
            raise ConfigError("nothing to do: offline_steps and the online budget are both 0; set --offline-steps "
                              "or --online-frames")
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        if cfg.tune_malloc and self.device.type == "cpu":
            tune_glibc_malloc()
        seed_everything(cfg.seed)
        self.env_kwargs = cfg.env_kwargs()
        self.eval_env = make(cfg.env, seed=derive_seed(cfg.seed, EVAL_STREAM), **self.env_kwargs)
        try:
            self._setup(resume)
        except BaseException:  # no env left open behind an error
            self.eval_env.close()
            raise
        self.train_env = None
        self._acc: dict[str, list[float]] = defaultdict(list)
        self._acc_update_s = 0.0
        self._wall_start = time.perf_counter() - self.counters["wall_s"]

    def _setup(self, resume: bool) -> None:
        """Everything after the eval env: data, agent, buffers, counters (restored on resume), logs."""
        from pixelrl.train.setup import record_machine_choices, resolve_agent_for_env

        cfg, o = self.cfg, self.offline
        self.obs_space = self.eval_env.observation_space
        self.action_space = self.eval_env.action_space
        self.action_repeat = int(self.eval_env.get_wrapper_attr("action_repeat"))
        self.frame_stack = int(self.eval_env.get_wrapper_attr("frame_stack"))
        self.env_id = str(self.eval_env.get_wrapper_attr("env_id"))
        self.cfg = cfg = resolve_agent_for_env(cfg, self.action_repeat)
        a = cfg.agent
        self.data = {}
        if o.dataset is not None:
            self.data["offline"] = self._open(o.dataset, "dataset")
        if o.demos is not None:
            self.data["demos"] = self._open(o.demos, "demo dataset")
        self._fingerprints = {name: _fingerprint(ds) for name, ds in self.data.items()}
        self.agent = make_agent(cfg.agent_name, self.obs_space, self.action_space, a, self.device)
        if not resume:
            self.cfg = cfg = record_machine_choices(cfg, self.agent)
            self._give_dataset_statistics()
        self._sample_kwargs = sample_kwargs(getattr(self.agent, "batch_extras", ()))
        self.batch_size = int(a.batch_size)
        self.shared = o.dataset is not None and o.offline_ratio is None
        self.warmup_rng = np.random.default_rng(derive_seed(cfg.seed, WARMUP_STREAM))
        self.counters: dict[str, Any] = {
            "phase": "offline" if self.offline_steps > 0 else "online",
            "updates": 0, "offline_updates": 0, "frames": 0, "agent_steps": 0, "episodes": 0, "evals": 0,
            "next_eval": 0, "next_checkpoint": 0, "last_eval": -1, "last_checkpoint": -1, "wall_s": 0.0}
        state = self._read_checkpoint() if resume else None
        self.buffers = self._build_buffers(state)
        jsonl_offset = jsonl_copy = None
        if state is not None:
            from pixelrl.train.setup import apply_changed_learning_rates, config_changes, load_agent_state

            now_cfg = {**to_dict(cfg), "offline": to_dict(o)}
            saved_cfg = json.loads(state["config"]) if "config" in state else None
            load_agent_state(self.agent, state["agent"], config_path=self.run_dir / "config.json",
                             checkpoint=self._ckpt_path, config=now_cfg, saved_config=saved_cfg)
            if saved_cfg is not None:  # settings edited in config.json since the checkpoint (named by the CLI)
                changes = config_changes(saved_cfg, now_cfg)
                self.changed_settings = [f"{k} {a!r} -> {b!r}" for k, a, b in changes]
                self.changed_settings += [f"optimizer learning rate {x}"
                                          for x in apply_changed_learning_rates(self.agent, changes)]
            restore_rng_state(state["rng"], {"warmup": self.warmup_rng})
            self.counters.update(state["trainer"])
            jsonl_offset = int(state["jsonl_offset"])
            if "metrics_jsonl" in state:
                jsonl_copy = np.asarray(state["metrics_jsonl"], dtype=np.uint8).tobytes()
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.run_dir / "config.json", {**to_dict(cfg), "offline": to_dict(o)})
        self.logger = Logger(self.run_dir, tensorboard=False, jsonl_offset=jsonl_offset, jsonl_copy=jsonl_copy)
        for name, manifest in ((state or {}).get("replays") or {}).items():  # everything has loaded
            write_json_atomic(self.run_dir / "replay" / name / "manifest.json", json.loads(manifest))
        self._tb = None
        if cfg.tensorboard:  # rows are plotted against ``step`` (offline rows all have frames = 0)
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=self._step() if resume else None)
        problem = actor_schedule_ends_offline(a, self.offline_steps, self.online_frames)
        if problem:
            warnings.warn(problem, stacklevel=3)

    # ---- data -----------------------------------------------------------------------------------------------
    def _open(self, path: str, what: str):
        return open_for_env(path, what, env=self.eval_env, run_env=self.cfg.env,
                            allow_env_mismatch=self.offline.allow_env_mismatch)

    def _give_dataset_statistics(self) -> None:
        """Before the first update, offline agents get what they take from the offline dataset (from the demos
        without one): the state mean / std when they normalise states (``obs_norm``: BC, TD3+BC), the episode
        returns when they normalise rewards by the return range (IQL's ``normalize_returns``). A resumed run
        restores both from the agent's checkpoint instead."""
        a = self.cfg.agent
        ds = self.data.get("offline", self.data.get("demos"))
        if ds is None:
            return
        if (getattr(a, "obs_norm", False) and hasattr(self.agent, "set_obs_normalizer")
                and getattr(self.agent, "obs_normalizer", None) is not None):  # pixels only: nothing to normalise
            self.agent.set_obs_normalizer(*dataset_state_stats(ds))
        if getattr(a, "normalize_returns", False) and hasattr(self.agent, "set_dataset_returns"):
            self.agent.set_dataset_returns(ds.episode_returns())

    def _online_capacity(self) -> int:
        if self.offline.replay_capacity is not None:
            return int(self.offline.replay_capacity)
        cap = getattr(self.cfg.agent, "replay_capacity", None)
        if cap:
            return int(cap)
        steps = math.ceil(self.online_frames / max(self.action_repeat, 1))
        return 2 * steps + 10_000  # every online transition, one slot per episode end, and the last episode

    def _new_buffer(self, capacity: int, stream: int) -> ReplayBuffer:
        a = self.cfg.agent
        return ReplayBuffer(self.obs_space, self.action_space, capacity, frame_stack=self.frame_stack,
                            nstep=int(a.nstep), discount=float(a.discount),
                            device=self.device, seed=derive_seed(self.cfg.seed, stream))

    def _build_buffers(self, state: dict | None) -> dict[str, ReplayBuffer]:
        """``offline`` (the dataset; also the online data when shared), ``online`` (when separate), ``demos``."""
        online = self.online_frames > 0
        buffers: dict[str, ReplayBuffer] = {}
        plan = []
        for name, stream in (("offline", OFFLINE_STREAM), ("demos", DEMO_STREAM)):
            if name in self.data:
                ds = self.data[name]
                extra = self._online_capacity() if (name == "offline" and self.shared and online) else 0
                plan.append((name, int(ds.num_transitions) + int(ds.num_episodes) + extra, stream))
        if online and not self.shared:
            plan.append(("online", self._online_capacity(), REPLAY_STREAM))
        saved = (state or {}).get("replays", {})
        rngs = (state or {}).get("samplers", {})
        for name, capacity, stream in plan:
            buf = buffers[name] = self._new_buffer(capacity, stream)
            if name in saved:  # a buffer that received online data: load it as it was at the checkpoint
                directory = self.run_dir / "replay" / name
                buf.load(directory, manifest=saved[name])  # written back once everything has loaded
                continue
            if name in self.data:
                self.data[name].fill_replay(buf)
                if buf.num_sampleable() == 0:
                    raise ConfigError(f"the {name} data holds no complete transition (an episode needs a step)")
            if name in rngs:
                _set_sampler_state(buf, rngs[name])
        return buffers

    def _sampler(self, phase: str) -> MixedSampler:
        o, b = self.offline, self.buffers
        dr = o.demo_ratio if "demos" in b else 0.0
        sources: dict[str, ReplayBuffer] = {}
        fractions: dict[str, float] = {}
        if phase == "offline":
            sources["offline"], fractions["offline"] = b["offline"], 1.0 - dr
        elif self.shared:
            sources["offline+online"], fractions["offline+online"] = b["offline"], 1.0 - dr
        else:
            if "offline" in b:
                sources["offline"], fractions["offline"] = b["offline"], float(o.offline_ratio)
            sources["online"] = b["online"]
            fractions["online"] = max(0.0, 1.0 - dr - fractions.get("offline", 0.0))
        if "demos" in b:
            sources["demos"], fractions["demos"] = b["demos"], dr
        return MixedSampler(sources, fractions, on_empty="redistribute")

    def _online_buffer(self) -> ReplayBuffer:
        return self.buffers["offline"] if self.shared else self.buffers["online"]

    def _growing(self, name: str) -> bool:
        """Whether buffer ``name`` has received online data (then it is saved, not refilled, for resume)."""
        return name == "online" or (name == "offline" and self.shared and self.counters["phase"] == "online")

    # ---- checkpoint / resume -------------------------------------------------------------------------------
    def _step(self) -> int:
        c = self.counters
        return int(c["offline_updates"] + c["agent_steps"])

    def _checkpoint(self) -> Path:
        c = self.counters
        check_finite_parameters(self.agent, f"at update {c['updates']:,}")  # never save a diverged agent
        c["wall_s"] = time.perf_counter() - self._wall_start
        if self._tb is not None:
            self._tb.flush()
        replays, samplers = {}, {}
        for name, buf in self.buffers.items():
            if self._growing(name):
                directory = self.run_dir / "replay" / name
                buf.save(directory)
                replays[name] = (directory / "manifest.json").read_text()
            else:
                samplers[name] = _sampler_state(buf)
        state = {
            "trainer": dict(c),
            "jsonl_offset": self.logger.offset(),
            "agent": self.agent.state_dict(),
            "rng": capture_rng_state({"warmup": self.warmup_rng}),
            "replays": replays,
            "samplers": samplers,
            "data": self._fingerprints,
            "config": json.dumps({**to_dict(self.cfg), "offline": to_dict(self.offline)}),
            "metrics_jsonl": np.frombuffer(self.logger.read_bytes(), dtype=np.uint8),
        }
        count = c["updates"] if c["phase"] == "offline" else c["frames"]
        name = f"{c['phase']}_{count:012d}"
        return save_checkpoint(self.run_dir / "checkpoints", name, state, keep=self.cfg.keep_checkpoints)

    def _read_checkpoint(self) -> dict:
        ckpt = latest_checkpoint(self.run_dir / "checkpoints")
        if ckpt is None:
            raise ConfigError(f"{self.run_dir} has no checkpoint to resume from (checkpoints/latest.json is missing)")
        self._ckpt_path = ckpt
        state = load_checkpoint(ckpt)
        for name, now in self._fingerprints.items():
            was = state.get("data", {}).get(name)
            if was != now:
                raise ConfigError(f"the {name} data changed since the run started (then {was}, now {now}); resume "
                                  "with the files the run was started with")
        self.counters["phase"] = state["trainer"]["phase"]  # decides which buffers are loaded or refilled
        return state

    # ---- logging ---------------------------------------------------------------------------------------------
    def _row_base(self) -> dict[str, Any]:
        c = self.counters
        return {"phase": c["phase"], "frames": c["frames"], "agent_steps": c["agent_steps"],
                "updates": c["updates"], "step": self._step()}

    def _log(self, kind: str, row: dict[str, Any]) -> None:
        self.logger.log(kind, row)
        if self._tb is not None:
            step = int(row["step"])
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def _accumulate(self, metrics: dict[str, Any], counts: dict[str, int]) -> None:
        for k, v in metrics.items():
            self._acc[k].append(float(v))
        for k, v in counts.items():
            self._acc[f"frac_{k}"].append(v / self.batch_size)

    def _metric_means(self) -> dict[str, float]:
        out = {k: float(np.mean(v)) for k, v in sorted(self._acc.items())}
        self._acc.clear()
        return out

    def _flush_offline_row(self) -> None:
        if not self._acc:
            return
        row = {**self._row_base(), **self._metric_means(), "update_s": self._acc_update_s,
               "wall_s": time.perf_counter() - self._wall_start}
        self._acc_update_s = 0.0
        self._log("train", row)

    # ---- evaluation ------------------------------------------------------------------------------------------
    def _evaluate(self, progress) -> dict[str, Any]:
        cfg, c = self.cfg, self.counters
        t0 = time.perf_counter()
        step = self._step()
        video = self.run_dir / "videos" / f"eval_{c['phase']}_step_{step:09d}.mp4" if cfg.video else None
        fields, extra = evaluate_agent(self.eval_env, self.agent, step=step, episodes=cfg.eval_episodes,
                                       seed=cfg.seed, index=c["evals"], action_space=self.action_space,
                                       eval_random=cfg.eval_random, video_path=video)
        row: dict[str, Any] = {**self._row_base(), "episodes": c["episodes"], **fields}
        row["eval_s"] = time.perf_counter() - t0
        row["wall_s"] = time.perf_counter() - self._wall_start
        self._log("eval", row)
        c["evals"] += 1
        where = f"update {c['updates']:,}" if c["phase"] == "offline" else f"online frame {c['frames']:,}"
        progress.eval_done(row["eval_return"], row["eval_return_std"], where + extra)
        return row

    # ---- offline phase ---------------------------------------------------------------------------------------
    def _offline_phase(self) -> None:
        o, c = self.offline, self.counters
        total = self.offline_steps
        sampler = self._sampler("offline")
        ckpt_every = o.checkpoint_every_steps or o.eval_every_steps
        progress = _Progress(total, c["updates"], "updates", enabled=self.cfg.progress,
                             title=f"{self.cfg.env} {self.cfg.agent_name} offline s{self.cfg.seed}")
        try:
            while True:  # one iteration per boundary: log row, evaluation, checkpoint or the end
                u = c["updates"]
                evaluated = False
                if u >= c["next_eval"] or u >= total:
                    while c["next_eval"] <= u:
                        c["next_eval"] += o.eval_every_steps
                    if c["last_eval"] != u:
                        self._flush_offline_row()
                        c["last_eval"] = u
                        self._evaluate(progress)
                        evaluated = True
                if u >= total:
                    if evaluated or c["last_checkpoint"] != u:
                        self._flush_offline_row()
                        c["last_checkpoint"] = u
                        self._checkpoint()
                    break
                if u >= c["next_checkpoint"] and (evaluated or o.checkpoint_every_steps):
                    while c["next_checkpoint"] <= u:
                        c["next_checkpoint"] += ckpt_every
                    self._flush_offline_row()
                    c["last_checkpoint"] = u
                    self._checkpoint()
                stop = min(total, c["next_eval"], (u // o.log_every_steps + 1) * o.log_every_steps)
                if o.checkpoint_every_steps:
                    stop = min(stop, c["next_checkpoint"])
                t0 = time.perf_counter()
                for step in range(u, stop):
                    batch = sampler.sample(self.batch_size, **self._sample_kwargs)
                    metrics = self.agent.update(batch, step=step)
                    self._accumulate(metrics, sampler.last_counts)
                    bad = {k: self._acc[k][-1] for k in metrics if "loss" in k and not math.isfinite(self._acc[k][-1])}
                    if bad:
                        raise DivergenceError(f"{', '.join(f'{k} = {v}' for k, v in bad.items())} at offline update "
                                              f"{step + 1:,}: the training diverged")
                    c["updates"] = c["offline_updates"] = step + 1
                self._acc_update_s += time.perf_counter() - t0
                if stop % o.log_every_steps == 0:
                    self._flush_offline_row()
                progress.update(c["updates"])
        finally:
            progress.close()

    # ---- online phase ----------------------------------------------------------------------------------------
    def _start_online(self) -> None:
        """Switch counters to the online phase; the final offline evaluation stands for the one at frame 0."""
        c = self.counters
        if c["phase"] == "online":
            return
        c["phase"] = "online"
        ran_offline = self.offline_steps > 0
        c["next_eval"] = self.cfg.eval_every_frames if ran_offline else 0
        c["next_checkpoint"] = (self.cfg.checkpoint_every_frames or self.cfg.eval_every_frames) if ran_offline else 0
        c["last_eval"] = 0 if ran_offline else -1
        c["last_checkpoint"] = 0 if ran_offline else -1

    def _seed_steps(self) -> int:
        if self.offline.online_seed_steps is not None:
            return self.offline.online_seed_steps
        return 0 if self.offline_steps > 0 else int(getattr(self.cfg.agent, "num_seed_steps", 0))

    def _online_phase(self) -> None:
        cfg, c = self.cfg, self.counters
        # Creating env processes must not move the global RNGs (a resumed run creates them at another point).
        rng = capture_rng_state()
        self.train_env = EnvRunner(cfg.env, asynchronous=cfg.async_env, seed=derive_seed(cfg.seed, TRAIN_STREAM),
                                   env_kwargs=self.env_kwargs)
        restore_rng_state(rng)
        sampler = self._sampler("online")
        progress = _Progress(self.online_frames, c["frames"], "frames", enabled=cfg.progress,
                             title=f"{cfg.env} {cfg.agent_name} online s{cfg.seed}")
        try:  # the online trainer's cadence, with this trainer's counter names
            train_until(c, self.online_frames, eval_every=cfg.eval_every_frames,
                        checkpoint_every=cfg.checkpoint_every_frames, evaluate=lambda: self._evaluate(progress),
                        checkpoint=self._checkpoint, episode=lambda: self._online_episode(sampler, progress),
                        last_eval_key="last_eval", last_checkpoint_key="last_checkpoint")
        finally:
            progress.close()

    def _online_episode(self, sampler: MixedSampler, progress: "_Progress") -> None:
        cfg, c, a = self.cfg, self.counters, self.cfg.agent
        replay = self._online_buffer()
        ep = train_episode(
            self.train_env, self.agent, replay, lambda: sampler.sample(self.batch_size, **self._sample_kwargs),
            counters=c, reset_seed=derive_seed(cfg.seed, TRAIN_STREAM, c["episodes"]), seed_steps=self._seed_steps(),
            update_every=int(getattr(a, "update_every_steps", 1)),
            updates_per_step=int(getattr(a, "updates_per_step", 1)), warmup_rng=self.warmup_rng,
            action_space=self.action_space, action_repeat=self.action_repeat, progress=progress,
            step_offset=c["offline_updates"],
            batch_extras=lambda: {f"frac_{k}": v / self.batch_size for k, v in sampler.last_counts.items()})
        c["updates"] += ep.updates
        row = {**self._row_base(), "episode": c["episodes"], **ep.stats(), "online_transitions": len(replay),
               **ep.timing(), "wall_s": time.perf_counter() - self._wall_start}
        self._log("train", row)

    # ---- run -------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the remaining phases; returns a summary (also written to ``summary.json``)."""
        try:
            try:
                if self.counters["phase"] == "offline":
                    self._offline_phase()
                if self.online_frames > 0:
                    self._start_online()
                    self._online_phase()
            except DivergenceError as e:
                raise DivergenceError(f"{e}. {self._where_to_resume(diverged=True)}") from None
            except KeyboardInterrupt:
                raise Interrupted(f"interrupted. {self._where_to_resume(diverged=False)}") from None
            finally:
                self.logger.close()
                if self._tb is not None:
                    self._tb.close()
                    self._tb = None
                if self.train_env is not None:
                    self.train_env.close()
                self.eval_env.close()
            return self._finish()
        finally:
            self._lock.release()  # after the summary and curve: the run folder is this process's until then

    def _where_to_resume(self, *, diverged: bool) -> str:
        return where_to_resume(self.run_dir, diverged=diverged)

    def _finish(self) -> dict[str, Any]:
        evals = self.logger.rows["eval"]
        offline_evals = [r for r in evals if r.get("phase") == "offline"]
        with storage_errors(self.run_dir / "curve.png", cleanup=(self.run_dir / "curve.png",)):
            curve = plot_phases(self.run_dir, self.run_dir / "curve.png",
                                title=f"{self.cfg.env} {self.cfg.agent_name} (seed {self.cfg.seed})")
        videos = sorted((self.run_dir / "videos").glob("*.mp4")) if self.cfg.video else []
        c = self.counters
        summary = {
            "run_dir": str(self.run_dir), "curve": str(curve), "video": str(videos[-1]) if videos else None,
            "offline_updates": c["offline_updates"], "updates": c["updates"], "frames": c["frames"],
            "agent_steps": c["agent_steps"],
            "final_eval_return": evals[-1]["eval_return"] if evals else None,
            "offline_final_eval_return": offline_evals[-1]["eval_return"] if offline_evals else None,
            "random_return": next((r["random_return"] for r in evals if "random_return" in r), None),
            "data": {name: {**self._fingerprints[name], "mean_return": float(np.mean(ds.episode_returns()))}
                     for name, ds in self.data.items()},
            "wall_s": time.perf_counter() - self._wall_start,
            "machine": f"{platform.node()} {platform.machine()} {torch.get_num_threads()} threads {self.device}",
        }
        write_json_atomic(self.run_dir / "summary.json", summary)
        return summary


# ---------------------------------------------------------------------------------------------- helpers
def actor_schedule_ends_offline(agent_cfg, offline_steps: int, online_frames: int) -> str | None:
    """The warning for an offline -> online run whose actor learning rate decays to 0 within the offline phase
    (IQL's cosine schedule over ``lr_decay_steps`` <= ``offline_steps``), or None when the actor still learns online."""
    cosine = getattr(agent_cfg, "actor_lr_schedule", None) == "cosine"
    decay = int(getattr(agent_cfg, "lr_decay_steps", 0))
    if online_frames > 0 and offline_steps > 0 and cosine and decay <= offline_steps:
        return (f"the actor's cosine learning-rate schedule ends after {decay} updates, within the {offline_steps} "
                "offline ones: the policy will not learn in the online phase; pass --agent.actor-lr-schedule "
                "constant (the IQL authors' fine-tuning setting)")
    return None


def dataset_state_stats(ds) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and population std (float64) of a dataset's state observations ``s_t`` of every
    transition (the episode's last observation excluded, as TD3+BC's ``normalize_states``); for a dict observation,
    of its ``'state'`` entry. Pixels are not read."""
    keys = getattr(ds, "observation_keys", [None])
    dict_obs = keys != [None]
    if dict_obs and "state" not in keys:
        raise ConfigError("the dataset's observations have no 'state' entry to normalise")
    count, mean, m2 = 0, None, None
    episodes = ds.iter_episodes(stacked=False, obs_keys=["state"]) if dict_obs else ds.iter_episodes(stacked=False)
    for ep in episodes:
        x = ep["observations"]["state"] if dict_obs else ep["observations"]
        x = np.asarray(x, dtype=np.float64)[:-1].reshape(len(x) - 1, -1)
        if len(x) == 0:
            continue
        n, mu = len(x), x.mean(axis=0)
        sq = ((x - mu) ** 2).sum(axis=0)
        if mean is None:
            count, mean, m2 = n, mu, sq
            continue
        delta = mu - mean  # Chan et al.'s pairwise combination of means and sums of squared deviations
        total = count + n
        mean = mean + delta * n / total
        m2 = m2 + sq + delta ** 2 * count * n / total
        count = total
    if mean is None:
        raise ConfigError("the dataset holds no transition to compute state statistics from")
    return mean, np.sqrt(m2 / count)


def dataset_train_defaults(path: str) -> dict[str, Any]:
    """TrainConfig values a dataset records: ``env`` and the env settings it was collected with (``size``,
    ``action_repeat``, ``frame_stack``, ``obs``, ``fast_render``). The CLI applies them under the user's flags so
    that ``pixelrl train --dataset PATH --agent iql`` builds the env the data came from."""
    ds = _load(path, "dataset")
    out: dict[str, Any] = {"env": ds.env_id}
    kw = getattr(ds, "env_kwargs", {}) or {}
    for key in ("size", "action_repeat", "frame_stack", "obs", "fast_render"):
        if key in kw:
            out[key] = kw[key]
    return out


def _sampler_state(buf: ReplayBuffer) -> dict:
    """The sampler RNG state of a buffer that is refilled from its file on resume (JSON-able)."""
    return buf.rng_state()


def _set_sampler_state(buf: ReplayBuffer, state: dict) -> None:
    buf.set_rng_state(state)


class _Progress:
    """Live display of one phase (rich bar when stdout is a terminal, else a plain line per evaluation): updates
    and updates/s in the offline phase, frames, frames/s and the env / act / update time split online."""

    def __init__(self, total: int, start: int, unit: str, *, enabled: bool, title: str) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.unit, self.enabled = unit, enabled
        self.last_eval = "-"
        self._t0, self._c0 = time.perf_counter(), start
        self._progress = None
        if enabled and sys.stdout.isatty():
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn(f"{unit} | {{task.fields[rate]}}/s | {{task.fields[split]}} | eval {{task.fields[eval]}}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(stderr=False), refresh_per_second=2)
            self._task = self._progress.add_task(title, total=total, completed=start, rate="-", split="-", eval="-")
            self._progress.start()

    def update(self, count: int, *, env_s: float = 0.0, act_s: float = 0.0, update_s: float = 0.0) -> None:
        if not self._progress:
            return
        rate = (count - self._c0) / max(time.perf_counter() - self._t0, 1e-9)
        tot = env_s + act_s + update_s
        split = (f"env {100 * env_s / tot:.0f}% act {100 * act_s / tot:.0f}% upd {100 * update_s / tot:.0f}%"
                 if tot > 0 else "offline")
        self._progress.update(self._task, completed=count, rate=f"{rate:.0f}", split=split, eval=self.last_eval)

    def eval_done(self, mean: float, std: float, where: str) -> None:
        self.last_eval = f"{mean:.1f}"
        if not self.enabled:
            return
        msg = f"eval @ {where}: return {mean:.1f} ± {std:.1f}"
        if self._progress:
            self._progress.console.print(msg)
        else:
            print(f"[{time.perf_counter() - self._t0:7.0f}s] {msg}", flush=True)

    def close(self) -> None:
        if self._progress:
            self._progress.stop()
            self._progress = None


def plot_phases(run_dir: str | Path, out: str | Path, metric: str = "eval_return", title: str | None = None) -> Path:
    """Evaluation returns against ``step`` (offline updates, then + online agent steps), the switch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pixelrl.train.logger import read_rows

    rows = [r for r in read_rows(run_dir, "eval") if metric in r]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    offline_pts = [r for r in rows if r.get("phase") == "offline"]
    for phase, color in (("offline", "tab:blue"), ("online", "tab:orange")):
        pts = [r for r in rows if r.get("phase") == phase]
        if phase == "online" and pts and offline_pts:
            pts = offline_pts[-1:] + pts  # the online curve starts where the offline one ends
        if pts:
            xs = [r["step"] for r in pts]
            ys = np.array([r[metric] for r in pts])
            sd = np.array([r.get(f"{metric}_std", 0.0) for r in pts])
            ax.plot(xs, ys, marker="o", ms=3, color=color, label=phase)
            ax.fill_between(xs, ys - sd, ys + sd, color=color, alpha=0.2)
    online = [r["step"] for r in rows if r.get("phase") == "online"]
    offline = [r["step"] for r in rows if r.get("phase") == "offline"]
    if online and offline:
        ax.axvline(max(offline), color="gray", ls="--", lw=1)
    rnd = next((r["random_return"] for r in rows if "random_return" in r), None)
    if rnd is not None:
        ax.axhline(rnd, color="gray", ls=":", lw=1, label="random policy")
    ax.set_xlabel("step (offline updates, then + online agent steps)")
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return save_figure(fig, out)
