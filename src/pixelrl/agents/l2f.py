"""The learner of "Learning to Fly in Seconds" (Eschmann et al. 2023): TD3 with an asymmetric actor-critic.

Facts from the authors' code (arplaboratory/learning-to-fly with rl_tools @3a612e2, its ``td3`` loop):

- actor: 146 -> 64 -> 64 -> 4, tanh hidden and output; it sees noisy p, R, v, ω and its last 32 actions;
- two critics: 28 + 4 -> 64 -> 64 -> 1, tanh hidden, linear output; they see the privileged state (no noise, the
  episode's disturbance force and torque, the normalised RPMs) and no action history;
- Adam lr 1e-3, β 0.9 / 0.999, eps 1e-8; decoupled weight decay θ -= 5e-5·θ per step on weights (not biases, not
  scaled by the lr); batch 256; γ 0.99; τ 0.005; target-policy noise σ 0.2 clipped at ±0.5; exploration N(0, 0.1)
  from step 0 (no random warm-up);
- schedule per env step: if step > 15 000 and step % 10 == 0, each critic trains on its own batch with its own
  target noise (target = min of both target critics), then both target critics move; if step > 30 000 and
  step % 20 == 0, the actor (loss -Q₁) trains and its target moves;
- reward curriculum every 100k env steps before the run's last (100k and 200k in the paper's 300k run): action
  weight ×1.4 (cap 1), position ×1.2 (cap 40), velocity ×1.4 (cap 1); the replay's rewards are recomputed from the
  stored pre-step states after each change;
- from 500k env steps on, every 100k: exploration σ, target-noise σ and its clip ×0.9 (inactive at ≤ 500k).

Speed: at this size the cost is per-call overhead, not arithmetic, so the networks are NumPy arrays with a
hand-written backward pass and one fused Adam step over a flat parameter vector per network set (gradients checked
against torch autograd in ``tests/agents/test_l2f.py``). K seeds train as one computation: every array has a
leading model axis (K actors, 2K critics), so K seeds cost far less than K times one seed. One NumPy ``Generator``
drives all K seeds: a K-seed run is not K one-seed runs bit for bit (each seed's draws differ), but it is
deterministic for a given seed and K.

Replay: one buffer per seed holding the whole run; per transition the actor's 146-d observation, the next one's
noisy state (18; its action history is the stored one shifted by the action taken, so 146-d observations are not
stored twice), the privileged critic state (28) before and after, the executed action, the reward and the
termination flag. The reward is recomputed from the stored critic state (p, v, and 1 - q_w² = (3 - trace R)/4) and
action. (Rebuilding histories from the stored actions at sample time instead costs 32 random
reads per sample: 30x slower on this CPU for 10 seeds.)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from pixelrl.envs.builtin import quadrotor as Q
from pixelrl.errors import ConfigError

__all__ = ["L2FConfig", "L2FAgent", "MLPStack", "Adam", "SUMMARY", "preset", "curriculum_schedule", "curriculum_weights",
           "noise_scale"]

SUMMARY = "Learning to Fly in Seconds: TD3, asymmetric actor-critic, reward curriculum (builtin/quadrotor-hover)"


@dataclass(frozen=True)
class L2FConfig:
    """The learner of Learning to Fly in Seconds; defaults are the authors' (learning-to-fly ``src/config``,
    rl_tools td3), checked line by line against arplaboratory/learning-to-fly with its rl_tools submodule @3a612e2.

    Remaining deviations, none of which changes the algorithm: (1) exact tanh where rl_tools uses its ``FAST_TANH``
    (the Padé form x(27 + x²)/(27 + 9x²) on x clamped to ±3, with derivative 1 − y²), to keep NumPy's single ufunc;
    (2) float64 simulation and float32 networks (theirs: float32 throughout), free on this CPU; (3) the schedule
    counts env steps from 1 after the step (theirs from 0 before it): the same updates, one step later; (4) the
    noisy observation stored as a transition's next observation is the one the actor sees at the next step (rl_tools
    draws the observation noise again), which saves one draw per step; (5) one NumPy generator for all K seeds
    of a batched run. Running the authors' own code on this machine (``benchmarks/results/quadrotor_hover_authors_code
    .json``) gives the same learning curve as this learner: no hover before ~200k steps, and at 300k a policy that
    survives most starts but holds position 0.3-0.5 m off the target. This learner's 10 seeds end 0.14-0.40 m off
    with the disturbances switched off: a set-point error of the still-training actor that wanders from evaluation
    to evaluation, not a thrust bias (``docs/envs/quadrotor.md``, "Why the policies end off target")."""

    seeds: int = 1
    """Seeds trained together as one batched computation (K actors, 2K critics, K simulators, K buffers). The run's
    ``--seed`` seeds the one generator they share; evaluation and checkpoints report each seed."""
    hidden: int = 64
    """Width of both hidden layers of the actor and the critics (tanh)."""
    history: int = 32
    """Past actions in the actor's observation (oldest first)."""
    lr: float = 1e-3
    """Adam learning rate (actor and critics)."""
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 5e-5
    """Decoupled weight decay per update, not scaled by the lr: θ -= weight_decay·θ, weights only (rl_tools'
    Adam with weight decay 1e-4 applied as 0.5·1e-4)."""
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    """Polyak rate of the target networks."""
    target_noise: float = 0.2
    """σ of the target-policy smoothing noise."""
    target_noise_clip: float = 0.5
    exploration_noise: float = 0.1
    """σ of the Gaussian exploration noise added to the actor's action (then clipped to [-1, 1]), from step 0."""
    exploration_decay: float = 0.9
    """From ``exploration_decay_start`` on, every ``curriculum_every`` env steps, the exploration σ, the target-noise
    σ and its clip are multiplied by this (learning-to-fly's ``EXPLORATION_NOISE_DECAY``, on in its default ablation
    spec, ``src/steps/curriculum.h``); 1 switches it off. It never acts in runs of 500k steps or fewer."""
    exploration_decay_start: int = 500_000
    """First env step of the noise decay (the authors' 500k)."""
    critic_start: int = 15_000
    """Critics train when env step > critic_start ..."""
    critic_every: int = 10
    """... and step % critic_every == 0."""
    actor_start: int = 30_000
    """The actor trains when env step > actor_start ..."""
    actor_every: int = 20
    """... and step % actor_every == 0."""
    curriculum_steps: tuple[int, ...] = ()
    """Env steps at which the reward weights grow. Empty (the default): the authors' rule (learning-to-fly
    ``src/steps/curriculum.h``), every ``curriculum_every`` env steps before the run's last step: 100k and 200k for
    the paper's 300k run, 100k ... 900k for a 1M run. A list replaces the rule (e.g. ``100000 200000`` keeps the 300k
    run's weights in a longer run)."""
    curriculum_every: int = 100_000
    """Spacing of the authors' curriculum rule (used when ``curriculum_steps`` is empty) and of the noise decay."""
    curriculum_position: float = 1.2
    curriculum_position_cap: float = 40.0
    curriculum_velocity: float = 1.4
    curriculum_velocity_cap: float = 1.0
    curriculum_action: float = 1.4
    curriculum_action_cap: float = 1.0
    replay_capacity: int = 0
    """Transitions kept per seed; 0 = the whole run (the authors keep all 300,001)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"l2f: {f.name} must be a finite number, got {v}")
        factors = ("curriculum_position", "curriculum_position_cap", "curriculum_velocity", "curriculum_velocity_cap",
                   "curriculum_action", "curriculum_action_cap")
        for name in factors:
            if not getattr(self, name) > 0:
                raise ConfigError(f"l2f: {name} must be > 0, got {getattr(self, name)}")
        checks = [
            (self.seeds >= 1, f"seeds must be >= 1, got {self.seeds}"),
            (self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}"),
            (self.history >= 0, f"history must be >= 0, got {self.history}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1, "adam betas must be in [0, 1)"),
            (self.adam_eps > 0, f"adam_eps must be > 0, got {self.adam_eps}"),
            (0 <= self.weight_decay < 1, f"weight_decay must be in [0, 1), got {self.weight_decay}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (0 <= self.gamma <= 1, f"gamma must be in [0, 1], got {self.gamma}"),
            (0 < self.tau <= 1, f"tau must be in (0, 1], got {self.tau}"),
            (self.target_noise >= 0 and self.target_noise_clip >= 0, "target noise and its clip must be >= 0"),
            (self.exploration_noise >= 0, f"exploration_noise must be >= 0, got {self.exploration_noise}"),
            (self.critic_start >= 0 and self.actor_start >= 0, "critic_start and actor_start must be >= 0"),
            (self.critic_every >= 1 and self.actor_every >= 1, "critic_every and actor_every must be >= 1"),
            (all(s > 0 for s in self.curriculum_steps), "curriculum_steps must be positive env steps"),
            (self.curriculum_every >= 1, f"curriculum_every must be >= 1, got {self.curriculum_every}"),
            (0 < self.exploration_decay <= 1, f"exploration_decay must be in (0, 1], got {self.exploration_decay}"),
            (self.exploration_decay_start >= 0, "exploration_decay_start must be >= 0"),
            (self.replay_capacity >= 0, f"replay_capacity must be >= 0 (0 = the whole run), got "
                                        f"{self.replay_capacity}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"l2f: {msg}")

    @property
    def obs_dim(self) -> int:
        return 18 + 4 * self.history


def preset(env_id: str, obs: str = "state") -> dict:
    """The paper's run (trainer fields): 300k env steps with state observations; the success test on 100 starts
    every 50k steps; a checkpoint every 100k."""
    return {"frames": 300_000, "obs": "state", "eval_every_frames": 50_000, "eval_episodes": 100,
            "checkpoint_every_frames": 100_000}


def curriculum_schedule(cfg: L2FConfig, run_steps: int = 300_000) -> tuple[int, ...]:
    """The env steps at which the reward weights grow in a run of ``run_steps``: ``cfg.curriculum_steps`` when
    given, else the authors' rule (every ``curriculum_every`` steps, the run's last step excluded)."""
    if cfg.curriculum_steps:
        return tuple(cfg.curriculum_steps)
    return tuple(range(cfg.curriculum_every, run_steps, cfg.curriculum_every))


def noise_scale(cfg: L2FConfig, step: int) -> float:
    """The factor on the exploration σ, the target-noise σ and its clip in force after env ``step``: one
    ``exploration_decay`` per multiple of ``curriculum_every`` at or after ``exploration_decay_start`` up to ``step``
    (the authors decay at ``step % 100000 == 0 and step >= 500000``)."""
    if cfg.exploration_decay == 1.0 or step < cfg.exploration_decay_start:
        return 1.0
    every = cfg.curriculum_every
    first = -(-cfg.exploration_decay_start // every) * every
    n = 0 if step < first else (step - first) // every + 1
    return float(cfg.exploration_decay ** n)


def curriculum_weights(cfg: L2FConfig, step: int, run_steps: int = 300_000) -> Q.RewardWeights:
    """The reward weights in force at env ``step`` of a run of ``run_steps`` (after every curriculum step ≤
    ``step``)."""
    w = Q.TRAIN_START_WEIGHTS
    p, v, a = w.position, w.linear_velocity, w.action
    for s in curriculum_schedule(cfg, run_steps):
        if step >= s:
            p = min(p * cfg.curriculum_position, cfg.curriculum_position_cap)
            v = min(v * cfg.curriculum_velocity, cfg.curriculum_velocity_cap)
            a = min(a * cfg.curriculum_action, cfg.curriculum_action_cap)
    return Q.RewardWeights(position=p, orientation=w.orientation, linear_velocity=v, action=a)


# ---- NumPy networks ----------------------------------------------------------------------------------------------


class MLPStack:
    """M independent MLPs ``dims[0] -> ... -> dims[-1]`` (tanh hidden, tanh or linear output) as one flat float32
    parameter array ``[M, P]`` with views per layer; forward / backward for a batch ``[M, B, dims[0]]``."""

    def __init__(self, m: int, dims: tuple[int, ...], out_tanh: bool, rng: np.random.Generator) -> None:
        self.m, self.dims, self.out_tanh = m, dims, out_tanh
        self.shapes = []
        off = 0
        for din, dout in zip(dims[:-1], dims[1:]):
            self.shapes.append((off, din, dout))
            off += din * dout + dout
        self.size = off
        self.flat = np.zeros((m, off), np.float32)
        self.weight_mask = np.zeros(off, np.float32)
        for (o, din, dout), (w, b) in zip(self.shapes, self.views(self.flat)):
            bound = 1.0 / math.sqrt(din)  # torch.nn.Linear's default init
            w[...] = rng.uniform(-bound, bound, w.shape)
            b[...] = rng.uniform(-bound, bound, b.shape)
            self.weight_mask[o:o + din * dout] = 1.0
        self.grad = np.zeros_like(self.flat)
        self.p = self.views(self.flat)
        self.g = self.views(self.grad)

    def views(self, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for o, din, dout in self.shapes:
            out.append((flat[:, o:o + din * dout].reshape(flat.shape[0], din, dout),
                        flat[:, o + din * dout:o + din * dout + dout].reshape(flat.shape[0], 1, dout)))
        return out

    def forward(self, x: np.ndarray, params=None, cache: bool = False):
        """``x`` ``[M, B, in]`` -> ``[M, B, out]`` (with ``params`` = another flat array's :meth:`views`, e.g. the
        target's). With ``cache`` also the activations for :meth:`backward`."""
        params = self.p if params is None else params
        acts = [x]
        h = x
        last = len(params) - 1
        for i, (w, b) in enumerate(params):
            h = np.matmul(h, w)
            h += b
            if i < last or self.out_tanh:
                np.tanh(h, out=h)
            acts.append(h)
        return (h, acts) if cache else h

    def backward(self, dy: np.ndarray, acts: list, need_dx: bool = False):
        """Gradients of ``sum(dy * y)`` into ``self.grad`` (overwritten); returns dL/dx when ``need_dx``."""
        last = len(self.p) - 1
        d = dy * (1.0 - acts[-1] * acts[-1]) if self.out_tanh else dy
        for i in range(last, -1, -1):
            w, _ = self.p[i]
            gw, gb = self.g[i]
            np.matmul(acts[i].transpose(0, 2, 1), d, out=gw)
            gb[...] = d.sum(1, keepdims=True)
            if i > 0 or need_dx:
                d = np.matmul(d, w.transpose(0, 2, 1))
                if i > 0:
                    d *= 1.0 - acts[i] * acts[i]
        return d if need_dx else None


class Adam:
    """Adam over a flat ``[M, P]`` array plus rl_tools' decoupled weight decay (θ -= wd·θ on weights)."""

    def __init__(self, net: MLPStack, cfg: L2FConfig) -> None:
        self.net, self.cfg = net, cfg
        self.m = np.zeros_like(net.flat)
        self.v = np.zeros_like(net.flat)
        self.t = 0
        self.decay = (1.0 - cfg.weight_decay * net.weight_mask).astype(np.float32)

    def step(self) -> None:
        c, g, p = self.cfg, self.net.grad, self.net.flat
        self.t += 1
        self.m *= c.adam_beta1
        self.m += (1 - c.adam_beta1) * g
        self.v *= c.adam_beta2
        g *= g
        g *= 1 - c.adam_beta2
        self.v += g
        lr = c.lr * math.sqrt(1 - c.adam_beta2 ** self.t) / (1 - c.adam_beta1 ** self.t)
        eps = c.adam_eps * math.sqrt(1 - c.adam_beta2 ** self.t)
        np.sqrt(self.v, out=g)
        g += eps
        np.divide(self.m, g, out=g)
        g *= lr
        p -= g
        if c.weight_decay:
            p *= self.decay


def _polyak(target: np.ndarray, online: np.ndarray, tau: float) -> None:
    target *= 1.0 - tau
    target += tau * online


# ---- the learner ---------------------------------------------------------------------------------------------------


class L2FAgent:
    """K seeds of the learner. The trainer (:mod:`pixelrl.train.l2f`) calls :meth:`act` with the K actor
    observations, :meth:`add` with each step's transitions and :meth:`train_step` once per env step, which runs the
    schedule (critics, actor, curriculum). For ``pixelrl eval``, :meth:`act` also takes one 146-d observation."""

    def __init__(self, observation_space, action_space, cfg: L2FConfig, device="cpu", *, capacity: int = 300_001,
                 seed: int = 0, run_steps: int | None = None) -> None:
        if not isinstance(cfg, L2FConfig):
            raise ConfigError(f"l2f needs an L2FConfig, got {type(cfg).__name__}")
        if observation_space is not None and tuple(observation_space.shape) != (cfg.obs_dim,):
            raise ConfigError(f"l2f's actor reads the {cfg.obs_dim}-d observation of builtin/quadrotor-hover "
                              f"(obs='state'); this env gives {tuple(observation_space.shape)}: use "
                              "--env builtin/quadrotor-hover --obs state")
        if action_space is not None and tuple(action_space.shape) != (4,):
            raise ConfigError(f"l2f drives the 4 motors of builtin/quadrotor-hover; this env has actions of shape "
                              f"{tuple(action_space.shape)}")
        self.cfg = cfg
        k, h = cfg.seeds, cfg.hidden
        self.k = k
        self.rng = np.random.default_rng(seed)
        self.actor = MLPStack(k, (cfg.obs_dim, h, h, 4), True, self.rng)
        self.critic = MLPStack(2 * k, (Q.CRITIC_DIM + 4, h, h, 1), False, self.rng)  # [critic 1 x K, critic 2 x K]
        self.actor_target = self.actor.flat.copy()
        self.critic_target = self.critic.flat.copy()
        self.actor_target_p = self.actor.views(self.actor_target)
        self.critic_target_p = self.critic.views(self.critic_target)
        self.actor_opt, self.critic_opt = Adam(self.actor, cfg), Adam(self.critic, cfg)
        cap = cfg.replay_capacity or capacity
        self.capacity = cap
        f32 = np.float32
        self.buf = {
            "aobs": np.zeros((k, cap, cfg.obs_dim), f32), "anext": np.zeros((k, cap, 18), f32),
            "cobs": np.zeros((k, cap, Q.CRITIC_DIM), f32), "cnext": np.zeros((k, cap, Q.CRITIC_DIM), f32),
            "action": np.zeros((k, cap, 4), f32), "reward": np.zeros((k, cap), f32),
            "term": np.zeros((k, cap), bool),
        }
        self.size = 0  # transitions per seed (all seeds step together)
        self.ptr = 0
        self._unrewarded = 0  # transitions added since the last flush_rewards
        self.run_steps = capacity - 1 if run_steps is None else int(run_steps)
        """The run's length in env steps (the authors' curriculum rule stops before its last step)."""
        self.curriculum = curriculum_schedule(cfg, self.run_steps)
        self.weights = curriculum_weights(cfg, 0, self.run_steps)
        self.noise_scale = 1.0
        """Factor on the exploration and target-policy noise (the authors' decay after 500k steps)."""
        self.updates = {"critic": 0, "actor": 0}
        self._seed_index = np.arange(k)[:, None]

    # ---- acting -----------------------------------------------------------------------------------------------
    def act(self, obs, *, step: int = 0, eval_mode: bool = False, noise: np.ndarray | None = None) -> np.ndarray:
        """Actions for ``obs`` ``[K, 146]`` (or one ``[146]`` observation: seed 0's actor); exploration noise
        N(0, σ) unless ``eval_mode`` (``noise``: pre-drawn N(0, σ) noise of the actions' shape, else drawn here),
        clipped to [-1, 1]."""
        x = np.asarray(obs, np.float32)
        single = x.ndim == 1
        if single:
            a = self.actor.forward(x[None, None], [(w[:1], b[:1]) for w, b in self.actor.p])[0, 0]
        else:
            a = self.actor.forward(x[:, None])[:, 0]
        if not eval_mode and self.cfg.exploration_noise > 0:
            a += self.rng.normal(0.0, self.exploration_sigma, a.shape) if noise is None else noise
            np.clip(a, -1.0, 1.0, out=a)
        return a.astype(np.float32, copy=False)

    @property
    def exploration_sigma(self) -> float:
        """σ of the exploration noise in force (the config's, times the decay after 500k steps)."""
        return self.cfg.exploration_noise * self.noise_scale

    # ---- replay ---------------------------------------------------------------------------------------------------
    def add(self, aobs, cobs, action, anext, cnext, term) -> None:
        """Store one transition per seed: the full actor observation ``aobs`` ``[K, 146]``, the next one's noisy
        state ``anext`` ``[K, 18]`` (its history is ``aobs``'s shifted by ``action``), the critic states. Its reward is
        computed later, in one vectorised call for all transitions added since the last :meth:`flush_rewards`."""
        b, i = self.buf, self.ptr
        b["aobs"][:, i], b["anext"][:, i], b["cobs"][:, i], b["cnext"][:, i] = aobs, anext, cobs, cnext
        b["action"][:, i] = action
        b["term"][:, i] = term
        self.ptr = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self._unrewarded += 1

    def _reward(self, cobs, action, term) -> np.ndarray:
        """:func:`~pixelrl.envs.builtin.quadrotor.reward` from the stored critic state: 1 − q_w² = (3 − trace R)/4."""
        w = self.weights
        cost = (w.position * (cobs[..., 0:3] ** 2).sum(-1) + w.orientation * (0.75 - 0.25 * (
            cobs[..., 3] + cobs[..., 7] + cobs[..., 11])) + w.linear_velocity * (cobs[..., 12:15] ** 2).sum(-1)
            + w.action * ((action - Q.HOVER_ACTION) ** 2).sum(-1))
        r = w.constant - w.scale * cost
        r[term] = 0.0
        return r

    def _fill_rewards(self, start: int, stop: int) -> None:
        b = self.buf
        b["reward"][:, start:stop] = self._reward(b["cobs"][:, start:stop], b["action"][:, start:stop],
                                                  b["term"][:, start:stop])

    def flush_rewards(self) -> None:
        """Compute the rewards of the transitions added since the last call, with the weights in force (one
        vectorised call instead of one per env step; the updates call it before sampling)."""
        n, self._unrewarded = self._unrewarded, 0
        if n >= self.size:
            self._fill_rewards(0, self.size)
        elif n > 0:
            start = self.ptr - n
            if start >= 0:
                self._fill_rewards(start, self.ptr)
            else:  # wrapped around the ring
                self._fill_rewards(start % self.capacity, self.capacity)
                self._fill_rewards(0, self.ptr)

    def recent_return(self, seed: int, length: int) -> float:
        """Sum of the rewards of seed ``seed``'s last ``length`` transitions (the episode that just ended)."""
        self.flush_rewards()
        n = min(length, self.size)
        return float(self.buf["reward"][seed, (self.ptr - 1 - np.arange(n)) % self.capacity].sum())

    def recompute_rewards(self) -> None:
        """Rewrite every stored reward with the current curriculum weights."""
        self._unrewarded = 0
        self._fill_rewards(0, self.size)

    def _actor_input(self, idx, seed_idx, nxt: bool) -> np.ndarray:
        """The 146-d actor observation before (or after, ``nxt``) transitions ``idx``: ``[..., 146]``. The next
        observation is the stored next state, the stored history without its oldest action, and the action taken."""
        obs = self.buf["aobs"][seed_idx, idx]
        if not nxt:
            return obs
        h = 18 + 4 if self.cfg.history else 18
        parts = [self.buf["anext"][seed_idx, idx], obs[..., h:]]
        if self.cfg.history:
            parts.append(self.buf["action"][seed_idx, idx])
        return np.concatenate(parts, -1)

    # ---- the schedule ---------------------------------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, float]:
        """Run what the schedule asks at env ``step`` (1-based count of env steps taken): the curriculum, the
        critics, the actor. Returns the metrics of the updates that ran (empty when none did)."""
        c = self.cfg
        out: dict[str, float] = {}
        if step in self.curriculum:
            self.weights = curriculum_weights(c, step, self.run_steps)
            self.recompute_rewards()
            out["curriculum_position_weight"] = self.weights.position
        if c.exploration_decay != 1.0 and step >= c.exploration_decay_start and step % c.curriculum_every == 0:
            self.noise_scale = noise_scale(c, step)
            out["noise_scale"] = self.noise_scale
        if step > c.critic_start and step % c.critic_every == 0 and self.size > 0:
            out.update(self.update_critics())
        if step > c.actor_start and step % c.actor_every == 0 and self.size > 0:
            out.update(self.update_actor())
        return out

    def update_critics(self) -> dict[str, float]:
        self.flush_rewards()
        c, k, bs = self.cfg, self.k, self.cfg.batch_size
        idx = self.rng.integers(0, self.size, (2, k, bs))  # each critic its own batch
        sidx = np.broadcast_to(self._seed_index, (2, k, bs))
        b = self.buf
        # target actions from the target actor, per batch its own smoothing noise
        an = self._actor_input(idx, sidx, True)  # [2, K, B, 146]
        an = an.transpose(1, 0, 2, 3).reshape(k, 2 * bs, -1)
        a_next = self.actor.forward(an, self.actor_target_p).reshape(k, 2, bs, 4).transpose(1, 0, 2, 3)
        sd, clip = c.target_noise * self.noise_scale, c.target_noise_clip * self.noise_scale
        noise = np.clip(self.rng.normal(0.0, sd, a_next.shape), -clip, clip)
        a_next = np.clip(a_next + noise, -1.0, 1.0).astype(np.float32)
        x_next = np.concatenate([b["cnext"][sidx, idx], a_next], -1)  # [2 batches, K, B, 32]
        # both target critics on both batches: [2 critics, K, 2 batches * B, 32]
        xt = np.broadcast_to(x_next.transpose(1, 0, 2, 3).reshape(1, k, 2 * bs, -1), (2, k, 2 * bs, x_next.shape[-1]))
        q_next = self.critic.forward(xt.reshape(2 * k, 2 * bs, -1), self.critic_target_p).reshape(2, k, 2, bs)
        q_next = q_next.min(0).transpose(1, 0, 2)  # [2 batches, K, B]
        # np.where, not a product: a terminal next state may hold huge values (a vehicle spun past 1000 rad/s)
        y = b["reward"][sidx, idx] + c.gamma * np.where(b["term"][sidx, idx], 0.0, q_next)
        x = np.concatenate([b["cobs"][sidx, idx], b["action"][sidx, idx]], -1).reshape(2 * k, bs, -1)
        q, acts = self.critic.forward(x, cache=True)
        err = q[..., 0] - y.reshape(2 * k, bs)
        self.critic.backward((2.0 / bs) * err[..., None], acts)
        self.critic_opt.step()
        _polyak(self.critic_target, self.critic.flat, c.tau)
        self.updates["critic"] += 1
        return {"critic_loss": float((err * err).mean()), "q": float(q.mean())}

    def update_actor(self) -> dict[str, float]:
        c, k, bs = self.cfg, self.k, self.cfg.batch_size
        idx = self.rng.integers(0, self.size, (k, bs))
        sidx = np.broadcast_to(self._seed_index, (k, bs))
        a, a_acts = self.actor.forward(self._actor_input(idx, sidx, False), cache=True)
        x = np.concatenate([self.buf["cobs"][sidx, idx], a], -1)
        # critic 1 only (the first K critic models), its weights untouched
        p1 = [(w[:k], bb[:k]) for w, bb in self.critic.p]
        h = x
        hs = [x]
        for i, (w, bb) in enumerate(p1):
            h = np.matmul(h, w) + bb
            if i < len(p1) - 1:
                h = np.tanh(h)
            hs.append(h)
        d = np.full_like(h, -1.0 / bs)  # d(-mean Q)/dQ
        for i in range(len(p1) - 1, -1, -1):
            d = np.matmul(d, p1[i][0].transpose(0, 2, 1))
            if i > 0:
                d *= 1.0 - hs[i] * hs[i]
        self.actor.backward(d[..., -4:], a_acts)
        self.actor_opt.step()
        _polyak(self.actor_target, self.actor.flat, c.tau)
        self.updates["actor"] += 1
        return {"actor_loss": float(-h.mean())}

    # ---- checkpoints ------------------------------------------------------------------------------------------------
    def state_dict(self, replay: bool = True) -> dict:
        self.flush_rewards()
        s = {"actor": self.actor.flat, "critic": self.critic.flat, "actor_target": self.actor_target,
             "critic_target": self.critic_target, "actor_m": self.actor_opt.m, "actor_v": self.actor_opt.v,
             "critic_m": self.critic_opt.m, "critic_v": self.critic_opt.v,
             "counters": np.array([self.actor_opt.t, self.critic_opt.t, self.size, self.ptr, self.updates["critic"],
                                   self.updates["actor"]], np.int64),
             "rng": np.frombuffer(_rng_bytes(self.rng), np.uint8)}
        if replay:
            s.update({f"replay_{n}": v[:, :self.size] for n, v in self.buf.items()})
        return {k: np.ascontiguousarray(v) for k, v in s.items()}

    def load_state_dict(self, s: dict) -> None:
        for name, arr in (("actor", self.actor.flat), ("critic", self.critic.flat), ("actor_target", self.actor_target),
                          ("critic_target", self.critic_target), ("actor_m", self.actor_opt.m),
                          ("actor_v", self.actor_opt.v), ("critic_m", self.critic_opt.m),
                          ("critic_v", self.critic_opt.v)):
            src = np.asarray(s[name])
            if src.shape != arr.shape:
                raise ConfigError(f"l2f checkpoint: {name} has shape {src.shape}, this agent {arr.shape} (different "
                                  "--agent.seeds or --agent.hidden?)")
            arr[...] = src
        if "counters" in s:
            t_a, t_c, size, ptr, uc, ua = (int(v) for v in np.asarray(s["counters"]))
            self.actor_opt.t, self.critic_opt.t, self.size, self.ptr = t_a, t_c, size, ptr
            self._unrewarded = 0
            self.updates = {"critic": uc, "actor": ua}
            for n, v in self.buf.items():
                if f"replay_{n}" in s:
                    v[:, :size] = np.asarray(s[f"replay_{n}"])
            self.rng = _rng_from_bytes(np.asarray(s["rng"], np.uint8).tobytes())

    def set_step(self, step: int) -> None:
        """Put the reward weights and the noise scale of env ``step`` in force (after a resume) and recompute the
        replay's rewards."""
        self.weights = curriculum_weights(self.cfg, step, self.run_steps)
        self.noise_scale = noise_scale(self.cfg, step)
        self.recompute_rewards()


def _rng_bytes(rng: np.random.Generator) -> bytes:
    import json

    return json.dumps(rng.bit_generator.state).encode()


def _rng_from_bytes(data: bytes) -> np.random.Generator:
    import json

    state = json.loads(data.decode())
    bg = getattr(np.random, state["bit_generator"])()
    bg.state = state
    return np.random.Generator(bg)
