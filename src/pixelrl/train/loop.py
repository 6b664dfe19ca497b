"""The online training loop: random warm-up, action repeat, update cadence, evaluation, logs, checkpoints,
and exact resume.

Order of one agent step (as in DrQ-v2): act on ``obs_t`` -> send the action to the env -> gradient update(s) on
the replay as it stands -> receive ``obs_{t+1}`` -> store the transition. With ``async_env`` the env steps in a
subprocess while the update runs, so rendering overlaps learning; the math and the results are the same. The
episode and the evaluation / checkpoint cadence are :mod:`pixelrl.train.episode`'s, shared with the online phase of
the offline trainer.

Exactness: every training episode ``i`` is reset with a seed derived from ``(seed, i)``, evaluation episodes
from ``(seed, eval index, episode)``, warm-up actions come from a NumPy generator, exploration noise and
augmentation from torch's RNG. Checkpoints are written at episode boundaries and hold all of those RNG states,
the agent (networks, optimizers, schedules), the counters, the replay and the byte size of ``metrics.jsonl``.
A run killed at any moment and resumed from its last checkpoint therefore writes the same metric rows
(timing columns aside) as a run never interrupted, on the same machine with the same thread count.

Faults: the trainer holds the run folder's lock (:class:`~pixelrl.utils.atomic.RunLock`) from construction to the
end of :meth:`Trainer.run`; a resume loads everything (checkpoint, replay, log) before it changes a file; a
non-finite loss, action or parameter stops the run (:class:`~pixelrl.errors.DivergenceError`) before a diverged
agent is checkpointed, naming the last good checkpoint; Ctrl-C ends it with :class:`~pixelrl.errors.Interrupted`
naming the last checkpoint; a full or read-only disk surfaces as :class:`~pixelrl.errors.StorageError` from the
write layer. Each checkpoint records the resolved config (to name the fields a hand-edited config.json changed) and
a copy of ``metrics.jsonl`` (to repair a damaged log on resume).
"""

from __future__ import annotations

import json
import math
import platform
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pixelrl.agents import make_agent
from pixelrl.data.replay import ReplayBuffer, sample_kwargs
from pixelrl.envs import make
from pixelrl.errors import ConfigError, DivergenceError, DivergenceWarning, Interrupted
from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from pixelrl.train.config import TrainConfig
from pixelrl.train.episode import (EnvRunner, check_finite_parameters, train_episode, train_until,
                                   where_to_resume)
from pixelrl.train.evaluate import EVAL_STREAM, evaluate_agent
from pixelrl.train.logger import Logger, read_rows
from pixelrl.train.progress import TrainProgress
from pixelrl.train.setup import (apply_changed_learning_rates, config_changes, load_agent_state,
                                 record_machine_choices, resolve_agent_for_env)
from pixelrl.utils.atomic import RunLock, storage_errors, write_json_atomic
from pixelrl.utils.dataclass_io import to_dict
from pixelrl.utils.malloc import tune_glibc_malloc
from pixelrl.utils.seeding import capture_rng_state, derive_seed, restore_rng_state, seed_everything

