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
CPU_FAST_DMC_ONLY = ("size", "action_repeat", "fast_render")
"""Settings of the ``cpu-fast`` preset measured on DeepMind Control renders (48x48 frames, action repeat 8, the fast
renderer); other env families keep their own (Atari: 84x84, frame skip 4)."""


def trainer_class(cfg: TrainConfig) -> type:
    """The trainer that runs ``cfg``: the offline trainer for ``--dataset`` / ``--demos`` runs, else the one the
    agent's :class:`~pixelrl.agents.AgentSpec` names (off-policy replay loop, on-policy rollouts, SQIRL). A run with
    interventions stays in the off-policy loop, its ``--demos`` seeding the intervention buffer."""
    if cfg.offline is not None and cfg.offline.active and cfg.intervention is None:
        from pixelrl.train.offline import OfflineTrainer

        return OfflineTrainer
    kind = get_spec(cfg.agent_name).trainer
    if kind == "on-policy":
        from pixelrl.train.onpolicy import OnPolicyTrainer

        return OnPolicyTrainer
    if kind == "sqirl":
        from pixelrl.train.sqirl import SQIRLTrainer

        return SQIRLTrainer
    if kind == "l2f":
        from pixelrl.train.l2f import L2FTrainer

        return L2FTrainer
    from pixelrl.train.loop import Trainer

    return Trainer


def agent_config_class(agent_name: str) -> type:
    return get_spec(agent_name).config_cls


def resolve_preset_name(preset: str, device: str, env: str) -> str:
    """``auto`` -> ``paper`` on CUDA, and on a CPU for env families other than ``dmc/`` (the ``cpu-fast`` preset was
    measured on DeepMind Control pixels; Atari and Gymnasium runs keep their agents' published settings), else
    ``cpu-fast``."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    if preset != "auto":
        return preset
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "paper" if on_cuda or not env.startswith("dmc/") else "cpu-fast"


def default_run_dir(env: str, agent_name: str, seed: int) -> str:
    return f"runs/{env.replace('/', '_')}-{agent_name}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_config(env: str = TrainConfig.env, agent_name: str = TrainConfig.agent_name, preset: str = "auto",
                 device: str = "auto", fill_run_dir: bool = True, **overrides: Any) -> TrainConfig:
    """Resolved config. Agent fields: config defaults < the per-task preset of the agent's method (DrQ-v2's task
    files; DrM's, TACO's, MENTOR's for those agents) < the agent's own preset (drm, taco, ...) < the ``cpu-fast``
    preset < ``overrides['agent']`` (a dict; dotted keys reach nested configs).
    TrainConfig fields: defaults < the per-task preset < the agent's own preset (e.g. drq's per-task action repeat)
    < the ``cpu-fast`` preset < ``overrides``."""
    resolved = resolve_preset_name(preset, device, env)
    cfg_cls = agent_config_class(agent_name)
    from pixelrl.agents import check_agent_fits
    from pixelrl.envs import action_kind

    check_agent_fits(agent_name, action_kind(env), env)  # before any preset or env process
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

    if resolved != "none" and get_spec(agent_name).trainer == "off-policy":
        # the DMC task files of DrQ-v2 and its forks (sigma schedule, run length, ...): replay actor-critics only;
        # PPO and SQIRL carry their own per-family settings in their agent presets
        split(task_preset(env, agent_name), f"preset '{resolved}'")
    obs = overrides.get("obs", TrainConfig.obs)
    agent_over = merge_overrides(agent_over, agent_preset(agent_name, env, obs))
    split(agent_train_preset(agent_name, env, obs), f"agent '{agent_name}' preset")  # e.g. drq's action repeat
    if resolved == "cpu-fast":
        spec = get_spec(agent_name)
        on_dmc = env.startswith("dmc/")
        split({k: v for k, v in cpu_fast.items()
               if (on_dmc or k not in CPU_FAST_DMC_ONLY)
               and (k in train_fields or (spec.cpu_fast and k not in spec.cpu_fast_skip))}, "preset 'cpu-fast'")
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


def load_run_config(run_dir: str | Any) -> TrainConfig:
    """The :class:`TrainConfig` of the run in ``run_dir``, read from its ``config.json`` and validated: a file that is
    not JSON, a field that is unknown or of the wrong type raise one error naming the file and the field."""
    import json
    from pathlib import Path

    from pixelrl.errors import CorruptFileError, NotFoundError

    run = Path(run_dir)
    path = run / "config.json"
    if not run.is_dir():
        raise NotFoundError(f"run folder {run} not found")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NotFoundError(f"{run} is not a run folder (no config.json); pass the folder `pixelrl train` made"
                            ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptFileError(path, f"unreadable ({e})") from None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise CorruptFileError(path, f"not valid JSON ({e}); fix or restore the file") from None
    if not isinstance(doc, dict):
        raise CorruptFileError(path, f"expected a JSON object, got {type(doc).__name__}")
    if "agent_name" in doc and not isinstance(doc["agent_name"], str):
        raise ConfigError(f"{path}: field 'agent_name' must be a string, got {doc['agent_name']!r}")
    try:
        cfg = config_from_run(doc)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: invalid configuration ({e})") from None
    _check_types(cfg, str(path), "")
    return cfg


def _check_types(obj: Any, where: str, prefix: str) -> None:
    """Every field of dataclass ``obj`` (nested ones included) holds a value of its annotated type (plain types,
    Optional / unions, Literal, tuples, lists, dicts and dataclasses are checked; other annotations are trusted)."""
    import typing

    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            _check_types(v, where, name + ".")
            continue
        tp = hints.get(f.name)
        if tp is not None and not _matches(v, tp):
            raise ConfigError(f"{where}: field '{name}' must be {_type_name(tp)}, got {v!r}")


def _matches(v: Any, tp: Any) -> bool:
    import types
    import typing

    if tp is Any or isinstance(tp, (typing.TypeVar, str)):
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _matches(v, args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_matches(v, a) for a in args)
    if origin is typing.Literal:
        return v in args
    if tp is type(None):
        return v is None
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if origin is tuple:
        if not isinstance(v, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(x, args[0]) for x in v)
        return not args or (len(args) == len(v) and all(_matches(x, a) for x, a in zip(v, args)))
    if origin in (list, dict):
        return isinstance(v, origin)
    if isinstance(tp, type):
        return isinstance(v, tp)
    return True


def _type_name(tp: Any) -> str:
    import types
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if tp is type(None):
        return "null"
    if origin is tuple:
        return "a list"
    return getattr(tp, "__name__", str(tp))


SETTINGS_FREE_ON_RESUME = ("frames", "time_budget_min", "run_dir", "progress", "device", "threads", "video",
                           "tensorboard", "decisions", "seeds")
"""TrainConfig fields a resume may change without a note (budgets, where and how it runs, what it writes)."""


def config_changes(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(field, saved value, value now)`` for every field that differs between two config dicts (nested)."""
    out = []
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{prefix}{k}.")
        elif a != b and not (prefix == "" and k in SETTINGS_FREE_ON_RESUME):
            out.append((f"{prefix}{k}", a, b))
    return out


