"""``--reward SPEC`` and ``--reward.*``: parsing, the config's checks, and the runs a reward cannot apply to. Each
bad input is one line naming what was wrong and the accepted forms; nothing heavy is loaded to say so."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from helpers import fields_documented
from pixelrl.errors import ConfigError
from pixelrl.rewards import RewardConfig, combine, parse_spec, reward_config_from_args
from pixelrl.rewards import base as base_mod
from pixelrl.train.config import OfflineConfig, TrainConfig


def _line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_every_reward_option_is_documented():
    fields_documented(base_mod, "RewardConfig")


def test_parse_spec_and_resolved_defaults():
    assert parse_spec("vlm:a pole standing upright") == ("vlm", "a pole standing upright")
    assert parse_spec("VLM: a: b") == ("vlm", " a: b")  # only the first colon splits
    assert RewardConfig("vlm:a pole").alpha == 0.0  # no baseline: plain CLIP similarity
    assert RewardConfig("vlm:a pole", baseline="a cart").alpha == 0.5  # the vlmrm README's value
    assert RewardConfig("vlm:a pole", baseline="a cart", alpha=0.0).alpha == 0.0


@pytest.mark.parametrize("kw, needle", [
    (dict(spec=""), "needs a spec"),
    (dict(spec="clip"), "not a reward spec"),
    (dict(spec="vlm"), "no argument after 'vlm:'"),
    (dict(spec="vlm:   "), "nothing after 'vlm:'"),
    (dict(spec="rlhf:runs/rm"), "unknown reward kind 'rlhf'"),
    (dict(spec="prefs:runs/no-such-model"), "does not exist"),
    (dict(spec="vlm:a pole|"), "empty prompt"),
    (dict(spec="vlm:a pole", baseline="||"), "empty prompt"),
    (dict(spec="vlm:a|b", baseline="c"), "2 goal prompt(s) but 1 baseline"),
    (dict(spec="vlm:a pole", alpha=0.5), "needs --reward.baseline"),
    (dict(spec="vlm:a pole", baseline="b", alpha=1.5), "--reward.alpha must be a number in [0, 1]"),
    (dict(spec="vlm:a pole", mode="multiply"), "--reward.mode must be one of replace, add"),
    (dict(spec="vlm:a pole", scale=float("nan")), "--reward.scale must be a finite number"),
    (dict(spec="vlm:a pole", batch_size=0), "--reward.batch-size must be an integer >= 1"),
    (dict(spec="vlm:a pole", model=""), "--reward.model must be"),
])
def test_bad_reward_configs_are_one_line(kw, needle):
    with pytest.raises(ConfigError) as e:
        RewardConfig(**kw)
    msg = _line(e)
    assert needle in msg, msg
    if "spec" in needle or "kind" in needle or "argument" in needle:
        assert "vlm:<goal prompt>" in msg  # the accepted forms


def test_command_line_options_are_taken_out_of_argv():
    argv = ["--env", "dmc/cartpole-swingup", "--reward", "vlm:a pole standing upright", "--reward.baseline",
            "a cartpole", "--reward.alpha=0.25", "--reward.batch_size", "8", "--reward.no-autocast",
            "--reward.mode", "add", "--reward.scale", "0.1", "--seed", "3"]
    cfg = reward_config_from_args(argv)
    assert argv == ["--env", "dmc/cartpole-swingup", "--seed", "3"]
    assert cfg == RewardConfig("vlm:a pole standing upright", baseline="a cartpole", alpha=0.25, batch_size=8,
                               autocast=False, mode="add", scale=0.1)
    assert reward_config_from_args(["--seed", "1"]) is None


@pytest.mark.parametrize("argv, needle", [
    (["--reward.alpha", "0.5"], "--reward.alpha needs --reward SPEC"),
    (["--reward", "vlm:a", "--reward.gamma", "1"], "unknown option --reward.gamma"),
    (["--reward", "vlm:a", "--reward.batch-size", "many"], "--reward.batch-size must be an integer"),
    (["--reward", "vlm:a", "--reward.baseline"], "--reward.baseline needs a value"),
    (["--reward"], "--reward needs a spec"),
])
def test_bad_command_lines_are_one_line(argv, needle):
    with pytest.raises(ConfigError) as e:
        reward_config_from_args(list(argv))
    assert needle in _line(e)


def test_combine_replaces_or_adds_with_the_scale():
    class M:
        mode, scale = "replace", 2.0

    env, model = np.array([1.0, -1.0]), np.array([0.25, 0.5])
    assert np.array_equal(combine(M, env, model), np.float32([0.5, 1.0]))
    M.mode = "add"
    assert np.array_equal(combine(M, env, model), np.float32([1.5, 0.0]))
    assert combine(M, env, model).dtype == np.float32


def _train_config(**kw) -> TrainConfig:
    return TrainConfig(**{"agent_name": "drqv2", "run_dir": "unused", **kw})


@pytest.mark.parametrize("kw, needle", [
    (dict(obs="state"), "--obs state gives no frames"),
    (dict(seeds="1-2"), "run one seed at a time"),
    (dict(offline=OfflineConfig(dataset="data/x")), "pixelrl dataset relabel SRC --reward SPEC --out DST"),
])
def test_runs_the_reward_cannot_apply_to_are_refused(kw, needle):
    reward = RewardConfig("vlm:a pole standing upright")
    assert _train_config(reward=reward).reward == reward
    with pytest.raises(ConfigError) as e:
        _train_config(reward=reward, **kw)
    assert needle in _line(e)


def test_agents_with_another_trainer_are_refused():
    from pixelrl.agents import AGENTS

    other = [name for name, spec in AGENTS.items() if getattr(spec, "trainer", "off-policy") != "off-policy"]
    if not other:
        pytest.skip("every registered agent uses the off-policy trainer")
    with pytest.raises(ConfigError) as e:
        _train_config(agent_name=other[0], reward=RewardConfig("vlm:a pole"))
    assert "off-policy replay trainer" in _line(e)


def test_the_cli_reports_a_bad_spec_in_one_line_before_anything_starts(capsys):
    from pixelrl.cli.main import main

    rc = main(["train", "--env", "dmc/cartpole-swingup", "--device", "cpu", "--reward", "clip:a pole"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1 and "unknown reward kind 'clip'" in err[0]
    rc = main(["dataset", "relabel", "nowhere", "--out", "x"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1 and "needs --reward SPEC" in err[0]


def test_config_round_trips_through_json():
    from pixelrl.utils.dataclass_io import from_dict, to_dict

    cfg = _train_config(reward=RewardConfig("vlm:a pole", baseline="a cart", batch_size=16))
    again = from_dict(TrainConfig, to_dict(cfg))
    assert again.reward == cfg.reward and dataclasses.asdict(again.reward)["alpha"] == 0.5
