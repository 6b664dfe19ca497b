"""Batched training: K agents (seeds) of one configuration in one process, updated as one batched computation.

``pixelrl train --seeds 1-5`` (or ``--seeds 1,3,7``) builds one single-run :class:`~pixelrl.train.loop.Trainer` per
seed -- its env (in its own subprocess), evaluation env, agent, replay, warm-up RNG, logger and run folder -- and
drives them in lockstep: at every agent step the K agents act with one batched forward pass, the K envs step, and
each update point runs one :class:`~pixelrl.agents.batched.BatchedDrQv2` update of all K agents, each on a batch
from its own replay. The order of one step is the single trainer's (:func:`pixelrl.train.episode.train_episode`).

Run folder::

    runs/<name>/batch.json     the seeds and the shared configuration (what ``pixelrl resume`` reads)
    runs/<name>/s1/ ... s5/    one run folder per seed with the files of a single run (config.json with that seed,
                               metrics, checkpoints, eval rows, videos, curve.png, summary.json)
    runs/<name>/curve.png      the seeds aggregated (IQM and CI); summary.json

Each agent's torch random numbers come from its own generator, started in the state the global RNG has after that
seed's agent is built (as in a single run), and checkpoints record it as the run's torch RNG state. So a seed folder
is a single run in every respect: ``pixelrl resume runs/<name>/s3`` continues that seed alone, and seed k of a
batched run follows the single run of seed k up to the float rounding of batched kernels.

Resume: checkpoints are written for all seeds at the same episode boundary, one seed after the other; a kill in
between leaves some seeds one checkpoint ahead. ``pixelrl resume runs/<name>`` resumes every seed from the newest
checkpoint all seeds have (the newer ones are deleted; they are re-written as the run continues).

Limits: the episodes of the K envs must end at the same agent step (true of DeepMind Control's fixed-length
episodes); evaluation runs the K agents one after the other.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pixelrl.agents.batched import BatchedDrQv2
from pixelrl.errors import (ConfigError, CorruptFileError, DivergenceError, Interrupted,
                            NotFoundError, PixelRLError)
from pixelrl.train.config import TrainConfig, parse_seeds
from pixelrl.train.episode import EpisodeResult, env_step_error, train_until, warmup_action, where_to_resume
from pixelrl.train.loop import TRAIN_STREAM, Trainer
from pixelrl.train.progress import TrainProgress
from pixelrl.utils.atomic import RunLock, write_json_atomic
from pixelrl.utils.dataclass_io import to_dict
from pixelrl.utils.seeding import derive_seed

__all__ = ["BatchedTrainer", "BATCH_FILE", "seed_run_dir", "default_batch_run_dir"]

BATCH_FILE = "batch.json"


def seed_run_dir(parent: str | Path, seed: int) -> Path:
    """The run folder of ``seed`` inside a batched run's folder."""
    return Path(parent) / f"s{seed}"


def default_batch_run_dir(env: str, agent_name: str, seeds: str) -> str:
    return f"runs/{env.replace('/', '_')}-{agent_name}-s{seeds.replace(',', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"


def _default_generator(device: torch.device) -> torch.Generator:
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


def _fork_rng(device: torch.device) -> torch.Generator:
    """A generator on ``device`` in the state of torch's global RNG there (what a single run draws from next)."""
    g = torch.Generator(device=device)
    g.set_state(_default_generator(device).get_state())
    return g


def _finished_checkpoints(parent: Path, seed: int) -> set[str]:
    d = seed_run_dir(parent, seed) / "checkpoints"
    return {p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
            and (p / "manifest.json").exists()} if d.is_dir() else set()


def _common_checkpoint(parent: Path, seeds: Sequence[int]) -> str:
    """The newest checkpoint all seeds have (read only)."""
    common = set.intersection(*(_finished_checkpoints(parent, s) for s in seeds)) if seeds else set()
    if not common:
        raise ConfigError(f"{parent}: the seeds {list(seeds)} have no checkpoint in common to resume from")
    return max(common)  # frames_<12 digits>: the lexical order is the frame order


