import csv
import json

import numpy as np
import pytest

from pixelrl.errors import CorruptFileError
from pixelrl.train.logger import Logger, read_rows
from pixelrl.train.plot import bootstrap_ci, iqm


def test_logger_csv_widens_and_resume_truncates(tmp_path):
    log = Logger(tmp_path, tensorboard=False)
    log.log("train", {"frames": 10, "agent_steps": 5, "episode_return": 1.0})
    offset = log.offset()
    log.log("train", {"frames": 20, "agent_steps": 10, "episode_return": 2.0, "critic_loss": 0.5})
    log.log("eval", {"frames": 20, "agent_steps": 10, "eval_return": 3.0})
    with open(tmp_path / "train.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["critic_loss"] for r in rows] == ["", "0.5"]
    log.close()
    # a resumed run truncates the rows written after the checkpoint
    log2 = Logger(tmp_path, tensorboard=False, jsonl_offset=offset)
    assert [r["frames"] for r in read_rows(tmp_path)] == [10]
    assert not log2.rows["eval"]
    with open(tmp_path / "train.csv") as f:
        assert len(list(csv.DictReader(f))) == 1


def test_logger_refuses_shorter_log_than_checkpoint(tmp_path):
    Logger(tmp_path, tensorboard=False).log("train", {"frames": 1, "agent_steps": 1})
    with pytest.raises(CorruptFileError, match="truncated"):  # and the checkpoint holds no copy to repair it from
        Logger(tmp_path, tensorboard=False, jsonl_offset=10_000)


def test_iqm_matches_definition():
    x = np.array([0.0, 1, 2, 3, 4, 5, 6, 100])
    assert iqm(x) == pytest.approx(np.mean([2, 3, 4, 5]))
    assert iqm(np.array([1.0, 2.0, 3.0])) == pytest.approx(2.0)
    lo, hi = bootstrap_ci(np.array([1.0, 2, 3, 4, 5, 6]))
    assert lo <= iqm(np.array([1.0, 2, 3, 4, 5, 6])) <= hi and lo < hi


def _run(path, seed=1, lr=1e-4, offline=False, env="dmc/x", returns=(0.0, 10.0, 20.0), **extra):
    path.mkdir(parents=True)
    cfg = {"env": env, "agent_name": "drqv2", "preset": "p", "seed": seed, "run_dir": str(path), "frames": 200,
           "decisions": {"precision_reason": f"timed {seed * 1.7:.3f} ms"}, "agent": {"lr": lr, "nstep": 3}, **extra}
    if offline:
        cfg["offline"] = {"dataset": "d.h5", "offline_steps": 100}
    (path / "config.json").write_text(json.dumps(cfg))
    log = Logger(path, tensorboard=False)
    for i, r in enumerate(returns):
        if offline:
            log.log("eval", {"phase": "offline", "step": 50 * i, "updates": 50 * i, "frames": 0, "agent_steps": 0,
                             "eval_return": r})
        else:
            log.log("eval", {"frames": 100 * i, "agent_steps": 50 * i, "eval_return": r * seed})
    log.close()
    return path


def test_plot_groups_seeds_of_one_config_and_says_so(tmp_path):
    from pixelrl.train.plot import curves, plot_runs_report

    runs = [_run(tmp_path / f"run-s{seed}", seed=seed) for seed in (1, 2, 3)]
    out, notes = plot_runs_report(runs, tmp_path / "c.png")
    assert out.exists()
    (label, (xs, vals)), = curves(runs).items()  # one group of three seeds, whatever the decisions recorded
    assert label == "dmc/x drqv2 (p)" and vals.shape == (3, 3) and list(xs) == [0, 100, 200]
    np.testing.assert_array_equal(vals[:, 2], [20.0, 40.0, 60.0])
    assert len(notes) == 1 and "merged 3 runs" in notes[0] and "seed 3" in notes[0]


def test_plot_does_not_average_different_configs_with_the_same_seed(tmp_path):
    from pixelrl.train.plot import curves, plot_runs_report

    a = _run(tmp_path / "a", seed=1, lr=1e-4)
    b = _run(tmp_path / "b", seed=1, lr=1e-3)
    c = curves([a, b])
    assert len(c) == 2 and all(v.shape[0] == 1 for _, v in c.values())
    assert sorted(c) == ["dmc/x drqv2 (p) agent.lr=0.0001", "dmc/x drqv2 (p) agent.lr=0.001"]
    assert plot_runs_report([a, b], tmp_path / "c.png")[1] == []  # nothing merged
    # the same config and seed twice: merged, and the note says they are repeats
    d = _run(tmp_path / "d", seed=1, lr=1e-4)
    notes = plot_runs_report([a, b, d], tmp_path / "c.png")[1]
    assert len(notes) == 1 and "merged 2 runs" in notes[0] and "seed 1 appears more than once" in notes[0]


def test_plot_online_and_offline_runs_together(tmp_path, capsys):
    from pixelrl.cli.main import main
    from pixelrl.train.plot import curves

    on = _run(tmp_path / "on", seed=1)
    off = _run(tmp_path / "off", seed=1, offline=True)
    assert main(["plot", str(on), str(off), "--out", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "two panels" in out and (tmp_path / "c.png").exists()
    c = curves([on, off])
    assert len(c) == 2
    xs = {k: list(v[0]) for k, v in c.items()}
    assert [0, 50, 100] in xs.values() and [0, 100, 200] in xs.values()  # offline: steps; online: frames


def test_plot_missing_folder_and_unknown_metric_are_one_line(tmp_path, capsys):
    from pixelrl.cli.main import main

    run = _run(tmp_path / "r")
    assert main(["plot", str(run), str(tmp_path / "nope"), "--out", str(tmp_path / "c.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "no such run folder" in err[0]
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 1
    assert "not a run folder" in capsys.readouterr().err
    assert main(["plot", str(run), "--metric", "bogus", "--out", str(tmp_path / "c.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'bogus'" in err[0] and "available: eval_return" in err[0]
    assert not (tmp_path / "c.png").exists()


def test_plot_of_a_run_without_evaluations_yet_is_an_empty_figure(tmp_path):
    from pixelrl.train.plot import plot_runs_report

    run = _run(tmp_path / "r", returns=())
    out, notes = plot_runs_report([run], tmp_path / "c.png")
    assert out.exists() and "no eval row" in notes[0]
