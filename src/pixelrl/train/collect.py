"""Collect a dataset by running a policy in an environment: a uniform random policy, or a trained run's policy
(its latest checkpoint, deterministic actions) with optional Gaussian action noise or epsilon-random actions, to
make random / medium / replay-like datasets. Episodes are written with :class:`~pixelrl.data.dataset.DatasetWriter`
as they finish; the dataset appears at ``out`` only once complete.

Determinism: episode ``e`` is reset with a seed derived from ``(seed, COLLECT_STREAM, e)``, random actions, noise and
epsilon draws come from NumPy generators seeded from ``seed``, and the trained policy acts in eval mode (no
sampling), so the same arguments on the same machine write the same data.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from gymnasium import spaces

from pixelrl.data.dataset import DatasetWriter
from pixelrl.errors import ConfigError
from pixelrl.utils.seeding import derive_seed, seed_everything

__all__ = ["Behaviour", "COLLECT_STREAM", "behaviour_policy", "collect", "policy_env_settings"]

#: Seed streams of collection (episode resets, random/epsilon actions, Gaussian noise).
COLLECT_STREAM, ACTION_STREAM, NOISE_STREAM = 10, 11, 12


def policy_env_settings(policy: str, env_id: str | None, given: dict[str, Any]) -> tuple[str, dict, Any]:
    """``(env_id, make() kwargs, run config or None)`` for ``policy`` = ``"random"`` or a run folder.

    ``given`` holds the env options the user set (``size``, ``obs``, ...): with ``"random"`` they override the
    defaults (84 px, pixels, full rendering); with a run folder the run's own options are returned and ``given`` is
    checked against them later by :func:`behaviour_policy`. Raises :class:`ConfigError` for a missing / non-run
    folder, or an ``env_id`` other than the run's.
    """
    if policy == "random":
        if env_id is None:
            raise ConfigError("--env is required with --policy random (e.g. --env dmc/cartpole-swingup)")
        return env_id, {"size": 84, "fast_render": False, "obs": "pixels", **given}, None
    run = Path(policy)
    if not (run / "config.json").is_file():
        raise ConfigError(f"--policy must be 'random' or a run folder made by `pixelrl train` (with config.json); "
                          f"{run} is neither")
    from pixelrl.train.setup import load_run_config

    cfg = load_run_config(run)  # a damaged or edited config.json is one error naming the file and the field
    if env_id is not None and env_id != cfg.env:
        raise ConfigError(f"the run {run} was trained on {cfg.env}, not {env_id}; leave --env out or pass the run's env")
    return cfg.env, cfg.env_kwargs(), cfg


def _check_run_settings(run: str, resolved: dict[str, Any], given: dict[str, Any]) -> None:
    for name, value in given.items():
        if resolved.get(name) != value:
            raise ConfigError(f"the run {run} was trained with {name}={resolved.get(name)!r}; collecting with "
                              f"{name}={value!r} would show its policy other observations than it learned from. "
                              "Leave the option out (the run's value is used)")


def collect(
    env_id: str | None,
    policy: str,
    episodes: int,
    out: str | Path,
    *,
    seed: int = 0,
    noise_std: float = 0.0,
    epsilon: float = 0.0,
    size: int | None = None,
    action_repeat: int | None = None,
    frame_stack: int | None = None,
    obs: str | None = None,
    fast_render: bool | None = None,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    dataset_id: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run ``policy`` for ``episodes`` episodes of ``env_id`` and write them as a dataset folder ``out``.

    Args:
        env_id: pixelrl env id; with a run folder, None means the run's env (another id is an error).
        policy: ``"random"`` (uniform actions) or a run folder made by ``pixelrl train``.
        episodes: number of complete episodes to record.
        out: the dataset folder to create (see :class:`~pixelrl.data.dataset.DatasetWriter`).
        seed: seed of the episodes, of random actions and of noise.
        noise_std: standard deviation of Gaussian noise added to every action of a ``Box`` action space, then
            clipped to its bounds (0 = the policy's own action).
        epsilon: probability of replacing an action with a uniform random one.
        size, action_repeat, frame_stack, obs, fast_render: env options (``pixelrl.envs.make``); with a run
            folder they are the run's (``config.json``) and a different value is an error.
        checkpoint: a checkpoint folder to use instead of the run's latest.
        device: where the policy runs (``cpu``, ``cuda``, ``auto``).
        dataset_id: Minari id of the dataset (default from ``out``).
        progress: show a progress bar (a line per episode when stdout is not a terminal).

    Returns a summary: ``out``, ``dataset_id``, ``env``, ``policy``, ``episodes``, ``transitions``, ``frames``,
    ``mean_return``, ``std_return``, ``returns``, ``wall_s``.
    """
    from pixelrl.envs import make

    episodes = int(episodes)
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    if not (noise_std >= 0.0 and np.isfinite(noise_std)):
        raise ConfigError(f"--noise-std must be a finite number >= 0, got {noise_std}")
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"--epsilon must be in [0, 1], got {epsilon}")
    if Path(out).exists():
        raise ConfigError(f"{out} already exists; delete it or choose another --out")
    given = {k: v for k, v in {"size": size, "action_repeat": action_repeat, "frame_stack": frame_stack, "obs": obs,
                               "fast_render": fast_render}.items() if v is not None}
    env_id, env_kwargs, run_cfg = policy_env_settings(policy, env_id, given)
    seed_everything(seed)
    env = make(env_id, seed=derive_seed(seed, COLLECT_STREAM), **env_kwargs)
    try:
        return _run(env, env_kwargs, run_cfg, given, policy=policy, episodes=episodes, out=out, seed=seed,
                    noise_std=noise_std, epsilon=epsilon, checkpoint=checkpoint, device=device, dataset_id=dataset_id,
                    progress=progress)
    finally:
        env.close()


