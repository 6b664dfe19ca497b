import csv
import json

import numpy as np
import pytest

from pixelrl.train.logger import Logger, read_rows
from pixelrl.train.plot import bootstrap_ci, iqm, plot_runs


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
    with pytest.raises(FileNotFoundError, match="truncated"):
        Logger(tmp_path, tensorboard=False, jsonl_offset=10_000)


def test_iqm_matches_definition():
    x = np.array([0.0, 1, 2, 3, 4, 5, 6, 100])
    assert iqm(x) == pytest.approx(np.mean([2, 3, 4, 5]))
    assert iqm(np.array([1.0, 2.0, 3.0])) == pytest.approx(2.0)
    lo, hi = bootstrap_ci(np.array([1.0, 2, 3, 4, 5, 6]))
    assert lo <= iqm(np.array([1.0, 2, 3, 4, 5, 6])) <= hi and lo < hi


def test_plot_groups_seeds(tmp_path):
    for seed in (1, 2, 3):
        d = tmp_path / f"run-s{seed}"
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"env": "dmc/x", "agent_name": "drqv2", "preset": "p"}))
        log = Logger(d, tensorboard=False)
        for f in (0, 100, 200):
            log.log("eval", {"frames": f, "agent_steps": f // 2, "eval_return": f * seed / 10})
    out = plot_runs(sorted(tmp_path.glob("run-*")), tmp_path / "c.png")
    assert out.exists() and out.stat().st_size > 1000
