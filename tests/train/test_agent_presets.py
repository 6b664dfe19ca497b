"""Every agent preset (drqv2, drm, taco, mentor, sac) and one combination of mechanisms, end to end on a tiny
configuration: training runs, each mechanism shows up in the logs, and a combined run resumes exactly."""

import dataclasses
import math

import pytest

from pixelrl.train.loop import Trainer
from pixelrl.train.logger import TIMING_COLUMNS, read_rows
from pixelrl.train.setup import build_config

pytest.importorskip("dm_control")

TRAIN = dict(size=32, action_repeat=8, fast_render=True, eval_every_frames=1000, eval_episodes=1, threads=1,
             device="cpu", progress=False, video=False, tensorboard=False, async_env=False)
AGENT = {"batch_size": 16, "hidden_dim": 32, "feature_dim": 16, "encoder_channels": (8, 8),
         "encoder_strides": (2, 2), "num_seed_steps": 40, "update_every_steps": 1, "replay_capacity": 4000,
         "lr": 1e-3}
SMALL_MOE = {"mentor.moe.num_experts": 4, "mentor.moe.top_k": 2, "mentor.moe.expert_hidden": 16,
             "mentor.moe.gate_hidden": 16, "mentor.perturb_interval": 50}
COMBO = {"critic": "hl-gauss", "aux": ("taco",), "drm.perturb_interval": 60}

# agent -> (extra agent overrides, metrics its mechanisms must log on the train rows)
CASES = {
    "drqv2": ({}, {"critic_loss", "actor_loss"}),
    "drm": ({"drm.perturb_interval": 60}, {"dormant_ratio", "drm_lambda", "drm_value_loss", "drm_perturb_alpha"}),
    "taco": ({}, {"taco_contrastive", "taco_curl", "taco_reward"}),
    "mentor": (SMALL_MOE, {"dormant_ratio", "mentor_perturbs"}),
    "sac": ({}, {"alpha", "alpha_loss"}),
}


def _config(tmp_path, agent, frames, over, name="run"):
    return build_config("dmc/cartpole-swingup", agent, preset="none", run_dir=str(tmp_path / name), frames=frames,
                        seed=3, agent={**AGENT, **over}, **TRAIN)


def _columns(rows):
    return set().union(*(r.keys() for r in rows))


@pytest.mark.slow
@pytest.mark.parametrize("agent", sorted(CASES))
def test_every_agent_preset_trains_end_to_end(tmp_path, agent):
    over, expected = CASES[agent]
    cfg = _config(tmp_path, agent, 2000, over)
    summary = Trainer(cfg).run()
    assert summary["frames"] >= 2000
    train = read_rows(cfg.run_dir, "train")
    missing = expected - _columns(train)
    assert not missing, f"{agent}: metrics {sorted(missing)} never logged; got {sorted(_columns(train))}"
    assert all(math.isfinite(r["critic_loss"]) for r in train if "critic_loss" in r)
    evals = read_rows(cfg.run_dir, "eval")
    assert [r["frames"] for r in evals][-1] >= 2000 and all(math.isfinite(r["eval_return"]) for r in evals)


@pytest.mark.slow
def test_agent_presets_select_their_mechanisms(tmp_path):
    drm = _config(tmp_path, "drm", 1000, {}).agent
    assert (drm.exploration, drm.perturb, drm.value_blend) == ("awakened", "dormant", "expectile")
    taco = build_config("dmc/walker-walk", "taco", preset="paper", run_dir=str(tmp_path / "t")).agent
    # TACO's walker task files: n = 1 with the contrastive horizon K = 3; taco.yaml's batch 1024 wins
    assert taco.aux == ("taco",) and taco.batch_size == 1024 and (taco.nstep, taco.taco.multistep) == (1, 3)
    # a mechanism added to another agent from the config (the CLI's --agent.aux taco) keeps the preset's n
    combo = build_config("dmc/walker-walk", "drqv2", preset="paper", run_dir=str(tmp_path / "c"),
                         agent={"aux": ("taco",), "critic": "hl-gauss"}).agent
    assert (combo.nstep, combo.taco.multistep) == (1, 3) and combo.critic == "hl-gauss"
    mentor = _config(tmp_path, "mentor", 1000, {}).agent
    assert (mentor.moe, mentor.exploration, mentor.perturb) == ("actor", "dormant", "task")
    sac_state = build_config("dmc/cartpole-swingup", "sac", preset="none", obs="state",
                             run_dir=str(tmp_path / "s")).agent
    assert sac_state.hidden_dim == 256 and sac_state.lr == pytest.approx(3e-4)


