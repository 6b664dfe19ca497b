"""bf16 autocast against fp32 for the agents beyond DrQ-v2 (whose check is in test_drqv2): from the same weights and
random draws, the first update's losses and values agree up to bf16 rounding (~1e-2 relative)."""

import numpy as np
import pytest
import torch

from pixelrl.agents.iql import IQLAgent, IQLConfig
from pixelrl.agents.sac import SACAgent, SACConfig
from pixelrl.agents.td3bc import TD3BCAgent, TD3BCConfig

from helpers import pixel_space, random_batch, tiny_agent

CASES = {
    "sac": (SACAgent, SACConfig, {"num_seed_steps": 0, "actor_update_every": 1}),
    "iql": (IQLAgent, IQLConfig, {}),
    "td3bc": (TD3BCAgent, TD3BCConfig, {"actor_update_every": 1}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bf16_update_matches_fp32_within_tolerance(name):
    agent_cls, cfg_cls, kw = CASES[name]
    batch = random_batch(pixel_space(), n=8)
    out = {}
    for precision in ("fp32", "bf16"):
        agent = tiny_agent(agent_cls, cfg_cls, pixel_space(), 0, precision=precision, **kw)
        obs = batch.obs[0].numpy()
        action = agent.act(obs, step=0, eval_mode=True)
        torch.manual_seed(4)
        out[precision] = (action, agent.update(batch, step=0))
    (a32, m32), (a16, m16) = out["fp32"], out["bf16"]
    np.testing.assert_allclose(a16, a32, atol=3e-2)
    assert m16.keys() == m32.keys()
    losses = [k for k in m32 if k.endswith("_loss") or k.startswith("critic_q") or k == "critic_target_q"]
    assert "critic_loss" in losses and "actor_loss" in losses
    for k in losses:
        assert m16[k] == pytest.approx(m32[k], rel=5e-2, abs=1e-2), k
