"""Turn (env, agent, preset, device, overrides) into a fully resolved :class:`TrainConfig`."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from pixelrl.agents import AGENTS
from pixelrl.agents.presets import cpu_fast, task_preset
from pixelrl.errors import ConfigError
from pixelrl.train.config import TrainConfig
from pixelrl.utils.dataclass_io import from_dict

PRESETS = ("auto", "paper", "cpu-fast", "none")


def agent_config_class(agent_name: str) -> type:
    if agent_name not in AGENTS:
        raise ConfigError(f"unknown agent '{agent_name}'; available: {', '.join(sorted(AGENTS))}")
    return AGENTS[agent_name][0]


def resolve_preset_name(preset: str, device: str) -> str:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    if preset != "auto":
        return preset
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "paper" if on_cuda else "cpu-fast"


def preset_overrides(env: str, preset: str) -> dict[str, Any]:
    """The flat override dict of a (resolved) preset for ``env``."""
    if preset == "none":
        return {}
    over = dict(task_preset(env))
    if preset == "cpu-fast":
        over.update(cpu_fast)
    return over


def default_run_dir(env: str, agent_name: str, seed: int) -> str:
    return f"runs/{env.replace('/', '_')}-{agent_name}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_config(env: str = TrainConfig.env, agent_name: str = TrainConfig.agent_name, preset: str = "auto",
                 device: str = "auto", fill_run_dir: bool = True, **overrides: Any) -> TrainConfig:
    """Resolved config: defaults < preset < ``overrides`` (TrainConfig fields, or ``agent`` as a dict of agent
    config fields)."""
    resolved = resolve_preset_name(preset, device)
    cfg_cls = agent_config_class(agent_name)
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    agent_fields = {f.name for f in dataclasses.fields(cfg_cls)}
    train_over: dict[str, Any] = {}
    agent_over: dict[str, Any] = {}
    for k, v in preset_overrides(env, resolved).items():
        if k in train_fields:
            train_over[k] = v
        elif k in agent_fields:
            agent_over[k] = v
        else:
            raise ConfigError(f"preset '{resolved}' sets unknown field '{k}'")
    agent_user = overrides.pop("agent", None) or {}
    agent_over.update(agent_user)
    train_over.update(overrides)
    agent_cfg = from_dict(cfg_cls, agent_over, where=f"agent '{agent_name}'")
    cfg = TrainConfig(env=env, agent_name=agent_name, preset=resolved, device=device, agent=agent_cfg,
                      **train_over)
    if fill_run_dir and cfg.run_dir is None:
        cfg = dataclasses.replace(cfg, run_dir=default_run_dir(env, agent_name, cfg.seed))
    return cfg


def config_from_run(run_cfg: dict[str, Any]) -> TrainConfig:
    """Rebuild the TrainConfig saved in a run's config.json."""
    d = dict(run_cfg)
    cfg_cls = agent_config_class(d.get("agent_name", "drqv2"))
    d["agent"] = from_dict(cfg_cls, d.get("agent") or {}, where="config.json agent")
    return from_dict(TrainConfig, d, where="config.json")