@pytest.mark.slow
def test_combined_mechanisms_train_and_resume_exactly(tmp_path):
    """drm + HL-Gauss critic + TACO loss: the resolved value range is recorded, and a run stopped at 1000 frames
    and resumed to 2000 logs the same rows as one that ran straight through (mechanism state is checkpointed)."""
    straight = _config(tmp_path, "drm", 2000, COMBO, name="straight")
    Trainer(straight).run()
    resolved = read_rows(straight.run_dir, "train")
    assert {"taco_contrastive", "dormant_ratio", "drm_lambda"} <= _columns(resolved)

    import json
    from pathlib import Path

    cfg_json = json.loads((Path(straight.run_dir) / "config.json").read_text())
    h = cfg_json["agent"]["hl_gauss"]
    assert h["v_min"] < 0 < h["v_max"]  # filled from action repeat 8 and the discount (DMC rewards in [0, 1])
    assert h["v_max"] == pytest.approx(1.05 * 8 / (1 - 0.99))

    first = _config(tmp_path, "drm", 1000, COMBO, name="resumed")
    Trainer(first).run()
    Trainer(dataclasses.replace(first, frames=2000), resume=True).run()

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]

    for kind in ("train", "eval"):
        a, b = strip(read_rows(straight.run_dir, kind)), strip(read_rows(first.run_dir, kind))
        assert a == b, f"{kind} rows differ after resume"


def test_cli_keeps_the_presets_nstep_with_taco(tmp_path):
    """TACO's K-step window is read separately from the n-step return (the authors' walker files: n = 1, K = 3), so
    adding --agent.aux taco no longer changes n."""
    from pixelrl.train.setup import reconcile_cli_agent

    cfg = build_config("dmc/walker-walk", "drqv2", preset="paper", run_dir=str(tmp_path / "w"))
    assert cfg.agent.nstep == 1  # walker's task preset
    with_taco = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, aux=("taco",)))
    assert reconcile_cli_agent(with_taco, ["--agent.aux", "taco"]).agent.nstep == 1
    assert reconcile_cli_agent(cfg, []).agent.nstep == 1


@pytest.mark.slow
def test_snapshot_bank_resets_training_episodes_and_resumes_exactly(tmp_path):
    """--snapshot-bank: training episodes start from teacher snapshots and are truncated after the horizon while
    the reset phase lasts; the wrapper's state is checkpointed, so a resumed run logs the same rows."""
    import numpy as np

    from pixelrl.envs import make
    from pixelrl.envs.snapshot import collect_snapshots

    env = make("dmc/cartpole-swingup", seed=0, size=32, action_repeat=8, fast_render=True)
    rng = np.random.default_rng(0)
    bank = collect_snapshots(env, lambda obs: rng.uniform(-1, 1, 1).astype(np.float32),
                             lambda obs, a: float(rng.normal()), episodes=3, every=10, keep_episodes=3, k=2)
    env.close()
    bank.save(tmp_path / "bank")
    over = dict(snapshot_bank=str(tmp_path / "bank"), snapshot_horizon=20, snapshot_active_agent_steps=60)

    def cfg(name, frames):
        return build_config("dmc/cartpole-swingup", "drqv2", preset="none", run_dir=str(tmp_path / name),
                            frames=frames, seed=3, agent=AGENT, **{**TRAIN, **over})

    straight = cfg("straight", 2000)
    Trainer(straight).run()
    lengths = [r["episode_length"] for r in read_rows(straight.run_dir, "train")]
    assert lengths[:3] == [20, 20, 20]  # snapshot starts, truncated at the horizon while < 60 agent steps
    assert lengths[-1] == 125  # plain resets afterwards: the full 1000-frame episode at action repeat 8

    first = cfg("resumed", 1000)
    Trainer(first).run()
    Trainer(dataclasses.replace(first, frames=2000), resume=True).run()

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]

    assert strip(read_rows(straight.run_dir, "train")) == strip(read_rows(first.run_dir, "train"))


