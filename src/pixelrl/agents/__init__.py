"""Agents: one readable file per algorithm, plus presets and a registry."""

from __future__ import annotations

import dataclasses

from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.errors import ConfigError

AGENTS: dict[str, tuple[type, type]] = {"drqv2": (DrQv2Config, DrQv2Agent)}
"""Registry: agent name -> (config dataclass, agent class)."""


def make_agent(name: str, observation_space, action_space, cfg=None, device="cpu"):
    """Build agent ``name`` for the given spaces. ``cfg`` is the agent's config, a dict of overrides, or None."""
    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}; choose one of {sorted(AGENTS)}")
    cfg_cls, agent_cls = AGENTS[name]
    if cfg is None:
        cfg = cfg_cls()
    elif isinstance(cfg, dict):
        known = {f.name for f in dataclasses.fields(cfg_cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"unknown {name} config keys {unknown}; known keys: {sorted(known)}")
        cfg = cfg_cls(**cfg)
    elif not isinstance(cfg, cfg_cls):
        raise ConfigError(f"agent {name!r} needs a {cfg_cls.__name__}, got {type(cfg).__name__}")
    return agent_cls(observation_space, action_space, cfg, device)


__all__ = ["AGENTS", "DrQv2Agent", "DrQv2Config", "make_agent"]
