"""One training episode in the environment, and the evaluation / checkpoint cadence around episodes: the part the
online trainer (:mod:`pixelrl.train.loop`) and the online phase of the offline trainer (:mod:`pixelrl.train.offline`)
share. What differs between them comes in as arguments: where batches are drawn from, which buffer receives the new
transitions, the ``step`` the agent sees, the length of the random warm-up, and the names of two counters.

Order of one agent step (as in DrQ-v2): act on ``obs_t`` -> send the action to the env -> gradient update(s) on
the replay as it stands -> receive ``obs_{t+1}`` -> store the transition. With an asynchronous :class:`EnvRunner`
the env steps in a subprocess while the update runs, so rendering overlaps learning; the math and the results are
the same.

Divergence is caught where it shows: a non-finite loss in an update's metrics or a non-finite action raises
:class:`~pixelrl.errors.DivergenceError` naming it and the step (before the action reaches the env, so a diverged
policy does not surface as a simulator error), and :func:`check_finite_parameters` checks the networks. An env that
raises while stepping is reported as :class:`~pixelrl.errors.EnvStepError` with the step and the action.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np
import torch

from pixelrl.envs import make, make_vector
from pixelrl.errors import DivergenceError, EnvStepError, PixelRLError

__all__ = ["EnvRunner", "EpisodeResult", "check_finite_parameters", "env_step_error", "train_episode", "train_until",
           "warmup_action"]


class EnvRunner:
    """One training env, in-process or in a subprocess (a 1-env async vector env), with a split step.

    ``asynchronous`` runs the env in a subprocess unless ``wrap`` (a function wrapping the in-process env, e.g. the
    snapshot-reset wrapper) is given, which needs the env in this process."""

    def __init__(self, env_id: str, *, asynchronous: bool, seed: int, env_kwargs: dict[str, Any],
                 wrap: Any = None) -> None:
        self.env_id = env_id
        self.vector = asynchronous and wrap is None
        self.life_loss = False
        """Whether the last step lost a life (``info["life_loss"]`` of ``ale/`` envs; always False elsewhere)."""
        self.success: bool | None = None
        """``info["is_success"]`` of the last step, for envs that report one (``metaworld/``: the episode has succeeded
        at some step); None for the others."""
        if self.vector:
            self.env = make_vector(env_id, 1, seed=seed, asynchronous=True, **env_kwargs)
        else:
            self.env = make(env_id, seed=seed, **env_kwargs)
            if wrap is not None:
                self.env = wrap(self.env)
        self._pending = None

    @staticmethod
    def _unbatch(x):
        if isinstance(x, dict):
            return {k: v[0] for k, v in x.items()}
        return x[0]

    def reset(self, seed: int):
        """Reset with ``seed``; returns the first observation."""
        if self.vector:
            with _quiet_gymnasium():
                obs, _ = self.env.reset(seed=[seed])
            return self._unbatch(obs)
        obs, _ = self.env.reset(seed=seed)
        return obs

    def step_async(self, action) -> None:
        """Send ``action``; the env steps (in its subprocess when asynchronous) until :meth:`step_wait`."""
        if self.vector:
            self.env.step_async(np.asarray(action)[None])
        else:
            self._pending = action

    def step_wait(self):
        """``(obs, reward, terminated, truncated, frames)`` of the step sent; ``frames`` is ``None`` when the env
        does not report the env frames it took."""
        if self.vector:
            with _quiet_gymnasium():  # an env error comes back as one exception, without the worker's log lines
                obs, r, term, trunc, info = self.env.step_wait()
            frames = info.get("frames")
            self.life_loss = bool(info["life_loss"][0]) if "life_loss" in info else False
            self.success = bool(info["is_success"][0]) if "is_success" in info else None
            return self._unbatch(obs), float(r[0]), bool(term[0]), bool(trunc[0]), (
                int(frames[0]) if frames is not None else None)
        obs, r, term, trunc, info = self.env.step(self._pending)
        self.life_loss = bool(info.get("life_loss", False))
        self.success = bool(info["is_success"]) if "is_success" in info else None
        return obs, float(r), bool(term), bool(trunc), info.get("frames")

    def discard(self) -> None:
        """Collect (and drop) the result of a step sent with :meth:`step_async`, e.g. before raising mid-step."""
        if self.vector:
            try:
                with _quiet_gymnasium():
                    self.env.step_wait()
            except Exception:
                pass
        self._pending = None

    def close(self) -> None:
        with _quiet_gymnasium():
            try:
                self.env.close()
            except (BrokenPipeError, EOFError, ConnectionError):  # the worker is already gone
                pass


@contextlib.contextmanager
def _quiet_gymnasium():
    import gymnasium.logger as glog

    level, glog.min_level = glog.min_level, glog.ERROR + 100
    try:
        yield
    finally:
        glog.min_level = level


def _finite(x) -> bool:
    """Whether an action (array, scalar or dict of those) holds only finite numbers."""
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    a = np.asarray(x)
    return not np.issubdtype(a.dtype, np.floating) or bool(np.isfinite(a).all())


def _first_non_finite_parameter(agent) -> str | None:
    for attr, mod in vars(agent).items():
        if isinstance(mod, torch.nn.Module):
            for name, p in mod.named_parameters():
                if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                    return f"{attr}.{name}"
    return None


def check_finite_parameters(agent, where: str) -> None:
    """Raise :class:`DivergenceError` naming the first parameter of the agent's networks that is not finite."""
    bad = _first_non_finite_parameter(agent)
    if bad is not None:
        raise DivergenceError(f"parameter {bad} is not finite {where}: the training diverged")


