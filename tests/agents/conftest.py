import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.data.batch import Batch

SIZE = 32
ACTION_DIM = 2


def tiny_cfg(**kw) -> DrQv2Config:
    base = dict(
        batch_size=8, feature_dim=8, hidden_dim=32, encoder_channels=(8, 8), encoder_strides=(2, 1),
        num_seed_steps=0, stddev_schedule="0.2", lr=1e-3,
    )
    base.update(kw)
    return DrQv2Config(**base)


def pixel_space(c=6):
    return gym.spaces.Box(0, 255, (c, SIZE, SIZE), np.uint8)


def action_space():
    return gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def make_batch(obs_space, n=8, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)

    def obs():
        if isinstance(obs_space, gym.spaces.Dict):
            return {
                "pixels": torch.randint(0, 256, (n, *obs_space["pixels"].shape), dtype=torch.uint8, generator=g),
                "state": torch.randn(n, *obs_space["state"].shape, generator=g),
            }
        if len(obs_space.shape) == 3:
            return torch.randint(0, 256, (n, *obs_space.shape), dtype=torch.uint8, generator=g)
        return torch.randn(n, *obs_space.shape, generator=g)

    return Batch(
        obs=obs(),
        action=torch.rand(n, ACTION_DIM, generator=g) * 2 - 1,
        reward=torch.rand(n, 1, generator=g),
        discount=torch.full((n, 1), 0.99),
        next_obs=obs(),
    )


@pytest.fixture
def agent_factory():
    def make(obs_space=None, **kw):
        torch.manual_seed(0)
        obs_space = obs_space if obs_space is not None else pixel_space()
        return DrQv2Agent(obs_space, action_space(), tiny_cfg(**kw))

    return make