TRAIN_STREAM, REPLAY_STREAM, WARMUP_STREAM, SNAPSHOT_STREAM = 1, 4, 5, 6
INTERVENTION_STREAM, INTERVENTION_REPLAY_STREAM = 8, 9
LOSS_GROWTH, LOSS_LARGE = 1e4, 1e6
"""An episode's mean of a loss above ``LOSS_LARGE``, or ``LOSS_GROWTH`` times its first episode's mean (and above
1000), triggers a :class:`DivergenceWarning`."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available; use --device cpu")
    return dev


def _remove_if_only_lock(run_dir: Path) -> None:
    """Remove a run folder this process created and left with nothing but its lock file (a run that failed to
    start)."""
    try:
        if {p.name for p in run_dir.iterdir()} <= {RunLock.NAME}:
            (run_dir / RunLock.NAME).unlink(missing_ok=True)
            run_dir.rmdir()
    except OSError:
        pass


class Trainer:
    """Builds env, agent and replay from a resolved :class:`TrainConfig` and runs (or resumes) training."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, checkpoint: str | None = None,
                 defer_writes: bool = False) -> None:
        """``resume`` restores the run in ``cfg.run_dir`` from its latest checkpoint, or from the one named
        ``checkpoint`` (a folder under ``checkpoints/``); with ``defer_writes`` the run folder is left untouched until
        :meth:`commit_resume` (the batched trainer loads every seed before any of them changes a file)."""
        if cfg.run_dir is None:
            raise ConfigError("TrainConfig.run_dir must be set (the CLI fills it in)")
        if cfg.agent is None:
            raise ConfigError("TrainConfig.agent must be an agent config (the CLI fills it in)")
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.eval_env = self.train_env = self.logger = None
        self.changed_settings: list[str] = []
        self._warned_losses: set[str] = set()
        self._loss_ref: dict[str, float] = {}
        existed = self.run_dir.exists()
        self._lock = RunLock(self.run_dir)  # one writer per run folder, released by the OS if this process dies
        try:
            self._init(cfg, resume, checkpoint)
            if resume and not defer_writes:
                self.commit_resume()
        except BaseException:
            self._close()
            if not existed:
                _remove_if_only_lock(self.run_dir)
            raise

    def _close(self, *, release: bool = True) -> None:
        """Close logs and envs (each at most once) and release the run folder."""
        try:
            for obj in (self.logger, self.train_env, self.eval_env):
                if obj is not None:
                    obj.close()
        finally:
            self.logger = self.train_env = self.eval_env = None
            if release:
                self._lock.release()

    def _begin(self, cfg: TrainConfig, resume: bool) -> None:
        """The start of every trainer's ``_init``, before any env starts: refuse a folder that already holds a run
        (unless resuming), pick the device and the thread count, tune malloc, seed every global RNG."""
        if not resume and (self.run_dir / "metrics.jsonl").exists():  # before any env process is started
            raise ConfigError(f"{self.run_dir} already holds a run; use `pixelrl resume {self.run_dir}` to "
                              "continue it or choose another --run-dir")
        self.device = resolve_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        if cfg.tune_malloc and self.device.type == "cpu":
            tune_glibc_malloc()
        seed_everything(cfg.seed)

    def _open_run(self, resume: bool, checkpoint: str | None) -> None:
        """The end of every trainer's ``_init``, once agent, replay and counters exist: load the checkpoint into them
        writing nothing (:meth:`commit_resume` does), or start the run folder (``config.json``, the log)."""
        self._restored = None
        if resume:
            self._restored = self._restore(checkpoint)
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.run_dir / "config.json", to_dict(self.cfg))
            self.logger = Logger(self.run_dir, tensorboard=self.cfg.tensorboard)
            self._wall_start = time.perf_counter() - self.counters["wall_s"]

    def _make_eval_env(self, cfg: TrainConfig) -> dict[str, Any]:
        """Start the evaluation env, whose spaces and action repeat the trainer and its agent take; returns the env
        options the training envs are made with."""
        env_kwargs = cfg.env_kwargs()
        self.eval_env = make(cfg.env, seed=derive_seed(cfg.seed, EVAL_STREAM), **env_kwargs)
        self.obs_space = self.eval_env.observation_space
        self.action_space = self.eval_env.action_space
        self.action_repeat = int(self.eval_env.get_wrapper_attr("action_repeat"))
        return env_kwargs

    def _init(self, cfg: TrainConfig, resume: bool, checkpoint: str | None) -> None:
        self._begin(cfg, resume)
        if cfg.time_budget_min is not None and not cfg.time_budget_min > 0:
            raise ConfigError(f"time_budget_min must be a number of minutes > 0 (or unset), got {cfg.time_budget_min}")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest conv kernels
        self.reward_model = None  # --reward: loaded before any env starts (a missing model is one line, at once)
        if cfg.reward is not None:
            from pixelrl.rewards import build_reward_model

            self.reward_model = build_reward_model(cfg.reward, device=self.device)
        env_kwargs = self._make_eval_env(cfg)
        frame_stack = int(self.eval_env.get_wrapper_attr("frame_stack"))
        if self.reward_model is not None:
            from pixelrl.rewards.base import bind_model

            bind_model(self.reward_model, self.obs_space, frame_stack, self.action_space, where="the trainer")
        self.snapshot_wrapper = None
        wrap = None
        if cfg.snapshot_bank is not None:
            from pixelrl.envs.snapshot import SnapshotBank, SnapshotResetWrapper

            bank = SnapshotBank.load(cfg.snapshot_bank)

            def wrap(env):
                self.snapshot_wrapper = SnapshotResetWrapper(
                    env, bank, horizon=cfg.snapshot_horizon, active_agent_steps=cfg.snapshot_active_agent_steps,
                    seed=derive_seed(cfg.seed, SNAPSHOT_STREAM))
                return self.snapshot_wrapper

        self.interventions = None  # --intervention.*: the expert is loaded before the training env starts
        if cfg.intervention is not None:
            from pixelrl.rewards.interventions import build_interventions

            self.interventions = build_interventions(cfg.intervention, seed=derive_seed(cfg.seed, INTERVENTION_STREAM),
                                                     device=self.device)
        end_on_success = cfg.reward is not None and cfg.reward.end_on_success
        if end_on_success or self.interventions is not None:  # both need the training env in this process
            inner = wrap

            def wrap(env):
                env = inner(env) if inner is not None else env
                if end_on_success:  # SERL: done = done or success (the classifier scores every step's frame)
                    from pixelrl.rewards.classifier import end_on_success as end_wrap

                    env = end_wrap(env, self.reward_model)
                if self.interventions is not None:
                    self.interventions.bind(env, self.action_space, self.action_repeat, cfg.obs)
                return env

        self.train_env = EnvRunner(cfg.env, asynchronous=cfg.async_env, seed=derive_seed(cfg.seed, TRAIN_STREAM),
                                    env_kwargs=env_kwargs, wrap=wrap)
        cfg = self._make_agent_and_replay(resume, frame_stack)
        a = cfg.agent
        self.store = self.replay  # what episodes are added to; with --reward, the replay behind the reward model
        if self.reward_model is not None:
            from pixelrl.rewards.wrapper import RewardedReplay

            self.store = RewardedReplay(self.replay, self.reward_model)
            if self.store.online is not None:  # prefs: the first query round comes when the random warm-up ends
                self.store.online.set_warmup(int(getattr(a, "num_seed_steps", 0)))
        self.sampler = self.store  # what batches are drawn from; with interventions, a mix with their buffer
        if self.interventions is not None:
            self.store, self.sampler = self.interventions.setup_buffers(
                self.replay, self.store, self.reward_model, capacity=a.replay_capacity,
                seed=derive_seed(cfg.seed, INTERVENTION_REPLAY_STREAM))
            demos = cfg.offline.demos if cfg.offline is not None else None
            if demos is not None and not resume:  # HIL-SERL: the demos seed the buffer interventions go to
                from pixelrl.train.offline import open_for_env

                self.interventions.add_demos(open_for_env(demos, "demo dataset", env=self.eval_env, run_env=cfg.env,
                                                          allow_env_mismatch=cfg.offline.allow_env_mismatch))
        self.warmup_rng = np.random.default_rng(derive_seed(cfg.seed, WARMUP_STREAM))
        self.counters = {"frames": 0, "agent_steps": 0, "episodes": 0, "evals": 0, "next_eval": 0,
                         "next_checkpoint": 0, "last_eval_frames": -1,
                         "last_checkpoint_frames": -1, "wall_s": 0.0}
        self._open_run(resume, checkpoint)

    def _make_agent_and_replay(self, resume: bool, frame_stack: int) -> TrainConfig:
        """The agent (for the env's spaces, settings that depend on the env resolved, the machine's choices recorded
        in a new run's config) and its replay buffer; returns the config as resolved (also ``self.cfg``)."""
        cfg = self.cfg = resolve_agent_for_env(self.cfg, self.action_repeat)
        a = cfg.agent
        self.agent = make_agent(cfg.agent_name, self.obs_space, self.action_space, a, self.device)
        if not resume:
            cfg = self.cfg = record_machine_choices(cfg, self.agent)
        self._sample_kwargs = sample_kwargs(getattr(self.agent, "batch_extras", ()))
        self.replay = ReplayBuffer(self.obs_space, self.action_space, a.replay_capacity, frame_stack=frame_stack,
                                   nstep=a.nstep, discount=a.discount, device=self.device,
                                   seed=derive_seed(cfg.seed, REPLAY_STREAM))
        return cfg

    def commit_resume(self) -> None:
        """After a resume has loaded everything: cut the log back to (or repair it from) the checkpoint and put the
        replay folder back to the checkpoint's manifest -- the first changes a resume makes to the run folder."""
        jsonl_offset, jsonl_copy, replay_manifest = self._restored
        self._restored = None
        self._resume_log(jsonl_offset, jsonl_copy)
        write_json_atomic(self.run_dir / "replay" / "manifest.json", json.loads(replay_manifest))
        if self.interventions is not None:
            self.interventions.commit_resume(self.run_dir / "interventions")

    def _resume_log(self, jsonl_offset: int, jsonl_copy: bytes | None) -> None:
        """Reopen the log cut back to (or repaired from) the checkpoint's, and the wall clock at its ``wall_s``."""
        self.logger = Logger(self.run_dir, tensorboard=self.cfg.tensorboard, jsonl_offset=jsonl_offset,
                             purge_step=self.counters["frames"], jsonl_copy=jsonl_copy)
        self._wall_start = time.perf_counter() - self.counters["wall_s"]

    # ---- checkpoint / resume -------------------------------------------------------------------------------
    def _checkpoint(self) -> Path:
        def save_replay() -> str:
            self.replay.save(self.run_dir / "replay")
            return (self.run_dir / "replay" / "manifest.json").read_text()

        state = self._checkpoint_state({"warmup": self.warmup_rng}, save_replay)
        if self.snapshot_wrapper is not None:
            state["snapshot_wrapper"] = self.snapshot_wrapper.state_dict()
        if self.reward_model is not None:  # at an episode boundary: every step is in the replay with its reward
            state["reward_model"] = self.reward_model.state_dict()
        if self.interventions is not None:  # its RNG, counters and buffer (saved incrementally like the replay)
            state["interventions"] = self.interventions.checkpoint(self.run_dir / "interventions")
        return self._save_checkpoint(state)

    def _checkpoint_state(self, generators: dict[str, np.random.Generator] | None = None,
                          save_replay: Callable[[], str] | None = None) -> dict[str, Any]:
        """What every trainer's checkpoint holds, once the agent is known to be finite (a diverged agent is never
        saved) and the log is flushed: the counters, the log's size and copy, the agent, every RNG (with the trainer's
        own ``generators``), the config and, with ``save_replay`` (which saves the replay and returns its manifest),
        the replay manifest."""
        check_finite_parameters(self.agent, f"at frame {self.counters['frames']:,}")
        self.counters["wall_s"] = time.perf_counter() - self._wall_start
        self.logger.flush()
        manifest = save_replay() if save_replay is not None else None
        state = {
            "trainer": dict(self.counters),
            "jsonl_offset": self.logger.offset(),
            "agent": self.agent.state_dict(),
            "rng": capture_rng_state(generators),
        }
        if manifest is not None:
            state["replay_manifest"] = manifest
        state["config"] = json.dumps(to_dict(self.cfg))
        state["metrics_jsonl"] = np.frombuffer(self.logger.read_bytes(), dtype=np.uint8)
        return state

    def _save_checkpoint(self, state: dict[str, Any]) -> Path:
        name = f"frames_{self.counters['frames']:012d}"
        return save_checkpoint(self.run_dir / "checkpoints", name, state, keep=self.cfg.keep_checkpoints)

    def _restore(self, checkpoint: str | None = None) -> tuple[int, bytes | None, str]:
        """Load the latest checkpoint (or the one named ``checkpoint``) into the agent, replay, RNGs and counters,
        writing nothing (the caller puts the replay manifest back once everything has loaded). Returns the log's
        size at the checkpoint, the checkpoint's copy of the log (None for checkpoints older than that copy) and the
        replay manifest."""
        ckpt, state, saved_cfg, now_cfg = self._load_checkpoint(checkpoint)
        # The replay folder may be ahead of this checkpoint (killed between the replay save and the checkpoint):
        # load the replay manifest recorded with the checkpoint, whose chunks are immutable once written.
        try:
            self.replay.load(self.run_dir / "replay", manifest=state["replay_manifest"])
        except ConfigError as e:
            changes = config_changes(saved_cfg, now_cfg) if saved_cfg is not None else []
            if not changes:
                raise
            listed = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} in config.json" for k, a, b in changes)
            raise ConfigError(f"{self.run_dir / 'config.json'} does not match checkpoint {ckpt} ({listed}); put the "
                              "values back or start a new run") from None
        self._restore_agent(state, ckpt, saved_cfg, now_cfg)
        restore_rng_state(state["rng"], {"warmup": self.warmup_rng})
        if self.snapshot_wrapper is not None:
            if "snapshot_wrapper" not in state:
                raise ConfigError("the checkpoint has no snapshot-reset state; it was saved by a run without "
                                  "--snapshot-bank")
            self.snapshot_wrapper.load_state_dict(state["snapshot_wrapper"])
        if self.reward_model is not None and "reward_model" in state:
            self.reward_model.load_state_dict(state["reward_model"])
        if self.interventions is not None:
            self.interventions.restore(state.get("interventions"), self.run_dir / "interventions")
        return (*self._restore_counters(state), state["replay_manifest"])

    def _load_checkpoint(self, checkpoint: str | None) -> tuple[Path, dict[str, Any], dict | None, dict]:
        """The checkpoint a resume starts from (the latest, or the one named ``checkpoint``), loaded: its path, its
        state, the config saved with it (None for checkpoints older than that record) and this run's config."""
        if checkpoint is not None:
            ckpt = self.run_dir / "checkpoints" / checkpoint
        else:
            ckpt = latest_checkpoint(self.run_dir / "checkpoints")
        if ckpt is None:
            raise ConfigError(f"{self.run_dir} has no checkpoint to resume from (checkpoints/latest.json is missing: "
                              "the run stopped before its first checkpoint, so nothing can be continued); delete the "
                              "folder and start the run again with `pixelrl train`")
        state = load_checkpoint(ckpt)
        saved_cfg = json.loads(state["config"]) if "config" in state else None
        return ckpt, state, saved_cfg, to_dict(self.cfg)

    def _restore_agent(self, state: dict[str, Any], ckpt: Path, saved_cfg: dict | None, now_cfg: dict) -> None:
        """Load the checkpoint's agent (one that does not fit is refused, naming what config.json changed), record
        the settings config.json changed and give the optimizers a changed ``agent.*lr``."""
        load_agent_state(self.agent, state["agent"], config_path=self.run_dir / "config.json", checkpoint=ckpt,
                         saved_config=saved_cfg, config=now_cfg)
        if saved_cfg is not None:
            changes = config_changes(saved_cfg, now_cfg)
            self.changed_settings = [f"{k} {a!r} -> {b!r}" for k, a, b in changes]
            lrs = apply_changed_learning_rates(self.agent, changes)
            self.changed_settings += [f"optimizer learning rate {x}" for x in lrs]

    def _restore_counters(self, state: dict[str, Any]) -> tuple[int, bytes | None]:
        """Put the checkpoint's counters back; returns the log's size at the checkpoint and the checkpoint's copy of
        the log (None for checkpoints older than that copy)."""
        self.counters.update(state["trainer"])
        copy = state.get("metrics_jsonl")
        return int(state["jsonl_offset"]), None if copy is None else np.asarray(copy, dtype=np.uint8).tobytes()

    # ---- evaluation ------------------------------------------------------------------------------------------
    def _evaluate(self, progress: TrainProgress) -> dict[str, Any]:
        cfg, c = self.cfg, self.counters
        t0 = time.perf_counter()
        video = self.run_dir / "videos" / f"eval_frames_{c['frames']:09d}.mp4" if cfg.video else None
        with storage_errors(video or self.run_dir / "videos", cleanup=(video,) if video else ()):
            fields, extra = evaluate_agent(self.eval_env, self.agent, step=c["agent_steps"],
                                           episodes=cfg.eval_episodes, seed=cfg.seed, index=c["evals"],
                                           action_space=self.action_space, eval_random=cfg.eval_random,
                                           video_path=video)
        row: dict[str, Any] = {**self._eval_row(), **fields}
        row["eval_s"] = time.perf_counter() - t0
        row["wall_s"] = time.perf_counter() - self._wall_start
        self.logger.log("eval", row)
        c["evals"] += 1
        progress.eval_done(c["frames"], row["eval_return"], row["eval_return_std"], self._eval_note(extra))
        return row

    def _eval_row(self) -> dict[str, Any]:
        """The counters an eval row starts with (before the evaluation's fields)."""
        c = self.counters
        return {"frames": c["frames"], "agent_steps": c["agent_steps"], "episodes": c["episodes"]}

    def _eval_note(self, extra: str) -> str:
        """What the progress line shows after an evaluation's return."""
        return extra

    # ---- training --------------------------------------------------------------------------------------------
    def _train_episode(self, progress: TrainProgress) -> None:
        cfg, c, a = self.cfg, self.counters, self.cfg.agent
        batch_size = int(a.batch_size)
        ep = train_episode(
            self.train_env, self.agent, self.store, lambda: self.sampler.sample(batch_size, **self._sample_kwargs),
            counters=c, reset_seed=derive_seed(cfg.seed, TRAIN_STREAM, c["episodes"]),
            seed_steps=int(getattr(a, "num_seed_steps", 0)), update_every=int(getattr(a, "update_every_steps", 1)),
            updates_per_step=int(getattr(a, "updates_per_step", 1)), warmup_rng=self.warmup_rng,
            action_space=self.action_space, action_repeat=self.action_repeat, progress=progress,
            intervene=self.interventions,
            batch_extras=self.interventions.batch_extras if self.interventions is not None else None)
        check_finite_parameters(self.agent, f"after episode {c['episodes']:,} (frame {c['frames']:,})")
        self._warn_if_losses_explode(ep.metrics)
        timing, rewards = ep.timing(), {}
        if self.reward_model is not None:  # the env's return stays episode_return; the model's is logged beside it
            rewards = self.store.episode_stats()
            timing["env_s"] += rewards.pop("seconds")  # the reward is part of what the env step gives the learner
        row = {"frames": c["frames"], "agent_steps": c["agent_steps"], "episode": c["episodes"], **ep.stats(),
               **rewards, **(self.interventions.episode_stats() if self.interventions is not None else {}), **timing,
               "wall_s": time.perf_counter() - self._wall_start}
        self.logger.log("train", row)

    def _warn_if_losses_explode(self, metrics: dict[str, float]) -> None:
        """Warn (once per loss) when an episode's mean of a ``*loss*`` metric exceeds ``LOSS_LARGE``, or
        ``LOSS_GROWTH`` times its first value and 1000: a run diverging (e.g. a learning rate too high) whose losses
        are still finite. The first value is taken anew after a resume; the run is not changed."""
        ref = self._loss_ref
        for k, v in metrics.items():
            if "loss" not in k or not math.isfinite(v):
                continue
            first = ref.setdefault(k, abs(v))
            grew = abs(v) > max(LOSS_GROWTH * first, 1000.0)
            if (grew or abs(v) > LOSS_LARGE) and k not in self._warned_losses:
                self._warned_losses.add(k)
                how = f"{abs(v) / max(first, 1e-12):.3g}x its first value" if grew else "a very large loss"
                warnings.warn(f"{k} averaged {v:.3g} over the episode ending at frame {self.counters['frames']:,}, "
                              f"{how}: the training is likely diverging (a learning rate too high?). It stops if a "
                              "loss becomes non-finite.", DivergenceWarning, stacklevel=2)

    def run(self) -> dict[str, Any]:
        """Train until ``cfg.frames``; returns a summary with the paths of the run folder, plot and video."""
        cfg, c = self.cfg, self.counters
        progress = TrainProgress(cfg.frames, c["frames"], enabled=cfg.progress, title=self._progress_title())
        try:
            try:
                train_until(c, cfg.frames, eval_every=cfg.eval_every_frames,
                            checkpoint_every=self._checkpoint_every(), evaluate=lambda: self._evaluate(progress),
                            checkpoint=self._checkpoint, episode=lambda: self._train_episode(progress),
                            stop=self._over_budget)
            except DivergenceError as e:
                raise DivergenceError(f"{e}. {self._where_to_resume(diverged=True)}") from None
            except KeyboardInterrupt:
                raise Interrupted(f"interrupted at {self._position()}. "
                                  f"{self._where_to_resume(diverged=False)}") from None
            finally:
                progress.close()
                self._close(release=False)
            return self._finish()
        finally:
            self._lock.release()  # after the summary and curve: the run folder is this process's until then

    def _progress_title(self) -> str:
        return f"{self.cfg.env} {self.cfg.agent_name} s{self.cfg.seed}"

    def _checkpoint_every(self) -> int:
        """``train_until``'s checkpoint cadence in frames (0: after each evaluation)."""
        return self.cfg.checkpoint_every_frames

    def _position(self) -> str:
        """Where the run is, for the Ctrl-C message."""
        return f"frame {self.counters['frames']:,}"

    def _where_to_resume(self, *, diverged: bool) -> str:
        return where_to_resume(self.run_dir, diverged=diverged)

    def _over_budget(self) -> bool:
        """Whether ``time_budget_min`` of training wall time is spent (checked at episode boundaries)."""
        budget = self.cfg.time_budget_min
        return budget is not None and time.perf_counter() - self._wall_start >= 60.0 * budget

    def _finish(self) -> dict[str, Any]:
        from pixelrl.train.plot import plot_runs

        with storage_errors(self.run_dir / "curve.png", cleanup=(self.run_dir / "curve.png",)):
            curve = plot_runs([self.run_dir], self.run_dir / "curve.png",
                              title=f"{self.cfg.env} {self.cfg.agent_name} (seed {self.cfg.seed})")
        videos = sorted((self.run_dir / "videos").glob("*.mp4")) if self.cfg.video else []
        evals = read_rows(self.run_dir, "eval")
        summary = {
            "run_dir": str(self.run_dir), "curve": str(curve), "video": str(videos[-1]) if videos else None,
            "frames": self.counters["frames"], "agent_steps": self.counters["agent_steps"],
            "final_eval_return": evals[-1]["eval_return"] if evals else None,
            "random_return": next((r["random_return"] for r in evals if "random_return" in r), None),
            **({"final_success_rate": evals[-1]["success_rate"]} if evals and "success_rate" in evals[-1] else {}),
            "wall_s": time.perf_counter() - self._wall_start,
            "ended_by": "frames" if self.counters["frames"] >= self.cfg.frames else "time_budget",
            "time_budget_min": self.cfg.time_budget_min, "target_frames": self.cfg.frames,
            "machine": f"{platform.node()} {platform.machine()} {torch.get_num_threads()} threads {self.device}",
        }
        summary.update(self._summary_extra(evals))
        write_json_atomic(self.run_dir / "summary.json", summary)
        return summary

    def _summary_extra(self, evals: list[dict[str, Any]]) -> dict[str, Any]:
        """Summary keys a trainer adds (after the others) or replaces (in place, e.g. its own ``ended_by``), given
        the run's eval rows."""
        return {}
