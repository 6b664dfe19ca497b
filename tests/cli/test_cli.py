"""`pixelrl` command line: every numeric option range-checked before anything starts (one error line), the help
(`--agent`, every registered agent, the preset default), `--version`, `pixelrl list`, and what an offline run
announces."""

import dataclasses
import typing

import pytest

from pixelrl.agents import AGENTS
from pixelrl.cli.main import _announce, _print_summary, main
from pixelrl.train.config import TRAIN_RANGES, OfflineConfig, TrainConfig
from pixelrl.train.setup import PRESETS, build_config


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback, no help box
    return err[0]


@pytest.mark.parametrize("flags, named", [
    (["--frames", "-100"], "--frames"),
    (["--frames", "0"], "--frames"),
    (["--eval-episodes", "-1"], "--eval-episodes"),
    (["--eval-episodes", "0"], "--eval-episodes"),
    (["--eval-every-frames", "0"], "--eval-every-frames"),
    (["--checkpoint-every-frames", "-1"], "--checkpoint-every-frames"),
    (["--keep-checkpoints", "0"], "--keep-checkpoints"),
    (["--size", "0"], "--size"),
    (["--action-repeat", "0"], "--action-repeat"),
    (["--frame-stack", "-2"], "--frame-stack"),
    (["--threads", "-1"], "--threads"),
    (["--seed", "-3"], "--seed"),
    (["--snapshot-horizon", "0"], "--snapshot-horizon"),
    (["--snapshot-active-agent-steps", "-1"], "--snapshot-active-agent-steps"),
    (["--time-budget-min", "0"], "--time-budget-min"),
    (["--time-budget-min", "nan"], "--time-budget-min"),
    (["--obs", "rgb"], "--obs"),
    (["--agent.discount", "1.5"], "discount"),
    (["--agent.lr", "0"], "lr"),
    (["--agent.lr", "inf"], "lr"),
    (["--agent.batch-size", "0"], "batch_size"),
    (["--agent.nstep", "0"], "nstep"),
    (["--agent.replay-capacity", "0"], "replay_capacity"),
    (["--agent.encoder-strides", "0", "1", "1", "1"], "encoder_strides"),
    (["--agent.drm.alpha-max", "-3"], "alpha_max"),  # a nested mechanism config: one line too
    (["--agent", "sac", "--agent.temperature-lr", "inf"], "temperature_lr"),
    (["--agent", "iql", "--agent.max-weight", "inf"], "max_weight"),
    (["--offline-steps", "-5", "--dataset", "nowhere.h5"], "--offline-steps"),
    (["--online-frames", "-1", "--dataset", "nowhere.h5"], "--online-frames"),
    (["--demo-ratio", "2", "--demos", "nowhere.h5"], "--demo-ratio"),
])
def test_out_of_range_option_is_one_line_before_anything_starts(flags, named, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--device", "cpu", *flags]) == 1
    line = _error_line(capsys)
    assert line.startswith("pixelrl train: error:") and named in line, line
    assert not run.exists()  # nothing started


def _int_fields(cls) -> set[str]:
    hints = typing.get_type_hints(cls)
    return {f.name for f in dataclasses.fields(cls)
            if hints[f.name] is int or hints[f.name] == typing.Optional[int]}


def test_every_integer_option_of_train_has_a_range():
    """A new integer field of TrainConfig gets a least value in TRAIN_RANGES (or this test names it)."""
    assert _int_fields(TrainConfig) == set(TRAIN_RANGES)
    for name, lo in TRAIN_RANGES.items():
        default = getattr(TrainConfig, name)
        assert default is None or default >= lo, name


def test_valid_configs_still_build():
    for name, spec in AGENTS.items():
        if name != "residual":  # needs a base run to act, not to configure
            env = "dmc/cartpole-swingup" if "continuous" in spec.actions else "ale/Pong"
            build_config(env, name, "cpu-fast", "cpu", run_dir="x")
    OfflineConfig(dataset="d", offline_steps=0, online_frames=10, online_seed_steps=0, replay_capacity=1)


def _help(capsys, *extra) -> str:
    with pytest.raises(SystemExit) as e:
        main(["train", *extra, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_says_agent_lists_every_agent_and_shows_the_preset_default(capsys):
    out = _help(capsys, "--device", "cpu")
    assert "--agent NAME" in out and "--agent-name" not in out
    flat = " ".join(out.replace("│", " ").split())
    for name in AGENTS:
        assert f"{name}:" in flat, name
    assert "--preset STR" in out
    preset_help = flat[flat.index("--preset STR"):flat.index("--seed INT")]
    assert "(default: auto)" in preset_help, preset_help
    # the other defaults are the resolved preset's, and the help says so
    assert "preset 'auto' resolves to 'cpu-fast' here" in flat
    assert "that preset's values" in flat


def test_help_of_an_explicit_preset_says_which(capsys):
    flat = " ".join(_help(capsys, "--preset", "none", "--agent", "sac").replace("│", " ").split())
    assert "--agent sac: preset 'none'" in flat
    assert "(default: none)" in flat


def test_version(capsys):
    from pixelrl import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pixelrl {__version__}"


def test_list_agents_presets_envs(capsys):
    assert main(["list", "agents"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()]
    assert names == list(AGENTS)
    assert main(["list", "presets"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()]
    assert names == list(PRESETS)
    assert main(["list", "envs", "dmc"]) == 0
    envs = capsys.readouterr().out.split()
    assert "dmc/cartpole-swingup" in envs and all(e.startswith("dmc/") for e in envs)
    assert main(["list", "envs", "nope"]) == 1
    assert "unknown env prefix" in _error_line(capsys)
    assert main(["list", "bogus"]) == 2


def test_offline_run_announces_its_phases_not_frames(capsys):
    cfg = build_config("dmc/cartpole-swingup", "iql", "cpu-fast", "cpu", run_dir="runs/x")
    assert cfg.frames > 0
    cfg = dataclasses.replace(cfg, offline=OfflineConfig(dataset="d.h5", offline_steps=2000))
    _announce(cfg)
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "offline_updates=2,000 online_frames=0" in out and "frames=110" not in out, out
    _print_summary({"run_dir": "r", "curve": "c", "offline_updates": 2000, "updates": 2000, "frames": 0,
                    "wall_s": 6.0, "final_eval_return": 5.0, "random_return": None})
    done = " ".join(capsys.readouterr().out.split())
    assert "done 2,000 offline updates, 0 online frames" in done, done


README = __import__("pathlib").Path(__file__).resolve().parents[2] / "README.md"


def _readme_commands() -> list[list[str]]:
    import shlex

    out = []
    for line in README.read_text().splitlines():
        if line.startswith("pixelrl "):
            out.append(shlex.split(line.split("#", 1)[0]))
    return out


def test_readme_offline_to_online_example_does_not_trigger_its_own_warning(monkeypatch, tmp_path, capsys):
    """The README's IQL offline -> online command, parsed by the real CLI, gives a config whose actor still learns
    online (the warning of OfflineTrainer is not raised for it)."""
    import pixelrl.train.offline as offline_mod

    (cmd,) = [c for c in _readme_commands() if "iql" in c and "--online-frames" in c]
    seen = {}

    class Stop(Exception):
        pass

    class FakeTrainer:
        def __init__(self, cfg):
            seen["cfg"] = cfg
            raise Stop

    monkeypatch.setattr(offline_mod, "dataset_train_defaults", lambda path: {})
    monkeypatch.setattr(offline_mod, "OfflineTrainer", FakeTrainer)
    with pytest.raises(Stop):
        main([*cmd[1:], "--run-dir", str(tmp_path / "run"), "--device", "cpu"])
    cfg = seen["cfg"]
    updates, online = cfg.offline.phase_budgets(cfg.frames)
    assert updates > 0 and online > 0
    assert offline_mod.actor_schedule_ends_offline(cfg.agent, updates, online) is None
    # and the check itself fires on IQL's offline default
    plain = build_config(cfg.env, "iql", "cpu-fast", "cpu").agent
    assert "will not learn" in offline_mod.actor_schedule_ends_offline(plain, updates, online)


def test_readme_and_docs_stand_alone():
    text = README.read_text()
    assert "../" not in text.replace("](docs/", "")  # no link out of the project
    assert "docs/architecture.md" in text
    arch = README.parent / "docs" / "architecture.md"
    assert arch.exists() and "How to add a mechanism" in arch.read_text()
    agents_line = next(line for line in text.splitlines() if "# agents:" in line)
    assert agents_line.split("# agents:")[1].split() == list(AGENTS)


NEGATIVE_OK = {"target_entropy", "log_std_min", "log_std_max", "reward_shift"}
"""Float fields of the agent configs where a negative value is meaningful (nats, log stds, a reward offset)."""


def _agent_config_classes():
    seen = []
    for spec in AGENTS.values():
        if spec.config_cls not in seen:
            seen.append(spec.config_cls)
    return seen


@pytest.mark.parametrize("cls", _agent_config_classes(), ids=lambda c: c.__name__)
def test_every_numeric_agent_field_has_a_range(cls):
    """Every float field of every registered agent's config refuses NaN and infinity, every integer field -1, and
    every float field -1 unless negative values mean something there (:data:`NEGATIVE_OK`)."""
    from pixelrl.errors import ConfigError

    hints = typing.get_type_hints(cls)
    accepted = []
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if t in (float, typing.Optional[float]):
            bad = [float("nan"), float("inf"), -float("inf")] + ([] if f.name in NEGATIVE_OK else [-1.0])
        elif t in (int, typing.Optional[int]):
            bad = [-1]
        else:
            continue
        for value in bad:
            try:
                cls(**{f.name: value})
            except ConfigError:
                continue
            accepted.append(f"{f.name}={value}")
    assert not accepted, f"{cls.__name__} accepts {accepted}"
