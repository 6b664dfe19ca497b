"""Success classifier (SERL): it separates two synthetic classes, saves and loads bit for bit, scores frame stacks
as a sparse reward (and ends episodes on success), and refuses bad input with one line: an empty folder, a file
that is not an image, frames of different sizes, a frame size the env does not render."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from pixelrl.cli.main import main
from pixelrl.errors import ConfigError, CorruptFileError
from pixelrl.rewards.classifier import (ClassifierConfig, ClassifierReward, SuccessClassifier, frames_from_dataset,
                                        load_image_folder)

SIZE = 24
FAST = ClassifierConfig(ensemble=2, channels=(8, 8), strides=(2, 2), hidden=16, steps=60, batch_size=32, lr=1e-3,
                        val_fraction=0.25, seed=0)


def synthetic(n: int, success: bool, seed: int) -> np.ndarray:
    """Noisy RGB frames with a bright square top-left (success) or bottom-right (failure)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 80, size=(n, 3, SIZE, SIZE), dtype=np.uint8)
    for i in range(n):
        r, c = rng.integers(0, 4, size=2)
        if success:
            x[i, :, r:r + 8, c:c + 8] = 230
        else:
            x[i, :, SIZE - 8 - r:SIZE - r, SIZE - 8 - c:SIZE - c] = 230
    return x


def write_pngs(folder, frames):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f.transpose(1, 2, 0)).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    model = SuccessClassifier(3, (SIZE, SIZE), FAST)
    metrics = model.fit(synthetic(48, True, 0), synthetic(48, False, 1))
    out = model.save(tmp_path_factory.mktemp("clf") / "clf")
    return model, metrics, out


def test_the_classifier_separates_two_synthetic_classes(fitted):
    model, metrics, _ = fitted
    assert metrics["val_acc"] >= 0.9 and metrics["train_acc"] >= 0.9
    p_pos = model.prob(synthetic(32, True, 5))
    p_neg = model.prob(synthetic(32, False, 6))
    assert np.mean(p_pos >= 0.5) >= 0.9 and np.mean(p_neg < 0.5) >= 0.9
    assert p_pos.mean() - p_neg.mean() > 0.5
    # an untrained one does not: the test can fail
    fresh = SuccessClassifier(3, (SIZE, SIZE), FAST)
    assert abs(fresh.prob(synthetic(32, True, 5)).mean() - fresh.prob(synthetic(32, False, 6)).mean()) < 0.2


def test_save_load_round_trip_and_corruption(fitted, tmp_path):
    model, _, out = fitted
    loaded = SuccessClassifier.load(out)
    x = synthetic(8, True, 9)
    np.testing.assert_array_equal(model.prob(x), loaded.prob(x))
    assert loaded.threshold == 0.5 and loaded.metrics["val_acc"] >= 0.9
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "classifier.json").write_text((out / "classifier.json").read_text())
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="sha256"):
        SuccessClassifier.load(bad)
    with pytest.raises(ConfigError, match="is not a success classifier"):
        SuccessClassifier.load(tmp_path)


def test_as_a_reward_on_frame_stacks_and_as_the_episode_end(fitted):
    from pixelrl.rewards import RewardConfig, build_reward_model

    _, _, out = fitted
    model = build_reward_model(RewardConfig(f"classifier:{out}"))
    assert isinstance(model, ClassifierReward) and model.needs == frozenset({"next_obs"})
    space = spaces.Box(0, 255, (9, SIZE, SIZE), np.uint8)
    model.bind(space, 3)
    # the newest frame (last 3 channels) decides
    pos, neg = synthetic(4, True, 11), synthetic(4, False, 12)
    stacks = np.concatenate([np.concatenate([neg, neg, pos], 1), np.concatenate([pos, pos, neg], 1)])
    r = model(None, next_obs=stacks)
    assert r.dtype == np.float32 and r.tolist() == [1.0] * 4 + [0.0] * 4
    strict = build_reward_model(RewardConfig(f"classifier:{out}", threshold=1.0))
    strict.bind(space, 3)
    assert strict(None, next_obs=stacks).sum() == 0
    # dict observations read 'pixels'
    model.bind(spaces.Dict({"pixels": space, "state": spaces.Box(-1, 1, (2,), np.float32)}), 3)
    assert model(None, next_obs={"pixels": stacks, "state": np.zeros((8, 2), np.float32)}).tolist() == r.tolist()
    # as the episode end: a fake env whose frames show success from step 3 on
    import gymnasium as gym

    from pixelrl.rewards.classifier import end_on_success

    class Env(gym.Env):
        observation_space, action_space = space, spaces.Box(-1, 1, (1,), np.float32)

        def reset(self, seed=None, options=None):
            self.t = 0
            return np.concatenate([neg[0]] * 3), {}

        def step(self, a):
            self.t += 1
            f = pos[0] if self.t >= 3 else neg[0]
            return np.concatenate([f] * 3), 0.0, False, self.t >= 10, {}

    model.bind(space, 3)
    env = end_on_success(Env(), model)
    env.reset()
    ends = [env.step(np.zeros(1, np.float32))[2] for _ in range(3)]
    assert ends == [False, False, True]
    with pytest.raises(ConfigError, match="fitted on 3-channel 24x24 frames, but the env gives 3-channel 32x32"):
        model.bind(spaces.Box(0, 255, (9, 32, 32), np.uint8), 3)
    with pytest.raises(ConfigError, match="not uint8"):
        model.bind(spaces.Box(-1, 1, (5,), np.float32), 1)


