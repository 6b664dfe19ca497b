"""Helpers several test files share: small spaces, random batches, tiny agents, a 1-step bandit dataset, the config
docstring check, the checkpoint round trip and loading a repository script by its path. Import as ``from helpers import ...`` (pytest puts ``tests/`` on
``sys.path``: it holds the root ``conftest.py`` and is the root of the ``agents`` / ``mechanisms`` test packages)."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.data.batch import Batch
from pixelrl.utils.checkpoint import flatten_state, unflatten_state

ROOT = Path(__file__).resolve().parents[1]


def load_script(relpath: str):
    """A repository script that is not part of the package (``benchmarks/atari100k.py``, ``scripts/docs_curves.py``)
    imported from its file; its own folder is on ``sys.path`` while it loads, for the siblings it imports (the
    benchmarks' ``_cli``)."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod


# ------------------------------------------------------------------------------------------ spaces and batches

STATE_DIM = 3
PIX = (6, 16, 16)
BEST_ACTION = 0.5
"""The best action of :class:`Bandit`."""


def state_space(dim: int = STATE_DIM):
    return gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)


def pixel_space():
    return gym.spaces.Box(0, 255, PIX, np.uint8)


def dict_space():
    return gym.spaces.Dict({"pixels": pixel_space(), "state": state_space()})


def act_space(dim: int = 2):
    return gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)


def random_batch(space, n: int = 8, action_dim: int = 2, seed: int = 0, discount: float = 0.99) -> Batch:
    """A batch of ``n`` random transitions for ``space`` (states N(0, 1), pixels uniform bytes), actions in [-1, 1],
    rewards in [0, 1), a constant ``discount``; drawn from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)

    def obs():
        if isinstance(space, gym.spaces.Dict):
            return {"pixels": torch.randint(0, 256, (n, *PIX), dtype=torch.uint8, generator=g),
                    "state": torch.randn(n, *space["state"].shape, generator=g)}
        if len(space.shape) == 3:
            return torch.randint(0, 256, (n, *space.shape), dtype=torch.uint8, generator=g)
        return torch.randn(n, *space.shape, generator=g)

    return Batch(obs=obs(), action=torch.rand(n, action_dim, generator=g) * 2 - 1, reward=torch.rand(n, 1, generator=g),
                 discount=torch.full((n, 1), discount), next_obs=obs())


# ------------------------------------------------------------------------------------------ tiny agents

TINY = dict(batch_size=8, feature_dim=8, hidden_dim=32, encoder_channels=(8, 8), encoder_strides=(2, 1), lr=1e-3)
"""Config fields of a tiny offline agent (BC, IQL, TD3+BC)."""


def tiny_agent(agent_cls, config_cls, space=None, seed=0, action_dim=2, **kw):
    """``agent_cls`` on ``space`` (default: :func:`state_space`) with ``config_cls(**TINY, **kw)``, its weights
    drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return agent_cls(space if space is not None else state_space(), act_space(action_dim),
                     config_cls(**{**TINY, **kw}))


OBS_DIM, ACT_DIM, B = 6, 2, 16
"""State size, action size and batch size of :func:`drqv2_state_agent` / :func:`drqv2_state_batch`."""


def drqv2_state_agent(**kw) -> DrQv2Agent:
    """A tiny DrQ-v2 agent on ``OBS_DIM`` states in [-1, 1] (mechanism tests), ``kw`` overriding its config;
    weights drawn after ``torch.manual_seed(0)``."""
    base = dict(batch_size=B, feature_dim=8, hidden_dim=16, num_seed_steps=0, stddev_schedule="0.2", lr=1e-3)
    base.update(kw)
    torch.manual_seed(0)
    return DrQv2Agent(gym.spaces.Box(-1, 1, (OBS_DIM,), np.float32), gym.spaces.Box(-1, 1, (ACT_DIM,), np.float32),
                      DrQv2Config(**base))


def drqv2_state_batch(seed: int = 0) -> Batch:
    """A random batch of ``B`` transitions for :func:`drqv2_state_agent`."""
    return random_batch(state_space(OBS_DIM), n=B, action_dim=ACT_DIM, seed=seed)