def _align_checkpoints(parent: Path, seeds: Sequence[int], name: str) -> None:
    """Point every seed's ``latest.json`` at checkpoint ``name``; delete newer ones (only what differs is written)."""
    for s in seeds:
        d = seed_run_dir(parent, s) / "checkpoints"
        for newer in sorted(n for n in _finished_checkpoints(parent, s) if n > name):
            shutil.rmtree(d / newer)
        try:
            current = json.loads((d / "latest.json").read_text()).get("name")
        except (OSError, ValueError, AttributeError):
            current = None
        if current != name:
            write_json_atomic(d / "latest.json", {"name": name})


def read_batch_file(run_dir: str | Path) -> tuple[list[int], TrainConfig]:
    """``(seeds, shared config)`` of the batched run in ``run_dir``, from its ``batch.json``; a damaged file is
    one :class:`~pixelrl.errors.CorruptFileError` naming it."""
    from pixelrl.train.setup import config_from_run

    path = Path(run_dir) / BATCH_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFoundError(f"{run_dir} is not a batched run folder (no {BATCH_FILE})") from None
    except (OSError, ValueError) as e:
        raise CorruptFileError(path, f"not valid JSON ({e}); fix or restore the file") from None
    seeds = meta.get("seeds") if isinstance(meta, dict) else None
    if not (isinstance(seeds, list) and seeds and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)):
        raise CorruptFileError(path, "expected an object with 'seeds' (a list of integers) and 'config'")
    if not isinstance(meta.get("config"), dict):
        raise CorruptFileError(path, "field 'config' is missing or not an object")
    try:
        cfg = config_from_run(meta["config"])
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: invalid configuration ({e})") from None
    return seeds, cfg


class _SeedProgress:
    """A seed's view of the shared progress display (its evaluation lines name the seed)."""

    def __init__(self, progress: TrainProgress, seed: int) -> None:
        self.progress, self.seed = progress, seed

    def eval_done(self, frames: int, mean: float, std: float, extra: str = "") -> None:
        self.progress.eval_done(frames, mean, std, f"{extra} [seed {self.seed}]")


