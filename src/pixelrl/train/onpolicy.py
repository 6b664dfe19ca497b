"""The on-policy trainer (PPO): N envs stepped together, rollouts of T steps, GAE, one update per rollout; the
same run folder, logs, evaluation, checkpoints, faults handling and exact resume as the off-policy
:class:`~pixelrl.train.loop.Trainer`, whose evaluation, summary, budget and divergence-warning code it inherits.

One rollout (:meth:`OnPolicyTrainer._train_episode`): for ``t = 0 .. T-1`` the agent samples actions for the N
current observations (``policy_step``: action, log-prob, value), the vector env steps, and the row goes into the
:class:`~pixelrl.data.rollout.RolloutBuffer` with the rewards the learner sees (``agent.learn_rewards``: sign or
return-normalised), a termination flag (the env's, or also a lost Atari life with ``life_loss_terminal``) and a
truncation flag whose bootstrap value is the critic's value of the episode's true final observation. Envs reset
in the step that ends their episode (Gymnasium's same-step autoreset), so every row is a real decision. Then the
value of the next observations closes the GAE recursion and ``agent.update`` runs its epochs. A ``train`` row is
logged per rollout: frames, agent steps, the returns of the episodes that finished in it (raw env scores), the
update's metrics and timings.

Vector env: subprocess envs (``AsyncVectorEnv``, one process per env) for pixel observations, where rendering or
emulation costs more than the inter-process round trip; in-process envs (``SyncVectorEnv``) for state
observations (``--obs state``), whose step takes microseconds. Measured on a 2-core CPU with random actions
(agent steps/s, in process vs subprocesses): CartPole, 4 envs, 104k vs 11k; HalfCheetah, 1 env, 8.2k vs 1.4k;
Breakout, 8 envs, 1.49k vs 1.40k (on par with 2 cores; subprocesses emulate in parallel where there are more).
``--no-async-env`` forces in-process envs for pixels too. ALE's own vector env (``ale_py.vector_env.AtariVectorEnv``, C++ threads)
is not used: its preprocessing is its own (resize, no-op RNG, fire and life handling inside the emulator loop), so
its observations would not be those of ``pixelrl.envs.make`` that evaluation and ``pixelrl eval`` see, and its
sub-envs cannot be reset one by one with the per-env seeds the exact resume below needs.

Exact resume: checkpoints are written only at rollout boundaries (the evaluation / checkpoint cadence of
:func:`~pixelrl.train.episode.train_until`, with rollouts as its episodes), and every checkpoint is a reset point
of all training envs, in the uninterrupted run as in a resumed one: after a checkpoint, env ``i`` is reset with the
seed ``(seed, reset index, i)``. The episodes the reset cuts are not logged as finished (the partial returns are
dropped) and their last row is bootstrapped with the value of the observation that followed it, like any rollout's
last row. Everything else a rollout depends on is in the checkpoint: networks, optimizer, observation and reward
normaliser statistics, torch's RNG (action sampling, minibatch permutations), counters, and the log's size. A run
killed mid-rollout and resumed therefore redoes that rollout and writes the same rows (timing columns aside) as a
run never interrupted, on the same machine with the same thread count. Evaluation runs on its own env and draws
no random number from the training streams. The cost of the design: one episode per env is cut at each
checkpoint, so the presets checkpoint rarely (Atari: every 2M frames; state tasks: every 100k).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelrl.agents import make_agent
from pixelrl.data.rollout import RolloutBuffer
from pixelrl.envs import make_vector
from pixelrl.errors import ConfigError, DivergenceError, PixelRLError
from pixelrl.train.config import TrainConfig
from pixelrl.train.episode import check_finite_parameters, env_step_error
from pixelrl.train.loop import TRAIN_STREAM, Trainer
from pixelrl.train.progress import TrainProgress
from pixelrl.train.setup import record_machine_choices
from pixelrl.utils.seeding import derive_seed, restore_rng_state

__all__ = ["OnPolicyTrainer"]


class _VectorEnv:
    """The training envs: a Gymnasium vector env with same-step autoreset, closed quietly."""

    def __init__(self, env_id: str, num_envs: int, *, asynchronous: bool, seed: int, env_kwargs: dict) -> None:
        self.env_id = env_id
        self.vec = make_vector(env_id, num_envs, seed=seed, asynchronous=asynchronous, autoreset_mode="SameStep",
                               **env_kwargs)

    def close(self) -> None:
        import gymnasium.logger as glog

        level, glog.min_level = glog.min_level, glog.ERROR + 100
        try:
            self.vec.close()
        except (BrokenPipeError, EOFError, ConnectionError):  # a worker is already gone
            pass
        finally:
            glog.min_level = level


def _per_env(info: dict, key: str, done: np.ndarray, default: Any) -> np.ndarray:
    """``info[key]`` of each env for the step just taken: from ``final_info`` for the envs whose episode ended
    (their ``info`` is the reset's), else from ``info``; ``default`` where an env did not report it."""
    n = len(done)
    out = np.full(n, default)
    for src, mask in ((info, ~done), (info.get("final_info", {}), done)):
        if key in src:
            have = np.asarray(src.get(f"_{key}", np.ones(n, bool)), bool) & mask
            out[have] = np.asarray(src[key])[have]
    return out


class OnPolicyTrainer(Trainer):
    """Builds the vector envs, the agent and the rollout storage from a resolved :class:`TrainConfig` whose agent is
    on-policy (``AgentSpec.trainer == "on-policy"``), and runs (or resumes) training. ``run()`` returns the same
    summary as :class:`~pixelrl.train.loop.Trainer`."""

    def _init(self, cfg: TrainConfig, resume: bool, checkpoint: str | None) -> None:
        self._begin(cfg, resume)
        a = cfg.agent
        for name in ("num_envs", "rollout_steps", "gamma", "gae_lambda"):
            if not hasattr(a, name):
                raise ConfigError(f"agent {cfg.agent_name!r} has no {name}; the on-policy trainer runs rollout "
                                  "agents such as ppo")
        env_kwargs = self._make_eval_env(cfg)
        self.agent = make_agent(cfg.agent_name, self.obs_space, self.action_space, a, self.device)
        self.asynchronous = bool(cfg.async_env and cfg.obs != "state")
        if not resume:
            cfg = self.cfg = record_machine_choices(cfg, self.agent)
            cfg.decisions.setdefault(
                "vector_env", ("subprocesses (AsyncVectorEnv)" if self.asynchronous else "in-process (SyncVectorEnv)")
                + f", {a.num_envs} envs" + ("" if cfg.obs != "state" else ": state envs step in microseconds, "
                                            "faster in process than through pipes"))
        self.train_env = self._make_train_env(cfg, env_kwargs)
        self.rollout = RolloutBuffer(a.rollout_steps, a.num_envs, tuple(self.obs_space.shape), self.agent.obs_dtype,
                                     self.agent.action_shape, torch.int64 if self.agent.discrete else torch.float32,
                                     self.device)
        self.counters = {"frames": 0, "agent_steps": 0, "episodes": 0, "rollouts": 0, "resets": 0, "evals": 0,
                         "next_eval": 0, "next_checkpoint": 0, "last_eval_frames": -1, "last_checkpoint_frames": -1,
                         "wall_s": 0.0}
        self._needs_reset = True  # the first rollout, and the first after every checkpoint, reset every env
        self._next_obs: torch.Tensor | None = None
        self._ep_return = np.zeros(a.num_envs)
        self._ep_length = np.zeros(a.num_envs, np.int64)
        self._open_run(resume, checkpoint)

    def commit_resume(self) -> None:
        """After a resume has loaded everything: cut the log back to (or repair it from) the checkpoint."""
        restored, self._restored = self._restored, None
        self._resume_log(*restored)

    def _make_train_env(self, cfg: TrainConfig, env_kwargs: dict[str, Any]) -> Any:
        """The training envs: an object whose ``vec`` is a vector env of ``agent.num_envs`` envs with same-step
        autoreset, and ``close()`` (here the local one; :mod:`pixelrl.distributed` puts them on Ray workers)."""
        return _VectorEnv(cfg.env, cfg.agent.num_envs, asynchronous=self.asynchronous,
                          seed=derive_seed(cfg.seed, TRAIN_STREAM), env_kwargs=env_kwargs)

    def _rollout_stats(self) -> dict[str, Any]:
        """Columns a subclass adds to every ``train`` row (none here)."""
        return {}

    # ---- checkpoint / resume -------------------------------------------------------------------------------
    def _checkpoint(self) -> Path:
        path = self._save_checkpoint(self._checkpoint_state())
        self._needs_reset = True  # a resumed run starts here with fresh envs: so does this one
        return path

    def _restore(self, checkpoint: str | None = None) -> tuple[int, bytes | None]:
        """Load the latest checkpoint (or the one named ``checkpoint``) into the agent, RNGs and counters, writing
        nothing. Returns the log's size at the checkpoint and the checkpoint's copy of the log."""
        ckpt, state, saved_cfg, now_cfg = self._load_checkpoint(checkpoint)
        self._restore_agent(state, ckpt, saved_cfg, now_cfg)
        restore_rng_state(state["rng"])
        return self._restore_counters(state)

    # ---- rollouts --------------------------------------------------------------------------------------------
    def _reset_envs(self) -> None:
        """Reset every training env with the seeds of reset ``counters['resets']`` (a rollout boundary)."""
        c, n = self.counters, self.cfg.agent.num_envs
        seeds = [derive_seed(self.cfg.seed, TRAIN_STREAM, c["resets"], i) for i in range(n)]
        try:
            obs, _ = self.train_env.vec.reset(seed=seeds)
        except PixelRLError:
            raise
        except Exception as e:
            raise env_step_error(self.cfg.env, e, f"the reset of the training envs (frame {c['frames']:,})") from None
        c["resets"] += 1
        self._next_obs = self.agent.observe(obs, update=True)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self.agent.reset_returns()
        self._needs_reset = False

    def _train_episode(self, progress: TrainProgress) -> None:
        """One rollout and one update (the unit :func:`train_until` alternates with evaluations and checkpoints)."""
        cfg, c, a, agent, ro = self.cfg, self.counters, self.cfg.agent, self.agent, self.rollout
        t_start = time.perf_counter()
        if self._needs_reset:
            self._reset_envs()
        budget_done = c["frames"] / max(cfg.frames, 1)
        frames_before = c["frames"]
        stats = self._collect_rollout(progress, ro, agent.policy_step, agent.value)
        t3 = time.perf_counter()
        ro.compute_returns(agent.value(self._next_obs), gamma=a.gamma, gae_lambda=a.gae_lambda)
        metrics = self._update(ro, step=c["agent_steps"], progress=budget_done)
        update_s = time.perf_counter() - t3
        progress.update(c["frames"], env_s=stats["env_s"], act_s=stats["act_s"], update_s=update_s)
        self._log_rollout(stats, metrics, frames_before=frames_before, update_s=update_s,
                          seconds=time.perf_counter() - t_start)

    def _update(self, rollout: Any, *, step: int, progress: float) -> dict[str, float]:
        """The agent's update on a finished rollout (:mod:`pixelrl.distributed` shares it among several learners)."""
        return self.agent.update(rollout, step=step, progress=progress)

    def _collect_rollout(self, progress: TrainProgress, ro: RolloutBuffer, policy_step, value) -> dict[str, Any]:
        """Fill ``ro`` with ``rollout_steps`` steps of every training env, acting with ``policy_step(obs) -> (action,
        log-prob, value)`` and bootstrapping truncated episodes with ``value(obs)`` (the agent's own, or a behaviour
        copy's in :mod:`pixelrl.distributed`'s bounded-staleness PPO). Updates the counters and ``self._next_obs``;
        returns the finished episodes' returns and lengths and the seconds spent in the envs and acting, and the
        counters at the rollout's end (``frames``, ``agent_steps``, ``episodes``)."""
        cfg, c, a, agent = self.cfg, self.counters, self.cfg.agent, self.agent
        life_loss = bool(getattr(a, "life_loss_terminal", False))
        vec = self.train_env.vec
        ro.reset()
        finished_returns, finished_lengths = [], []
        env_s = act_s = 0.0
        for t in range(a.rollout_steps):
            t0 = time.perf_counter()
            x = self._next_obs
            action, logprob, value_t = policy_step(x)
            env_action = agent.env_action(action)
            if not np.isfinite(env_action).all():
                raise DivergenceError(f"the policy's action is not finite at agent step {c['agent_steps']:,} (frame "
                                      f"{c['frames']:,}): the networks diverged")
            t1 = time.perf_counter()
            try:
                obs, reward, term, trunc, info = vec.step(env_action)
            except PixelRLError:
                raise
            except Exception as e:
                raise env_step_error(cfg.env, e, f"agent step {c['agent_steps']:,} (frame {c['frames']:,})",
                                     env_action) from None
            t2 = time.perf_counter()
            term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
            done = term | trunc
            frames = _per_env(info, "frames", done, self.action_repeat).astype(np.int64)
            learn_term = term | (_per_env(info, "life_loss", done, False).astype(bool) if life_loss else False)
            cut = trunc & ~learn_term  # truncated while the learner's episode goes on: bootstrap
            self._ep_return += reward
            self._ep_length += 1
            for i in np.flatnonzero(done):
                finished_returns.append(float(self._ep_return[i]))
                finished_lengths.append(int(self._ep_length[i]))
                self._ep_return[i], self._ep_length[i] = 0.0, 0
            c["episodes"] += int(done.sum())
            ro.add(x, action, logprob, value_t, agent.learn_rewards(reward, done), learn_term, cut)
            if cut.any():
                idx = np.flatnonzero(cut)
                final = np.stack([np.asarray(info["final_obs"][i]) for i in idx])
                ro.set_bootstrap(idx, value(agent.observe(final, update=False)))
            self._next_obs = agent.observe(obs, update=True)
            c["agent_steps"] += a.num_envs
            c["frames"] += int(frames.sum())
            act_s += t1 - t0 + time.perf_counter() - t2
            env_s += t2 - t1
            if t % 16 == 15:
                progress.update(c["frames"], env_s=env_s, act_s=act_s, update_s=0.0)
        return {"returns": finished_returns, "lengths": finished_lengths, "env_s": env_s, "act_s": act_s,
                "frames": c["frames"], "agent_steps": c["agent_steps"], "episodes": c["episodes"]}

    def _check_parameters(self, where: str) -> None:
        """Raise :class:`DivergenceError` if a parameter of the agent is not finite after an update."""
        check_finite_parameters(self.agent, where)

    def _log_rollout(self, stats: dict[str, Any], metrics: dict[str, float], *, frames_before: int, update_s: float,
                     seconds: float) -> None:
        """Count the update of the rollout ``stats`` (:meth:`_collect_rollout`) describes, check it for divergence and
        log its ``train`` row."""
        c = self.counters
        c["rollouts"] += 1
        bad = {k: v for k, v in metrics.items() if "loss" in k and not math.isfinite(v)}
        if bad:
            raise DivergenceError(f"{', '.join(f'{k} = {v}' for k, v in bad.items())} in the update after rollout "
                                  f"{c['rollouts']:,} (frame {stats['frames']:,}): the training diverged")
        self._check_parameters(f"after rollout {c['rollouts']:,} (frame {stats['frames']:,})")
        self._warn_if_losses_explode(metrics)
        finished_returns, finished_lengths = stats["returns"], stats["lengths"]
        row: dict[str, Any] = {"frames": stats["frames"], "agent_steps": stats["agent_steps"],
                               "episodes": stats["episodes"], "rollout": c["rollouts"],
                               "episodes_finished": len(finished_returns)}
        if finished_returns:
            row.update(episode_return=float(np.mean(finished_returns)),
                       episode_return_max=float(np.max(finished_returns)),
                       episode_length=float(np.mean(finished_lengths)))
        row.update(metrics)
        row.update(self._rollout_stats())
        row.update(fps=(stats["frames"] - frames_before) / max(seconds, 1e-9), env_s=stats["env_s"],
                   act_s=stats["act_s"], update_s=update_s, wall_s=time.perf_counter() - self._wall_start)
        self.logger.log("train", row)
