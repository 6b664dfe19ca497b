"""On-policy rollouts: T steps x N envs of (obs, action, log-prob, value, reward, termination, truncation), and
GAE(lambda) over them.

Indexing is by the step's own outcome: row ``t`` holds the observation the policy acted on, what it did, and
what came back -- ``rewards[t]``, ``terminations[t]`` (the episode ended in a terminal state: nothing to
bootstrap), ``truncations[t]`` (the episode was cut -- a time limit, or the trainer resetting every env at a
checkpoint -- while the state was not terminal) and ``bootstrap_values[t]``, the value of the true final
observation of a truncated episode (0 elsewhere). After a termination or a truncation the next row of that env
belongs to a new episode, so no advantage flows across it.

The buffers live on the training device as torch tensors; observations keep their dtype (``uint8`` pixels are
stored as bytes, states as float32), discrete actions are int64, continuous actions float32.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["RolloutBuffer", "compute_gae"]


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, terminations: torch.Tensor,
                truncations: torch.Tensor, bootstrap_values: torch.Tensor, last_values: torch.Tensor, *,
                gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(lambda) advantages and lambda-returns of a rollout; every argument but ``last_values`` is ``[T, N]``.

    With ``next_v[t]`` the value that follows step ``t``:

    * termination at ``t``: ``next_v = 0`` (the return ends there);
    * truncation at ``t``: ``next_v = bootstrap_values[t]``, the critic's value of the episode's true final
      observation (the return would have gone on; the correct treatment of a time limit);
    * otherwise ``next_v = values[t + 1]``, or ``last_values`` (the value of the observation after the rollout) at
      ``t = T - 1``;

    ``delta[t] = r[t] + gamma * next_v - values[t]`` and ``A[t] = delta[t] + gamma * lambda * A[t + 1]``, with the
    recursion cut (``A[t + 1]`` taken as 0) where step ``t`` ended its episode either way. Returns
    ``(advantages, returns = advantages + values)``.

    CleanRL's ``ppo_atari.py`` / ``ppo_continuous_action.py`` treat a truncation like a termination (``next_done =
    terminations | truncations``, nothing bootstrapped); here a truncated episode is bootstrapped from its final
    observation's value, which is what a time limit that is not part of the task calls for.
    """
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    term = terminations.to(rewards.dtype)
    trunc = truncations.to(rewards.dtype)
    cont = 1.0 - torch.clamp(term + trunc, max=1.0)  # 1 where the episode goes on after step t
    for t in reversed(range(T)):
        following = last_values if t == T - 1 else values[t + 1]
        next_v = cont[t] * following + (1.0 - term[t]) * trunc[t] * bootstrap_values[t]
        delta = rewards[t] + gamma * next_v - values[t]
        last = delta + gamma * gae_lambda * cont[t] * last
        adv[t] = last
    return adv, adv + values


class RolloutBuffer:
    """Storage of one rollout of ``num_steps`` steps in each of ``num_envs`` envs, filled row by row with
    :meth:`add`, finished with :meth:`compute_returns`, read in shuffled minibatches with :meth:`minibatches`."""

    def __init__(self, num_steps: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype: torch.dtype,
                 action_shape: tuple[int, ...], action_dtype: torch.dtype, device: torch.device | str = "cpu"
                 ) -> None:
        self.num_steps, self.num_envs = int(num_steps), int(num_envs)
        self.device = torch.device(device)
        T, N = self.num_steps, self.num_envs

        def zeros(*shape, dtype=torch.float32):
            return torch.zeros(shape, dtype=dtype, device=self.device)

        self.obs = zeros(T, N, *obs_shape, dtype=obs_dtype)
        self.actions = zeros(T, N, *action_shape, dtype=action_dtype)
        self.logprobs = zeros(T, N)
        self.values = zeros(T, N)
        self.rewards = zeros(T, N)
        self.terminations = zeros(T, N)
        self.truncations = zeros(T, N)
        self.bootstrap_values = zeros(T, N)
        self.advantages = zeros(T, N)
        self.returns = zeros(T, N)
        self.step = 0

    @property
    def batch_size(self) -> int:
        return self.num_steps * self.num_envs

    def reset(self) -> None:
        """Start a new rollout (the contents are overwritten row by row)."""
        self.step = 0
        self.bootstrap_values.zero_()

    def add(self, obs: torch.Tensor, action: torch.Tensor, logprob: torch.Tensor, value: torch.Tensor,
            reward, terminated, truncated) -> None:
        """Row ``self.step``: the observation acted on, the action, its log-prob and value, and what the env
        returned (arrays or tensors of length N). Bootstrap values of truncated envs go in with
        :meth:`set_bootstrap`."""
        t = self.step
        if t >= self.num_steps:
            raise IndexError(f"the rollout holds {self.num_steps} steps; call reset() before adding more")
        self.obs[t].copy_(obs)
        self.actions[t].copy_(action.reshape(self.actions[t].shape))
        self.logprobs[t].copy_(logprob.reshape(-1))
        self.values[t].copy_(value.reshape(-1))
        self.rewards[t].copy_(torch.as_tensor(np.asarray(reward, dtype=np.float32)))
        self.terminations[t].copy_(torch.as_tensor(np.asarray(terminated, dtype=np.float32)))
        self.truncations[t].copy_(torch.as_tensor(np.asarray(truncated, dtype=np.float32)))
        self.step = t + 1

    def set_bootstrap(self, envs: np.ndarray | list[int], values: torch.Tensor) -> None:
        """Values of the true final observations of the envs in ``envs`` whose episode was truncated at the last
        added row."""
        idx = torch.as_tensor(np.asarray(envs, dtype=np.int64), device=self.device)
        self.bootstrap_values[self.step - 1, idx] = values.reshape(-1).to(self.bootstrap_values.dtype)

    def compute_returns(self, last_values: torch.Tensor, *, gamma: float, gae_lambda: float) -> None:
        """Fill ``advantages`` and ``returns`` (:func:`compute_gae`); ``last_values`` is the value of the
        observation each env is in after the last row."""
        if self.step != self.num_steps:
            raise RuntimeError(f"the rollout has {self.step} of its {self.num_steps} steps")
        self.advantages, self.returns = compute_gae(
            self.rewards, self.values, self.terminations, self.truncations, self.bootstrap_values,
            last_values.reshape(-1).to(self.values.dtype), gamma=gamma, gae_lambda=gae_lambda)

    def flat(self) -> dict[str, torch.Tensor]:
        """Every field with the step and env axes merged (``[T * N, ...]``, step-major)."""
        n = self.batch_size
        return {"obs": self.obs.reshape(n, *self.obs.shape[2:]),
                "actions": self.actions.reshape(n, *self.actions.shape[2:]),
                "logprobs": self.logprobs.reshape(n), "values": self.values.reshape(n),
                "advantages": self.advantages.reshape(n), "returns": self.returns.reshape(n)}

    def minibatches(self, num_minibatches: int, generator: torch.Generator | None = None
                    ) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch: a random permutation of the ``T * N`` rows (torch's RNG, or ``generator``) cut into
        ``num_minibatches`` equal minibatches."""
        n = self.batch_size
        if n % num_minibatches:
            raise ValueError(f"{n} rows do not split into {num_minibatches} equal minibatches")
        size = n // num_minibatches
        flat = self.flat()
        perm = torch.randperm(n, generator=generator).to(self.device)
        for start in range(0, n, size):
            idx = perm[start:start + size]
            yield {k: v[idx] for k, v in flat.items()}
