"""The trainer of Learning to Fly in Seconds (``pixelrl train --env builtin/quadrotor-hover --agent l2f``).

:class:`HoverCollector` steps K simulated Crazyflies (one per seed, ``--agent.seeds K``) with the K actors and
feeds :class:`~pixelrl.agents.l2f.L2FAgent`, whose ``train_step`` runs the paper's schedule after every env step
(rl_tools' td3 loop: act with N(0, 0.1) noise, step, store, then train). Episodes end after 500 steps (truncated:
bootstrapped) or when the vehicle leaves the ±0.6 m box (terminated); a finished vehicle restarts at once from a
fresh draw of the start distribution. The simulator backend (floats vehicle by vehicle, or NumPy rows) is the one
measured faster for K vehicles (:func:`~pixelrl.envs.builtin.quadrotor.fastest_backend`), recorded in
``config.json`` under ``decisions``.

Evaluation (:func:`evaluate_hover`) is the success test: ``eval_episodes`` starts per seed from the training
distribution, the deterministic actor, all K × episodes vehicles stepped as one NumPy batch; a seed's episode
succeeds when it survives 500 steps and ends within 0.2 m of the target. Eval rows carry ``success_rate`` (seed 0,
the run's agent for ``pixelrl eval``), ``success_rate_seeds`` (the mean over the K seeds), ``seeds_passing``
(seeds with every episode a success), per-seed rates ``success_rate_s<i>`` and ``eval_return`` (the env's
default reward, seed 0). With ``--video`` the first episode of seed 0 is rendered (two views) to ``videos/``.

Checkpoints (at chunk boundaries of 1000 env steps) hold the agent (networks, Adam state, the whole replay), the
simulators' states, the collector's counters and every RNG, so ``pixelrl resume`` continues exactly (the same rows,
timing columns aside, on the same machine).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from pixelrl.agents.l2f import L2FAgent, L2FConfig, _rng_bytes, _rng_from_bytes
from pixelrl.envs import make
from pixelrl.envs.builtin import quadrotor as Q
from pixelrl.errors import ConfigError, DivergenceError
from pixelrl.train.config import TrainConfig
from pixelrl.train.evaluate import EVAL_STREAM
from pixelrl.train.logger import Logger
from pixelrl.train.loop import Trainer
from pixelrl.train.progress import TrainProgress
from pixelrl.train.setup import config_changes, load_agent_state, record_machine_choices
from pixelrl.utils.atomic import storage_errors, write_json_atomic
from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from pixelrl.utils.dataclass_io import to_dict
from pixelrl.utils.seeding import derive_seed, seed_everything

__all__ = ["HoverCollector", "L2FTrainer", "evaluate_hover", "offset_diagnostics", "train_hover"]

CHUNK = 1000
"""Env steps per logged row and per checkpoint boundary."""


class HoverCollector:
    """K vehicles (one per seed) driven by the agent's K actors; :meth:`run` takes n env steps with training."""

    def __init__(self, agent: L2FAgent, seed: int, backend: str | None = None) -> None:
        self.agent = agent
        k = agent.k
        self.k = k
        self.backend = backend or ("python" if k <= 16 else "numpy")
        self.sim = Q.QuadrotorBatch(k, backend=self.backend)
        self.rng = np.random.default_rng(seed)
        self.obs_buf = np.zeros((k, agent.cfg.obs_dim), np.float32)
        """The K actors' current observations: noisy state (18) then the action history (oldest first)."""
        self.hist = self.obs_buf[:, 18:].reshape(k, agent.cfg.history, 4)  # a view into obs_buf
        self.t = np.zeros(k, np.int64)
        self.step_count = 0
        self.finished: list[tuple[int, float, int, bool]] = []  # (seed, return, length, success) since last take
        self.sim.reset(self.rng)
        self.cobs = self.sim.critic_obs().astype(np.float32)
        self.obs_buf[:, :18] = Q.actor_state(self.cobs, self.rng)
        self.start = np.ones(k, bool)

    def obs(self) -> np.ndarray:
        return self.obs_buf.copy()

    def run(self, n: int) -> dict[str, float]:
        """``n`` env steps (each: act, step, store, train); returns the mean of the update metrics. The observation
        and exploration noise are drawn for up to 1000 steps at a time (one call each instead of one per step)."""
        agent, sim, hist, obs = self.agent, self.sim, self.hist, self.obs_buf
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        sigma = np.asarray(Q.OBS_SIGMA, np.float32)
        explore = agent.exploration_sigma  # the authors' decay after 500k steps changes it between chunks
        done = 0
        while done < n:
            chunk = min(CHUNK, n - done)
            done += chunk
            obs_noise = (self.rng.standard_normal((chunk, self.k, 18)) * sigma).astype(np.float32)
            act_noise = agent.rng.normal(0.0, explore, (chunk, self.k, 4)) if explore > 0 else None
            for j in range(chunk):
                a = agent.act(obs, noise=None if act_noise is None else act_noise[j])
                cobs = self.cobs
                sim.step(a)
                self.t += 1
                term = sim.terminated()
                trunc = (self.t >= Q.EPISODE_STEPS) & ~term
                self.cobs = sim.critic_obs().astype(np.float32)
                astate = self.cobs[:, :18] + obs_noise[j]
                agent.add(obs, cobs, a, astate, self.cobs, term)
                obs[:, :18] = astate
                if agent.cfg.history:
                    hist[:, :-1] = hist[:, 1:]
                    hist[:, -1] = a
                self.start = term | trunc
                if self.start.any():
                    idx = np.flatnonzero(self.start)
                    for i in idx:
                        ok = bool(trunc[i] and np.linalg.norm(sim.state[i, 0:3]) < Q.SUCCESS_RADIUS)
                        ret = agent.recent_return(int(i), int(self.t[i]))  # the learner's reward, weights in force
                        self.finished.append((int(i), ret, int(self.t[i]), ok))
                    sim.reset(self.rng, idx)
                    hist[idx] = 0.0
                    self.t[idx] = 0
                    self.cobs = sim.critic_obs().astype(np.float32)
                    obs[idx, :18] = Q.actor_state(self.cobs[idx], self.rng)
                self.step_count += 1
                m = agent.train_step(self.step_count)
                if act_noise is not None and agent.exploration_sigma != explore:  # decayed inside this chunk
                    act_noise[j + 1:] *= agent.exploration_sigma / explore
                    explore = agent.exploration_sigma
                for key, val in m.items():
                    sums[key] = sums.get(key, 0.0) + val
                    counts[key] = counts.get(key, 0) + 1
        return {key: sums[key] / counts[key] for key in sums}

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"sim_state": self.sim.state.copy(), "sim_dist": self.sim.dist.copy(), "obs": self.obs_buf.copy(),
                "t": self.t.copy(), "start": self.start.copy(), "cobs": self.cobs.copy(),
                "step_count": np.array([self.step_count], np.int64),
                "rng": np.frombuffer(_rng_bytes(self.rng), np.uint8).copy()}

    def load_state_dict(self, s: dict) -> None:
        self.sim.state[...] = np.asarray(s["sim_state"])
        self.sim.dist[...] = np.asarray(s["sim_dist"])
        self.obs_buf[...] = np.asarray(s["obs"])
        self.t[...] = np.asarray(s["t"])
        self.start[...] = np.asarray(s["start"])
        self.cobs = np.asarray(s["cobs"]).copy()
        self.step_count = int(np.asarray(s["step_count"])[0])
        self.rng = _rng_from_bytes(np.asarray(s["rng"], np.uint8).tobytes())


