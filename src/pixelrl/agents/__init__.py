"""Agents: one readable file per algorithm, plus presets and a registry.

``drm``, ``taco`` and ``mentor`` are not separate agents: each is the DrQ-v2 core with a few mechanisms switched
on (see their files), so any of them can be combined with the others' mechanisms from the command line, e.g.
``--agent drm --agent.critic hl-gauss --agent.aux taco``. Likewise ``drq`` (DrQ: K = M = 2 augmentations, per-task
action repeat) and ``rlpd`` (RLPD's learner) are SAC with their published settings.

An agent's preset may also set trainer fields (``action_repeat``, ``size``): :func:`agent_preset` returns the agent
part, :func:`agent_train_preset` the rest, which the trainer's config resolution applies (and validates).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

from pixelrl.agents import bc, drm, iql, l2f, mentor, ppo, residual, sac, taco, td3bc
from pixelrl.agents.bc import BCAgent, BCConfig
from pixelrl.agents import dqn
from pixelrl.agents.dqn import DQNAgent, DQNConfig
from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.agents.iql import IQLAgent, IQLConfig
from pixelrl.agents.ppo import PPOAgent, PPOConfig
from pixelrl.agents.residual import ResidualAgent, ResidualConfig
from pixelrl.agents.sac import SACAgent, SACConfig
from pixelrl.agents.td3bc import TD3BCAgent, TD3BCConfig
from pixelrl.agents import sqirl
from pixelrl.agents.sqirl import SQIRLAgent, SQIRLConfig
from pixelrl.errors import ConfigError


def _no_preset(env_id: str, obs: str = "pixels") -> dict:
    return {}


def _only_env(preset: Callable[[str], dict]) -> Callable[[str, str], dict]:
    def wrapped(env_id: str, obs: str = "pixels") -> dict:
        return preset(env_id)

    wrapped.__doc__ = preset.__doc__
    return wrapped


def _sac_preset(env_id: str, obs: str = "pixels") -> dict:
    """DrQ's pixel-SAC values, or state-based SAC's (``sac.STATE_OVERRIDES``) when ``obs='state'``."""
    return {**sac.preset(env_id), **(sac.STATE_OVERRIDES if obs == "state" else {})}


def _rlpd_preset(env_id: str, obs: str = "pixels") -> dict:
    """RLPD's settings (``sac.rlpd_preset``) over DrQ's pixel-SAC values, which they mostly replace."""
    return {**sac.preset(env_id), **sac.rlpd_preset(env_id, obs)}


class AgentSpec(NamedTuple):
    """A registered agent: its config dataclass, its class, and the overrides that make it what it is."""

    config_cls: type
    agent_cls: type
    preset: Callable[[str, str], dict] = _no_preset
    """``preset(env_id, obs) -> {field: value}`` (dotted keys such as ``'drm.alpha_max'`` reach nested configs);
    applied after DrQ-v2's per-task preset and before the user's flags. Keys that are not fields of ``config_cls``
    are trainer fields (e.g. DrQ's per-task ``action_repeat``); see :func:`agent_train_preset`."""
    summary: str = ""
    cpu_fast: bool = True
    """Whether the ``cpu-fast`` preset's agent settings (small nets, bf16, sigma schedule, ...) apply to this agent
    on a CPU. Off for the offline agents, whose published state-based settings are already CPU-sized."""
    cpu_fast_skip: tuple[str, ...] = ()
    """Agent fields of the ``cpu-fast`` preset not applied to this agent (settings it does not support)."""
    actions: tuple[str, ...] = ("continuous",)
    """Action spaces the agent can act in: ``"continuous"`` (a ``Box`` in [-1, 1]) and / or ``"discrete"``
    (``Discrete(n)``). A run whose env does not fit fails before any env process starts, naming the agents that
    do (:func:`agents_for`)."""
    trainer: str = "off-policy"
    """Which trainer runs the agent: ``"off-policy"`` (the online replay loop, ``pixelrl.train.loop``),
    ``"on-policy"`` (rollouts, ``pixelrl.train.onpolicy``) or ``"sqirl"`` (SQIRL's horizon-by-horizon
    fitted Q-iteration, ``pixelrl.train.sqirl``) or ``"l2f"`` (Learning to Fly's built-in quadrotor loop,
    ``pixelrl.train.l2f``). Offline runs (``--dataset``) use the offline trainer."""


AGENTS: dict[str, AgentSpec] = {
    "drqv2": AgentSpec(DrQv2Config, DrQv2Agent, _no_preset, "DrQ-v2 (Yarats et al. 2021)"),
    "drm": AgentSpec(DrQv2Config, DrQv2Agent, _only_env(drm.preset), drm.SUMMARY),
    "taco": AgentSpec(DrQv2Config, DrQv2Agent, _only_env(taco.preset), taco.SUMMARY),
    "mentor": AgentSpec(DrQv2Config, DrQv2Agent, _only_env(mentor.preset), mentor.SUMMARY),
    # SAC's entropy bonus keeps its policy from saturating; residual's actor has no pre-tanh penalty
    "sac": AgentSpec(SACConfig, SACAgent, _sac_preset, sac.SUMMARY, cpu_fast_skip=("actor_pre_tanh_penalty",)),
    "drq": AgentSpec(SACConfig, SACAgent, sac.drq_preset, sac.DRQ_SUMMARY, cpu_fast_skip=("actor_pre_tanh_penalty",)),
    "rlpd": AgentSpec(SACConfig, SACAgent, _rlpd_preset, sac.RLPD_SUMMARY, cpu_fast_skip=("actor_pre_tanh_penalty",)),
    "iql": AgentSpec(IQLConfig, IQLAgent, iql.preset, iql.SUMMARY, cpu_fast=False),
    "td3bc": AgentSpec(TD3BCConfig, TD3BCAgent, td3bc.preset, td3bc.SUMMARY, cpu_fast=False),
    "bc": AgentSpec(BCConfig, BCAgent, bc.preset, bc.SUMMARY, cpu_fast=False),
    "dqn": AgentSpec(DQNConfig, DQNAgent, _no_preset, dqn.SUMMARY, cpu_fast=False, actions=("discrete",)),
    "drq-eps": AgentSpec(DQNConfig, DQNAgent, dqn.drq_eps_preset, dqn.DRQ_EPS_SUMMARY, cpu_fast=False,
                         actions=("discrete",)),
    "sqirl": AgentSpec(SQIRLConfig, SQIRLAgent, sqirl.preset, sqirl.SUMMARY, cpu_fast=False, actions=("discrete",),
                       trainer="sqirl"),
    "residual": AgentSpec(ResidualConfig, ResidualAgent, residual.preset, residual.SUMMARY,
                          cpu_fast_skip=("actor_pre_tanh_penalty",)),
    "ppo": AgentSpec(PPOConfig, PPOAgent, ppo.preset, ppo.SUMMARY, cpu_fast=False, actions=("discrete", "continuous"),
                     trainer="on-policy"),
    "l2f": AgentSpec(l2f.L2FConfig, l2f.L2FAgent, l2f.preset, l2f.SUMMARY, cpu_fast=False, trainer="l2f"),
}
"""Registry: agent name -> :class:`AgentSpec`."""


def agents_for(action_kind: str) -> list[str]:
    """Names of the registered agents that can act in ``action_kind`` (``"continuous"`` or ``"discrete"``)."""
    return sorted(n for n, spec in AGENTS.items() if action_kind in spec.actions)


def check_agent_fits(name: str, action_kind: str | None, env_id: str) -> None:
    """Raise one ``ConfigError`` if agent ``name`` cannot act in ``env_id``'s action space (``action_kind`` as given
    by :func:`pixelrl.envs.action_kind`; None = unknown, not checked)."""
    spec = get_spec(name)
    if action_kind is None or action_kind in spec.actions:
        return
    fit = agents_for(action_kind)
    raise ConfigError(f"agent {name!r} needs a {' or '.join(spec.actions)} action space, but {env_id} has "
                      f"{action_kind} actions; agents for {action_kind} actions: "
                      f"{', '.join(fit) if fit else 'none yet'}")


def nest_overrides(flat: dict) -> dict:
    """``{'a.b': 1, 'c': 2}`` -> ``{'a': {'b': 1}, 'c': 2}`` (dotted keys address nested config fields)."""
    out: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r} goes inside {p!r}, which is also set to a plain value")
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = merge_overrides(node[leaf], value)
        else:
            node[leaf] = value
    return out