def _diagnosis(agent, last_update: tuple[int, dict] | None) -> str:
    """What a non-finite action comes from: the first non-finite parameter, and the losses of the last update."""
    parts = []
    bad = _first_non_finite_parameter(agent)
    if bad is not None:
        parts.append(f"parameter {bad} is not finite")
    if last_update is not None:
        step, m = last_update
        losses = ", ".join(f"{k} = {float(v):.4g}" for k, v in m.items() if "loss" in k)
        if losses:
            parts.append(f"the last update (agent step {step:,}) had {losses}")
    return f" ({'; '.join(parts)})" if parts else ""


def env_step_error(env_id: str, error: BaseException, where: str, action: Any = None) -> EnvStepError:
    """The one-line error for an env that raised while stepping (or resetting, ``action`` None): the env, its
    error, where it happened and the action it was given. Training, batched training and evaluation all use it."""
    msg = " ".join(str(error).split()) or "(no message)"
    shown = None if action is None else np.array2string(np.asarray(action), precision=4, max_line_width=10**6)
    on = "" if shown is None else f", on the action {shown}"
    return EnvStepError(f"the environment {env_id} raised {type(error).__name__}: {msg} at {where}{on}")


def _where(counters: dict[str, Any], step: int) -> str:
    return f"agent step {step:,} (frame {counters['frames']:,})"


class _Progress(Protocol):
    def update(self, count: int, *, env_s: float, act_s: float, update_s: float) -> None: ...


def warmup_action(rng: np.random.Generator, action_space):
    """A uniform random action of the warm-up (seed) steps, drawn from ``rng``."""
    if hasattr(action_space, "n"):
        return np.int64(rng.integers(action_space.n))
    return rng.uniform(action_space.low, action_space.high).astype(np.float32)


@dataclass
class EpisodeResult:
    """What one training episode gives its trainer's ``train`` row."""

    episode_return: float
    episode_length: int
    """Agent steps."""
    frames: int
    """Env frames."""
    updates: int
    """Gradient updates done during the episode."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Mean of every update metric (and batch extra) over the episode's updates, keys sorted."""
    episode_metrics: dict[str, Any] = field(default_factory=dict)
    """What ``agent.observe_episode`` returned (empty for agents without it)."""
    success: Optional[bool] = None
    """The env's ``is_success`` at the episode's last step (``metaworld/``); None for envs without one."""
    seconds: float = 0.0
    env_s: float = 0.0
    act_s: float = 0.0
    update_s: float = 0.0

    def stats(self) -> dict[str, Any]:
        """``episode_return``, ``episode_length``, ``episode_success`` (1.0 / 0.0, envs reporting ``is_success``
        only), the update metrics' means, then the episode metrics."""
        return {"episode_return": self.episode_return, "episode_length": self.episode_length,
                **({} if self.success is None else {"episode_success": float(self.success)}),
                **self.metrics, **self.episode_metrics}

    def timing(self) -> dict[str, float]:
        """``fps`` (env frames per second of the episode) and the env / act / update time split."""
        return {"fps": self.frames / max(self.seconds, 1e-9), "env_s": self.env_s, "act_s": self.act_s,
                "update_s": self.update_s}


