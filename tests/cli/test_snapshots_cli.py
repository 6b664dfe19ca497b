"""`pixelrl snapshots collect|info`: a bank from a random or a trained teacher, deterministic per seed, trained on with
`pixelrl train --snapshot-bank`, and clear errors."""

import json
import os

import numpy as np
import pytest

from pixelrl.cli.main import main
from pixelrl.envs.snapshot import MissingBankError, SnapshotBank, return_to_go
from pixelrl.errors import ConfigError

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("dm_control")

ENV = "dmc/cartpole-swingup"
TINY_ENV = ["--action-repeat", "8"]
TRAIN = [
    "--env", ENV, "--preset", "none", "--size", "32", "--action-repeat", "8", "--fast-render",
    "--eval-every-frames", "1000", "--eval-episodes", "1", "--threads", "1", "--device", "cpu", "--no-progress",
    "--no-video", "--no-tensorboard", "--no-async-env",
    "--agent.batch-size", "16", "--agent.hidden-dim", "32", "--agent.feature-dim", "16",
    "--agent.encoder-channels", "8", "8", "--agent.encoder-strides", "2", "2", "--agent.num-seed-steps", "20",
    "--agent.update-every-steps", "1", "--agent.replay-capacity", "2000",
]


def _json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _collect(out, *extra):
    return main(["snapshots", "collect", "--out", str(out), "--no-progress", "--device", "cpu", *extra])


@pytest.mark.slow
def test_random_teacher_bank_info_and_training_on_it(tmp_path, capsys):
    from pixelrl.train.logger import read_rows

    bank_dir = tmp_path / "banks" / "cartpole"
    args = ["--env", ENV, "--episodes", "3", "--keep-episodes", "2", "--clusters", "3", "--seed", "1",
            "--action-repeat", "8"]
    assert _collect(bank_dir, *args) == 0
    out = _json(capsys)
    bank = SnapshotBank.load(bank_dir)
    # 125 agent steps per episode at action repeat 8, a snapshot every 10 (steps 0, 10, ..., 120), 2 episodes kept
    assert out["snapshots"] == len(bank) == 2 * 13 and out["k"] == bank.num_clusters == 3
    assert out["value"] == bank.meta["value"] == "return_to_go" and out["env_id"] == bank.meta["env_id"] == ENV
    assert bank.meta["teacher"]["policy"] == "random" and bank.meta["env_kwargs"]["action_repeat"] == 8
    assert sorted(set(bank.episode.tolist())) == out["episodes"]["kept"]
    rets = bank.meta["episode_returns"]
    assert sorted(rets, reverse=True)[:2] == sorted({float(r) for r in bank.episode_return}, reverse=True)
    assert out["values"]["min"] == pytest.approx(bank.values.min()) and bank.values.max() > bank.values.min()
    assert [p.name for p in bank_dir.parent.iterdir()] == ["cartpole"]  # no temporary folder left behind

    # the same arguments write the same bank; another seed another one
    assert _collect(tmp_path / "again", *args) == 0
    again = SnapshotBank.load(tmp_path / "again")
    assert np.array_equal(again.physics, bank.physics) and np.array_equal(again.values, bank.values)
    args_seed2 = [a if a != "1" else "2" for a in args]
    assert _collect(tmp_path / "other", *args_seed2) == 0
    assert not np.array_equal(SnapshotBank.load(tmp_path / "other").values, bank.values)
    capsys.readouterr()

    assert main(["snapshots", "info", str(bank_dir)]) == 0
    printed = capsys.readouterr().out
    info = json.loads(printed.strip().splitlines()[-1])
    assert f"{len(bank)} snapshots of {ENV}" in printed and "clusters: 3" in printed
    assert info["snapshots"] == len(bank) and info["values"]["max"] == pytest.approx(bank.values.max())
    assert [c["size"] for c in info["clusters"]] == [int((bank.cluster == c).sum()) for c in range(3)]

    # the student trains on it: snapshot episodes truncated at the horizon, then plain resets
    run = tmp_path / "run"
    assert main(["train", *TRAIN, "--frames", "1600", "--run-dir", str(run), "--snapshot-bank", str(bank_dir),
                 "--snapshot-horizon", "15", "--snapshot-active-agent-steps", "40"]) == 0
    lengths = [r["episode_length"] for r in read_rows(run, "train")]
    starts = np.cumsum([0] + lengths[:-1])  # agent step at which each episode began
    snap = [n for n, t in zip(lengths, starts) if t < 40]
    # snapshot episodes: cut at the horizon (or earlier by the env's time limit, for snapshots near its end)
    assert len(snap) >= 3 and max(snap) == 15 and all(n <= 15 for n in snap)
    assert lengths[len(snap):] and all(n == 125 for n in lengths[len(snap):])  # plain resets afterwards