# ------------------------------------------------------------------------------------------ data

class Bandit:
    """A 1-step bandit: random states (irrelevant to the reward), one action dim, reward ``1 - 4 (a - 0.5)^2``
    peaked at a = 0.5, every transition terminal (discount 0). The dataset's actions are N(0, 0.5) clipped: mean 0."""

    def __init__(self, n: int = 2000, seed: int = 0) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.obs = torch.randn(n, STATE_DIM, generator=self.g)
        self.action = (torch.randn(n, 1, generator=self.g) * 0.5).clamp(-1, 1)
        self.reward = 1 - 4 * (self.action - BEST_ACTION) ** 2

    def sample(self, b: int = 128) -> Batch:
        i = torch.randint(0, self.obs.shape[0], (b,), generator=self.g)
        return Batch(self.obs[i], self.action[i], self.reward[i], torch.zeros(b, 1), self.obs[i])

    def policy_action(self, agent, n: int = 32) -> float:
        """Mean evaluation action of ``agent`` over fresh states."""
        states = torch.randn(n, STATE_DIM, generator=self.g)
        return float(np.mean([agent.act(s.numpy(), step=0, eval_mode=True)[0] for s in states]))


# ------------------------------------------------------------------------------------------ checks

def fields_documented(module, class_name: str) -> None:
    """Every field a config class declares has its own docstring right under it."""
    tree = ast.parse(inspect.getsource(module))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    own = {a.target.id for a, b in zip(cls.body, cls.body[1:])
           if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)}
    declared = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}
    assert declared and own == declared, declared - own


def through_checkpoint(state: dict) -> dict:
    """The agent state after the checkpoint format's tensor / JSON split (no pickle)."""
    tensors, tree = flatten_state(state)
    return unflatten_state(tree, tensors)


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, module.parameters()))


MIXED_DISCOUNTS = (0.0, 0.99 ** 3)
"""``batch.discount`` values of :func:`mixed_discount_batch`: a termination (0) and a 3-step return (gamma^3), both
unlike any agent's ``cfg.discount`` (0.99), so an agent that bootstraps with its config's gamma instead of
``batch.discount`` (dropping gamma^n and the termination mask) gets a different target."""


def mixed_discount_batch(space, n: int = 8, action_dim: int = 2, seed: int = 0) -> Batch:
    """:func:`random_batch` whose ``discount`` alternates :data:`MIXED_DISCOUNTS` row by row."""
    batch = random_batch(space, n=n, action_dim=action_dim, seed=seed)
    batch.discount = torch.tensor([MIXED_DISCOUNTS[i % 2] for i in range(n)], dtype=torch.float32)[:, None]
    return batch


TRANSIENT = ("last_feat", "_aug_buf")
"""Agent attributes that are scratch of the last update (features, augmentation buffer): not state a checkpoint
must carry."""


def everything(agent) -> dict[str, torch.Tensor]:
    """Every tensor an agent holds, read from its attributes (not from its ``state_dict``, which is what is under
    test): parameters and buffers of each module, each optimizer's state and hyper-parameters, loose tensors."""
    out: dict[str, torch.Tensor] = {}
    for name, obj in vars(agent).items():
        if name in TRANSIENT:
            continue
        if isinstance(obj, torch.nn.Module):
            for k, t in list(obj.named_parameters()) + list(obj.named_buffers()):
                out[f"{name}.{k}"] = t.detach()
        elif isinstance(obj, torch.optim.Optimizer):
            sd = obj.state_dict()
            for i, st in sd["state"].items():
                for k, v in st.items():
                    out[f"{name}.state.{i}.{k}"] = torch.as_tensor(v).detach()
            for g, group in enumerate(sd["param_groups"]):
                out[f"{name}.lr.{g}"] = torch.as_tensor(float(group["lr"]))
        elif isinstance(obj, torch.Tensor):
            out[name] = obj.detach()
    return out


