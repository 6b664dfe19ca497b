"""Turn (env, agent, preset, device, overrides) into a fully resolved :class:`TrainConfig`."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from pixelrl.agents import agent_preset, agent_train_preset, get_spec, merge_overrides, nest_overrides
from pixelrl.agents.presets import cpu_fast, task_preset
from pixelrl.errors import ConfigError
from pixelrl.train.config import TrainConfig
from pixelrl.utils.dataclass_io import from_dict

PRESETS = ("auto", "paper", "cpu-fast", "none")


def agent_config_class(agent_name: str) -> type:
    return get_spec(agent_name).config_cls


def resolve_preset_name(preset: str, device: str) -> str:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    if preset != "auto":
        return preset
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "paper" if on_cuda else "cpu-fast"


def default_run_dir(env: str, agent_name: str, seed: int) -> str:
    return f"runs/{env.replace('/', '_')}-{agent_name}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_config(env: str = TrainConfig.env, agent_name: str = TrainConfig.agent_name, preset: str = "auto",
                 device: str = "auto", fill_run_dir: bool = True, **overrides: Any) -> TrainConfig:
    """Resolved config. Agent fields: config defaults < the per-task preset of the agent's method (DrQ-v2's task
    files; DrM's, TACO's, MENTOR's for those agents) < the agent's own preset (drm, taco, ...) < the ``cpu-fast``
    preset < ``overrides['agent']`` (a dict; dotted keys reach nested configs).
    TrainConfig fields: defaults < the per-task preset < the agent's own preset (e.g. drq's per-task action repeat)
    < the ``cpu-fast`` preset < ``overrides``."""
    resolved = resolve_preset_name(preset, device)
    cfg_cls = agent_config_class(agent_name)
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    agent_fields = {f.name for f in dataclasses.fields(cfg_cls)}
    train_over: dict[str, Any] = {}
    agent_over: dict[str, Any] = {}

    def split(over: dict[str, Any], source: str) -> None:
        nonlocal agent_over
        agent_part = {}
        for k, v in over.items():
            if k in train_fields:
                train_over[k] = v
            elif k.split(".")[0] in agent_fields:
                agent_part[k] = v
            else:
                raise ConfigError(f"{source} sets unknown field '{k}'")
        agent_over = merge_overrides(agent_over, nest_overrides(agent_part))

    if resolved != "none":
        split(task_preset(env, agent_name), f"preset '{resolved}'")
    obs = overrides.get("obs", TrainConfig.obs)
    agent_over = merge_overrides(agent_over, agent_preset(agent_name, env, obs))
    split(agent_train_preset(agent_name, env, obs), f"agent '{agent_name}' preset")  # e.g. drq's action repeat
    if resolved == "cpu-fast":
        spec = get_spec(agent_name)
        split({k: v for k, v in cpu_fast.items()
               if k in train_fields or (spec.cpu_fast and k not in spec.cpu_fast_skip)}, "preset 'cpu-fast'")
    agent_user = nest_overrides(overrides.pop("agent", None) or {})
    agent_over = merge_overrides(agent_over, agent_user)
    train_over.update(overrides)
    agent_cfg = from_dict(cfg_cls, agent_over, where=f"agent '{agent_name}'")
    cfg = TrainConfig(env=env, agent_name=agent_name, preset=resolved, device=device, agent=agent_cfg,
                      **train_over)
    if fill_run_dir and cfg.run_dir is None:
        cfg = dataclasses.replace(cfg, run_dir=default_run_dir(env, agent_name, cfg.seed))
    return cfg


def reconcile_cli_agent(cfg: TrainConfig, argv: list[str]) -> TrainConfig:
    """After the command line is parsed: settings that depend on flags given together. Nothing at present: TACO's
    contrastive horizon K no longer forces the n-step return (the replay gives its K-step window separately, as the
    authors' TACO does: walker n = 1, K = 3)."""
    return cfg


def config_from_run(run_cfg: dict[str, Any]) -> TrainConfig:
    """Rebuild the TrainConfig saved in a run's config.json."""
    d = dict(run_cfg)
    cfg_cls = agent_config_class(d.get("agent_name", "drqv2"))
    d["agent"] = from_dict(cfg_cls, d.get("agent") or {}, where="config.json agent")
    return from_dict(TrainConfig, d, where="config.json")


def resolve_agent_for_env(cfg: TrainConfig, action_repeat: int) -> TrainConfig:
    """Fill agent settings that depend on the environment, once it is known (the result is what config.json
    records, so a resumed run sees the same values).

    * HL-Gauss value range left unset (``hl_gauss.v_min``/``v_max`` = None, no symlog): for DeepMind Control tasks,
      whose per-frame reward lies in [0, 1], the support is derived from the largest reward per agent step
      (= action repeat) and the discount (``pixelrl.mechanisms.hl_gauss.auto_range``: [-10, 210] at action repeat
      2, the range suggested for DMC). Other environments need the range (or ``symlog``) set explicitly.
    """
    a = cfg.agent
    if getattr(a, "critic", "mse") != "hl-gauss":
        return cfg
    h = a.hl_gauss
    if h.symlog or (h.v_min is not None and h.v_max is not None):
        return cfg
    if not cfg.env.startswith("dmc/"):
        raise ConfigError(
            f"critic='hl-gauss' needs a value range for {cfg.env}: pass --agent.hl-gauss.v-min and "
            "--agent.hl-gauss.v-max (the range of discounted returns), or --agent.hl-gauss.symlog True "
            "(only DeepMind Control's [0, 1] per-frame reward lets pixelrl derive the range itself)")
    from pixelrl.mechanisms.hl_gauss import auto_range

    lo, hi = auto_range(float(action_repeat), a.discount)
    h = dataclasses.replace(h, v_min=lo if h.v_min is None else h.v_min, v_max=hi if h.v_max is None else h.v_max)
    return dataclasses.replace(cfg, agent=dataclasses.replace(a, hl_gauss=h))


def record_machine_choices(cfg: TrainConfig, agent: Any) -> TrainConfig:
    """The config to save with the run: the agent's precision as resolved (``'auto'`` replaced by what the agent
    chose, so a resume does not measure again) and ``decisions`` naming what was chosen for this machine and why."""
    from pixelrl.utils.machine import machine_description
    from pixelrl.utils.precision import cpu_flags

    decisions = dict(cfg.decisions or {})
    a = cfg.agent
    precision = getattr(agent, "precision", None)
    if precision is not None and getattr(a, "precision", None) is not None:
        decisions.setdefault("precision", precision)
        decisions.setdefault("precision_reason", getattr(agent, "precision_reason", ""))
        if a.precision != precision:
            cfg = dataclasses.replace(cfg, agent=dataclasses.replace(a, precision=precision))
    decisions.setdefault("threads", torch.get_num_threads())
    decisions.setdefault("cpu", machine_description())
    decisions.setdefault("cpu_bf16_flags", sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "avx512f", "avx2"}))
    return dataclasses.replace(cfg, decisions=decisions)