def train_episode(env: EnvRunner, agent, replay, sample: Callable[[], Any], *, counters: dict[str, Any],
                  reset_seed: int, seed_steps: int, update_every: int, updates_per_step: int,
                  warmup_rng: np.random.Generator, action_space, action_repeat: int, progress: _Progress,
                  step_offset: int = 0, batch_extras: Optional[Callable[[], dict[str, float]]] = None,
                  intervene: Optional[Callable[..., Any]] = None) -> EpisodeResult:
    """Run one whole training episode: act, step the env, update, store, until the episode ends.

    * ``replay`` receives the new transitions (``add_first`` / ``add``); ``sample()`` returns one batch for one
      update (from that replay, or from a mix of sources that includes it).
    * ``counters`` is updated in place: ``agent_steps`` and ``frames`` after every step, ``episodes`` at the end.
      The first ``seed_steps`` agent steps (counted by ``counters['agent_steps']``) take random actions from
      ``warmup_rng`` and do no update; afterwards ``updates_per_step`` updates run every ``update_every`` steps.
    * The agent sees ``step = step_offset + counters['agent_steps']`` in ``act``, ``update`` and
      ``observe_episode`` (the offline trainer offsets by its offline updates).
    * ``batch_extras()``, called after each update, gives more per-update values to average with the update
      metrics (the offline trainer's realised share of each source).
    * ``reset_seed`` seeds the env reset; a step whose env reports no ``frames`` counts ``action_repeat``.
    * What the learner stores may differ from what is scored, when the agent asks for it (DQN's Atari protocol):
      ``agent.reward_clip`` (a number > 0) stores rewards clipped to ``[-reward_clip, reward_clip]``, and
      ``agent.life_loss_terminal`` (True) stores a step on which the env lost a life (``env.life_loss``) as
      terminal for the learner (``replay.add(..., learner_terminal=True)``) while the episode runs on to game over.
      The episode return and the logs always use the raw rewards.
    * ``intervene(obs, action, step=, warmup=)`` (interventions, :mod:`pixelrl.rewards.interventions`), called at every
      agent step before the action reaches the env, returns the action the env receives (an expert's during an
      intervention); ``replay`` then receives that action.
    """
    c = counters
    reward_clip = float(getattr(agent, "reward_clip", 0.0) or 0.0)
    life_loss_terminal = bool(getattr(agent, "life_loss_terminal", False))
    obs = env.reset(seed=reset_seed)
    replay.add_first(obs)
    ep_return, ep_len, ep_frames, updates = 0.0, 0, 0, 0
    metrics: dict[str, list[float]] = defaultdict(list)
    env_s = act_s = update_s = 0.0
    t_ep = time.perf_counter()
    done = False
    last_update: tuple[int, dict] | None = None
    while not done:
        t0 = time.perf_counter()
        step = step_offset + c["agent_steps"]
        if c["agent_steps"] < seed_steps:
            action = warmup_action(warmup_rng, action_space)
        else:
            with torch.no_grad():
                action = agent.act(obs, step=step, eval_mode=False)
            if not _finite(action):
                raise DivergenceError(f"the policy's action is not finite ({action}) at {_where(c, step)}: the "
                                      f"networks diverged{_diagnosis(agent, last_update)}")
        if intervene is not None:
            action = intervene(obs, action, step=step, warmup=c["agent_steps"] < seed_steps)
        t1 = time.perf_counter()
        env.step_async(action)
        if c["agent_steps"] >= seed_steps and c["agent_steps"] % update_every == 0:
            for _ in range(updates_per_step):
                m = agent.update(sample(), step=step)
                last_update = (step, m)
                for values in (m, batch_extras() if batch_extras is not None else {}):
                    for k, v in values.items():
                        metrics[k].append(float(v))
                bad = {k: metrics[k][-1] for k in m if "loss" in k and not math.isfinite(metrics[k][-1])}
                if bad:
                    if hasattr(env, "discard"):
                        env.discard()
                    raise DivergenceError(f"{', '.join(f'{k} = {v}' for k, v in bad.items())} at {_where(c, step)} "
                                          f"(update {updates + 1} of the episode): the training diverged")
                updates += 1
        t2 = time.perf_counter()
        try:
            obs, reward, terminated, truncated, frames = env.step_wait()
        except PixelRLError:
            raise
        except Exception as e:
            raise env_step_error(getattr(env, "env_id", ""), e, _where(c, step), action) from None
        t3 = time.perf_counter()
        learn_reward = min(max(reward, -reward_clip), reward_clip) if reward_clip > 0 else reward
        lost_life = life_loss_terminal and bool(getattr(env, "life_loss", False))
        if lost_life:
            replay.add(action, learn_reward, obs, terminated, truncated, learner_terminal=True)
        else:
            replay.add(action, learn_reward, obs, terminated, truncated)
        frames = action_repeat if frames is None else frames
        ep_return += reward
        ep_len += 1
        ep_frames += frames
        c["agent_steps"] += 1
        c["frames"] += frames
        done = terminated or truncated
        act_s += t1 - t0
        update_s += t2 - t1
        env_s += t3 - t2
        if ep_len % 25 == 0 or done:
            progress.update(c["frames"], env_s=env_s, act_s=act_s, update_s=update_s)
    c["episodes"] += 1
    episode_metrics = {}
    if hasattr(agent, "observe_episode"):
        episode_metrics = agent.observe_episode(ep_return, step_offset + c["agent_steps"])
    return EpisodeResult(
        episode_return=ep_return, episode_length=ep_len, frames=ep_frames, updates=updates,
        metrics={k: float(np.mean(v)) for k, v in sorted(metrics.items())}, episode_metrics=episode_metrics,
        success=getattr(env, "success", None), seconds=time.perf_counter() - t_ep, env_s=env_s, act_s=act_s, update_s=update_s)