def load_agent_state(agent: Any, state: dict[str, Any], *, config_path: Any, checkpoint: Any,
                     saved_config: dict[str, Any] | None, config: dict[str, Any]) -> None:
    """``agent.load_state_dict(state)``, with an agent built from ``config`` that does not match the checkpoint
    (a shape edited in config.json) reported as one error naming config.json and the fields that differ from the
    configuration the checkpoint was trained with."""
    try:
        agent.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, ConfigError) as e:
        changes = config_changes(saved_config, config) if saved_config is not None else []
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if changes:
            listed = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} in config.json" for k, a, b in changes)
            raise ConfigError(f"{config_path} does not match checkpoint {checkpoint} ({listed}); put the values back "
                              "or start a new run") from None
        raise ConfigError(f"checkpoint {checkpoint} does not fit the agent {config_path} describes ({first}); was a "
                          "setting such as size or hidden_dim edited in config.json? Put it back or start a new "
                          "run") from None


def apply_changed_learning_rates(agent: Any, changes: list[tuple[str, Any, Any]]) -> list[str]:
    """After a resume loaded the optimizers (whose state holds the learning rate they were saved with): give every
    param group whose rate equals the saved value of a changed ``agent.*lr`` field the new value. Returns what was
    changed, for the user."""
    done = []
    opts = [v for v in vars(agent).values() if isinstance(v, torch.optim.Optimizer)]
    for key, old, new in changes:
        if not (key.startswith("agent.") and key.rsplit(".", 1)[-1].endswith("lr")):
            continue
        if not isinstance(old, (int, float)) or not isinstance(new, (int, float)):
            continue
        hit = False
        for opt in opts:
            for group in opt.param_groups:
                if group.get("lr") == old:
                    group["lr"] = new
                    hit = True
        if hit:
            done.append(f"{key} {old:g} -> {new:g}")
    return done