def evaluate_hover(agent: L2FAgent, episodes: int, seed: int, *, record: bool = False,
                   weights: Q.RewardWeights = Q.TRAIN_START_WEIGHTS, target_actor: bool = False,
                   disturbance_scale: float = 1.0) -> dict[str, Any]:
    """The success test for every seed of ``agent``: ``episodes`` starts per seed from the training distribution
    (the same starts for every seed), the deterministic actor, one NumPy batch of K × episodes vehicles.
    Returns ``success`` ``[K, episodes]`` (bool), ``returns`` ``[K, episodes]``, ``lengths``, ``final_distance``,
    ``final_position`` ``[K, episodes, 3]``, the episodes' ``disturbance`` ``[episodes, 6]`` (force, torque) and,
    with ``record``, the rendered frames of seed 0's first episode. ``target_actor`` tests the Polyak-averaged
    target actor instead of the online one (which the authors deploy). ``disturbance_scale`` multiplies the drawn
    disturbances (1: the test; 0: a diagnostic that separates the policy's own offset from its response to the
    unobserved force, with the same starts and noise draws)."""
    k = agent.k
    rng = np.random.default_rng(seed)
    n = k * episodes
    sim = Q.QuadrotorBatch(n, backend="numpy")
    starts, dist = Q.sample_initial_states(rng, episodes), Q.sample_disturbances(rng, episodes) * disturbance_scale
    sim.state[...] = np.tile(starts, (k, 1))
    sim.dist[...] = np.tile(dist, (k, 1))
    hist = np.zeros((k, episodes, agent.cfg.history, 4), np.float32)
    alive = np.ones(n, bool)
    length = np.zeros(n, np.int64)
    ret = np.zeros(n)
    frames, trail = [], []
    final = np.zeros(n)
    final_pos = np.zeros((n, 3))
    rest = np.zeros(17)
    rest[6], rest[13:17] = 1.0, Q.HOVER_RPM
    for t in range(Q.EPISODE_STEPS):
        cobs = sim.critic_obs()
        x = np.concatenate([Q.actor_state(cobs, rng).reshape(k, episodes, 18), hist.reshape(k, episodes, -1)], -1)
        a = agent.actor.forward(x.astype(np.float32), agent.actor_target_p if target_actor else None)
        a = a.reshape(n, 4).astype(np.float64)
        if record:
            trail.append(sim.state[0, :3].copy())
            frames.append(Q.render_frame(sim.state[0], 128, np.asarray(trail)))
        s = sim.state
        p, v, qw = s[:, 0:3].copy(), s[:, 3:6].copy(), s[:, 6].copy()
        sim.step(a)
        hist[:, :, :-1] = hist[:, :, 1:]
        hist[:, :, -1] = a.reshape(k, episodes, 4)
        term = sim.terminated() & alive
        ret += np.where(alive, Q.reward(weights, p, qw, v, a, term), 0.0)
        length += alive
        alive &= ~term
        final[term] = np.linalg.norm(sim.state[term, 0:3], axis=1)
        final_pos[term] = sim.state[term, 0:3]
        sim.state[~alive] = rest  # ended vehicles wait at rest (no overflow); they count as failures
        if record and not alive[0] and len(frames) == t + 1:
            record = False
    final[alive] = np.linalg.norm(sim.state[alive, 0:3], axis=1)
    final_pos[alive] = sim.state[alive, 0:3]
    success = alive & (final < Q.SUCCESS_RADIUS)
    return {"success": success.reshape(k, episodes), "returns": ret.reshape(k, episodes),
            "lengths": length.reshape(k, episodes), "final_distance": final.reshape(k, episodes),
            "final_position": final_pos.reshape(k, episodes, 3), "disturbance": dist, "frames": frames}