def train_until(counters: dict[str, Any], total_frames: int, *, eval_every: int, checkpoint_every: int | None,
                evaluate: Callable[[], Any], checkpoint: Callable[[], Any], episode: Callable[[], Any],
                last_eval_key: str = "last_eval_frames", last_checkpoint_key: str = "last_checkpoint_frames",
                stop: Callable[[], bool] | None = None) -> None:
    """Alternate whole episodes (``episode()``) with evaluations and checkpoints at episode boundaries until
    ``counters['frames'] >= total_frames``, or until ``stop()`` is true at a boundary (a wall-clock budget): the
    run then ends there exactly as at ``total_frames``, with a final evaluation and checkpoint.

    An evaluation runs at the first boundary at or after every ``eval_every`` frames and at the end; a checkpoint
    after each evaluation (``checkpoint_every`` 0 or ``None``) or at the first boundary at or after every
    ``checkpoint_every`` frames, and at the end. The schedule lives in ``counters`` (so it resumes):
    ``next_eval``, ``next_checkpoint``, and the frame counts of the last evaluation and checkpoint under
    ``last_eval_key`` / ``last_checkpoint_key`` (a boundary is never evaluated or checkpointed twice).
    """
    c = counters
    ckpt_every = checkpoint_every or eval_every
    while True:  # one iteration per episode boundary
        evaluated = False
        end = c["frames"] >= total_frames or (stop is not None and stop())
        if c["frames"] >= c["next_eval"] or end:
            while c["next_eval"] <= c["frames"]:
                c["next_eval"] += eval_every
            if c[last_eval_key] != c["frames"]:
                c[last_eval_key] = c["frames"]
                evaluate()
                evaluated = True
        if end:
            if evaluated or c[last_checkpoint_key] != c["frames"]:
                c[last_checkpoint_key] = c["frames"]
                checkpoint()
            break
        if c["frames"] >= c["next_checkpoint"] and (evaluated or checkpoint_every):
            while c["next_checkpoint"] <= c["frames"]:
                c["next_checkpoint"] += ckpt_every
            c[last_checkpoint_key] = c["frames"]
            checkpoint()
        episode()


def where_to_resume(run_dir: Path, *, diverged: bool, seed_dirs: Sequence[Path] = ()) -> str:
    """Where a run's last checkpoint is and the command that goes on from it (the end of a divergence or Ctrl-C
    message of every trainer). ``seed_dirs``: the per-seed folders of a ``--seeds`` run, each with its own
    ``checkpoints/``, resumed together from ``run_dir``."""
    from pixelrl.errors import PixelRLError
    from pixelrl.utils.checkpoint import latest_checkpoint

    run_dir = Path(run_dir)
    dirs = [Path(d) for d in seed_dirs] or [run_dir]
    ckpts = []
    for d in dirs:
        try:
            ckpts.append(latest_checkpoint(d / "checkpoints"))
        except PixelRLError:
            ckpts.append(None)
    if all(c is None for c in ckpts):
        return "No checkpoint was written yet; start a new run."
    if len(dirs) > 1:
        if diverged:
            return ("The last good checkpoints are kept (one per seed). To continue from them with other settings, "
                    f"edit them in each seed's config.json, then run `pixelrl resume {run_dir}`.")
        return f"The last checkpoints are kept (one per seed); `pixelrl resume {run_dir}` continues from them."
    ckpt = ckpts[0]
    if diverged:
        return (f"The last good checkpoint is kept: {ckpt}. To continue from it with other settings, edit them in "
                f"{run_dir / 'config.json'} (e.g. a lower agent.lr), then run `pixelrl resume {run_dir}`.")
    return f"The last checkpoint is {ckpt}; `pixelrl resume {run_dir}` continues from it."

