"""Policy evaluation: deterministic episodes on a separate env, optional video of the first one.

An env that raises while resetting or stepping is reported as the training env's error is
(:func:`pixelrl.train.episode.env_step_error`: the env's error, where -- evaluation episode, its step, the agent
step -- and the action), and a non-finite action stops evaluation with a
:class:`~pixelrl.errors.DivergenceError` before it reaches the env."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from pixelrl.errors import DivergenceError, PixelRLError
from pixelrl.train.episode import env_step_error
from pixelrl.train.video import frame_from_obs, write_video
from pixelrl.utils.seeding import derive_seed

EVAL_STREAM = 2  # seed stream id of evaluation episodes (training episodes use 1)
RANDOM_STREAM = 3


def run_episodes(env, policy: Callable, episodes: int, *, seed: int, stream: int, index: int,
                 record: bool = False, where: str = "", on_reset: Callable[[], None] | None = None) -> dict:
    """Run ``episodes`` episodes of ``policy(obs) -> action``; episode ``e`` of call ``index`` is reset with a
    seed derived from (seed, stream, index, e), so evaluation never touches the training RNGs.
    ``on_reset()``, if given, is called after every reset (a policy that depends on the episode's timestep, e.g.
    SQIRL's ``agent.begin_episode``).

    An env that raises is an :class:`~pixelrl.errors.EnvStepError` naming the env, its error, the episode, the step
    and the action (``where`` adds context, e.g. the agent step); a non-finite action a
    :class:`~pixelrl.errors.DivergenceError`.

    Returns ``{"returns": [...], "lengths": [...], "frames": [...video frames of episode 0...], "successes": [...]}``
    (``successes``: the last step's ``info["is_success"]`` of each episode whose env reports one). An env whose
    ``unwrapped.renders_state_video`` is true is filmed with ``env.render()`` when its observations are states.
    """
    returns, lengths, frames, successes = [], [], [], []
    context = f" ({where})" if where else ""
    for e in range(episodes):
        at = f"evaluation episode {e + 1} of {episodes}"
        obs = _reset(env, derive_seed(seed, stream, index, e), f"the reset of {at}{context}")
        if on_reset is not None:
            on_reset()
        if e == 0:
            render = record and not has_pixels(obs) and bool(getattr(env.unwrapped, "renders_state_video", False))
            record = record and (has_pixels(obs) or render)  # state observations: no video (unless rendered)
        if record and e == 0:
            frames.append(env.render() if render else frame_from_obs(obs))
        total, length, done = 0.0, 0, False
        while not done:
            action = policy(obs)
            here = f"step {length} of {at}{context}"
            if not _finite(action):
                raise DivergenceError(f"the policy's action is not finite ({action}) at {here}: the networks "
                                      "diverged")
            obs, reward, terminated, truncated, info = _step(env, action, here)
            total += float(reward)
            length += 1
            done = terminated or truncated
            if record and e == 0:
                frames.append(env.render() if render else frame_from_obs(obs))
        if isinstance(info, dict) and "is_success" in info:
            successes.append(bool(info["is_success"]))
        returns.append(total)
        lengths.append(length)
    return {"returns": returns, "lengths": lengths, "frames": frames, "successes": successes}


def _env_id(env) -> str:
    for get in (lambda: env.get_wrapper_attr("env_id"), lambda: env.env_id, lambda: env.spec.id):
        try:
            return str(get())
        except Exception:
            pass
    return type(env).__name__


def _reset(env, seed: int, where: str):
    try:
        return env.reset(seed=seed)[0]
    except PixelRLError:
        raise
    except Exception as e:
        raise env_step_error(_env_id(env), e, where) from None


def _step(env, action, where: str):
    try:
        return env.step(action)
    except PixelRLError:
        raise
    except Exception as e:  # as the training env's error: the env's error, where, the action
        raise env_step_error(_env_id(env), e, where, action) from None


def _finite(action) -> bool:
    try:
        return bool(np.all(np.isfinite(np.asarray(action, dtype=np.float64))))
    except (TypeError, ValueError):
        return True  # not numeric (e.g. a dict): the env judges it


def has_pixels(obs) -> bool:
    """Whether an observation carries uint8 [C, H, W] pixels (alone or under the 'pixels' key)."""
    x = obs.get("pixels") if isinstance(obs, dict) else obs
    return x is not None and np.asarray(x).ndim == 3 and np.asarray(x).dtype == np.uint8


def random_policy(action_space, seed: int) -> Callable:
    rng = np.random.default_rng(seed)

    def act(_obs):
        if hasattr(action_space, "n"):
            return int(rng.integers(action_space.n))
        return rng.uniform(action_space.low, action_space.high).astype(np.float32)

    return act


def evaluate_agent(env, agent, *, step: int, episodes: int, seed: int, index: int, action_space,
                   eval_random: bool, video_path=None) -> tuple[dict, str]:
    """One evaluation of a trainer: ``episodes`` eval-mode episodes of ``agent`` (acting at ``step``) on the episode
    seeds of call ``index``, the video of the first one written to ``video_path`` (None: no video; state
    observations: none either); at the first call (``index == 0``) with ``eval_random``, the uniform random policy on
    the same seeds too. Returns the row fields ``eval_return``, ``eval_return_std``, ``eval_length`` (and
    ``random_return``) and a suffix for the progress line."""
    def policy(obs):
        with torch.no_grad():
            return agent.act(obs, step=step, eval_mode=True)

    where = f"agent step {step:,}"
    res = run_episodes(env, policy, episodes, seed=seed, stream=EVAL_STREAM, index=index,
                       record=video_path is not None, where=where, on_reset=getattr(agent, "begin_episode", None))
    row = {"eval_return": float(np.mean(res["returns"])), "eval_return_std": float(np.std(res["returns"])),
           "eval_length": float(np.mean(res["lengths"]))}
    if res["successes"]:
        row["success_rate"] = float(np.mean(res["successes"]))
    extra = ""
    if index == 0 and eval_random:
        rnd = run_episodes(env, random_policy(action_space, derive_seed(seed, RANDOM_STREAM)), episodes, seed=seed,
                           stream=RANDOM_STREAM, index=0, where=f"{where}, the random policy's baseline")
        row["random_return"] = float(np.mean(rnd["returns"]))
        extra = f" (random policy: {row['random_return']:.1f})"
    if video_path is not None and res["frames"]:
        write_video(video_path, res["frames"])
    return row, extra