def offset_diagnostics(agent: L2FAgent, episodes: int, seed: int, *, target_actor: bool = False,
                       tested: dict[str, Any] | None = None) -> list[dict]:
    """Where a seed's policy ends, split in two (per seed of ``agent``): the success test as :func:`evaluate_hover`
    runs it, and again on the same starts with the disturbances switched off. ``bias`` is the survivors' mean final
    position without disturbances (the policy's own set-point error); ``force_gain`` the per-axis slope of the final
    position against the episode's disturbance acceleration F/m (least squares with an intercept; m per m/s²), and
    ``force_r2`` how much of the final positions' spread that line explains. ``tested``: what
    :func:`evaluate_hover` already returned for these arguments (it is not run again)."""
    res = tested if tested is not None else evaluate_hover(agent, episodes, seed, target_actor=target_actor)
    calm = evaluate_hover(agent, episodes, seed, target_actor=target_actor, disturbance_scale=0.0)
    accel = res["disturbance"][:, :3] / Q.MASS
    out = []
    for i in range(agent.k):
        alive = res["lengths"][i] == Q.EPISODE_STEPS
        calm_alive = calm["lengths"][i] == Q.EPISODE_STEPS
        row: dict[str, Any] = {
            "success_rate": float(res["success"][i].mean()),
            "success_rate_no_disturbance": float(calm["success"][i].mean()),
            "survival_rate_no_disturbance": float(calm_alive.mean()),
            "bias": (calm["final_position"][i][calm_alive].mean(0).round(4).tolist() if calm_alive.any() else None),
            "final_position_mean": (res["final_position"][i][alive].mean(0).round(4).tolist() if alive.any()
                                    else None),
            "final_position_std": (res["final_position"][i][alive].std(0).round(4).tolist() if alive.any()
                                   else None)}
        if alive.sum() > 4:
            a = np.concatenate([np.ones((int(alive.sum()), 1)), accel[alive]], 1)
            f = res["final_position"][i][alive]
            coef, *_ = np.linalg.lstsq(a, f, rcond=None)
            resid = ((f - a @ coef) ** 2).sum(0)
            spread = ((f - f.mean(0)) ** 2).sum(0)
            row["force_gain"] = np.diag(coef[1:]).round(4).tolist()
            row["force_r2"] = (1 - resid / np.maximum(spread, 1e-12)).round(3).tolist()
        out.append(row)
    return out