def _load_run_agent(env: Any, run_cfg: Any, run: Path, checkpoint: str | Path | None,
                    device: str) -> tuple[Any, int, dict[str, Any]]:
    """``(agent, agent steps, metadata)``: the agent of a run's checkpoint, built for ``env``'s spaces."""
    from pixelrl.agents import make_agent
    from pixelrl.errors import CorruptFileError
    from pixelrl.train.loop import resolve_device
    from pixelrl.train.setup import load_agent_state
    from pixelrl.utils.checkpoint import load_checkpoint, resolve_checkpoint
    from pixelrl.utils.dataclass_io import to_dict

    ckpt = resolve_checkpoint(run, checkpoint)  # the forms `pixelrl eval --checkpoint` accepts, "not found" if none
    state = load_checkpoint(ckpt)
    agent = make_agent(run_cfg.agent_name, env.observation_space, env.action_space, run_cfg.agent,
                       resolve_device(device))
    try:
        saved = json.loads(state["config"]) if "config" in state else None
        trainer = state["trainer"]
        step = int(trainer["agent_steps"])
        frames = int(trainer.get("frames", 0))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CorruptFileError(ckpt / "state.json", f"no agent step count ({type(e).__name__}: {e})") from None
    if "agent" not in state:
        raise CorruptFileError(ckpt / "state.json", "holds no agent state")
    load_agent_state(agent, state["agent"], config_path=run / "config.json", checkpoint=ckpt, saved_config=saved,
                     config=to_dict(run_cfg))
    meta = {"policy": "run", "run_dir": str(run), "checkpoint": ckpt.name, "agent": run_cfg.agent_name,
            "agent_steps": step, "frames": frames}
    return agent, step, meta


@dataclass
class Behaviour:
    """A behaviour policy built by :func:`behaviour_policy`."""

    act: Callable[[Any], Any]
    """``obs -> action``: the base policy's action with the noise / epsilon-random actions applied."""
    label: str
    """``"random"``, the run's agent name, plus ``" (noise_std=..., epsilon=...)"`` when either is set."""
    meta: dict[str, Any]
    """What was loaded: ``policy`` (``"random"`` / ``"run"``), and for a run ``run_dir``, ``checkpoint``, ``agent``,
    ``agent_steps``, ``frames``."""
    agent: Any = None
    """The run's agent (None for the random policy), e.g. for its value estimate."""
    agent_steps: int = 0
    """The checkpoint's agent step count (0 for the random policy)."""


def behaviour_policy(env: Any, run_cfg: Any, policy: str, *, seed: int = 0, noise_std: float = 0.0,
                     epsilon: float = 0.0, checkpoint: str | Path | None = None, device: str = "cpu",
                     given: dict[str, Any] | None = None) -> Behaviour:
    """The policy ``pixelrl collect`` runs in ``env``: uniform random actions (``run_cfg`` None) or a run's
    checkpoint acting in eval mode, plus Gaussian action noise (``noise_std``, clipped to the bounds) and
    epsilon-random actions. Random actions, epsilon draws and noise come from generators seeded from ``seed``.

    Args:
        env: the env from :func:`pixelrl.envs.make` with the settings of :func:`policy_env_settings`.
        run_cfg: the run's config (from :func:`policy_env_settings`), or None for the random policy.
        policy: ``"random"`` or the run folder.
        checkpoint: a checkpoint folder, or the name of one of the run's checkpoints; None = the latest.
        given: env options the user set explicitly; with a run, each must equal the run's (else ConfigError).
    """
    if run_cfg is not None:
        resolved = {**run_cfg.env_kwargs(), "action_repeat": int(env.get_wrapper_attr("action_repeat")),
                    "frame_stack": int(env.get_wrapper_attr("frame_stack"))}
        _check_run_settings(policy, resolved, dict(given or {}))
    action_space = env.action_space
    if noise_std > 0 and not isinstance(action_space, spaces.Box):
        raise ConfigError(f"--noise-std applies to continuous (Box) actions; {env.get_wrapper_attr('env_id')} has "
                          f"{action_space}: use --epsilon for random actions instead")
    if not isinstance(action_space, (spaces.Box, spaces.Discrete)):
        raise ConfigError(f"collect supports Box and Discrete action spaces, not {action_space}")
    act_rng = np.random.default_rng(derive_seed(seed, ACTION_STREAM))
    noise_rng = np.random.default_rng(derive_seed(seed, NOISE_STREAM))

    def random_action() -> Any:
        if isinstance(action_space, spaces.Discrete):
            return int(action_space.start + act_rng.integers(action_space.n))
        return act_rng.uniform(action_space.low, action_space.high).astype(action_space.dtype)

    agent, step = None, 0
    if run_cfg is None:
        base, algorithm, meta = (lambda _obs: random_action()), "random", {"policy": "random"}
    else:
        agent, step, meta = _load_run_agent(env, run_cfg, Path(policy), checkpoint, device)
        algorithm = run_cfg.agent_name

        def base(o: Any) -> Any:
            with torch.no_grad():
                return agent.act(o, step=step, eval_mode=True)

    def act(o: Any) -> Any:
        a = base(o)
        if noise_std > 0:
            a = np.asarray(a, dtype=np.float64) + noise_rng.normal(0.0, noise_std, size=action_space.shape)
            a = np.clip(a, action_space.low, action_space.high).astype(action_space.dtype)
        if epsilon > 0 and act_rng.random() < epsilon:
            a = random_action()
        return a

    label = algorithm if not (noise_std or epsilon) else f"{algorithm} (noise_std={noise_std}, epsilon={epsilon})"
    return Behaviour(act, label, meta, agent, step)


