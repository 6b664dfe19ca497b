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
    assert len(EASY) == 9 and len(MEDIUM) == 12


# Every task file of the authors' repositories: (class, per-task overrides). DrQ-v2: facebookresearch/drqv2
# cfgs/task; DrM: XuGW-Kevin/DrM cfgs/task (MENTOR's DMC files are the same); TACO: FrankZheng2022/TACO cfgs/task.
_E, _M, _H = "easy", "medium", "hard"
_WALKER = {"nstep": 1, "batch_size": 512}
_LR = {"lr": 8e-5, "feature_dim": 100}
AUTHORS_FILES = {
    "drqv2": {
        "cartpole_balance": (_E, {}), "cartpole_balance_sparse": (_E, {}), "cartpole_swingup": (_E, {}),
        "cup_catch": (_E, {}), "finger_spin": (_E, {}), "hopper_stand": (_E, {}), "pendulum_swingup": (_E, {}),
        "walker_stand": (_E, _WALKER), "walker_walk": (_E, _WALKER), "acrobot_swingup": (_M, {}),
        "cartpole_swingup_sparse": (_M, {}), "cheetah_run": (_M, {}), "finger_turn_easy": (_M, {}),
        "finger_turn_hard": (_M, {}), "hopper_hop": (_M, {}), "quadruped_run": (_M, {"replay_capacity": 100_000}),
        "quadruped_walk": (_M, {}), "reach_duplo": (_M, {}), "reacher_easy": (_M, {}), "reacher_hard": (_M, {}),
        "walker_run": (_M, _WALKER), "humanoid_run": (_H, _LR), "humanoid_stand": (_H, _LR),
        "humanoid_walk": (_H, _LR),
    },
    "drm": {
        "acrobot_swingup": (_M, {}), "acrobot_swingup_sparse": (_H, {}), "cartpole_swingup_sparse": (_M, {}),
        "cheetah_run": (_M, {}), "hopper_hop": (_M, {}), "quadruped_run": (_M, {"replay_capacity": 100_000}),
        "quadruped_walk": (_M, {"replay_capacity": 100_000}), "reacher_easy": (_M, {}), "reacher_hard": (_M, {}),
        "walker_run": (_M, {"batch_size": 512}), "dog_run": (_H, _LR), "dog_stand": (_H, _LR),
        "dog_trot": (_H, _LR), "dog_walk": (_H, _LR), "humanoid_run": (_H, _LR), "humanoid_stand": (_H, _LR),
        "humanoid_walk": (_H, _LR), "manipulator_bring_ball": (_H, {"lr": 8e-5}),
    },
    "taco": {
        "cartpole_balance": (_E, {}), "cartpole_balance_sparse": (_E, {}), "cartpole_swingup": (_E, {}),
        "cup_catch": (_E, {}), "finger_spin": (_E, {}), "hopper_stand": (_E, {}), "pendulum_swingup": (_E, {}),
        "walker_stand": (_E, _WALKER), "walker_walk": (_E, _WALKER), "acrobot_swingup": (_M, {}),
        "acrobot_swingup_sparse": (_M, {}), "cartpole_swingup_sparse": (_M, {}), "cheetah_run": (_M, {}),
        "finger_turn_easy": (_M, {}), "finger_turn_hard": (_M, {}), "hopper_hop": (_M, {}),
        "quadruped_run": (_M, {"replay_capacity": 100_000}), "quadruped_walk": (_M, {}), "reach_duplo": (_M, {}),
        "reacher_easy": (_M, {}), "reacher_hard": (_M, {}), "walker_run": (_M, _WALKER),
        "manipulator_bring_ball": (_H, {}),
    },
}
AUTHORS_FILES["mentor"] = AUTHORS_FILES["drm"]
_CLASS = {_E: ("linear(1.0,0.1,100000)", 1_100_000), _M: ("linear(1.0,0.1,500000)", 3_100_000),
          _H: ("linear(1.0,0.1,2000000)", 30_100_000)}