def train_hover(cfg: L2FConfig, steps: int, seed: int, *, eval_every: int = 0, eval_episodes: int = 100,
                eval_seed: int = 12345, pass_rate: float | None = None, log=None,
                diagnose: bool = False) -> dict[str, Any]:
    """Train K = ``cfg.seeds`` seeds for ``steps`` env steps without a run folder (benchmarks, tests). Every
    ``eval_every`` steps (0: only at the end) the success test runs, on the online actor (``success_rate``,
    ``survival_rate``) and on the Polyak-averaged target actor (``*_target_actor``); evaluation time is excluded from
    the reported training time (``train_s`` wall clock; ``train_cpu_s`` the process's CPU time, which a machine
    shared with other jobs inflates less). With ``pass_rate``, training stops once every seed's success rate reached
    it. With ``diagnose``, every evaluation also carries :func:`offset_diagnostics` per seed (``offset``,
    ``offset_target_actor``). Returns the agent, the evaluations and the training times."""
    agent = L2FAgent(None, None, cfg, capacity=steps + 1, seed=seed)
    col = HoverCollector(agent, derive_seed(seed, 1))
    evals, train_s, cpu_s, done = [], 0.0, 0.0, 0
    every = eval_every or steps
    while done < steps:
        n = min(every - done % every, steps - done)
        t0, c0 = time.perf_counter(), time.process_time()
        col.run(n)
        train_s += time.perf_counter() - t0
        cpu_s += time.process_time() - c0
        done += n
        if done % every == 0 or done == steps:
            res = evaluate_hover(agent, eval_episodes, eval_seed)
            rate = res["success"].mean(1)
            survived = res["lengths"] == Q.EPISODE_STEPS
            evals.append({"steps": done, "train_s": train_s, "train_cpu_s": cpu_s, "success_rate": rate.tolist(),
                          "survival_rate": survived.mean(1).tolist(),
                          "survivor_distance_median": [float(np.median(d[s])) if s.any() else None
                                                       for d, s in zip(res["final_distance"], survived)]})
            tgt = evaluate_hover(agent, eval_episodes, eval_seed, target_actor=True)
            evals[-1].update(success_rate_target_actor=tgt["success"].mean(1).tolist(),
                             survival_rate_target_actor=(tgt["lengths"] == Q.EPISODE_STEPS).mean(1).tolist())
            if diagnose:  # where the policies end, split into their own bias and their response to the force
                evals[-1].update(offset=offset_diagnostics(agent, eval_episodes, eval_seed, tested=res),
                                 offset_target_actor=offset_diagnostics(agent, eval_episodes, eval_seed,
                                                                        target_actor=True, tested=tgt))
            if log is not None:
                log(evals[-1])
            if pass_rate is not None and (rate >= pass_rate).all():
                break
    return {"agent": agent, "evals": evals, "train_s": train_s, "train_cpu_s": cpu_s, "steps": done,
            "backend": col.backend}


