"""Applying a reward model online: what the off-policy trainer stores in its replay.

:class:`RewardedReplay` stands where the trainer's episode loop expects the replay buffer. ``add_first`` goes
straight through; each ``add`` (one env step) is held until its reward is computed, then stored with the learner's
reward (:func:`~pixelrl.rewards.base.combine`: the model's reward, or the env's plus the model's). Rewards are
computed in batches, on the reward model's device (the training device by default):

* at the end of every episode (VLM-RM computes rewards after whole episodes), and
* whenever ``model.batch_size`` steps are waiting, so that a long episode is scored in full batches and its steps
  reach the replay without waiting for its end, and
* when the agent asks for a batch while the replay has nothing to sample (a warm-up shorter than the first
  episode's first chunk).

Exact resume: the trainer checkpoints only at episode boundaries, where nothing is waiting; when and in which
batches rewards are computed depends only on the step counts, and the model draws no random numbers, so a resumed
run stores the same rewards as an uninterrupted one. The steps of an episode become visible to the sampler at most
``batch_size`` steps later than without a reward model (DrQ-v2 itself samples only finished episodes).

A model that learns during training (``prefs:``, :class:`~pixelrl.rewards.preference.OnlinePreferenceLoop` as its
``online`` attribute) also sees every slot stored with the env's reward and every agent step; from :meth:`add` it
runs its query rounds (flush, sample pairs from the replay, ask the oracle, fit, relabel the whole replay). Its
whole state is in the model's ``state_dict``, so exact resume holds as above.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pixelrl.rewards.base import RewardModel, combine

__all__ = ["RewardedReplay", "stack_batch"]


def stack_batch(items: list[Any]) -> Any:
    """A list of observations (arrays or flat dicts of arrays) -> one batch (an array or a dict of arrays)."""
    if isinstance(items[0], dict):
        return {k: np.stack([np.asarray(o[k]) for o in items]) for k in items[0]}
    return np.stack([np.asarray(o) for o in items])


class RewardedReplay:
    """A replay buffer whose stored rewards come from ``model`` (see the module docstring). Every other attribute is
    the wrapped buffer's (``len``, ``num_sampleable``, ``save``, ...)."""

    def __init__(self, replay: Any, model: RewardModel) -> None:
        self.replay = replay
        self.model = model
        self._pending: list[tuple] = []  # (action, env reward, next_obs, terminated, truncated, add kwargs)
        self._last_obs: Any = None  # the observation before the first pending step
        self._episode_model_return = 0.0
        self._episode_learn_return = 0.0
        self._seconds = 0.0
        self.online = getattr(model, "online", None)
        """A model that learns during training (``prefs:``) has an online loop: it sees every slot stored (with the
        env's reward) and every agent step, and runs its query / fit / relabel rounds from :meth:`add`."""
        if self.online is not None:
            self.online.attach(replay)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.replay, name)

    def __len__(self) -> int:
        return len(self.replay)

    @property
    def pending(self) -> int:
        """Steps held until their reward is computed (0 at every episode boundary)."""
        return len(self._pending)

    def add_first(self, obs: Any) -> None:
        self.flush()  # an episode cut without an end (add_first ends it) keeps its steps
        self.replay.add_first(obs)
        if self.online is not None:
            self.online.record(None)
        self._last_obs = obs

    def add(self, action: Any, reward: float, next_obs: Any, terminated: bool, truncated: bool, **kwargs: Any) -> None:
        self._pending.append((action, reward, next_obs, terminated, truncated, kwargs))
        if terminated or truncated or len(self._pending) >= self.model.batch_size:
            self.flush()
        if self.online is not None:
            self.online.step(self)  # may flush, fit and relabel the replay (its time is counted as reward time)

    def sample(self, *args: Any, **kwargs: Any) -> Any:
        if self._pending and self.replay.num_sampleable() == 0:
            self.flush()
        return self.replay.sample(*args, **kwargs)

    def flush(self) -> None:
        """Compute the rewards of the waiting steps (one call of the model) and store them."""
        if not self._pending:
            return
        t0 = time.perf_counter()
        steps, self._pending = self._pending, []
        needs = self.model.needs
        next_obs = [s[2] for s in steps]
        obs = [self._last_obs, *next_obs[:-1]]
        r_model = np.asarray(self.model(stack_batch(obs) if "obs" in needs else None,
                                        actions=np.stack([np.asarray(s[0]) for s in steps]) if "actions" in needs
                                        else None,
                                        next_obs=stack_batch(next_obs) if "next_obs" in needs else None),
                             dtype=np.float32).reshape(-1)
        if r_model.shape != (len(steps),):
            raise ValueError(f"the reward model returned {r_model.shape[0]} rewards for {len(steps)} steps")
        learn = combine(self.model, np.array([s[1] for s in steps], dtype=np.float32), r_model)
        for (action, r_env, nxt, term, trunc, kw), r in zip(steps, learn):
            self.replay.add(action, float(r), nxt, term, trunc, **kw)
            if self.online is not None:
                self.online.record(r_env)
        self._last_obs = next_obs[-1]
        self._episode_model_return += float(r_model.astype(np.float64).sum())
        self._episode_learn_return += float(learn.astype(np.float64).sum())
        self._seconds += time.perf_counter() - t0

    def episode_stats(self) -> dict[str, float]:
        """``reward_model_return`` (the model's rewards summed over the episode, before ``scale``) and
        ``learn_return`` (what the learner was given) since the last call, and the seconds spent computing them
        (``seconds``, not a logged column: timing differs between runs). Resets the sums."""
        out = {"reward_model_return": self._episode_model_return, "learn_return": self._episode_learn_return,
               "seconds": self._seconds}
        if self.online is not None:
            out.update(self.online.stats())
            out["seconds"] += self.online.seconds
            self.online.seconds = 0.0
        self._episode_model_return = self._episode_learn_return = self._seconds = 0.0
        return out
