"""End-to-end runs of the CLI on a tiny configuration: artefacts, exact resume after kill -9, clear errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pixelrl.train.logger import TIMING_COLUMNS, read_rows

pytest.importorskip("dm_control")

TINY = [
    "--env", "dmc/cartpole-swingup", "--preset", "none", "--size", "32", "--action-repeat", "8",
    "--fast-render", "--frames", "3000", "--eval-every-frames", "1000", "--eval-episodes", "1",
    "--threads", "1", "--device", "cpu", "--no-progress",
    "--agent.batch-size", "32", "--agent.hidden-dim", "32", "--agent.feature-dim", "16",
    "--agent.encoder-channels", "8", "8", "8", "8", "--agent.num-seed-steps", "60",
    "--agent.update-every-steps", "1", "--agent.replay-capacity", "5000",
]


def _env():
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONHASHSEED"] = "0"
    return env


def _pixelrl(*args, check=True, **kw):
    return subprocess.run([sys.executable, "-m", "pixelrl.cli.main", *args], env=_env(), capture_output=True,
                          text=True, check=False, **kw)


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


@pytest.mark.slow
def test_train_produces_artefacts_then_eval_and_plot(tmp_path):
    run = tmp_path / "run"
    p = _pixelrl("train", *TINY, "--run-dir", str(run), "--tensorboard")
    assert p.returncode == 0, p.stderr[-3000:]
    for name in ("config.json", "train.csv", "eval.csv", "metrics.jsonl", "curve.png", "summary.json",
                 "checkpoints/latest.json"):
        assert (run / name).exists(), name
    assert list((run / "videos").glob("*.mp4")) and list((run / "tb").iterdir())
    evals = read_rows(run, "eval")
    assert [r["frames"] for r in evals] == [0, 1000, 2000, 3000]
    assert "random_return" in evals[0]
    assert any("critic_loss" in r for r in read_rows(run, "train"))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["agent"]["batch_size"] == 32 and cfg["size"] == 32
    # precision 'auto' is resolved for this machine, saved as the concrete choice, and explained
    assert cfg["agent"]["precision"] in ("fp32", "bf16")
    assert cfg["decisions"]["precision"] == cfg["agent"]["precision"]
    assert cfg["decisions"]["precision_reason"].startswith(cfg["agent"]["precision"] + ":")
    assert "precision " + cfg["agent"]["precision"] in " ".join(p.stdout.split())
    assert "run folder" in p.stdout and "curve" in p.stdout

    e = _pixelrl("eval", str(run), "--episodes", "2", "--video", "--device", "cpu")
    assert e.returncode == 0, e.stderr[-3000:]
    out = json.loads(e.stdout.strip().splitlines()[-1])
    assert len(out["returns"]) == 2 and Path(out["video"]).exists()

    pl = _pixelrl("plot", str(run), "--out", str(tmp_path / "c.png"))
    assert pl.returncode == 0, pl.stderr[-3000:]
    assert (tmp_path / "c.png").stat().st_size > 1000

    # a finished run can be extended: resume with a larger budget continues from the final checkpoint
    ext = _pixelrl("resume", str(run), "--frames", "4000")
    assert ext.returncode == 0, ext.stderr[-3000:]
    assert [r["frames"] for r in read_rows(run, "eval")] == [0, 1000, 2000, 3000, 4000]
    assert json.loads((run / "config.json").read_text())["frames"] == 4000


@pytest.mark.slow
def test_resume_after_kill_gives_identical_rows(tmp_path):
    ref = tmp_path / "ref"
    p = _pixelrl("train", *TINY, "--run-dir", str(ref), "--no-tensorboard", "--no-video")
    assert p.returncode == 0, p.stderr[-3000:]

    run = tmp_path / "killed"
    env = _env()
    proc = subprocess.Popen([sys.executable, "-m", "pixelrl.cli.main", "train", *TINY, "--run-dir", str(run),
                             "--no-tensorboard", "--no-video"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Event-driven: wait for the second checkpoint (after the eval at 1000 frames), then for the first row written
    # after it (the train row of the episode ending at 2000 frames), and kill at once: the run folder then holds a
    # log longer than its last checkpoint, which resume must cut back and regrow identically.
    deadline = time.time() + 240

    def wait_for(what, done):
        while not done():
            if proc.poll() is not None:
                pytest.fail(f"training exited before {what}: {proc.stderr.read()[-2000:]}")
            if time.time() > deadline:
                pytest.fail(f"no {what} within 240 s")
            time.sleep(0.01)

    latest = run / "checkpoints" / "latest.json"

    def second_checkpoint():
        try:
            return json.loads(latest.read_text())["name"] != "frames_000000000000"
        except (FileNotFoundError, ValueError):  # not there yet, or being replaced
            return False

    wait_for("second checkpoint", second_checkpoint)
    wait_for("train row after it", lambda: any(r["frames"] > 1000 for r in read_rows(run, "train")))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists(), "the run finished before it could be killed"

    r = _pixelrl("resume", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    assert _comparable(read_rows(run)) == _comparable(read_rows(ref))


@pytest.mark.slow
def test_time_budget_ends_the_run_with_a_final_eval_and_resume_frames_lifts_it(tmp_path):
    run = tmp_path / "budget"
    args = [a if a != "3000" else "200000" for a in TINY]  # a frame budget this run cannot reach
    p = _pixelrl("train", *args, "--run-dir", str(run), "--time-budget-min", "0.05", "--no-tensorboard",
                 "--no-video")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ended_by"] == "time_budget" and summary["frames"] < 200_000
    evals = read_rows(run, "eval")
    assert evals[-1]["frames"] == summary["frames"]  # the final evaluation is at the stop
    assert "time budget" in " ".join(p.stdout.split())
    stop = summary["frames"]

    r = _pixelrl("resume", str(run), "--frames", str(stop + 1000))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ended_by"] == "frames" and summary["frames"] >= stop + 1000
    assert json.loads((run / "config.json").read_text())["time_budget_min"] is None


def test_unknown_env_is_one_clear_line(tmp_path):
    p = _pixelrl("train", "--env", "dmc/cartpole-swingpu", "--run-dir", str(tmp_path / "r"))
    assert p.returncode == 1
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "dmc/cartpole-swingup" in lines[0], p.stderr


def test_resume_without_checkpoint_is_clear(tmp_path):
    p = _pixelrl("resume", str(tmp_path))
    assert p.returncode == 1 and "not a run folder" in p.stderr