class L2FTrainer(Trainer):
    """``pixelrl train --agent l2f``: the run folder, logs, success-test evaluation, checkpoints, exact resume and
    time budget of the other trainers, around :class:`HoverCollector`. Rows: one ``train`` row per 1000 env steps
    (finished episodes' returns, success and length; the update metrics; timings), one ``eval`` row per
    evaluation (see the module doc)."""

    def _init(self, cfg: TrainConfig, resume: bool, checkpoint: str | None) -> None:
        if not resume and (self.run_dir / "metrics.jsonl").exists():
            raise ConfigError(f"{self.run_dir} already holds a run; use `pixelrl resume {self.run_dir}` to "
                              "continue it or choose another --run-dir")
        if not cfg.env.startswith("builtin/quadrotor-hover"):
            raise ConfigError(f"agent 'l2f' trains on builtin/quadrotor-hover (its simulator is built in), not "
                              f"{cfg.env}; use --env builtin/quadrotor-hover")
        if not isinstance(cfg.agent, L2FConfig):
            raise ConfigError(f"the l2f trainer runs --agent l2f, got {cfg.agent_name!r}")
        self.device = "cpu"
        seed_everything(cfg.seed)
        self.eval_env = make(cfg.env, seed=derive_seed(cfg.seed, EVAL_STREAM), **cfg.env_kwargs())
        self.obs_space, self.action_space = self.eval_env.observation_space, self.eval_env.action_space
        self.action_repeat = 1
        self.agent = L2FAgent(self.obs_space, self.action_space, cfg.agent, capacity=int(cfg.frames) + 1,
                              seed=derive_seed(cfg.seed, 0))
        self.collector = HoverCollector(self.agent, derive_seed(cfg.seed, 1))
        if not resume:
            cfg = self.cfg = record_machine_choices(cfg, self.agent)
            cfg.decisions.setdefault("simulator_backend", f"{self.collector.backend} ({cfg.agent.seeds} vehicles: "
                                     "floats vehicle by vehicle below 17, NumPy rows above; measured in "
                                     "docs/envs/quadrotor.md)")
        self.counters = {"frames": 0, "agent_steps": 0, "episodes": 0, "rollouts": 0, "resets": 0, "evals": 0,
                         "next_eval": 0, "next_checkpoint": 0, "last_eval_frames": -1, "last_checkpoint_frames": -1,
                         "wall_s": 0.0}
        self._restored = None
        if resume:
            self._restored = self._restore(checkpoint)
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.run_dir / "config.json", to_dict(cfg))
            self.logger = Logger(self.run_dir, tensorboard=cfg.tensorboard)
            self._wall_start = time.perf_counter()

    def commit_resume(self) -> None:
        """After a resume has loaded everything: cut the log back to (or repair it from) the checkpoint."""
        (jsonl_offset, jsonl_copy), self._restored = self._restored, None
        self.logger = Logger(self.run_dir, tensorboard=self.cfg.tensorboard, jsonl_offset=jsonl_offset,
                             purge_step=self.counters["frames"], jsonl_copy=jsonl_copy)
        self._wall_start = time.perf_counter() - self.counters["wall_s"]

    def _checkpoint(self) -> Path:
        self._check_finite()
        self.counters["wall_s"] = time.perf_counter() - self._wall_start
        self.logger.flush()
        state = {"trainer": dict(self.counters), "jsonl_offset": self.logger.offset(),
                 "agent": self.agent.state_dict(), "collector": self.collector.state_dict(),
                 "config": json.dumps(to_dict(self.cfg)),
                 "metrics_jsonl": np.frombuffer(self.logger.read_bytes(), dtype=np.uint8)}
        name = f"frames_{self.counters['frames']:012d}"
        return save_checkpoint(self.run_dir / "checkpoints", name, state, keep=self.cfg.keep_checkpoints)

    def _restore(self, checkpoint: str | None = None) -> tuple[int, bytes | None]:
        ckpt = (self.run_dir / "checkpoints" / checkpoint if checkpoint is not None
                else latest_checkpoint(self.run_dir / "checkpoints"))
        if ckpt is None:
            raise ConfigError(f"{self.run_dir} has no checkpoint to resume from; delete the folder and start the run "
                              "again with `pixelrl train`")
        state = load_checkpoint(ckpt)
        saved_cfg = json.loads(state["config"]) if "config" in state else None
        now_cfg = to_dict(self.cfg)
        load_agent_state(self.agent, state["agent"], config_path=self.run_dir / "config.json", checkpoint=ckpt,
                         saved_config=saved_cfg, config=now_cfg)
        if saved_cfg is not None:
            self.changed_settings = [f"{k} {a!r} -> {b!r}" for k, a, b in config_changes(saved_cfg, now_cfg)]
        self.collector.load_state_dict(state["collector"])
        self.counters.update(state["trainer"])
        self.agent.set_step(self.collector.step_count)
        copy = state.get("metrics_jsonl")
        return int(state["jsonl_offset"]), None if copy is None else np.asarray(copy, dtype=np.uint8).tobytes()

    def _check_finite(self) -> None:
        for name, arr in (("actor", self.agent.actor.flat), ("critic", self.agent.critic.flat)):
            if not np.isfinite(arr).all():
                raise DivergenceError(f"a parameter of the {name} is not finite at frame {self.counters['frames']:,}: "
                                      "the training diverged")

    def _train_episode(self, progress: TrainProgress) -> None:
        """One chunk of 1000 env steps per vehicle (the unit :func:`train_until` alternates with evaluations)."""
        c, col = self.counters, self.collector
        t0 = time.perf_counter()
        n = min(CHUNK, self.cfg.frames - c["frames"])
        metrics = col.run(n)
        seconds = time.perf_counter() - t0
        self._check_finite()
        bad = {k: v for k, v in metrics.items() if "loss" in k and not math.isfinite(v)}
        if bad:
            raise DivergenceError(f"{', '.join(f'{k} = {v}' for k, v in bad.items())} before frame {c['frames']:,}: "
                                  "the training diverged")
        self._warn_if_losses_explode(metrics)
        c["frames"] += n
        c["agent_steps"] += n
        done, col.finished = col.finished, []
        c["episodes"] += len(done)
        c["rollouts"] += 1
        row: dict[str, Any] = {"frames": c["frames"], "agent_steps": c["agent_steps"], "episodes": c["episodes"],
                               "episodes_finished": len(done)}
        if done:
            row.update(episode_return=float(np.mean([d[1] for d in done])),
                       episode_length=float(np.mean([d[2] for d in done])),
                       episode_success=float(np.mean([d[3] for d in done])))
        row.update(metrics)
        row.update(critic_updates=self.agent.updates["critic"], actor_updates=self.agent.updates["actor"],
                   fps=n * self.agent.k / max(seconds, 1e-9), update_s=seconds, wall_s=time.perf_counter() -
                   self._wall_start)
        self.logger.log("train", row)
        progress.update(c["frames"], env_s=0.0, act_s=0.0, update_s=seconds)

    def _evaluate(self, progress: TrainProgress) -> dict[str, Any]:
        cfg, c = self.cfg, self.counters
        t0 = time.perf_counter()
        res = evaluate_hover(self.agent, cfg.eval_episodes, derive_seed(cfg.seed, EVAL_STREAM, c["evals"]),
                             record=cfg.video)
        rate = res["success"].mean(1)
        row: dict[str, Any] = {"frames": c["frames"], "agent_steps": c["agent_steps"], "episodes": c["episodes"],
                               "eval_return": float(res["returns"][0].mean()),
                               "eval_return_std": float(res["returns"][0].std()),
                               "eval_length": float(res["lengths"][0].mean()),
                               "success_rate": float(rate[0]), "success_rate_seeds": float(rate.mean()),
                               "survival_rate": float((res["lengths"][0] == Q.EPISODE_STEPS).mean()),
                               "seeds_passing": int((rate == 1.0).sum()),
                               "final_distance_median": float(np.median(res["final_distance"][0]))}
        if self.agent.k > 1:
            row.update({f"success_rate_s{i}": float(r) for i, r in enumerate(rate)})
        if cfg.video and res["frames"]:
            from pixelrl.train.video import write_video

            video = self.run_dir / "videos" / f"eval_frames_{c['frames']:09d}.mp4"
            with storage_errors(video, cleanup=(video,)):
                write_video(video, res["frames"][::2], fps=50)
        row["eval_s"] = time.perf_counter() - t0
        row["wall_s"] = time.perf_counter() - self._wall_start
        self.logger.log("eval", row)
        c["evals"] += 1
        progress.eval_done(c["frames"], row["eval_return"], row["eval_return_std"],
                           f" success {row['success_rate']:.0%}")
        return row
