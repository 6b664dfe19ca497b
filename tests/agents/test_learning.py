"""Agents learn: DrQ-v2 and the DrM, TACO and MENTOR presets (their mechanisms switched on, with intervals short
enough that each fires during the run) on a fast task reach an evaluation return well above a random policy's.
A mechanism that breaks learning (a perturbation that wrecks the nets, an exploration std stuck high, an auxiliary
loss that swamps the critic) fails these. Each runs a few seconds on one CPU thread: a 1-D reach task on states,
tiny nets, 800 updates."""


import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents import agent_preset, merge_overrides, nest_overrides
from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.data.replay import ReplayBuffer, sample_kwargs
from pixelrl.utils.dataclass_io import from_dict


class Reach(gym.Env):
    """Move a point on [-1, 1] to a goal: obs ``(x, goal)``, action ``a`` in [-1, 1], ``x <- clip(x + 0.25 a)``,
    reward ``1 - |x - goal|`` per step, 25 steps. A random policy gets ~9, one that walks to the goal and stays ~22."""

    STEPS = 25

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.goal = self.np_random.uniform(-1, 1, 2)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self.x, self.goal], np.float32)

    def step(self, action):
        self.x = float(np.clip(self.x + 0.25 * float(np.clip(action[0], -1, 1)), -1, 1))
        self.t += 1
        return self._obs(), 1.0 - abs(self.x - self.goal), False, self.t >= self.STEPS, {}


def evaluate(env, policy, episodes=10, seed=10_000) -> float:
    total = 0.0
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        done = False
        while not done:
            obs, r, term, trunc, _ = env.step(policy(obs))
            total += r
            done = term or trunc
    return total / episodes


_rng = np.random.default_rng(0)
RANDOM = evaluate(Reach(), lambda obs: _rng.uniform(-1, 1, 1).astype(np.float32))

TINY = {"batch_size": 32, "hidden_dim": 32, "feature_dim": 16, "lr": 1e-3, "nstep": 3, "discount": 0.9,
        "num_seed_steps": 200, "stddev_schedule": "linear(1.0,0.1,1000)", "replay_capacity": 10_000,
        "update_every_steps": 1, "precision": "fp32"}
MECHANISMS = {
    "drm": {"drm.perturb_interval": 400},  # dormant-ratio perturbations at agent steps 400 and 800
    "mentor": {"mentor.perturb_interval": 400, "mentor.snapshots": 3},
}
STEPS = 1000
BAR = 10.0
"""How far above the random policy's return the trained agent must be (random ~9, trained ~22, max ~23)."""


def train(name: str, steps: int = STEPS, seed: int = 0, **extra) -> tuple[set[str], float]:
    """Agent ``name`` (its preset's mechanisms on top of the DrQ-v2 core) trained on :class:`Reach`; returns the
    names of the metrics its updates reported and its evaluation return (deterministic policy)."""
    torch.manual_seed(seed)
    over = merge_overrides(agent_preset(name, ""), nest_overrides({**TINY, **MECHANISMS.get(name, {}), **extra}))
    cfg = from_dict(DrQv2Config, over, where=name)
    env = Reach()
    agent = DrQv2Agent(env.observation_space, env.action_space, cfg)
    replay = ReplayBuffer(env.observation_space, env.action_space, cfg.replay_capacity, frame_stack=1,
                          nstep=cfg.nstep, discount=cfg.discount, seed=seed)
    extra = sample_kwargs(getattr(agent, "batch_extras", ()))
    obs, _ = env.reset(seed=seed)
    replay.add_first(obs)
    ep_return, episode, seen = 0.0, 0, set()
    for step in range(steps):
        action = agent.act(obs, step=step, eval_mode=False)
        obs, r, term, trunc, _ = env.step(action)
        replay.add(action, r, obs, term, trunc)
        ep_return += r
        if step >= cfg.num_seed_steps:
            seen |= set(agent.update(replay.sample(cfg.batch_size, **extra), step=step))
        if term or trunc:
            seen |= set(agent.observe_episode(ep_return, step))
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
            replay.add_first(obs)
            ep_return = 0.0
    return seen, evaluate(env, lambda o: agent.act(o, step=steps, eval_mode=True))


FIRED = {"drqv2": set(), "drm": {"drm_perturb_alpha", "drm_lambda", "dormant_ratio"}, "taco": {"taco_loss"},
         "mentor": {"dormant_ratio", "mentor_perturb_alpha"}}
"""Metrics that show each preset's mechanisms ran during the test."""


@pytest.mark.parametrize("name", ["drqv2", "drm", "taco", "mentor"])
def test_agent_learns_the_reach_task(name):
    seen, score = train(name)
    assert RANDOM < 12
    assert FIRED[name] <= seen, sorted(seen)
    assert score > RANDOM + BAR, f"{name}: eval return {score:.1f}, random {RANDOM:.1f}"


def test_a_broken_mechanism_fails_the_learning_test(monkeypatch):
    """The bar has teeth: DrM whose perturbation re-initialises the nets completely (shrink factor 0 instead of
    alpha in [alpha_min, alpha_max]) does not pass it."""
    import pixelrl.mechanisms.drm as drm_mod

    monkeypatch.setattr(drm_mod, "perturb_alpha", lambda *a, **k: 0.0)
    seen, score = train("drm", **{"drm.perturb_interval": 100})
    assert "drm_perturb_alpha" in seen
    assert score < RANDOM + BAR, score
