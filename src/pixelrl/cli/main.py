"""``pixelrl`` command line: train | resume | eval | plot | collect | dataset | snapshots | list. Parsing only; the work
is in pixelrl.train (and the listings come from the registries of pixelrl.agents, pixelrl.envs, pixelrl.train.setup)."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import tyro

from pixelrl.errors import PixelRLError

USAGE = """usage: pixelrl {train,resume,eval,plot,collect,dataset,snapshots,reward,label,pretrain,genrl,push,list} [options]   |   pixelrl --version

  train   train an agent:        pixelrl train --env dmc/cartpole-swingup --agent drqv2 --seed 1
  resume  continue a run exactly: pixelrl resume runs/<run>/
  eval    evaluate a run:         pixelrl eval runs/<run>/ --episodes 10 --video   |   pixelrl eval hf://user/name
  plot    learning curves:        pixelrl plot runs/a runs/b --out curves.png
  collect record a dataset:       pixelrl collect --env dmc/walker-walk --policy runs/<run>/ --episodes 100 --out PATH
  dataset inspect / convert:      pixelrl dataset stats PATH   |   pixelrl dataset convert MINARI_ID --out PATH
          relabel with a reward model: pixelrl dataset relabel PATH --reward "vlm:a pole upright" --out NEW
  snapshots S3RL snapshot banks:  pixelrl snapshots collect --env dmc/walker-walk --policy runs/<run>/ --out PATH
                                  pixelrl snapshots info PATH
  reward  fit a success classifier: pixelrl reward fit-classifier --positives DIR --negatives DIR --out DIR
  label   compare clips in a page: pixelrl label QUEUE [--port 8765]   |   pixelrl label QUEUE --fit MODEL_DIR
  pretrain  slot encoders:        pixelrl pretrain slots --env builtin/shapes-object-goal --images 100_000 --out DIR
  genrl   RL fine-tuning of image generators: pixelrl genrl train --model PATH --reward jpeg-compressibility --prompts FILE
  push    share on the HF Hub:    pixelrl push runs/<run>/ --repo user/name   |   pixelrl push DATA --repo user/name --repo-type dataset
  list    what can be chosen:     pixelrl list envs [dmc|gym|ale|metaworld|builtin]   |   pixelrl list agents   |   pixelrl list presets