def test_image_folders_and_their_bad_input(tmp_path):
    frames = synthetic(3, True, 0)
    folder = write_pngs(tmp_path / "ok", frames)
    np.testing.assert_array_equal(load_image_folder(folder), frames)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is empty"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(ConfigError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    bad = write_pngs(tmp_path / "bad", frames)
    (bad / "notes.txt").write_text("not a frame")
    with pytest.raises(ConfigError, match=r"notes.txt is not an image"):
        load_image_folder(bad)
    mixed = write_pngs(tmp_path / "mixed", frames)
    from PIL import Image

    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(mixed / "zz.png")
    with pytest.raises(ConfigError, match="is 12x10 but .* is 24x24"):
        load_image_folder(mixed)


def test_cli_fit_classifier_from_folders_and_bad_input(tmp_path, capsys):
    pos = write_pngs(tmp_path / "pos", synthetic(16, True, 0))
    neg = write_pngs(tmp_path / "neg", synthetic(16, False, 1))
    out = tmp_path / "clf"
    args = ["reward", "fit-classifier", "--positives", str(pos), "--negatives", str(neg), "--out", str(out),
            "--ensemble", "1", "--channels", "8", "8", "--strides", "2", "2", "--hidden", "16", "--steps", "40",
            "--batch-size", "16", "--lr", "0.001"]
    assert main(args) == 0
    assert (out / "model.safetensors").is_file() and SuccessClassifier.load(out).cfg.steps == 40
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    for bad, msg in ((["--negatives", str(tmp_path / "empty")], "is empty"),
                     (["--steps", "-1"], "--steps must be an integer >= 0"),
                     (["--dataset", str(tmp_path)], "either --dataset")):
        assert main([*args, *bad]) == 1
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and msg in err[0], err


def test_labels_from_a_dataset(tmp_path):
    from pixelrl.data.dataset import DatasetWriter

    obs_space = spaces.Box(0, 255, (3, SIZE, SIZE), np.uint8)
    act_space = spaces.Box(-1, 1, (1,), np.float32)
    frames = np.concatenate([synthetic(4, False, 0), synthetic(3, True, 1)])  # 7 observations, 6 steps
    with DatasetWriter(tmp_path / "ds", obs_space, act_space, env_id="dmc/cartpole-swingup", frame_stack=1) as w:
        w.add_episode(frames, np.zeros((6, 1), np.float32), np.array([0, 0, 0, 1, 1, 1.0]), np.zeros(6, bool),
                      np.eye(6, dtype=bool)[-1])
    pos, neg = frames_from_dataset(tmp_path / "ds", "rewards")
    np.testing.assert_array_equal(pos, frames[4:])  # the frames after the rewarded steps
    np.testing.assert_array_equal(neg, frames[1:4])
    with pytest.raises(ConfigError, match="no per-step array 'success'"):
        frames_from_dataset(tmp_path / "ds", "success")


@pytest.mark.slow
def test_end_on_success_in_the_trainer(tmp_path):
    """A classifier that calls every frame a success (threshold 0) ends every training episode after one step."""
    pytest.importorskip("dm_control")
    from pixelrl.train.logger import read_rows

    model = SuccessClassifier(3, (32, 32), ClassifierConfig(ensemble=1, channels=(4,), strides=(2,), hidden=4))
    clf = model.save(tmp_path / "clf")
    run = tmp_path / "run"
    args = ["train", "--env", "dmc/cartpole-swingup", "--preset", "none", "--size", "32", "--action-repeat", "8",
            "--fast-render", "--frames", "80", "--eval-every-frames", "1000", "--eval-episodes", "1",
            "--no-eval-random", "--threads", "1", "--device", "cpu", "--no-progress", "--no-video",
            "--no-tensorboard", "--agent.batch-size", "4", "--agent.hidden-dim", "8", "--agent.feature-dim", "4",
            "--agent.encoder-channels", "4", "4", "4", "4", "--agent.num-seed-steps", "100",
            "--agent.precision", "fp32", "--run-dir", str(run), "--reward", f"classifier:{clf}",
            "--reward.threshold", "0", "--reward.end-on-success"]
    assert main(args) == 0
    rows = read_rows(run, "train")
    assert len(rows) == 10 and all(r["episode_length"] == 1 for r in rows)
    assert all(r["reward_model_return"] == 1.0 for r in rows)
    assert read_rows(run, "eval")[-1]["eval_return"] > 1  # evaluation runs to the env's own end