def merge_overrides(base: dict, top: dict) -> dict:
    """Deep merge of nested override dicts; ``top`` wins."""
    out = dict(base)
    for k, v in top.items():
        out[k] = merge_overrides(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _split_preset(name: str, env_id: str, obs: str) -> tuple[dict, dict]:
    """Agent ``name``'s preset split into (agent fields, trainer fields)."""
    spec = get_spec(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    agent, train = {}, {}
    for key, value in spec.preset(env_id, obs).items():
        (agent if key.split(".")[0] in fields else train)[key] = value
    return agent, train


def agent_preset(name: str, env_id: str, obs: str = "pixels") -> dict:
    """The nested overrides of agent fields that agent ``name`` applies for ``env_id`` and observation type ``obs``."""
    return nest_overrides(_split_preset(name, env_id, obs)[0])


def agent_train_preset(name: str, env_id: str, obs: str = "pixels") -> dict:
    """The trainer fields that agent ``name``'s preset sets for ``env_id`` (e.g. ``drq``'s per-task
    ``action_repeat``); flat ``{field: value}``, applied by the trainer's config resolution, which rejects unknown
    names."""
    return _split_preset(name, env_id, obs)[1]


def get_spec(name: str) -> AgentSpec:
    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}; choose one of {sorted(AGENTS)}")
    return AGENTS[name]


def make_agent(name: str, observation_space, action_space, cfg=None, device="cpu"):
    """Build agent ``name`` for the given spaces. ``cfg`` is the agent's config, a dict of overrides (applied on
    top of the agent's own preset, without a task), or None."""
    from pixelrl.utils.dataclass_io import from_dict

    spec = get_spec(name)
    if cfg is None or isinstance(cfg, dict):
        over = merge_overrides(agent_preset(name, ""), nest_overrides(cfg or {}))
        cfg = from_dict(spec.config_cls, over, where=f"agent {name!r}")
    elif not isinstance(cfg, spec.config_cls):
        raise ConfigError(f"agent {name!r} needs a {spec.config_cls.__name__}, got {type(cfg).__name__}")
    return spec.agent_cls(observation_space, action_space, cfg, device)


__all__ = ["AGENTS", "AgentSpec", "agents_for", "check_agent_fits", "BCAgent", "BCConfig", "DQNAgent", "DQNConfig", "DrQv2Agent", "DrQv2Config", "IQLAgent", "IQLConfig", "PPOAgent", "PPOConfig", "ResidualAgent", "ResidualConfig", "TD3BCAgent", "TD3BCConfig", "SACAgent", "SACConfig", "agent_preset",
           "agent_train_preset", "get_spec", "make_agent", "merge_overrides", "nest_overrides"]
