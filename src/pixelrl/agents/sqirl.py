"""SQIRL: shallow Q-iteration via reinforcement imitation learning (Laidlaw, Zhu, Russell & Dragan 2024, "The
Effective Horizon Explains Deep RL Performance in Stochastic Environments"), on states or on pixels, discrete actions.

SQIRL learns one policy per timestep of the episode, from the first timestep on. For horizon step ``i`` the trainer
(:mod:`pixelrl.train.sqirl`) collects ``m`` episodes that act greedily with the frozen policies of the timesteps
``t < i`` and uniformly at random from ``t = i`` on, stores their transitions from timestep ``i`` on, and runs
``ceil(steps collected * n_epochs / batch_size)`` gradient steps of this agent's regression on everything stored so
far; the network is then frozen as the policy of timestep ``i``. One network with ``k`` heads (``planning_depth``)
is regressed, every update, on (:func:`sqirl_targets`)

* head 1: the Monte-Carlo return of the (random from ``i`` on) rollout, ``G_t = sum_l gamma^l r_{t+l}`` -- an
  estimate of the random policy's Q function ``Q^1``;
* head j > 1: ``r_t + gamma (1 - done_t) max_a' Q^{j-1}(s_{t+1}, a')`` with head ``j - 1`` of the same network (no
  gradient through the target) -- one step of fitted Q-iteration on ``Q^{j-1}``, so head k estimates ``Q^k``, the
  result of ``k - 1`` steps of Q-value iteration on the random policy's Q;

and the policy of a timestep is greedy on the last head. An MDP is *k-QVI-solvable* when acting greedily on ``Q^k``
is optimal (:func:`qvi_min_k` computes the least such ``k`` of a tabular MDP, as the authors' ``calculate_minimum_k``);
the effective horizon bounds how many random episodes estimating ``Q^k`` well enough takes.

The network and its loss follow the authors' Stable-Baselines3 implementation (cassidylaidlaw/effective-horizon,
``effective_horizon/sb3/algorithms/sqirl.py``; its defaults in ``sb3/train.py``): states go through an MLP (64, 64,
ReLU), pixels through the Nature-DQN CNN (``/255``, 512 ReLU features) and a linear layer; the outputs are ``k x |A|``
Q values; the per-head squared errors are divided by a running mean of each head's loss (``scale_losses``, smoothing
0.99) before averaging; Adam (lr 1e-4, PyTorch's eps), gradient norm clipped to 10; the network keeps training across
timesteps (it is not re-initialised), and every transition collected so far stays in the replay.

Acting (:meth:`SQIRLAgent.act`): the agent counts the calls since :meth:`SQIRLAgent.begin_episode` -- the timestep
``t`` of the episode (evaluation calls ``begin_episode`` after every reset). Timestep ``t`` acts greedily with the
policy frozen for it; beyond the last frozen timestep, evaluation acts greedily with the current network (equal to
the last frozen policy right after a horizon step; the authors' ``predict(deterministic=True)``), training acts
uniformly at random (their ``predict(deterministic=False)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError
from pixelrl.nets.encoders import NatureCNN

__all__ = ["SQIRLConfig", "SQIRLAgent", "QNetwork", "SUMMARY", "preset", "sqirl_targets", "scaled_head_loss",
           "qvi_min_k", "qvi_q_functions", "horizon_estimate", "ATARI_ENV_OPTIONS", "GYM_SETTINGS", "TASK_SETTINGS"]

SUMMARY = ("SQIRL (Laidlaw et al. 2024): per-timestep policies from random rollouts + k steps of fitted "
           "Q-iteration; reports an effective-horizon estimate; discrete actions")


@dataclass(frozen=True)
class SQIRLConfig:
    """SQIRL hyper-parameters. Defaults are the authors' (cassidylaidlaw/effective-horizon, ``sb3/train.py``'s SQIRL
    ``algo_args`` and the ``SQIRL`` class): k = m = 1, lr 1e-4, batch 128, 10 epochs, loss scaling on, MSE, gradient
    clip 10, replay 1M, up to 8 parallel envs. The paper tunes k and m per environment; the preset (:func:`preset`)
    sets m = 16 and lr 1e-3 for the small gym tasks, measured on CartPole (:data:`GYM_SETTINGS`).

    Options of the authors' class left at their defaults and not implemented: ``separate_networks`` (False: one
    network with k heads), ``dueling`` (False), ``num_atoms`` (1: no distributional heads), ``ema_alpha`` (0),
    ``intra_step_lr_decay`` (1), ``exploration_fraction`` (0), ``replay_priority_factor`` (1: uniform replay)."""

    planning_depth: int = 1
    """k: Q heads = steps of fitted Q-iteration; head 1 regresses Monte-Carlo returns of the random rollouts, head j
    ``r + gamma max Q^(j-1)(s', .)``, the policy is greedy on head k (authors' default 1; the paper tunes k)."""
    episodes_per_timestep: int = 1
    """m: episodes collected for each horizon step (authors' default 1; the paper tunes it)."""
    discount: float = 0.99
    """gamma of the Monte-Carlo returns and the Q-iteration targets (authors: 1 on their fixed-horizon BRIDGE MDPs,
    0.99 elsewhere, which is every env pixelrl has)."""
    lr: float = 1e-4
    """Adam learning rate (authors: 1e-4; Adam with PyTorch's defaults otherwise)."""
    batch_size: int = 128
    """Transitions per gradient step (authors: 128)."""
    n_epochs: float = 10.0
    """Gradient steps per horizon step = ceil(env steps collected in that horizon step * n_epochs / batch_size),
    the authors' count (their env steps include the greedy prefix of every episode; authors: 10)."""
    max_grad_norm: float = 10.0
    """Clip of the gradient's global norm (authors: 10)."""
    reward_scale: float = 1.0
    """Rewards and Monte-Carlo returns are multiplied by this in the targets (authors: 1)."""
    clip_rewards: bool = False
    """Train on sign(r) (the Atari preset sets it: the authors' Atari envs come through SB3's ``AtariWrapper``,
    which clips rewards; evaluation always reports the env's unclipped return)."""
    huber_loss: bool = False
    """Smooth L1 instead of the squared error per head (authors: False)."""
    scale_losses: bool = True
    """Divide each head's per-sample loss by a running mean of that head's batch loss before averaging, so heads
    whose targets have different scales weigh alike (authors: True)."""
    loss_scale_smoothing: float = 0.99
    """Running-mean factor of ``scale_losses`` (authors: 0.99)."""
    net_arch: Optional[tuple[int, ...]] = None
    """Hidden layer widths of the Q MLP (ReLU). None = the authors' default: (64, 64) on states, () on pixels (a
    linear layer on the Nature CNN's 512 features)."""
    replay_capacity: int = 1_000_000
    """Stored observations (≈ transitions; each stored episode adds its first frame stack) kept, oldest evicted
    first (authors: 1M transitions)."""
    num_envs: int = 8
    """Training envs stepped in lockstep; min(num_envs, m) are used (authors: n_envs = min(8, m)). Pixel envs run in
    subprocesses (with ``--async-env``), state envs in this process."""
    idle_iterations: int = 10
    """Training stops when this many horizon steps in a row collected no random step (every episode ended before
    reaching the timestep being learned: the horizon is covered) -- the authors' stop rule (10)."""

    def __post_init__(self) -> None:
        for name, lo in (("planning_depth", 1), ("episodes_per_timestep", 1), ("batch_size", 1),
                         ("replay_capacity", 2), ("num_envs", 1), ("idle_iterations", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"--agent.{name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")
        for name, ok, what in (
                ("discount", lambda v: 0 <= v <= 1, "in [0, 1]"),
                ("lr", lambda v: v > 0, "> 0"),
                ("n_epochs", lambda v: v > 0, "> 0"),
                ("max_grad_norm", lambda v: v > 0, "> 0"),
                ("reward_scale", lambda v: v > 0, "> 0"),
                ("loss_scale_smoothing", lambda v: 0 <= v < 1, "in [0, 1)")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
                raise ConfigError(f"--agent.{name.replace('_', '-')} must be a finite number {what}, got {v!r}")
        if self.net_arch is not None and any(isinstance(w, bool) or not isinstance(w, int) or w < 1
                                             for w in self.net_arch):
            raise ConfigError(f"--agent.net-arch must be positive layer widths, got {self.net_arch!r}")


ATARI_ENV_OPTIONS = {"repeat_action_probability": 0.25, "terminal_on_life_loss": False, "noop_max": 30,
                     "fire_reset": True}
"""The authors' stochastic full-length Atari setting (README: ``atari_wrapper_kwargs={"terminal_on_life_loss": False,
"action_repeat_probability": 0.25}`` through SB3's ``make_atari_env``: 30 no-op starts, FIRE on reset, frame skip 4
with max-pooling, 84x84 grey, 4 stacked frames)."""

GYM_SETTINGS = {"episodes_per_timestep": 16, "lr": 1e-3}
"""SQIRL on the small discrete gym tasks (state observations), which the paper does not run: m = 16 episodes per
timestep and lr 1e-3 (authors' defaults: m = 1, lr 1e-4). Measured on CartPole-v1
(``benchmarks/results/sqirl_effective_horizon_cpu.json``): with lr 1e-4 (m = 1 or 16) or m <= 4 (lr 1e-3) the first
timesteps' few gradient steps leave the network nearly untrained, its greedy policy drops the pole within ~10 steps, no
episode reaches the timestep being learned and the authors' stop rule ends the run (eval 9, random 15-20); with these
values k = 1 reached 271 and 314 (seeds 1, 2) at 60k frames."""

TASK_SETTINGS: dict[str, dict[str, Any]] = {
    "gym/CartPole-v1": {"frames": 200_000},
    "gym/Acrobot-v1": {"frames": 2_000_000},
    "gym/MountainCar-v0": {"frames": 2_000_000},
}
"""Frame budgets of the small gym tasks: SQIRL's cost grows with the square of the horizon it learns (horizon step i
replays the i-step greedy prefix m times), e.g. ~16 * 500 * 500 / 2 = 2M frames to learn all 500 timesteps of
CartPole; CartPole's budget stops at 200k because the last frozen policy acts for the timesteps beyond (eval 420
at 180k frames with m = 32). Acrobot's and MountainCar's are not measured; MountainCar's random policy never reaches
the flag within its 200 steps, so every Q^k of the random policy is flat and SQIRL is expected to fail there -- its
effective horizon is long."""


def preset(env_id: str, obs: str = "pixels") -> dict:
    """SQIRL's settings for ``env_id``. ``ale/``: the authors' stochastic full-length Atari setting (sticky actions
    0.25, no life-loss terminals, clipped rewards, gamma 0.99, 10M agent steps = 40M frames, evaluation every 100k
    agent steps); gym/ tasks on states: :data:`GYM_SETTINGS` and the budgets of :data:`TASK_SETTINGS`. Keys that are not :class:`SQIRLConfig` fields are
    trainer fields."""
    if env_id.startswith("ale/"):
        return {"clip_rewards": True, "discount": 0.99, "frames": 40_000_000, "eval_every_frames": 400_000,
                "env_options": dict(ATARI_ENV_OPTIONS)}
    if env_id.startswith("gym/") and obs == "state":
        return {**GYM_SETTINGS, **TASK_SETTINGS.get(env_id, {})}
    return {}


# ---------------------------------------------------------------------------------------------- the math


def sqirl_targets(mc_return: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor,
                  next_q: torch.Tensor | None) -> torch.Tensor:
    """The regression targets of the k heads, ``[B, k]``.

    ``mc_return`` ``[B]``: the Monte-Carlo return from the transition on (head 1's target); ``reward`` ``[B]`` and
    ``discount`` ``[B]`` (``gamma``, or 0 where the episode ended with this step); ``next_q`` ``[B, k, A]``: the
    network's Q values at ``s'`` (None when k = 1). Head j > 1's target is ``reward + discount * max_a next_q[:,
    j-2, a]``."""
    if next_q is None or next_q.shape[1] == 1:
        return mc_return[:, None]
    boot = next_q[:, :-1].max(dim=2).values  # [B, k-1]: max_a Q^(j-1)(s', a) for j = 2..k
    return torch.cat([mc_return[:, None], reward[:, None] + discount[:, None] * boot], dim=1)


def scaled_head_loss(pred: torch.Tensor, target: torch.Tensor, running: list[Optional[float]], *, huber: bool,
                     scale: bool, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' loss: per-sample, per-head error ``[B, k]`` (squared or smooth L1), each head's batch mean folded
    into ``running`` (in place; ``None`` = no value yet: the first batch sets it), then ``mean(err / running)`` with
    ``scale`` (else ``mean(err)``). Returns ``(loss, per-head batch means [k])``."""
    err = F.smooth_l1_loss(pred, target, reduction="none") if huber else (pred - target) ** 2
    head_means = err.mean(dim=0).detach()
    if not scale:
        return err.mean(), head_means
    for j, v in enumerate(head_means.tolist()):
        running[j] = v if running[j] is None else smoothing * running[j] + (1 - smoothing) * v
    denom = torch.tensor(running, dtype=err.dtype, device=err.device)
    return (err / denom).mean(), head_means


def qvi_q_functions(transitions: np.ndarray, rewards: np.ndarray, horizon: int, max_k: int,
                    gamma: float = 1.0) -> tuple[list[np.ndarray], np.ndarray]:
    """Exact ``Q^1 .. Q^max_k`` and ``Q*`` of a tabular finite-horizon MDP, each ``[horizon, S, A]``.

    ``transitions`` ``[S, A, S]`` (probabilities), ``rewards`` ``[S, A]``; the episode lasts ``horizon`` steps.
    ``Q^1`` is the uniform random policy's Q function, ``Q^(j+1)_t(s, a) = R(s, a) + gamma sum_s' P(s'|s, a) max_a'
    Q^j_(t+1)(s', a')`` (one step of Q-value iteration; ``Q_horizon = 0``)."""
    P, R = np.asarray(transitions, np.float64), np.asarray(rewards, np.float64)
    S, A = R.shape
    q_rand = np.zeros((horizon + 1, S, A))
    q_star = np.zeros((horizon + 1, S, A))
    for t in range(horizon - 1, -1, -1):
        q_rand[t] = R + gamma * P @ q_rand[t + 1].mean(axis=1)
        q_star[t] = R + gamma * P @ q_star[t + 1].max(axis=1)
    qs = [q_rand]
    for _ in range(max_k - 1):
        prev = qs[-1]
        nxt = np.zeros_like(prev)
        for t in range(horizon):
            nxt[t] = R + gamma * P @ prev[t + 1].max(axis=1)
        qs.append(nxt)
    return [q[:horizon] for q in qs], q_star[:horizon]


def qvi_min_k(transitions: np.ndarray, rewards: np.ndarray, horizon: int, *, start_state: int = 0, max_k: int = 10,
              gamma: float = 1.0, tol: float = 1e-6) -> Optional[int]:
    """The least k for which the MDP is k-QVI-solvable -- every action greedy on ``Q^k`` (ties included) is optimal in
    every state such actions can reach from ``start_state`` -- as the authors' ``calculate_minimum_k``
    (``EffectiveHorizon.jl/src/value_iteration.jl``); None if no k <= ``max_k`` is."""
    qs, q_star = qvi_q_functions(transitions, rewards, horizon, max_k, gamma)
    P = np.asarray(transitions)
    for k, q in enumerate(qs, 1):
        ok, reach = True, {start_state}
        for t in range(horizon):
            nxt: set[int] = set()
            for s in reach:
                for a in np.flatnonzero(q[t, s] >= q[t, s].max() - tol):
                    if q_star[t, s, a] < q_star[t, s].max() - tol:
                        ok = False
                    nxt.update(np.flatnonzero(P[s, a] > 0).tolist())
            reach = nxt
        if ok:
            return k
    return None


def horizon_estimate(planning_depth: int, episodes_per_timestep: int, num_actions: int) -> float:
    """``max(k, log_A m)``: the effective horizon that a SQIRL run with depth k and m episodes per timestep certifies
    if it solves the task. The effective horizon is ``H_k = k + log_A m_k`` with ``m_k >= 1`` the random rollouts per
    length-k action sequence that estimating ``Q^k`` well enough takes (Laidlaw et al. 2023); SQIRL's m uniformly
    random episodes give each of the ``A^k`` sequences ``m / A^k`` of them, so success with m suggests
    ``H_k <= k + log_A max(m / A^k, 1) = max(k, log_A m)``. An upper estimate from one run, not the authors' tabular
    bound (that needs the MDP enumerated: :func:`qvi_min_k`)."""
    if num_actions < 2:
        return float(planning_depth)
    return max(float(planning_depth), math.log(episodes_per_timestep) / math.log(num_actions))


# ---------------------------------------------------------------------------------------------- networks


class QNetwork(nn.Module):
    """Observation -> ``[B, k, A]`` Q values: the Nature CNN (pixels) or a flatten (states), then an MLP."""

    def __init__(self, observation_space: gym.Space, num_actions: int, planning_depth: int,
                 net_arch: Optional[tuple[int, ...]]) -> None:
        super().__init__()
        shape = observation_space.shape
        self.pixels = len(shape) == 3 and observation_space.dtype == np.uint8
        if self.pixels:
            self.encoder: nn.Module = NatureCNN(shape[0], (shape[1], shape[2]), out_dim=512)
            in_dim = self.encoder.repr_dim
            hidden = () if net_arch is None else net_arch
        else:
            self.encoder = nn.Flatten()
            in_dim = int(np.prod(shape))
            hidden = (64, 64) if net_arch is None else net_arch
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        layers.append(nn.Linear(in_dim, planning_depth * num_actions))
        self.head = nn.Sequential(*layers)
        self.k, self.num_actions = planning_depth, num_actions

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs if self.pixels else obs.float()
        return self.head(self.encoder(x)).reshape(-1, self.k, self.num_actions)


# ---------------------------------------------------------------------------------------------- the agent


class SQIRLAgent:
    """The learner of SQIRL: a k-head Q network, its regression (:meth:`update`), the per-timestep frozen policies
    (:meth:`freeze`, :meth:`greedy`) and acting by the episode's timestep (:meth:`act`, :meth:`begin_episode`)."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: SQIRLConfig | None = None,
                 device: str | torch.device = "cpu") -> None:
        cfg = cfg or SQIRLConfig()
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ConfigError(f"SQIRL needs a discrete action space, got {action_space}; use an ale/ env or a "
                              "discrete gym/ task (e.g. gym/CartPole-v1)")
        if not isinstance(observation_space, gym.spaces.Box) or not (
                len(observation_space.shape) == 3 and observation_space.dtype == np.uint8
                or len(observation_space.shape) == 1):
            raise ConfigError(f"SQIRL takes pixel (uint8 [C, H, W]) or state (float [d]) observations, got "
                              f"{observation_space}; use --obs pixels or --obs state")
        self.cfg = cfg
        self.device = torch.device(device)
        self.observation_space, self.action_space = observation_space, action_space
        self.num_actions = int(action_space.n)
        self.action_start = int(getattr(action_space, "start", 0))
        self.q = QNetwork(observation_space, self.num_actions, cfg.planning_depth, cfg.net_arch).to(self.device)
        self.opt = torch.optim.Adam(self.q.parameters(), lr=cfg.lr)
        self.loss_running: list[Optional[float]] = [None] * cfg.planning_depth
        self.policies: list[dict[str, torch.Tensor]] = []
        self.updates = 0
        self._t = 0
        self._rng = np.random.default_rng(int(torch.initial_seed()) % 2**32)

    # ---- acting -------------------------------------------------------------------------------------------
    @property
    def horizon(self) -> int:
        """Timesteps with a frozen policy."""
        return len(self.policies)

    def _obs(self, obs: Any) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(obs), device=self.device)
        return x if x.dtype == torch.uint8 else x.float()

    def q_values(self, obs: torch.Tensor, t: Optional[int] = None) -> torch.Tensor:
        """``[B, k, A]`` Q values of the policy frozen for timestep ``t`` (None or ``t >= horizon``: the current
        network)."""
        if t is None or t >= len(self.policies):
            return self.q(obs)
        return torch.func.functional_call(self.q, self.policies[t], (obs,))

    @torch.no_grad()
    def greedy(self, obs_batch: Any, t: int) -> np.ndarray:
        """Greedy actions (on the last head) of timestep ``t``'s policy for a batch of observations."""
        q = self.q_values(self._obs(obs_batch), t)
        return q[:, -1].argmax(dim=1).cpu().numpy().astype(np.int64) + self.action_start

    def begin_episode(self) -> None:
        """A new episode starts: the next :meth:`act` is timestep 0."""
        self._t = 0

    def act(self, obs: Any, *, step: int = 0, eval_mode: bool = True) -> int:
        """The action at the episode's current timestep (the calls since :meth:`begin_episode`), then that count
        advances. ``step`` (the trainer's agent step) is not used: SQIRL's policy depends on the timestep."""
        t = self._t
        self._t += 1
        if not eval_mode and t >= len(self.policies):
            return int(self.action_start + self._rng.integers(self.num_actions))
        return int(self.greedy(np.asarray(obs)[None], t)[0])

    # ---- learning -----------------------------------------------------------------------------------------
    def update(self, batch: Batch, *, step: int = 0) -> dict[str, float]:
        """One gradient step on a batch of stored transitions: ``batch.extras['mc_return']`` ``[B, 1]`` the
        Monte-Carlo return, ``batch.reward`` ``[B, 1]`` the reward, ``batch.discount`` ``[B, 1]`` gamma or 0 at an
        episode's last step."""
        cfg = self.cfg
        scale = cfg.reward_scale
        mc = batch.extras["mc_return"].reshape(-1).float() * scale
        reward = batch.reward.reshape(-1).float() * scale
        discount = batch.discount.reshape(-1).float()
        action = batch.action.reshape(-1).long() - self.action_start
        with torch.no_grad():
            next_q = self.q(batch.next_obs) if cfg.planning_depth > 1 else None
            target = sqirl_targets(mc, reward, discount, next_q)
        q = self.q(batch.obs)
        pred = q[torch.arange(q.shape[0], device=q.device), :, action]  # [B, k]
        loss, head = scaled_head_loss(pred, target, self.loss_running, huber=cfg.huber_loss,
                                      scale=cfg.scale_losses, smoothing=cfg.loss_scale_smoothing)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.q.parameters(), cfg.max_grad_norm)
        self.opt.step()
        self.updates += 1
        out = {"loss": float(loss.item()), "grad_norm": float(grad_norm)}
        for j, v in enumerate(head.tolist(), 1):
            out[f"q{j}_loss"] = v
        out["q_mean"] = float(pred[:, -1].mean().item())
        return out

    def freeze(self) -> None:
        """Freeze the current network as the policy of the next timestep (``horizon`` grows by one)."""
        self.policies.append({k: v.detach().clone() for k, v in self.q.named_parameters()})

    # ---- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Network, optimizer, loss scales, counters, acting RNG and the frozen policies (each parameter stacked
        over timesteps, ``[horizon, ...]``)."""
        names = [k for k, _ in self.q.named_parameters()]
        policies = {k: torch.stack([p[k] for p in self.policies]) for k in names} if self.policies else {}
        return {"q": dict(self.q.state_dict()), "opt": self.opt.state_dict(), "loss_running": list(self.loss_running),
                "updates": self.updates, "horizon": len(self.policies), "policies": policies,
                "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        horizon = int(state["horizon"])
        names = [k for k, _ in self.q.named_parameters()]
        stacked = state["policies"]
        if horizon and (set(stacked) != set(names) or any(stacked[k].shape[0] != horizon for k in names)):
            raise ValueError(f"frozen policies do not fit the network (parameters {sorted(stacked)} vs {names})")
        running = list(state["loss_running"])
        if len(running) != self.cfg.planning_depth:
            raise ValueError(f"the checkpoint has {len(running)} Q heads, the config planning_depth "
                             f"{self.cfg.planning_depth}")
        self.q.load_state_dict(state["q"])
        self.opt.load_state_dict(state["opt"])
        self.loss_running = [None if v is None else float(v) for v in running]
        self.updates = int(state["updates"])
        self.policies = [{k: stacked[k][t].to(self.device).clone() for k in names} for t in range(horizon)]
        rng = state["rng"]
        self._rng.bit_generator.state = {**rng, "state": {k: int(v) for k, v in rng["state"].items()}}