def _fake_run(tmp_path):
    """A run folder as `pixelrl train` leaves it: config.json and two checkpoints of a tiny DrQ-v2."""
    import torch

    from pixelrl.agents import make_agent
    from pixelrl.envs import make
    from pixelrl.train.setup import build_config
    from pixelrl.utils.checkpoint import save_checkpoint
    from pixelrl.utils.dataclass_io import to_dict

    run = tmp_path / "run"
    cfg = build_config(ENV, "drqv2", "none", "cpu", size=32, action_repeat=8, fast_render=True, run_dir=str(run),
                       agent={"hidden_dim": 16, "feature_dim": 8, "encoder_channels": (4, 4, 4, 4)})
    run.mkdir()
    (run / "config.json").write_text(json.dumps(to_dict(cfg)))
    env = make(ENV, **cfg.env_kwargs())
    for frames in (800, 1600):
        torch.manual_seed(frames)
        agent = make_agent("drqv2", env.observation_space, env.action_space, cfg.agent, "cpu")
        save_checkpoint(run / "checkpoints", f"frames_{frames:012d}",
                        {"agent": agent.state_dict(), "trainer": {"agent_steps": frames // 8, "frames": frames}})
    env.close()
    return run


def _teacher_q_at(run, checkpoint, state):
    from pixelrl.agents import make_agent
    from pixelrl.envs import make
    from pixelrl.envs.snapshot import agent_value_fn, restore_state
    from pixelrl.train.setup import config_from_run
    from pixelrl.utils.checkpoint import load_checkpoint

    cfg = config_from_run(json.loads((run / "config.json").read_text()))
    env = make(ENV, **cfg.env_kwargs())
    env.reset(seed=0)
    obs = restore_state(env, state)  # a reset state: the frame stack holds copies of one frame, as after reset
    env.close()
    agent = make_agent("drqv2", env.observation_space, env.action_space, cfg.agent, "cpu")
    agent.load_state_dict(load_checkpoint(run / "checkpoints" / checkpoint)["agent"])
    return agent_value_fn(agent)(obs, agent.act(obs, step=0, eval_mode=True))


def test_trained_teacher_values_are_its_q(tmp_path, capsys):
    run = _fake_run(tmp_path)
    common = ["--policy", str(run), "--episodes", "1", "--every", "25", "--clusters", "2"]
    assert _collect(tmp_path / "q", *common) == 0
    out = _json(capsys)
    q = SnapshotBank.load(tmp_path / "q")
    assert out["value"] == q.meta["value"] == "q" and out["env_id"] == ENV and len(q) == 5  # steps 0, 25, ..., 100
    assert q.meta["teacher"]["checkpoint"] == "frames_000000001600" and q.meta["teacher"]["agent"] == "drqv2"
    # the first snapshot (the reset state) is tagged with the teacher's min-Q of the action it takes there
    assert q.step[0] == 0
    assert q.values[0] == pytest.approx(_teacher_q_at(run, "frames_000000001600", q.state(0)), rel=1e-5, abs=1e-6)
    # a checkpoint by name; return-to-go instead of Q; Gaussian action noise
    assert _collect(tmp_path / "rtg", *common, "--checkpoint", "frames_000000000800", "--value", "return-to-go",
                    "--noise-std", "0.3") == 0
    rtg = SnapshotBank.load(tmp_path / "rtg")
    assert rtg.meta["teacher"]["checkpoint"] == "frames_000000000800" and rtg.meta["teacher"]["noise_std"] == 0.3
    assert rtg.meta["value"] == "return_to_go" and rtg.meta["discount"] == 0.99
    assert not np.allclose(rtg.values, q.values)
    from pixelrl.errors import NotFoundError
    from pixelrl.train.snapshots import collect_snapshot_bank

    with pytest.raises(NotFoundError, match="not found: it is neither a folder nor a checkpoint"):

        collect_snapshot_bank(None, str(run), 1, tmp_path / "x", checkpoint="frames_nope")
    assert main(["snapshots", "collect", "--out", str(tmp_path / "x"), *common, "--size", "64"]) == 1
    assert "size=32" in capsys.readouterr().err  # the run's own env settings only
    assert not (tmp_path / "x").exists()


def test_return_to_go_values():
    np.testing.assert_allclose(return_to_go(np.array([1.0, 0.0, 2.0]), 0.5), [1.5, 1.0, 2.0])
    np.testing.assert_allclose(return_to_go(np.array([1.0, 1.0]), 1.0), [2.0, 1.0])


@pytest.mark.parametrize("argv, message", [
    (["--env", ENV, "--policy", "runs/does-not-exist"], "random' or a run folder"),
    (["--policy", "random"], "--env is required"),
    (["--env", "gym/CartPole-v1"], "restorable MuJoCo simulator"),
    (["--env", ENV, "--value", "q"], "needs a teacher with a critic"),
    (["--env", ENV, "--value", "mc"], "--value must be one of"),
    (["--env", ENV, "--episodes", "2", "--keep-episodes", "3"], "--keep-episodes"),
    (["--env", ENV, "--clusters", "0"], "--clusters"),
    (["--env", "dmc/not-a-task"], "not-a-task"),
])
def test_collect_errors_are_named(tmp_path, capsys, argv, message):
    assert _collect(tmp_path / "bank", "--episodes", "1", *TINY_ENV, *argv) == 1
    err = capsys.readouterr().err
    assert "pixelrl snapshots: error:" in err and message in err
    assert not (tmp_path / "bank").exists()


def test_existing_out_missing_and_corrupt_banks(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert _collect(tmp_path / "taken", "--env", ENV, "--episodes", "1") == 1
    assert "already exists" in capsys.readouterr().err

    assert main(["snapshots", "info", str(tmp_path / "nowhere")]) == 1
    assert "no snapshot bank at" in capsys.readouterr().err
    with pytest.raises(MissingBankError) as e:
        SnapshotBank.load(tmp_path / "nowhere")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ConfigError)

    assert _collect(tmp_path / "bank", "--env", ENV, "--episodes", "1", "--action-repeat", "8") == 0
    npz = tmp_path / "bank" / "snapshots.npz"
    npz.write_bytes(npz.read_bytes()[:-20])
    capsys.readouterr()
    assert main(["snapshots", "info", str(tmp_path / "bank")]) == 1
    assert "SHA-256" in capsys.readouterr().err

    # the trainer names a missing bank too
    assert main(["train", *TRAIN, "--frames", "100", "--run-dir", str(tmp_path / "run"),
                 "--snapshot-bank", str(tmp_path / "nowhere")]) == 1
    assert "no snapshot bank at" in capsys.readouterr().err


def test_usage(capsys):
    assert main(["snapshots"]) == 2
    assert main(["snapshots", "--help"]) == 0
    assert "pixelrl snapshots collect" in capsys.readouterr().out
    assert main(["snapshots", "nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