def _run(env: Any, env_kwargs: dict, run_cfg: Any, given: dict, *, policy: str, episodes: int, out: str | Path,
         seed: int, noise_std: float, epsilon: float, checkpoint: str | Path | None, device: str,
         dataset_id: str | None, progress: bool) -> dict[str, Any]:
    resolved_kwargs = {**env_kwargs, "action_repeat": int(env.get_wrapper_attr("action_repeat")),
                       "frame_stack": int(env.get_wrapper_attr("frame_stack"))}
    canonical = str(env.get_wrapper_attr("env_id"))
    action_space = env.action_space
    behaviour = behaviour_policy(env, run_cfg, policy, seed=seed, noise_std=noise_std, epsilon=epsilon,
                                 checkpoint=checkpoint, device=device, given=given)
    act, label, meta_policy = behaviour.act, behaviour.label, behaviour.meta
    metadata = {
        "algorithm_name": label,
        "description": f"pixelrl collect: {episodes} episodes of {canonical} with the {label} policy",
        "env_kwargs": resolved_kwargs,
        "collect": {**meta_policy, "seed": int(seed), "noise_std": float(noise_std), "epsilon": float(epsilon),
                    "episodes": episodes},
    }
    bar = _Progress(episodes, enabled=progress)
    returns, frames, transitions = [], 0, 0
    t0 = time.perf_counter()
    try:
        with DatasetWriter(out, env.observation_space, action_space, env_id=canonical,
                           frame_stack=resolved_kwargs["frame_stack"], dataset_id=dataset_id, metadata=metadata) as w:
            for e in range(episodes):
                ep_seed = derive_seed(seed, COLLECT_STREAM, e)
                o, _ = env.reset(seed=ep_seed)
                if hasattr(behaviour.agent, "begin_episode"):  # a timestep-indexed policy (SQIRL)
                    behaviour.agent.begin_episode()
                ep: dict[str, list] = {"observations": [o], "actions": [], "rewards": [], "terminations": [],
                                       "truncations": []}
                done = False
                while not done:
                    a = act(o)
                    o, r, term, trunc, info = env.step(a)
                    frames += int(info.get("frames", 1))
                    for k, v in (("observations", o), ("actions", a), ("rewards", r), ("terminations", term),
                                 ("truncations", trunc)):
                        ep[k].append(v)
                    done = bool(term or trunc)
                w.add_episode(**ep, seed=ep_seed)
                returns.append(float(np.sum(ep["rewards"])))
                transitions += len(ep["rewards"])
                bar.episode(e + 1, returns[-1])
            written_id = w.dataset_id
    finally:
        bar.close()
    return {
        "out": str(out), "dataset_id": written_id, "env": canonical, "policy": str(policy),
        "episodes": episodes, "transitions": transitions, "frames": frames,
        "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)), "returns": returns,
        "wall_s": time.perf_counter() - t0,
    }


class _Progress:
    """A rich progress bar over episodes, or a plain line per episode when stdout is not a terminal."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self._bar = None
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("[bold]collect"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("episodes | last return {task.fields[ret]}"), TimeRemainingColumn())
            self._task = self._bar.add_task("collect", total=total, ret="-")
            self._bar.start()

    def episode(self, done: int, ret: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, ret=f"{ret:.1f}")
        elif self.enabled:
            print(f"episode {done}/{self.total}: return {ret:.1f}", flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
