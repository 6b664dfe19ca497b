"""Our DrQ-v2 update against the plain re-implementation of the reference update (benchmarks/update_throughput.py):
tied weights, no augmentation (pad 0, so no shift RNG), the same torch seed per update -> the same noise draws.
Losses and parameters must agree after several updates."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents import make_agent
from pixelrl.agents.drqv2 import DrQv2Config
from pixelrl.data.batch import Batch

from helpers import load_script


def _reference_module():
    return load_script("benchmarks/update_throughput.py")


def _tie(ours, ref, out_hw):
    with torch.no_grad():
        for i in (0, 2, 4, 6):
            ours.encoder.conv.convnet[i].weight.copy_(ref.encoder.convnet[i].weight)
            ours.encoder.conv.convnet[i].bias.copy_(ref.encoder.convnet[i].bias)
        h, w = out_hw

        def trunk(dst, src):
            wt = src.trunk[0].weight
            c = wt.shape[1] // (h * w)
            dst.trunk[0].weight.copy_(wt.view(wt.shape[0], c, h, w).permute(0, 2, 3, 1).reshape(wt.shape[0], -1))
            dst.trunk[0].bias.copy_(src.trunk[0].bias)
            dst.trunk[1].load_state_dict(src.trunk[1].state_dict())

        trunk(ours.actor, ref.actor)
        for i in (0, 2, 4):
            ours.actor.policy[i].load_state_dict(ref.actor.policy[i].state_dict())
        for dst, src in ((ours.critic, ref.critic), (ours.target_critic, ref.critic_target)):
            trunk(dst, src)
            for i in (0, 2, 4):
                dst.q[i].weight.copy_(torch.stack([src.Q1[i].weight.t(), src.Q2[i].weight.t()]))
                dst.q[i].bias.copy_(torch.stack([src.Q1[i].bias, src.Q2[i].bias]).unsqueeze(1))


def test_update_matches_reference_implementation():
    mod = _reference_module()
    size, stack, A, B = 24, 9, 2, 16
    cfg = DrQv2Config(batch_size=B, hidden_dim=32, feature_dim=16, encoder_channels=(8, 8, 8, 8), augment_pad=0,
                      lr=1e-3)
    obs_space = gym.spaces.Box(0, 255, (stack, size, size), np.uint8)
    act_space = gym.spaces.Box(-1.0, 1.0, (A,), np.float32)
    torch.manual_seed(0)
    ours = make_agent("drqv2", obs_space, act_space, cfg, "cpu")
    ref = mod.RefDrQV2((stack, size, size), A, cfg, "cpu")
    ref.aug = torch.nn.Identity()
    _tie(ours, ref, ours.encoder.conv.out_hw)

    g = torch.Generator().manual_seed(1)
    for step in range(4):
        obs = torch.randint(0, 256, (B, stack, size, size), dtype=torch.uint8, generator=g)
        nxt = torch.randint(0, 256, (B, stack, size, size), dtype=torch.uint8, generator=g)
        action = torch.rand(B, A, generator=g) * 2 - 1
        reward = torch.rand(B, 1, generator=g)
        discount = torch.full((B, 1), 0.99**3)
        torch.manual_seed(100 + step)
        m_ours = ours.update(Batch(obs, action, reward, discount, nxt), step=step)
        torch.manual_seed(100 + step)
        m_ref = ref.update(obs, action, reward, discount, nxt, step)
        for k in ("critic_loss", "actor_loss", "critic_q1", "critic_q2", "critic_target_q"):
            assert m_ours[k] == pytest.approx(m_ref[k], rel=1e-4, abs=1e-5), (step, k)
    torch.testing.assert_close(ours.actor.policy[4].weight, ref.actor.policy[4].weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.critic.q[4].weight[1], ref.critic.Q2[4].weight.t(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.encoder.conv.convnet[0].weight, ref.encoder.convnet[0].weight,
                               rtol=1e-4, atol=1e-5)
