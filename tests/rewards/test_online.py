"""``pixelrl train --reward``: the off-policy trainer stores the reward model's rewards in its replay, logs the
model's return beside the env's, and a run stopped and resumed writes the same rows and stores the same rewards as
one never interrupted. Tiny in-process runs of 32px cartpole with a tiny saved CLIP."""

from __future__ import annotations

import numpy as np
import pytest

from pixelrl.cli.main import main
from pixelrl.train.logger import TIMING_COLUMNS, read_rows
from helpers import load_run_buffer

pytest.importorskip("dm_control")

TINY = [
    "--env", "dmc/cartpole-swingup", "--preset", "none", "--size", "32", "--action-repeat", "8",
    "--fast-render", "--eval-every-frames", "1000", "--eval-episodes", "1", "--no-eval-random",
    "--threads", "1", "--device", "cpu", "--no-progress", "--no-video", "--no-tensorboard", "--no-async-env",
    "--agent.batch-size", "16", "--agent.hidden-dim", "16", "--agent.feature-dim", "8",
    "--agent.encoder-channels", "4", "4", "4", "4", "--agent.num-seed-steps", "60",
    "--agent.update-every-steps", "2", "--agent.replay-capacity", "5000", "--agent.precision", "fp32",
    "--reward", "vlm:a pole standing upright", "--reward.baseline", "a cartpole", "--reward.batch-size", "48",
]


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def _replay_rewards(run):
    """The run's replay, read back from its folder."""
    return load_run_buffer(run)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_clip):
    run = tmp_path_factory.mktemp("straight") / "run"
    assert main(["train", *TINY, "--reward.model", str(tiny_clip), "--frames", "3000", "--run-dir", str(run)]) == 0
    return run


@pytest.mark.slow
def test_the_replay_holds_the_models_rewards_and_both_returns_are_logged(straight, tiny_clip):
    from pixelrl.rewards import RewardConfig, build_reward_model
    from pixelrl.rewards.relabel import relabel_replay

    rows = read_rows(straight, "train")
    assert len(rows) == 3
    for r in rows:
        assert {"episode_return", "reward_model_return", "learn_return"} <= set(r)
        assert r["learn_return"] == pytest.approx(r["reward_model_return"])  # replace mode, scale 1
        assert r["reward_model_return"] != pytest.approx(r["episode_return"])  # the env's return is kept apart
    assert "critic_loss" in rows[-1]  # the agent learned from the stored rewards
    replay = _replay_rewards(straight)
    a = replay.state_dict()["arrays"]
    stored = a["reward"][~a["first"]]
    assert stored.size == 3 * 125
    # the stored rewards are the model's rewards of the frames each step led to
    model = build_reward_model(RewardConfig("vlm:a pole standing upright", baseline="a cartpole",
                                            model=str(tiny_clip), batch_size=48))
    relabel_replay(replay, model)
    b = replay.state_dict()["arrays"]
    np.testing.assert_allclose(stored, b["reward"][~b["first"]], atol=1e-5)
    per_episode = stored.astype(np.float64).reshape(3, 125).sum(1)
    np.testing.assert_allclose(per_episode, [r["reward_model_return"] for r in rows], rtol=1e-5)
    assert read_rows(straight, "eval")[-1]["eval_return"] >= 0  # evaluation reports the env's return


@pytest.mark.slow
def test_resume_continues_exactly_with_the_reward_model(straight, tmp_path, tiny_clip):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--reward.model", str(tiny_clip), "--frames", "2000", "--run-dir", str(run)]) == 0
    assert main(["resume", str(run), "--frames", "3000"]) == 0
    for kind in ("train", "eval"):
        assert _comparable(read_rows(run, kind)) == _comparable(read_rows(straight, kind)), kind
    a, b = _replay_rewards(run).state_dict()["arrays"], _replay_rewards(straight).state_dict()["arrays"]
    assert np.array_equal(a["reward"], b["reward"]) and np.array_equal(a["obs_0"], b["obs_0"])


def test_a_missing_model_is_one_line_before_any_env_starts(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", *TINY, "--reward.model", str(tmp_path / "models" / "clip"), "--frames", "1000",
               "--run-dir", str(run)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1, err
    assert "no such folder" in err[0] and "hf download openai/clip-vit-base-patch32" in err[0]
    assert not run.exists()  # nothing was started or written