@pytest.mark.slow
def test_taco_walker_setting_and_reference_double_step_train_and_resume_exactly(tmp_path):
    """TACO's walker setting (n = 1, K = 3: the trainer samples the K-step window and o_(t+K) through
    sample_kwargs) with the authors' double optimizer step, end to end, and a resume that continues exactly."""
    over = {"nstep": 1, "taco.optimizer": "separate"}
    straight = _config(tmp_path, "taco", 2000, over, name="straight")
    assert (straight.agent.nstep, straight.agent.taco.multistep) == (1, 3)
    Trainer(straight).run()
    rows = read_rows(straight.run_dir, "train")
    assert {"taco_contrastive", "taco_curl", "taco_reward"} <= _columns(rows)
    assert all(math.isfinite(r["taco_loss"]) for r in rows if "taco_loss" in r)
    first = _config(tmp_path, "taco", 1000, over, name="resumed")
    Trainer(first).run()
    Trainer(dataclasses.replace(first, frames=2000), resume=True).run()

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]

    for kind in ("train", "eval"):
        assert strip(read_rows(straight.run_dir, kind)) == strip(read_rows(first.run_dir, kind)), kind


def test_agent_env_mismatch_fails_before_any_env_with_the_agents_that_fit(monkeypatch):
    import pixelrl.envs.factory as factory
    from pixelrl.agents import AGENTS, AgentSpec
    from pixelrl.errors import ConfigError
    from pixelrl.train.setup import build_config

    def no_env(*a, **k):
        raise AssertionError("an env was made before the mismatch was reported")

    monkeypatch.setattr(factory, "_make_ale", no_env)
    monkeypatch.setattr(factory, "_make_dmc", no_env)
    with pytest.raises(ConfigError) as e:
        build_config("ale/Pong", "drqv2", "auto", "cpu")
    msg = str(e.value)
    assert "\n" not in msg and "'drqv2' needs a continuous" in msg and "ale/Pong has discrete" in msg
    # the message lists the agents that fit, from the registry
    monkeypatch.setitem(AGENTS, "fake-dqn", AgentSpec(*AGENTS["drqv2"][:2], actions=("discrete",)))
    with pytest.raises(ConfigError, match="agents for discrete actions: .*fake-dqn"):
        build_config("ale/Pong", "sac", "auto", "cpu")


def test_cpu_fast_dmc_render_settings_stay_on_dmc():
    from pixelrl.train.setup import build_config

    dmc = build_config("dmc/cartpole-swingup", "drqv2", "cpu-fast", "cpu")
    assert (dmc.size, dmc.action_repeat, dmc.fast_render) == (48, 8, True)
    gym_cfg = build_config("gym/Pendulum-v1", "drqv2", "cpu-fast", "cpu")
    assert (gym_cfg.size, gym_cfg.action_repeat, gym_cfg.fast_render) == (84, None, False)
    assert gym_cfg.agent.batch_size == dmc.agent.batch_size  # the agent's CPU sizes still apply


def test_cpu_fast_random_shift_is_scaled_to_its_48px_frames():
    """cpu-fast pads 2 at 48x48 (DrQ-v2's pad 4 is for 84x84); paper presets keep 4, and a user's value wins."""
    from pixelrl.train.setup import build_config

    for agent in ("drqv2", "drm", "sac", "residual"):
        assert build_config("dmc/cartpole-swingup", agent, "cpu-fast", "cpu").agent.augment_pad == 2
        assert build_config("dmc/cartpole-swingup", agent, "paper", "cpu").agent.augment_pad == 4
    user = build_config("dmc/cartpole-swingup", "drqv2", "cpu-fast", "cpu", agent={"augment_pad": 4})
    assert user.agent.augment_pad == 4
