"""Reward models behind one protocol (:class:`~pixelrl.rewards.base.RewardModel`): a batch of transitions in,
float32 rewards out. Used three ways: online by the off-policy trainer (:mod:`pixelrl.rewards.wrapper`, ``pixelrl
train --reward SPEC``), to relabel a replay buffer in place and to relabel a dataset on disk into a new one
(:mod:`pixelrl.rewards.relabel`, ``pixelrl dataset relabel SRC --reward SPEC --out DST``).

Kinds (``--reward <kind>:<argument>``): ``vlm:`` -- VLM-RM, CLIP similarity to a goal sentence
(:mod:`pixelrl.rewards.vlm`). See docs/rewards.md.

Importing this package loads neither torch models nor transformers; :func:`build_reward_model` does.
"""

from pixelrl.rewards.base import (MODES, REWARD_KINDS, RewardConfig, RewardModel, build_reward_model, combine,
                                  parse_spec, reward_config_from_args)

__all__ = ["MODES", "REWARD_KINDS", "RewardConfig", "RewardModel", "build_reward_model", "combine", "parse_spec",
           "reward_config_from_args"]
