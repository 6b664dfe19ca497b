"""The env worker: K envs of :func:`pixelrl.envs.make_vector` (in-process, same-step autoreset) that a Ray actor
holds. Plain Python, so it is tested without Ray; :mod:`pixelrl.distributed.pool` runs it as an actor.

Two ways to drive it:

* :meth:`EnvWorker.step` -- one step of its K envs with actions chosen elsewhere (PPO: the learner batches inference
  over every worker's envs), returning what the vector env returns;
* :meth:`EnvWorker.chunk` -- ``steps`` steps of its K envs acting with its own copy of the policy (off-policy agents),
  every transition stamped with the policy version that chose it. The copy is loaded from the learner's broadcast
  (``agent.state_dict()``) when a newer version comes with the call.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from pixelrl.train.onpolicy import _per_env

__all__ = ["ChunkRecorder", "EnvWorker", "act_batch", "batchable", "full_stack", "newest_frames"]


def _is_pixels(x: np.ndarray) -> bool:
    return x.dtype == np.uint8 and x.ndim >= 3


def newest_frames(obs: Any, frame_stack: int) -> Any:
    """The newest frame of stacked pixel observations (uint8, channels on axis -3: ``[..., S*C, H, W]`` ->
    ``[..., C, H, W]``); other arrays (states) as they are. What a chunk ships: the replay stores nothing else."""
    if isinstance(obs, dict):
        return {k: newest_frames(v, frame_stack) for k, v in obs.items()}
    x = np.asarray(obs)
    if frame_stack <= 1 or not _is_pixels(x):
        return x
    return np.ascontiguousarray(x[..., -(x.shape[-3] // frame_stack):, :, :])


def full_stack(obs: Any, frame_stack: int) -> Any:
    """An observation of the env's stacked shape from its newest frame (the frame repeated ``frame_stack`` times):
    what :meth:`~pixelrl.data.replay.ReplayBuffer.add` takes, which reads only the newest frame of it."""
    if isinstance(obs, dict):
        return {k: full_stack(v, frame_stack) for k, v in obs.items()}
    x = np.asarray(obs)
    if frame_stack <= 1 or not _is_pixels(x):
        return x
    return np.tile(x, (frame_stack, 1, 1))


def batchable(agent: Any) -> bool:
    """Whether :func:`act_batch` runs one forward pass for ``agent`` (the DrQ-v2 family and SAC) rather than asking it
    one observation at a time."""
    from pixelrl.agents.drqv2 import DrQv2Agent
    from pixelrl.agents.sac import SACAgent

    return isinstance(agent, (DrQv2Agent, SACAgent))


def act_batch(agent: Any, obs: Any, *, step: int,
              generators: list[tuple[torch.Generator, int]] | None = None) -> np.ndarray:
    """Training actions for a batch of observations (``[K, ...]`` arrays, or a dict of them), one forward pass.

    The DrQ-v2 family (``mu + N(0, stddev(step))`` clamped to [-1, 1], uniform during ``num_seed_steps``) and SAC (a
    sample of ``pi(.|s)``, uniform during ``num_seed_steps``) are batched exactly as their ``act`` does for one
    observation; any other agent is asked one observation at a time (``agent.act``). ``generators`` (``[(generator,
    rows)]`` covering the batch in order; only for the batched agents): each block of rows draws its exploration noise
    or uniform warm-up actions from its own generator -- what its env worker would draw acting alone -- instead of
    torch's global RNG, so the learner batching several workers' envs (``--inference learner``) acts as the workers
    would."""
    from pixelrl.agents.sac import SACAgent
    from pixelrl.nets.actor import sample_action

    n = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
    if not batchable(agent):
        return np.stack([agent.act({k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i],
                                   step=step, eval_mode=False) for i in range(n)])

    def draw(fill) -> torch.Tensor | None:  # [n, action_dim] from the generators (None: the global RNG)
        if generators is None:
            return None
        return torch.cat([fill(torch.empty(rows, agent.action_dim), g) for g, rows in generators])

    if step < agent.cfg.num_seed_steps:
        uniform = draw(lambda t, g: t.uniform_(-1.0, 1.0, generator=g))
        if uniform is None:
            uniform = torch.empty(n, agent.action_dim).uniform_(-1.0, 1.0)
        return uniform.numpy().astype(np.float32)
    noise = draw(lambda t, g: t.normal_(generator=g))
    each = [agent._obs_to_tensor({k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i])
            for i in range(n)]  # each [1, ...], in the layout the agent's encoder takes
    x = {k: torch.cat([e[k] for e in each]) for k in each[0]} if isinstance(each[0], dict) else torch.cat(each)
    with torch.no_grad(), agent._autocast():
        feat = agent.encoder(x)
        if isinstance(agent, SACAgent):
            action = agent.actor.sample(feat, noise)[0]
        else:
            agent.actor.eval()
            mu = agent.actor(feat)
            action = sample_action(mu, agent.stddev(step), clip=None, noise=None if noise is None else noise.to(mu))
            agent.actor.train()
    return action.float().clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)


class EnvWorker:
    """``num_envs`` envs of ``env_id`` stepped together in this process; with ``agent`` (``(name, config)``) also a
    CPU copy of the agent to act with in :meth:`chunk`."""

    def __init__(self, env_id: str, num_envs: int, env_kwargs: dict[str, Any], *, gl_env: dict[str, str] | None = None,
                 agent: tuple[str, Any] | None = None, torch_seed: int = 0) -> None:
        if gl_env:
            os.environ.update(gl_env)  # before anything imports mujoco (as the vector env's own workers do)
        torch.set_num_threads(1)
        torch.manual_seed(int(torch_seed))
        self.gen = torch.Generator().manual_seed(int(torch_seed))
        """The exploration noise of this worker's actions (what ``--inference learner`` reproduces in the learner)."""
        from pixelrl.envs import make_vector

        self.vec = make_vector(env_id, num_envs, asynchronous=False, autoreset_mode="SameStep", **env_kwargs)
        self.num_envs = int(num_envs)
        self.obs: Any = None
        self.agent = None
        self.version = -1
        if agent is not None:
            from pixelrl.agents import make_agent

            name, cfg = agent
            self.agent = make_agent(name, self.vec.single_observation_space, self.vec.single_action_space, cfg,
                                    torch.device("cpu"))

    def pid(self) -> int:
        """This process's id (what a test kills)."""
        return os.getpid()

    def reset(self, seeds: list[int]) -> Any:
        """Reset env ``i`` with ``seeds[i]``; returns the observations."""
        self.obs, _ = self.vec.reset(seed=[int(s) for s in seeds])
        return self.obs

    def step(self, actions: Any) -> tuple:
        """One step of every env: ``(obs, reward, terminated, truncated, info)`` of the vector env."""
        out = self.vec.step(actions)
        self.obs = out[0]
        return out

    def timed_step(self, actions: Any) -> tuple:
        """:meth:`step` and the seconds it took (what the learner's per-worker frames/s are measured from)."""
        import time

        t0 = time.perf_counter()
        out = self.step(actions)
        return (*out, time.perf_counter() - t0)

    def chunk(self, steps: int, *, step: int, version: int, weights: Any = None) -> dict[str, Any]:
        """``steps`` steps of every env with this worker's policy (``step``: the learner's agent step, for the
        exploration schedule and the random warm-up), or uniform random actions for a worker without an agent. ``weights`` (``agent.state_dict()`` of policy ``version``) is
        loaded first when given. Returns ``[steps, K]`` arrays ``action``, ``reward``, ``terminated``, ``truncated``,
        ``frames``, ``life_loss``, ``next_obs`` (an episode's true last observation where it ended), the observations
        the ended episodes' envs were reset to (``reset_obs``: ``{(t, k): obs}``) -- pixels as their newest frame only
        (:func:`newest_frames`; ``frame_stack`` says how to stack them back) --, ``version`` and the seconds spent
        acting (``act_s``) and stepping (``env_s``)."""
        if weights is not None:
            self.agent.load_state_dict(weights)
            self.version = int(version)
        rec = ChunkRecorder(int(self.vec.action_repeat), int(self.vec.frame_stack))
        act_s = env_s = 0.0
        for t in range(int(steps)):
            t0 = time.perf_counter()
            a = self.vec.action_space.sample() if self.agent is None else act_batch(
                self.agent, self.obs, step=step, generators=[(self.gen, self.num_envs)])
            t1 = time.perf_counter()
            out = self.step(a)
            env_s += time.perf_counter() - t1
            act_s += t1 - t0
            rec.add(a, *out)
        return rec.result(self.version, act_s=act_s, env_s=env_s)

    def close(self) -> None:
        self.vec.close()