class BatchedTrainer:
    """Trains (or resumes) one :class:`Trainer` per seed of ``seeds`` in lockstep with a batched learner.

    ``cfg.run_dir`` is the batched run's folder; seed ``s`` runs in ``<run_dir>/s<s>`` with ``cfg`` and ``seed=s``."""

    def __init__(self, cfg: TrainConfig, seeds: Sequence[int], *, resume: bool = False) -> None:
        from pixelrl.agents import get_spec
        from pixelrl.agents.batched import unsupported_settings
        from pixelrl.agents.drqv2 import DrQv2Agent

        if cfg.run_dir is None:
            raise ConfigError("TrainConfig.run_dir must be set (the CLI fills it in)")
        seeds = list(seeds)
        if len(set(seeds)) != len(seeds) or not seeds:
            raise ConfigError(f"--seeds must name distinct seeds, got {seeds}")
        if get_spec(cfg.agent_name).agent_cls is not DrQv2Agent:
            refused = [f"--agent {cfg.agent_name}"]
        else:
            refused = [] if cfg.agent is None else unsupported_settings(cfg.agent)
        if cfg.offline is not None and cfg.offline.active:
            refused.append("offline data (--dataset / --demos)")
        if cfg.snapshot_bank is not None:
            refused.append("--snapshot-bank")
        if refused:  # before any env process is started
            raise ConfigError(f"batched training (--seeds) supports the DrQ-v2 core only (MSE critic, scheduled "
                              f"exploration, no mechanisms, online); this run sets {', '.join(refused)}. Train each "
                              "seed as its own run (pixelrl train --seed N) instead.")
        self.run_dir = Path(cfg.run_dir)
        if not resume and (self.run_dir / BATCH_FILE).exists():
            raise ConfigError(f"{self.run_dir} already holds a batched run; use `pixelrl resume {self.run_dir}` "
                              "to continue it or choose another --run-dir")
        self.seeds = seeds
        self.trainers: list[Trainer] = []
        # one writer per batched run, and on resume per seed folder before any of them is changed (the trainers'
        # own locks on the seed folders are shared with these within this process)
        self._locks = [RunLock(self.run_dir)]
        generators = []
        try:
            common = None
            if resume:
                self._locks += [RunLock(seed_run_dir(self.run_dir, s)) for s in seeds]
                common = _common_checkpoint(self.run_dir, seeds)
            for s in seeds:
                if resume:
                    seed_cfg = self._seed_config(s, cfg.frames)
                else:
                    seed_cfg = dataclasses.replace(cfg, seed=s, seeds=None, run_dir=str(seed_run_dir(self.run_dir, s)))
                # on resume every seed loads (the common checkpoint) before any run folder changes
                t = Trainer(seed_cfg, resume=resume, checkpoint=common, defer_writes=resume)
                if not resume and not self.trainers:
                    # what the first seed chose for this machine (precision 'auto') holds for all: one computation
                    cfg = dataclasses.replace(cfg, agent=t.cfg.agent, **{
                        f: getattr(t.cfg, f) for f in ("decisions",) if hasattr(t.cfg, f)})
                self.trainers.append(t)
                generators.append(_fork_rng(t.device))  # the agent's torch stream, as a single run would draw it
            counters = [{k: v for k, v in t.counters.items() if k != "wall_s"} for t in self.trainers]
            if any(c != counters[0] for c in counters):
                raise ConfigError(f"{self.run_dir}: the seeds' checkpoints are at different points: {counters}")
            self.learner = BatchedDrQv2([t.agent for t in self.trainers], generators)
            if resume:  # everything has loaded: only now do the run folders change
                self._commit_resume(cfg, common)
        except BaseException:
            self._close()
            raise
        self.generators = generators
        self.device = self.trainers[0].device
        self.counters = self.trainers[0].counters
        for t in self.trainers:  # one schedule for all: the seeds step, evaluate and checkpoint together
            t.counters = self.counters
        self.cfg = self.trainers[0].cfg
        if not resume:
            write_json_atomic(self.run_dir / BATCH_FILE, {"seeds": seeds, "config": to_dict(cfg)})

    def _seed_config(self, seed: int, frames: int) -> TrainConfig:
        """Seed ``seed``'s config (its config.json, validated) with the frame budget ``frames``; writes nothing."""
        from pixelrl.train.setup import load_run_config

        d = seed_run_dir(self.run_dir, seed)
        if not (d / "config.json").exists():
            raise ConfigError(f"{d} is missing (no config.json): not the folder of a batched run's seed")
        seed_cfg = load_run_config(d)
        return dataclasses.replace(seed_cfg, run_dir=str(d), frames=frames)

    def _commit_resume(self, cfg: TrainConfig, checkpoint: str) -> None:
        """The writes of a resume, once every seed has loaded: the seeds' checkpoints aligned on ``checkpoint``, a
        new frame budget recorded (each seed's config.json and batch.json), each seed's log and replay folder put
        back to the checkpoint."""
        _align_checkpoints(self.run_dir, self.seeds, checkpoint)
        for t in self.trainers:
            path = t.run_dir / "config.json"
            saved = json.loads(path.read_text())
            if saved.get("frames") != cfg.frames:
                write_json_atomic(path, {**saved, "frames": cfg.frames})
        _, batch_cfg = read_batch_file(self.run_dir)
        if batch_cfg.frames != cfg.frames:
            write_json_atomic(self.run_dir / BATCH_FILE, {"seeds": self.seeds, "config": to_dict(cfg)})
        for t in self.trainers:
            t.commit_resume()

    @classmethod
    def resume(cls, run_dir: str | Path, *, frames: int | None = None) -> "BatchedTrainer":
        """The trainer of the batched run in ``run_dir``, restored from the newest checkpoint of all its seeds;
        ``frames`` extends the budget. Nothing in the run folder changes until every seed has loaded."""
        run_dir = Path(run_dir)
        seeds, cfg = read_batch_file(run_dir)
        cfg = dataclasses.replace(cfg, run_dir=str(run_dir), frames=frames if frames is not None else cfg.frames)
        return cls(cfg, seeds, resume=True)

    def _close(self) -> None:
        """Close every seed's logs and envs and release its run folder (once)."""
        for t in self.trainers:
            t._close()  # each part at most once (a seed that failed to resume may have envs but no log yet)
        for lock in self._locks:
            lock.release()

    # ---- evaluation and checkpoints: the single trainer's, once per seed ---------------------------------------
    def _evaluate(self, progress: TrainProgress) -> None:
        self.learner.export_to_agents(optimizer=False)
        for t in self.trainers:
            t._evaluate(_SeedProgress(progress, t.cfg.seed))

    def _checkpoint(self) -> None:
        self.learner.export_to_agents()
        default = _default_generator(self.device)
        for t, g in zip(self.trainers, self.generators):
            default.set_state(g.get_state())  # the checkpoint records this seed's stream as the torch RNG state
            t._checkpoint()

    # ---- training ----------------------------------------------------------------------------------------------
    def _episode(self, progress: TrainProgress) -> None:
        """One training episode of every seed in lockstep (the single trainer's step order)."""
        c, a, ts = self.counters, self.cfg.agent, self.trainers
        batch_size, seed_steps = int(a.batch_size), int(a.num_seed_steps)
        update_every, updates_per_step = int(a.update_every_steps), int(a.updates_per_step)
        action_repeat = ts[0].action_repeat
        obs = [t.train_env.reset(seed=derive_seed(t.cfg.seed, TRAIN_STREAM, c["episodes"])) for t in ts]
        for t, o in zip(ts, obs):
            t.replay.add_first(o)
        returns = [0.0] * len(ts)
        metrics: list[dict[str, list[float]]] = [defaultdict(list) for _ in ts]
        ep_len = ep_frames = updates = 0
        env_s = act_s = update_s = 0.0
        t_ep = time.perf_counter()
        done = False
        while not done:
            t0 = time.perf_counter()
            step = c["agent_steps"]
            if step < seed_steps:
                actions = [warmup_action(t.warmup_rng, t.action_space) for t in ts]
            else:
                actions = self.learner.act(obs, step=step)
                bad = [t.cfg.seed for t, x in zip(ts, actions) if not np.isfinite(x).all()]
                if bad:
                    raise DivergenceError(f"the policy's action is not finite for seed(s) {bad} at agent step "
                                          f"{step:,} (frame {c['frames']:,}): the networks diverged")
            t1 = time.perf_counter()
            for t, action in zip(ts, actions):
                t.train_env.step_async(action)
            if step >= seed_steps and step % update_every == 0:
                for _ in range(updates_per_step):
                    batches = [t.replay.sample(batch_size, **t._sample_kwargs) for t in ts]
                    rows = self.learner.update(batches, step=step)
                    bad = {t.cfg.seed: [f"{k} = {v}" for k, v in row.items() if "loss" in k and not math.isfinite(v)]
                           for t, row in zip(ts, rows)}
                    bad = {s: b for s, b in bad.items() if b}
                    if bad:
                        for t in ts:
                            t.train_env.discard()
                        listed = "; ".join(f"seed {s}: " + ", ".join(b) for s, b in bad.items())
                        raise DivergenceError(f"{listed} at agent step {step:,} (frame {c['frames']:,}): the "
                                              "training diverged")
                    for m, values in zip(metrics, rows):
                        for k, v in values.items():
                            m[k].append(v)
                    updates += 1
            t2 = time.perf_counter()
            results = [self._step_wait(t, action, step) for t, action in zip(ts, actions)]
            t3 = time.perf_counter()
            frames, ends = set(), []
            for i, (t, action, (o, reward, terminated, truncated, fr)) in enumerate(zip(ts, actions, results)):
                t.replay.add(action, reward, o, terminated, truncated)
                obs[i] = o
                returns[i] += reward
                frames.add(action_repeat if fr is None else fr)
                ends.append(terminated or truncated)
            if len(frames) != 1 or len(set(ends)) != 1:
                raise ConfigError(f"{self.cfg.env}: the seeds' episodes went out of step at agent step {step} (ended: "
                                  f"{ends}, frames: {sorted(frames)}); batched training needs episodes of one length, "
                                  "as DeepMind Control's")
            step_frames = frames.pop()
            ep_len += 1
            ep_frames += step_frames
            c["agent_steps"] += 1
            c["frames"] += step_frames
            done = ends[0]
            act_s += t1 - t0
            update_s += t2 - t1
            env_s += t3 - t2
            if ep_len % 25 == 0 or done:
                progress.update(c["frames"], env_s=env_s, act_s=act_s, update_s=update_s)
        c["episodes"] += 1
        self.learner.check_finite(f"after episode {c['episodes']:,} (frame {c['frames']:,})",
                                  [t.cfg.seed for t in ts])
        seconds = time.perf_counter() - t_ep
        for t, ret, m in zip(ts, returns, metrics):
            ep = EpisodeResult(episode_return=ret, episode_length=ep_len, frames=ep_frames, updates=updates,
                               metrics={k: float(np.mean(v)) for k, v in sorted(m.items())},
                               episode_metrics=t.agent.observe_episode(ret, c["agent_steps"]), seconds=seconds,
                               env_s=env_s, act_s=act_s, update_s=update_s)
            row = {"frames": c["frames"], "agent_steps": c["agent_steps"], "episode": c["episodes"], **ep.stats(),
                   **ep.timing(), "wall_s": time.perf_counter() - t._wall_start}
            t.logger.log("train", row)

    def _step_wait(self, t: Trainer, action, step: int):
        try:
            return t.train_env.step_wait()
        except PixelRLError:
            raise
        except Exception as e:  # as the single trainer reports it, with the seed
            raise env_step_error(f"{self.cfg.env} of seed {t.cfg.seed}", e,
                                 f"agent step {step:,} (frame {self.counters['frames']:,})", action) from None

    def run(self) -> dict[str, Any]:
        """Train every seed until ``cfg.frames`` (or ``time_budget_min``, counted for the whole batch); returns a
        summary of the batched run (each seed's folder also gets its own summary.json and curve.png)."""
        cfg, c = self.cfg, self.counters
        progress = TrainProgress(cfg.frames, c["frames"], enabled=cfg.progress,
                                 title=f"{cfg.env} {cfg.agent_name} seeds {','.join(map(str, self.seeds))}")
        try:
            train_until(c, cfg.frames, eval_every=cfg.eval_every_frames, checkpoint_every=cfg.checkpoint_every_frames,
                        evaluate=lambda: self._evaluate(progress), checkpoint=self._checkpoint,
                        episode=lambda: self._episode(progress), stop=self.trainers[0]._over_budget)
        except DivergenceError as e:
            raise DivergenceError(f"{e}. {self._where_to_resume(diverged=True)}") from None
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted at frame {c['frames']:,}. {self._where_to_resume(diverged=False)}"
                              ) from None
        finally:
            progress.close()
            self._close()
        return self._finish()

    def _where_to_resume(self, *, diverged: bool) -> str:
        return where_to_resume(self.run_dir, diverged=diverged,
                               seed_dirs=[seed_run_dir(self.run_dir, s) for s in self.seeds])

    def _finish(self) -> dict[str, Any]:
        from pixelrl.train.plot import plot_runs

        runs = [t._finish() for t in self.trainers]
        curve = plot_runs([t.run_dir for t in self.trainers], self.run_dir / "curve.png",
                          title=f"{self.cfg.env} {self.cfg.agent_name} (seeds {', '.join(map(str, self.seeds))})")
        finals = [r["final_eval_return"] for r in runs]
        randoms = [r["random_return"] for r in runs if r["random_return"] is not None]
        summary = {
            "run_dir": str(self.run_dir), "curve": str(curve), "video": None, "seeds": self.seeds,
            "runs": [r["run_dir"] for r in runs], "frames": self.counters["frames"],
            "agent_steps": self.counters["agent_steps"], "final_eval_returns": finals,
            "final_eval_return": float(np.mean(finals)) if None not in finals else None,
            "random_return": float(np.mean(randoms)) if randoms else None,
            "wall_s": max(r["wall_s"] for r in runs), "ended_by": runs[0].get("ended_by"),
            "time_budget_min": self.cfg.time_budget_min, "target_frames": self.cfg.frames,
            "machine": f"{platform.node()} {platform.machine()} {torch.get_num_threads()} threads {self.device}",
        }
        write_json_atomic(self.run_dir / "summary.json", summary)
        return summary