@pytest.mark.parametrize("agent", sorted(AUTHORS_FILES))
def test_every_task_follows_its_methods_files(agent):
    for task, (cls, extra) in AUTHORS_FILES[agent].items():
        sched, frames = _CLASS[cls]
        assert task_difficulty(f"dmc/{task.replace('_', '-')}", agent) == cls, (agent, task)
        assert task_preset(f"dmc/{task.replace('_', '-')}", agent) == {"stddev_schedule": sched, "frames": frames,
                                                                        **extra}, (agent, task)


def test_reacher_easy_is_medium():
    """DrQ-v2's (and DrM's, TACO's) reacher_easy.yaml: defaults medium."""
    assert task_difficulty("dmc/reacher-easy") == "medium"
    assert task_preset("dmc/reacher-easy")["stddev_schedule"] == "linear(1.0,0.1,500000)"


def test_drm_hard_tasks_and_walker_run():
    dog = task_preset("dmc/dog-run", "drm")
    assert (dog["stddev_schedule"], dog["lr"], dog["feature_dim"]) == ("linear(1.0,0.1,2000000)", 8e-5, 100)
    ball = task_preset("dmc/manipulator-bring-ball", "drm")
    assert ball["lr"] == 8e-5 and ball["stddev_schedule"] == "linear(1.0,0.1,2000000)" and "feature_dim" not in ball
    walker = task_preset("dmc/walker-run", "drm")
    assert walker["batch_size"] == 512 and "nstep" not in walker  # DrM keeps n = 3
    # a task without a DrM file: DrQ-v2's file
    assert task_preset("dmc/walker-walk", "drm") == task_preset("dmc/walker-walk")
    assert task_preset("dmc/dog-run") == {}  # not in DrQ-v2's lists


def test_train_config_applies_each_methods_task_files():
    from pixelrl.train.setup import build_config

    dog = build_config("dmc/dog-run", "drm", preset="paper", fill_run_dir=False)
    assert (dog.agent.lr, dog.agent.feature_dim, dog.frames) == (8e-5, 100, 30_100_000)
    assert dog.agent.stddev_schedule == "linear(1.0,0.1,2000000)" and dog.agent.drm.alpha_max == 0.6
    trot = build_config("dmc/dog-trot", "drm", preset="paper", fill_run_dir=False)
    assert trot.agent.drm.alpha_max == 0.9 and trot.agent.drm.lambda_max == 0.6
    walker = build_config("dmc/walker-run", "drm", preset="paper", fill_run_dir=False)
    assert (walker.agent.nstep, walker.agent.batch_size) == (3, 512)
    mentor = build_config("dmc/humanoid-walk", "mentor", preset="paper", fill_run_dir=False)
    assert mentor.agent.mentor.alpha_max == 0.9 and mentor.agent.lr == 8e-5
    drqv2 = build_config("dmc/walker-run", "drqv2", preset="paper", fill_run_dir=False)
    assert (drqv2.agent.nstep, drqv2.agent.batch_size) == (1, 512)


def test_presets_are_valid_configs():
    fields = {f.name for f in dataclasses.fields(DrQv2Config)}
    for env_id in list(EASY) + list(MEDIUM) + ["humanoid_run"]:
        p = task_preset(env_id)
        DrQv2Config(**{k: v for k, v in p.items() if k in fields})
        assert set(p) - fields <= {"frames"}
    DrQv2Config(**{k: v for k, v in cpu_fast.items() if k in fields})
    from pixelrl.train.config import TrainConfig

    trainer_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(cpu_fast) - fields == {"size", "action_repeat", "fast_render", "frames", "eval_episodes", "time_budget_min"} <= trainer_fields
    assert cpu_fast["encoder_strides"] == (2, 2, 1, 1) and cpu_fast["update_every_steps"] == 1