class ChunkRecorder:
    """The steps of K envs as a chunk (the dict :meth:`EnvWorker.chunk` returns and
    :class:`~pixelrl.distributed.offpolicy.EpisodeAssembler` takes), built step by step with :meth:`add` -- in the
    worker, or in the learner when it acts for the workers (``--inference learner``)."""

    def __init__(self, action_repeat: int, frame_stack: int) -> None:
        self.repeat, self.fs = int(action_repeat), int(frame_stack)
        self.actions: list = []
        self.rewards: list = []
        self.term: list = []
        self.trunc: list = []
        self.frames: list = []
        self.lives: list = []
        self.next_obs: list = []
        self.reset_obs: dict[tuple[int, int], Any] = {}

    def add(self, action: Any, obs: Any, reward: Any, terminated: Any, truncated: Any, info: dict) -> None:
        """One step of the vector env (same-step autoreset): the actions taken and what ``step`` returned."""
        t = len(self.actions)
        done = np.asarray(terminated, bool) | np.asarray(truncated, bool)
        nxt = _copy_obs(obs)
        for k in np.flatnonzero(done):
            self.reset_obs[(t, int(k))] = _index(obs, k)
            _assign(nxt, k, info["final_obs"][k])
        self.frames.append(_per_env(info, "frames", done, self.repeat).astype(np.int64))
        self.lives.append(_per_env(info, "life_loss", done, False).astype(bool))
        self.actions.append(np.asarray(action))
        self.rewards.append(np.asarray(reward, np.float32))
        self.term.append(np.asarray(terminated, bool))
        self.trunc.append(np.asarray(truncated, bool))
        self.next_obs.append(nxt)

    def result(self, version: int, *, act_s: float = 0.0, env_s: float = 0.0) -> dict[str, Any]:
        """The chunk: ``[T, K]`` arrays, pixels as their newest frame only (the replay stores nothing else)."""
        xs = self.next_obs
        stacked = {k: np.stack([x[k] for x in xs]) for k in xs[0]} if isinstance(xs[0], dict) else np.stack(xs)
        fs = self.fs
        return {"action": np.stack(self.actions), "reward": np.stack(self.rewards), "terminated": np.stack(self.term),
                "truncated": np.stack(self.trunc), "frames": np.stack(self.frames), "life_loss": np.stack(self.lives),
                "next_obs": newest_frames(stacked, fs), "frame_stack": fs,
                "reset_obs": {tk: newest_frames(o, fs) for tk, o in self.reset_obs.items()}, "version": int(version),
                "steps": len(self.actions), "act_s": act_s, "env_s": env_s}


def _copy_obs(obs: Any) -> Any:
    return {k: np.array(v) for k, v in obs.items()} if isinstance(obs, dict) else np.array(obs)


def _index(obs: Any, k: int) -> Any:
    return {key: np.array(v[k]) for key, v in obs.items()} if isinstance(obs, dict) else np.array(obs[k])


def _assign(obs: Any, k: int, value: Any) -> None:
    if isinstance(obs, dict):
        for key in obs:
            obs[key][k] = value[key]
    else:
        obs[k] = value