`pixelrl <command> --help` lists every option with its documentation."""


def _pop_option(argv: list[str], *names: str) -> Optional[str]:
    """Remove ``--name value`` / ``--name=value`` from argv and return the value (last one wins)."""
    value = None
    i = 0
    while i < len(argv):
        a = argv[i]
        for n in names:
            if a == n and i + 1 < len(argv):
                value = argv[i + 1]
                del argv[i : i + 2]
                break
            if a.startswith(n + "="):
                value = a.split("=", 1)[1]
                del argv[i]
                break
        else:
            i += 1
    return value


def _peek_option(argv: Sequence[str], *names: str) -> Optional[str]:
    return _pop_option(list(argv), *names)


def _pop_offline_args(argv: list[str]) -> list[str]:
    """Remove the :class:`OfflineConfig` flags (``--dataset PATH``, ``--offline-steps N``, ...) from argv and return
    them (they are parsed on their own: TrainConfig.offline is not a tyro field)."""
    from pixelrl.train.config import OfflineConfig

    names = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(OfflineConfig)}
    names |= {"--" + f.name for f in dataclasses.fields(OfflineConfig)}
    flags = {"--allow-env-mismatch", "--no-allow-env-mismatch"}
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        key = a.split("=", 1)[0]
        if key in flags:
            out.append(argv.pop(i))
        elif key in names:
            out.append(argv.pop(i))
            if "=" not in a and i < len(argv):
                out.append(argv.pop(i))
        else:
            i += 1
    return out


def cmd_train(argv: list[str]) -> int:
    import tyro

    from pixelrl.errors import ConfigError
    from pixelrl.train.config import OfflineConfig, TrainConfig
    from pixelrl.train.setup import agent_config_class, build_config, default_run_dir, reconcile_cli_agent
    from pixelrl.utils.dataclass_io import from_dict, to_dict

    argv = list(argv)
    offline_args = _pop_offline_args(argv)
    from pixelrl.rewards.base import reward_config_from_args

    reward = reward_config_from_args(argv)  # --reward SPEC and --reward.* (not tyro fields: parsed on their own)
    from pixelrl.rewards.interventions import intervention_config_from_args

    intervention = intervention_config_from_args(argv)  # --intervention.* (docs/interventions.md)
    offline = None
    if offline_args:
        parsed_offline = tyro.cli(_unchecked(OfflineConfig), prog="pixelrl train (offline options)",
                                  args=[a.replace("_", "-") if a.startswith("--") else a for a in offline_args])
        offline = from_dict(OfflineConfig, to_dict(parsed_offline), where="offline options")
    agent_name = _pop_option(argv, "--agent", "--agent-name", "--agent_name") or TrainConfig.agent_name
    preset = _pop_option(argv, "--preset") or TrainConfig.preset
    device = _peek_option(argv, "--device") or TrainConfig.device
    overrides: dict = {}
    if offline is not None and offline.dataset is not None:
        # the env and env settings the data was collected with, under the user's explicit flags
        from pixelrl.train.offline import dataset_train_defaults

        for key, value in dataset_train_defaults(offline.dataset).items():
            flag = "--" + key.replace("_", "-")
            if not any(a == flag or a.startswith(flag + "=") for a in argv):
                overrides[key] = value
    env = _peek_option(argv, "--env") or overrides.pop("env", None) or TrainConfig.env
    overrides.pop("env", None)
    from pixelrl.agents import agent_train_preset

    # an agent whose preset names its observation (l2f: the quadrotor's state) gets it unless --obs says otherwise
    obs = (_peek_option(argv, "--obs") or overrides.get("obs") or agent_train_preset(agent_name, env).get("obs")
           or TrainConfig.obs)
    overrides["obs"] = obs
    defaults = build_config(env, agent_name, preset, device, fill_run_dir=False, **overrides)
    cfg_cls = agent_config_class(agent_name)
    parsed = _parse_train_args(argv, defaults, preset)
    try:  # the values are checked here, outside tyro, so that a bad one is one line (ConfigError), not a help box
        agent = from_dict(cfg_cls, to_dict(parsed.agent), where="--agent")
    except ConfigError as e:
        raise ConfigError(f"--agent {agent_name}: {e}") from None
    cfg = TrainConfig(**{**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(TrainConfig)},
                         "agent_name": agent_name, "preset": defaults.preset, "agent": agent})
    cfg = dataclasses.replace(reconcile_cli_agent(cfg, argv), offline=offline, reward=reward, intervention=intervention)
    if cfg.seeds is not None:
        return _train_seeds(cfg)
    if cfg.run_dir is None:
        cfg = dataclasses.replace(cfg, run_dir=default_run_dir(cfg.env, cfg.agent_name, cfg.seed))
    _announce(cfg)
    from pixelrl.train.setup import trainer_class

    if cfg.workers is not None:  # --workers N: scale out on Ray
        from pixelrl.distributed import trainer_class
    trainer = trainer_class(cfg)(cfg)
    _announce_decisions(trainer.cfg)
    summary = trainer.run()
    _print_summary(summary)
    return 0


def _skip_checks(self) -> None:
    """``__post_init__`` of the classes tyro builds from the command line: values are checked afterwards."""


def _unchecked(cls: type) -> type:
    """A subclass of the config dataclass ``cls`` (and of its nested config dataclasses) whose construction does not
    validate. tyro renders a ValueError raised while it builds a class as a multi-line help box (exit 2); parsing
    into these and then building the real classes makes a bad value one ``pixelrl train: error:`` line instead."""
    import typing

    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints.get(f.name)):
            sub = _unchecked(hints[f.name])
            # keep the parent's default of the nested config (e.g. a verifier's vocabulary with max_groups=2), not
            # the nested class's own defaults
            base = f.default_factory() if f.default_factory is not dataclasses.MISSING else \
                (f.default if f.default is not dataclasses.MISSING else None)
            factory = sub if base is None else \
                (lambda sub=sub, base=base: sub(**{x.name: getattr(base, x.name) for x in dataclasses.fields(base)}))
            fields.append((f.name, sub, dataclasses.field(default_factory=factory)))
    return dataclasses.make_dataclass(cls.__name__, fields, bases=(cls,), frozen=True,
                                      namespace={"__post_init__": _skip_checks, "__doc__": cls.__doc__,
                                                 "__module__": cls.__module__})


def agent_help() -> str:
    """Help of ``--agent``: every registered agent with its one-line summary."""
    from pixelrl.agents import AGENTS

    lines = [f"{name}: {spec.summary or spec.config_cls.__name__}" for name, spec in AGENTS.items()]
    return ("Agent to train (`pixelrl list agents`). drm / taco / mentor are DrQ-v2 with their mechanisms switched "
            "on, drq / rlpd are SAC with their papers' settings; any mechanism can be added to the DrQ-v2 core's "
            "agents with --agent.critic, --agent.aux, --agent.exploration, --agent.perturb, --agent.value-blend, "
            "--agent.moe. Agents: " + "; ".join(lines))


def _parse_train_args(argv: list[str], defaults, preset: str):
    """Parse ``pixelrl train``'s options over the resolved ``defaults`` (``--agent``, ``--preset`` and the offline
    options are already taken out of argv). Nothing is validated here; the caller builds the real configs."""
    from typing import Annotated

    from pixelrl.train.config import TrainConfig
    from pixelrl.utils.dataclass_io import from_dict, to_dict

    agent_cls = _unchecked(type(defaults.agent))
    args_cls = dataclasses.make_dataclass(
        "TrainArgs",
        [("agent_name", Annotated[str, tyro.conf.arg(name="agent", metavar="NAME", help=agent_help())],
          dataclasses.field(default=TrainConfig.agent_name)),
         ("agent", agent_cls, dataclasses.field(default_factory=agent_cls))],
        bases=(_unchecked(TrainConfig),), frozen=True)
    where = "a CUDA device" if defaults.preset == "paper" else "no CUDA device"
    resolved = (f"preset '{preset}' resolves to '{defaults.preset}' here ({where})" if preset == "auto"
                else f"preset '{preset}'")
    whose = ("the agent's own settings over its config's defaults, with no per-task values" if defaults.preset == "none"
             else "that preset's values, not the plain field defaults")
    args_cls.__doc__ = (f"{TrainConfig.__doc__}\n\nThe defaults shown below are the resolved values for --env "
                        f"{defaults.env} --agent {defaults.agent_name}: {resolved}, so they are {whose}. Pass --env / "
                        "--agent / --preset / --device with --help to see another combination's.")
    values = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(TrainConfig)}
    values.update(preset=preset, agent=from_dict(agent_cls, to_dict(defaults.agent), where="--agent"))
    return tyro.cli(args_cls, default=args_cls(**values), args=argv, prog="pixelrl train")


def _announce_decisions(cfg) -> None:
    """One line on what was chosen for this machine (``--agent.precision auto``), as recorded in config.json."""
    reason = (cfg.decisions or {}).get("precision_reason")
    if reason:
        from rich.console import Console

        Console().print(f"  precision {reason}")


def _train_seeds(cfg) -> int:
    """``--seeds``: one agent per seed in this process, updated as one batched computation."""
    from pixelrl.train.batched import BatchedTrainer, default_batch_run_dir
    from pixelrl.train.config import parse_seeds

    seeds = parse_seeds(cfg.seeds)
    if cfg.run_dir is None:
        cfg = dataclasses.replace(cfg, run_dir=default_batch_run_dir(cfg.env, cfg.agent_name, cfg.seeds))
    _announce(cfg)
    summary = BatchedTrainer(cfg, seeds).run()
    _print_summary(summary)
    return 0


def _announce(cfg) -> None:
    from rich.console import Console

    c = Console()
    a = cfg.agent
    offline = cfg.offline is not None and cfg.offline.active
    if offline:  # the budget of an offline run is its phases', not ``frames``
        updates, online_frames = cfg.offline.phase_budgets(cfg.frames)
        budget = f"offline_updates={updates:,} online_frames={online_frames:,}"
    else:
        budget = f"frames={cfg.frames:,}"
        if cfg.time_budget_min is not None:
            budget += f" or {cfg.time_budget_min:g} min (time budget, whichever comes first)"
    c.print(f"[bold]pixelrl train[/bold] {cfg.env} agent={cfg.agent_name} preset={cfg.preset} "
            f"{f'seeds={cfg.seeds} (batched)' if cfg.seeds else f'seed={cfg.seed}'} "
            f"{budget} device={cfg.device}")
    from pixelrl.agents import get_spec

    if offline:
        o = cfg.offline
        c.print(f"  offline: dataset={o.dataset} offline_ratio={o.offline_ratio} demos={o.demos} "
                f"demo_ratio={o.demo_ratio}")
    if cfg.preset == "cpu-fast" and get_spec(cfg.agent_name).cpu_fast:
        c.print("  CPU preset [bold]cpu-fast[/bold]: a lean DrQ-v2 that learns on a 2-core CPU "
                f"({cfg.size}x{cfg.size} frames, action repeat {cfg.action_repeat}, encoder strides "
                f"{tuple(a.encoder_strides)}, batch {a.batch_size}, hidden {a.hidden_dim}, lr {a.lr}). "
                "Pass --preset paper for the published DrQ-v2 configuration (meant for a GPU).")
    if cfg.reward is not None:
        r = cfg.reward
        c.print(f"  reward: {r.spec!r} ({r.mode}, scale {r.scale:g}"
                + (f", baseline {r.baseline!r}, alpha {r.alpha:g}, model {r.model}" if r.kind == "vlm" else "")
                + "); evaluations report the env's return", markup=False, highlight=False)
    c.print(f"  run folder: {cfg.run_dir}")


def _print_summary(summary: dict) -> None:
    from rich.console import Console

    c = Console()
    fin, rnd = summary.get("final_eval_return"), summary.get("random_return")
    done = f"{summary['frames']:,} frames"
    if "offline_updates" in summary:  # an offline run (OfflineTrainer's summary)
        done = f"{summary['offline_updates']:,} offline updates, {summary['frames']:,} online frames"
    c.print(f"[bold green]done[/bold green] {done} in {summary['wall_s'] / 60:.1f} min")
    if summary.get("ended_by") == "time_budget":
        budget, target = summary.get("time_budget_min"), summary.get("target_frames")
        c.print(f"  ended by the {budget or 0:g}-minute time budget at {summary['frames']:,} of "
                f"{target or 0:,} frames; `pixelrl resume RUN --frames N` trains on to N frames")
    elif summary.get("ended_by") == "horizon_covered":  # SQIRL: its stopping rule
        c.print("  ended by SQIRL's stopping rule: the learned policies covered the episodes (no random step in "
                "10 timesteps in a row)")
    if fin is not None:
        ratio = f" ({fin / rnd:.1f}x the random policy's {rnd:.1f})" if rnd else ""
        c.print(f"  final eval return: {fin:.1f}{ratio}")
    eh = summary.get("effective_horizon")
    if eh:
        c.print(f"  effective horizon: <= {eh['estimate_if_solved']:g} if this run solved the task (k={eh['k']}, "
                f"m={eh['m']}, {eh['timesteps_learned']} timesteps learned; see summary.json)")
    c.print(f"  run folder: {summary['run_dir']}")
    c.print(f"  curve:      {summary['curve']}")
    if summary.get("video"):
        c.print(f"  video:      {summary['video']}")


def cmd_resume(argv: list[str]) -> int:
    from pixelrl.train.setup import load_run_config

    args = _parse(_Resume, argv, "pixelrl resume")
    run = Path(args.run_dir)
    from pixelrl.train.batched import BATCH_FILE

    if (run / BATCH_FILE).exists():  # a --seeds run: every seed resumes together
        from pixelrl.train.batched import BatchedTrainer

        summary = BatchedTrainer.resume(run, frames=args.frames).run()
        _print_summary(summary)
        return 0
    cfg = load_run_config(run)
    cfg = dataclasses.replace(cfg, run_dir=str(run))
    offline = cfg.offline is not None and cfg.offline.active and cfg.intervention is None  # interventions: online
    if offline and args.frames is not None:
        raise PixelRLError("--frames extends online runs; an offline run's budget is its offline steps and online "
                           "frames (recorded in config.json under 'offline')")
    new_budget = args.frames is not None and (args.frames != cfg.frames or cfg.time_budget_min is not None)
    if new_budget:
        cfg = dataclasses.replace(cfg, frames=args.frames, time_budget_min=None)  # a frame budget replaces the time one
    from pixelrl.train.setup import trainer_class

    if cfg.workers is not None:  # --workers N: scale out on Ray
        from pixelrl.distributed import trainer_class
    trainer = trainer_class(cfg)(cfg, resume=True)
    # Everything the run depends on has loaded (checkpoint, replay, log): only now does the run folder change.
    for change in getattr(trainer, "changed_settings", []):
        print(f"pixelrl resume: config.json differs from the checkpoint, resuming with {change}", file=sys.stderr)
    if new_budget:
        from pixelrl.utils.atomic import write_json_atomic

        saved = json.loads((run / "config.json").read_text())
        write_json_atomic(run / "config.json", {**saved, "frames": cfg.frames, "time_budget_min": None})
    summary = trainer.run()
    _print_summary(summary)
    return 0


def cmd_eval(argv: list[str]) -> int:
    import numpy as np
    import torch

    from pixelrl.agents import make_agent
    from pixelrl.envs import make
    from pixelrl.utils.checkpoint import load_checkpoint, resolve_checkpoint
    from pixelrl.train.evaluate import EVAL_STREAM, run_episodes
    from pixelrl.train.loop import resolve_device
    from pixelrl.train.setup import load_agent_state, load_run_config
    from pixelrl.train.video import write_video
    from pixelrl.utils.dataclass_io import to_dict

    args = _parse(_Eval, argv, "pixelrl eval")
    from pixelrl.cli.hub import run_folder

    run = run_folder(args.run_dir)  # a path, or hf://user/name[@revision] downloaded first
    cfg = load_run_config(run)
    ckpt = resolve_checkpoint(run, args.checkpoint)
    state = load_checkpoint(ckpt)
    device = resolve_device(args.device)
    env = make(cfg.env, seed=args.seed, **cfg.env_kwargs())
    agent = make_agent(cfg.agent_name, env.observation_space, env.action_space, cfg.agent, device)
    load_agent_state(agent, state["agent"], config_path=run / "config.json", checkpoint=ckpt,
                     saved_config=json.loads(state["config"]) if "config" in state else None, config=to_dict(cfg))
    step = int(state["trainer"]["agent_steps"])

    def policy(obs):
        with torch.no_grad():
            return agent.act(obs, step=step, eval_mode=True)

    res = run_episodes(env, policy, args.episodes, seed=args.seed, stream=EVAL_STREAM + 100, index=0,
                       record=args.video, on_reset=getattr(agent, "begin_episode", None))
    out = {"run_dir": str(run), "checkpoint": str(ckpt), "episodes": args.episodes,
           "mean_return": float(np.mean(res["returns"])), "std_return": float(np.std(res["returns"])),
           "returns": res["returns"]}
    if res.get("successes"):
        out["success_rate"] = float(np.mean(res["successes"]))
    if args.video:
        out["video"] = str(write_video(run / "videos" / f"eval_cli_{ckpt.name}.mp4", res["frames"]))
    print(f"{cfg.env} {cfg.agent_name} @ {ckpt.name}: return {out['mean_return']:.1f} ± {out['std_return']:.1f} "
          f"over {args.episodes} episodes"
          + (f", success rate {out['success_rate']:.0%}" if "success_rate" in out else ""))
    print(json.dumps(out))
    return 0


def cmd_plot(argv: list[str]) -> int:
    from pixelrl.train.plot import plot_runs_report

    args = _parse(_Plot, argv, "pixelrl plot")
    if not args.run_dirs:
        raise PixelRLError("pixelrl plot needs at least one run folder")
    out, notes = plot_runs_report(args.run_dirs, args.out, metric=args.metric, title=args.title)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {out}")
    return 0


def _parse(cls, argv, prog):
    import tyro

    return tyro.cli(cls, args=argv, prog=prog)


@dataclass(frozen=True)
class _Resume:
    """Continue a run from its last checkpoint, exactly as if it had never stopped (same machine, CPU)."""

    run_dir: tyro.conf.Positional[str]
    """The run folder made by `pixelrl train`."""
    frames: Optional[int] = None
    """New total training budget in env frames (default: the run's own). Also lifts the run's ``time_budget_min``
    (a run the time budget ended continues to these frames)."""


@dataclass(frozen=True)
class _Eval:
    """Evaluate the policy of a run's latest (or a given) checkpoint."""

    run_dir: tyro.conf.Positional[str]
    """The run folder made by `pixelrl train`, or ``hf://user/name[@revision]``: a run pushed to the Hugging Face Hub
    (`pixelrl push`), downloaded first (docs/hub.md)."""
    episodes: int = 10
    """Number of evaluation episodes."""
    video: bool = False
    """Write an mp4 of the first episode under <run>/videos/ (--video)."""
    checkpoint: Optional[str] = None
    """A checkpoint to evaluate instead of the latest one: a folder path, or the name of one of the run's
    checkpoints (``frames_000000010000``), as ``pixelrl collect --checkpoint`` takes."""
    seed: int = 12345
    """Seed of the evaluation episodes."""
    device: str = "auto"
    """Device to run the policy on."""


@dataclass(frozen=True)
class _Plot:
    """Plot learning curves. Runs whose resolved configs (config.json) agree on everything but the seed are one
    group, aggregated over seeds (IQM, 95% CI); the plot says which runs it merged. Online runs are drawn against env
    frames, offline runs against steps, in a panel each."""

    run_dirs: tyro.conf.Positional[tuple[str, ...]]
    """Run folders."""
    out: str = "curves.png"
    """Output PNG path."""
    metric: str = "eval_return"
    """Column of the eval rows to plot (an unknown one is refused with the list of those the runs have)."""
    title: Optional[str] = None
    """Plot title."""


def cmd_collect(argv: list[str]) -> int:
    from pixelrl.cli.dataset import cmd_collect as run

    return run(argv)


def cmd_dataset(argv: list[str]) -> int:
    from pixelrl.cli.dataset import cmd_dataset as run

    return run(argv)


def cmd_reward(argv: list[str]) -> int:
    from pixelrl.cli.reward import cmd_reward as run

    return run(argv)


def cmd_label(argv: list[str]) -> int:
    from pixelrl.cli.label import cmd_label as run

    return run(argv)


def cmd_snapshots(argv: list[str]) -> int:
    from pixelrl.cli.snapshots import cmd_snapshots as run

    return run(argv)


PRESET_HELP = {
    "auto": "paper on a CUDA device, else cpu-fast (the default)",
    "paper": "the published configuration of the agent's method for the task (meant for a GPU)",
    "cpu-fast": "a lean DrQ-v2 that learns on a 2-core CPU in ~15 min (64x64 frames, action repeat 8, small nets)",
    "none": "the plain field defaults of the agent's config, no per-task values",
}
"""One line per ``--preset`` value (``pixelrl list presets``); the values themselves are ``pixelrl.train.setup``'s."""


@dataclass(frozen=True)
class _ListEnvs:
    """List the known environment ids (dmc ids from the installed dm_control, gym from Gymnasium's registry, ale
    from ale-py's games, metaworld from Meta-World's v3 tasks, builtin: pixelrl's own simulators)."""

    prefix: tyro.conf.Positional[Optional[str]] = None
    """Only this family: dmc, gym, ale, metaworld or builtin."""


@dataclass(frozen=True)
class _ListAgents:
    """List the registered agents (``--agent NAME``) with a one-line summary each."""


@dataclass(frozen=True)
class _ListPresets:
    """List the hyper-parameter presets (``--preset NAME``)."""


def _list_envs(args: _ListEnvs) -> int:
    from pixelrl.envs import list_envs

    print("\n".join(list_envs(args.prefix)))
    return 0


def _list_agents(args: _ListAgents) -> int:
    from pixelrl.agents import AGENTS

    width = max(map(len, AGENTS))
    for name, spec in AGENTS.items():
        print(f"{name:<{width}}  {spec.summary or spec.config_cls.__name__}")
    return 0


def _list_presets(args: _ListPresets) -> int:
    from pixelrl.train.setup import PRESETS

    width = max(map(len, PRESETS))
    for name in PRESETS:
        print(f"{name:<{width}}  {PRESET_HELP.get(name, '')}")
    return 0


LIST_USAGE = """usage: pixelrl list {envs,agents,presets}

  envs [dmc|gym|ale]  environment ids for --env
  agents              agents for --agent, with a summary each
  presets             presets for --preset"""


def cmd_list(argv: list[str]) -> int:
    from pixelrl.cli.subcommands import run_subcommand

    return run_subcommand(argv, "list", LIST_USAGE, {"envs": (_ListEnvs, _list_envs),
                                                     "agents": (_ListAgents, _list_agents),
                                                     "presets": (_ListPresets, _list_presets)})


def _warning_printer(cmd: str, fallback):
    """``warnings.showwarning`` for the CLI: pixelrl's own warnings as one line (``pixelrl train: warning: ...``),
    others as Python prints them."""
    import os

    import pixelrl

    package = os.path.dirname(os.path.abspath(pixelrl.__file__))

    def show(message, category, filename, lineno, file=None, line=None):
        if os.path.abspath(str(filename)).startswith(package + os.sep):
            print(f"pixelrl {cmd}: warning: {message}", file=sys.stderr if file is None else file)
        else:
            fallback(message, category, filename, lineno, file, line)

    return show


COMMANDS = {"train": cmd_train, "resume": cmd_resume, "eval": cmd_eval, "plot": cmd_plot, "collect": cmd_collect,
            "dataset": cmd_dataset, "snapshots": cmd_snapshots, "label": cmd_label, "list": cmd_list, "reward": cmd_reward,
            "pretrain": lambda argv: __import__("pixelrl.cli.pretrain", fromlist=["cmd_pretrain"]).cmd_pretrain(argv),
            "genrl": lambda argv: __import__("pixelrl.cli.genrl", fromlist=["cmd_genrl"]).cmd_genrl(argv),
            "push": lambda argv: __import__("pixelrl.cli.hub", fromlist=["cmd_push"]).cmd_push(argv)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from pixelrl import __version__

        print(f"pixelrl {__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"pixelrl: unknown command '{cmd}'\n\n{USAGE}", file=sys.stderr)
        return 2
    import warnings

    from pixelrl.errors import Interrupted

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(cmd, warnings.showwarning)
            return COMMANDS[cmd](rest)
    except Interrupted as e:
        print(f"pixelrl {cmd}: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"pixelrl {cmd}: interrupted", file=sys.stderr)
        return 130
    except PixelRLError as e:
        print(f"pixelrl {cmd}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
