import dataclasses

import pytest

from pixelrl.agents.drqv2 import DrQv2Config
from pixelrl.agents.presets import EASY, MEDIUM, cpu_fast, task_difficulty, task_preset
from pixelrl.agents.schedules import parse_schedule
from pixelrl.errors import ConfigError


def test_schedule_forms():
    assert parse_schedule(0.3)(10) == 0.3
    assert parse_schedule("0.25")(10) == 0.25
    f = parse_schedule("linear(1.0,0.1,500000)")
    assert f(0) == pytest.approx(1.0) and f(250000) == pytest.approx(0.55) and f(10**7) == pytest.approx(0.1)
    g = parse_schedule("step_linear(1.0,0.5,10,0.1,10)")
    assert g(5) == pytest.approx(0.75) and g(15) == pytest.approx(0.3) and g(100) == pytest.approx(0.1)
    assert parse_schedule("linear(1, 1e-1, 1e5)")(1e5) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="linear"):
        parse_schedule("exp(1)")


@pytest.mark.parametrize(
    "env_id,diff,sched",
    [
        ("dmc/cartpole-swingup", "easy", "linear(1.0,0.1,100000)"),
        ("cheetah_run", "medium", "linear(1.0,0.1,500000)"),
        ("dmc/humanoid-walk", "hard", "linear(1.0,0.1,2000000)"),
    ],
)
def test_task_presets(env_id, diff, sched):
    assert task_difficulty(env_id) == diff
    p = task_preset(env_id)
    assert p["stddev_schedule"] == sched
    assert p["frames"] == {"easy": 1_100_000, "medium": 3_100_000, "hard": 30_100_000}[diff]


def test_special_tasks():
    w = task_preset("dmc/walker-run")
    assert (w["nstep"], w["batch_size"], w["frames"]) == (1, 512, 3_100_000)
    assert task_preset("dmc/walker-walk")["frames"] == 1_100_000
    assert task_preset("quadruped_run")["replay_capacity"] == 100_000
    h = task_preset("humanoid_run")
    assert (h["lr"], h["feature_dim"]) == (8e-5, 100)
    assert task_preset("gym/Pendulum-v1") == {}
    assert len(EASY) == 10 and len(MEDIUM) == 11


def test_presets_are_valid_configs():
    fields = {f.name for f in dataclasses.fields(DrQv2Config)}
    for env_id in list(EASY) + list(MEDIUM) + ["humanoid_run"]:
        p = task_preset(env_id)
        DrQv2Config(**{k: v for k, v in p.items() if k in fields})
        assert set(p) - fields <= {"frames"}
    DrQv2Config(**{k: v for k, v in cpu_fast.items() if k in fields})
    from pixelrl.train.config import TrainConfig

    trainer_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(cpu_fast) - fields == {"size", "action_repeat", "fast_render", "frames", "eval_episodes"} <= trainer_fields
    assert cpu_fast["encoder_strides"] == (2, 2, 1, 1) and cpu_fast["update_every_steps"] == 1
