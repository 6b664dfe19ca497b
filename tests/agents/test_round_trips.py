"""``state_dict`` / ``load_state_dict`` through the checkpoint format: every parameter, buffer and optimizer state is
restored, and the restored agent continues exactly (several updates of every kind: critic-only and actor ones)."""

import pytest

from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.agents.iql import IQLAgent, IQLConfig
from pixelrl.agents.sac import SACAgent, SACConfig
from pixelrl.agents.td3bc import TD3BCAgent, TD3BCConfig

from helpers import assert_round_trip_resumes_exactly, pixel_space, random_batch, state_space, tiny_agent

CASES = {
    # SAC: actor + temperature every 2nd update, so updates after loading mix critic-only and actor ones
    "sac-state": (SACAgent, SACConfig, state_space, {"num_seed_steps": 0, "actor_update_every": 2,
                                                     "target_update_every": 2}),
    "sac-pixels": (SACAgent, SACConfig, pixel_space, {"num_seed_steps": 0, "actor_update_every": 2}),
    "iql-state": (IQLAgent, IQLConfig, state_space, {}),
    "iql-state-layernorm": (IQLAgent, IQLConfig, state_space, {"critic_layernorm": True, "lr_decay_steps": 5}),
    "iql-pixels": (IQLAgent, IQLConfig, pixel_space, {}),
    "td3bc-state": (TD3BCAgent, TD3BCConfig, state_space, {"actor_update_every": 2}),
    "drqv2-pixels": (DrQv2Agent, DrQv2Config, pixel_space, {"num_seed_steps": 0, "stddev_schedule": "0.2"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_round_trip_restores_everything_and_resumes_exactly(case):
    agent_cls, cfg_cls, space, kw = CASES[case]
    batches = [random_batch(space(), n=8, seed=s) for s in range(3)]
    assert_round_trip_resumes_exactly(lambda seed: tiny_agent(agent_cls, cfg_cls, space(), seed, **kw), batches)