def assert_same_agents(a, b, where: str = "") -> None:
    ea, eb = everything(a), everything(b)
    assert ea.keys() == eb.keys(), f"{where}: {sorted(ea.keys() ^ eb.keys())}"
    bad = [k for k in ea if not torch.equal(ea[k], eb[k])]
    assert not bad, f"{where}: differ: {bad[:8]}"


def assert_round_trip_resumes_exactly(make, batches, before: int = 3, after: int = 4) -> None:
    """``make(seed)`` builds an agent. One agent updated ``before`` times, saved through the checkpoint format and
    loaded into a fresh agent of another seed: both then hold the same tensors (every parameter, buffer and
    optimizer state) and stay identical over ``after`` more updates (same random draws)."""
    a = make(0)
    for i in range(before):
        torch.manual_seed(100 + i)
        a.update(batches[i % len(batches)], step=i)
    b = make(123)
    ea, eb = everything(a), everything(b)
    assert any(not torch.equal(ea[k], eb[k]) for k in ea if k in eb)  # b starts elsewhere
    b.load_state_dict(through_checkpoint(a.state_dict()))
    assert_same_agents(a, b, "after loading")
    assert getattr(a, "num_updates", None) == getattr(b, "num_updates", None)
    for i in range(before, before + after):
        torch.manual_seed(100 + i)
        ma = a.update(batches[i % len(batches)], step=i)
        torch.manual_seed(100 + i)
        mb = b.update(batches[i % len(batches)], step=i)
        assert ma == mb, i
        assert_same_agents(a, b, f"update {i}")


def load_run_buffer(run, folder: str = "replay", frame_stack: int = 3):
    """The replay buffer a run saved under ``run/<folder>`` (``replay``, or ``interventions`` for the intervention
    buffer), rebuilt from the run's config.json."""
    from pixelrl.data.replay import ReplayBuffer
    from pixelrl.envs import make
    from pixelrl.train.setup import load_run_config

    cfg = load_run_config(run)
    env = make(cfg.env, seed=0, **cfg.env_kwargs())
    buf = ReplayBuffer(env.observation_space, env.action_space, cfg.agent.replay_capacity, frame_stack=frame_stack,
                       nstep=cfg.agent.nstep, discount=cfg.agent.discount)
    env.close()
    buf.load(run / folder)
    return buf


INTERVENTION_RUN = [  # the tiny state-based cartpole run of the intervention tests (scripted expert)
    "--env", "dmc/cartpole-swingup", "--obs", "state", "--preset", "none", "--action-repeat", "8",
    "--eval-every-frames", "1000", "--eval-episodes", "1", "--no-eval-random", "--threads", "1", "--device", "cpu",
    "--no-progress", "--no-video", "--no-tensorboard", "--agent.batch-size", "16", "--agent.hidden-dim", "16",
    "--agent.feature-dim", "8", "--agent.num-seed-steps", "60", "--agent.update-every-steps", "2",
    "--agent.replay-capacity", "5000", "--agent.precision", "fp32",
]


PREFERENCE_RUN = [  # the tiny 48-px cartpole run of the online preference tests (scripted oracle; RL-VLM-F's CNN
    # needs at least 47 px)
    "--env", "dmc/cartpole-swingup", "--preset", "none", "--size", "48", "--action-repeat", "8",
    "--fast-render", "--eval-every-frames", "1000", "--eval-episodes", "1", "--no-eval-random",
    "--threads", "1", "--device", "cpu", "--no-progress", "--no-video", "--no-tensorboard", "--no-async-env",
    "--agent.batch-size", "16", "--agent.hidden-dim", "16", "--agent.feature-dim", "8",
    "--agent.encoder-channels", "4", "4", "4", "4", "--agent.num-seed-steps", "60",
    "--agent.update-every-steps", "2", "--agent.replay-capacity", "5000", "--agent.precision", "fp32",
    "--reward", "prefs:scripted", "--reward.query-batch", "20", "--reward.query-every", "100",
    "--reward.max-queries", "50", "--reward.pref-epochs", "5",
]
