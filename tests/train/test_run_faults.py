"""Faults in a run's lifecycle (issue 14): its own files edited or damaged, divergence, a full disk at each write site,
a failed resume, a second writer, Ctrl-C, an env that raises. Every fault is one line from the CLI, and nothing that
was complete is lost. Runs are in-process and tiny (one 1000-frame episode of state-free 32px cartpole)."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pixelrl.cli.main import main
from pixelrl.errors import DivergenceError, EnvStepError
from pixelrl.train.logger import TIMING_COLUMNS, read_rows
from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint

pytest.importorskip("dm_control")

TINY = [
    "--env", "dmc/cartpole-swingup", "--preset", "none", "--size", "32", "--action-repeat", "8",
    "--fast-render", "--frames", "2000", "--eval-every-frames", "1000", "--eval-episodes", "1", "--no-eval-random",
    "--threads", "1", "--device", "cpu", "--no-progress", "--no-video", "--no-tensorboard", "--no-async-env",
    "--agent.batch-size", "16", "--agent.hidden-dim", "16", "--agent.feature-dim", "8",
    "--agent.encoder-channels", "4", "4", "4", "4", "--agent.num-seed-steps", "60",
    "--agent.update-every-steps", "2", "--agent.replay-capacity", "5000", "--agent.precision", "fp32",
]


def _cli(capsys, *args):
    """``(exit code, stderr lines)`` of ``pixelrl ARGS`` run in this process."""
    capsys.readouterr()
    rc = main(list(args))
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def _one_error_line(err, *needles):
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith(".tmp") or p.name.startswith(".tmp-"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-episode run (checkpoints at frames 1000 and 2000) to copy."""
    run = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", *TINY, "--run-dir", str(run)]) == 0
    return run


@pytest.fixture
def run(finished, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(finished, dst)
    return dst


# ------------------------------------------------------------------------------------------ 1. config.json

@pytest.mark.parametrize("cmd", ["resume", "eval"])
def test_truncated_config_json_is_one_line_naming_the_file(run, capsys, cmd):
    cfg = run / "config.json"
    cfg.write_text(cfg.read_text()[:200])
    rc, err = _cli(capsys, cmd, str(run), *(["--episodes", "1"] if cmd == "eval" else []))
    assert rc == 1
    _one_error_line(err, str(cfg), "not valid JSON")


@pytest.mark.parametrize("cmd", ["resume", "eval"])
@pytest.mark.parametrize("field, was, now", [("agent.hidden_dim", 16, 24), ("size", 32, 40)])
def test_a_shape_edited_in_config_json_names_the_field(run, capsys, cmd, field, was, now):
    cfg = run / "config.json"
    doc = json.loads(cfg.read_text())
    *parents, key = field.split(".")
    node = doc
    for p in parents:
        node = node[p]
    node[key] = now
    cfg.write_text(json.dumps(doc))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rc, err = _cli(capsys, cmd, str(run), *(["--episodes", "1"] if cmd == "eval" else []))
    assert rc == 1
    _one_error_line(err, "config.json", f"{field}: {was} in the checkpoint, {now} in config.json")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_value_of_the_wrong_type_in_config_json_names_the_field(run, capsys):
    cfg = run / "config.json"
    doc = json.loads(cfg.read_text())
    doc["size"] = "big"
    cfg.write_text(json.dumps(doc))
    rc, err = _cli(capsys, "resume", str(run))
    assert rc == 1
    _one_error_line(err, "config.json", "size", "'big'")


# ------------------------------------------------------------------------------------------ 2. divergence

def test_divergence_stops_naming_step_and_loss_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    from pixelrl.agents.drqv2 import DrQv2Agent

    real_update = DrQv2Agent.update

    def update(self, batch, *, step):  # a learning rate far too high: the critic loss blows up at step 150
        m = real_update(self, batch, step=step)
        if step >= 150:
            m = {**m, "critic_loss": float("inf")}
        return m

    monkeypatch.setattr(DrQv2Agent, "update", update)
    run = tmp_path / "run"
    rc, err = _cli(capsys, "train", *TINY, "--run-dir", str(run))
    assert rc == 1
    line = _one_error_line(err, "critic_loss = inf", "agent step 150", "frames_000000001000",
                           f"pixelrl resume {run}", "config.json")
    assert "pixelrl train: error:" in line
    assert latest_checkpoint(run / "checkpoints").name == "frames_000000001000"
    load_checkpoint(latest_checkpoint(run / "checkpoints"))

    # resume from it with other settings: edit config.json, the optimizers take the new learning rate
    monkeypatch.undo()
    cfg = json.loads((run / "config.json").read_text())
    cfg["agent"]["lr"] = cfg["agent"]["lr"] / 10
    (run / "config.json").write_text(json.dumps(cfg))
    rc, err = _cli(capsys, "resume", str(run))
    assert rc == 0, err
    assert any("optimizer learning rate agent.lr" in line for line in err), err
    assert [r["frames"] for r in read_rows(run, "eval")] == [0, 1000, 2000]


def test_a_loss_growing_by_orders_of_magnitude_is_warned_about_once():
    import types
    import warnings

    from pixelrl.errors import DivergenceWarning
    from pixelrl.train.loop import Trainer

    t = types.SimpleNamespace(counters={"frames": 5000}, _warned_losses=set(), _loss_ref={})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for v in (2.0, 40.0, 900.0):  # a critic loss growing as the values grow: no warning
            Trainer._warn_if_losses_explode(t, {"critic_loss": v, "critic_q": 1e9})
    with pytest.warns(DivergenceWarning, match=r"critic_loss averaged 3e\+07 .* frame 5,000"):
        Trainer._warn_if_losses_explode(t, {"critic_loss": 3e7})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer._warn_if_losses_explode(t, {"critic_loss": 5e7})
    t2 = types.SimpleNamespace(counters={"frames": 1000}, _warned_losses=set(), _loss_ref={})
    with pytest.warns(DivergenceWarning, match=r"critic_loss averaged 1.06e\+06 .*a very large loss"):
        Trainer._warn_if_losses_explode(t2, {"critic_loss": 1.06e6})  # --agent.lr 3: huge from the first episode


def test_non_finite_parameters_are_never_checkpointed(tmp_path):
    import torch

    from pixelrl.train.episode import check_finite_parameters

    class Agent:
        def __init__(self):
            self.critic = torch.nn.Linear(2, 2)

    a = Agent()
    check_finite_parameters(a, "at frame 5")
    with torch.no_grad():
        a.critic.weight[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="critic.weight is not finite at frame 5"):
        check_finite_parameters(a, "at frame 5")


class _RaisingEnv:
    env_id = "dmc/fake"

    def reset(self, seed):
        return np.zeros(3, np.float32)

    def step_async(self, action):
        self.action = action

    def step_wait(self):
        raise RuntimeError("Physics state is invalid. Warning(s) raised: mjWARN_BADCTRL")

    def discard(self):
        pass


class _Agent:
    def act(self, obs, *, step, eval_mode):
        return np.array([0.25, float("nan") if step >= 3 else -0.5], np.float32)

    def update(self, batch, *, step):
        return {"critic_loss": 1.0}


class _Replay:
    def add_first(self, obs):
        pass

    def add(self, *a):
        pass


class _Progress:
    def update(self, *a, **k):
        pass


def _episode(env, agent, seed_steps):
    from gymnasium.spaces import Box

    from pixelrl.train.episode import train_episode

    return train_episode(env, agent, _Replay(), lambda: None, counters={"frames": 0, "agent_steps": 0,
                         "episodes": 0}, reset_seed=0, seed_steps=seed_steps, update_every=1, updates_per_step=1,
                         warmup_rng=np.random.default_rng(0), action_space=Box(-1, 1, (2,)), action_repeat=2,
                         progress=_Progress())


def test_an_env_that_raises_is_named_with_the_step_and_the_action():
    with pytest.raises(EnvStepError, match=r"dmc/fake raised RuntimeError: Physics .*mjWARN_BADCTRL at agent step 0 "
                                           r"\(frame 0\), on the action \[ *0.25 +-0.5 *\]"):
        _episode(_RaisingEnv(), _Agent(), seed_steps=0)


def test_a_non_finite_action_stops_before_it_reaches_the_env():
    class Env(_RaisingEnv):
        def step_wait(self):
            return np.zeros(3, np.float32), 0.0, False, False, None

    with pytest.raises(DivergenceError, match=r"action is not finite .* at agent step 3 .*diverged \(the last "
                                              r"update \(agent step 2\) had critic_loss = 1\)"):
        _episode(Env(), _Agent(), seed_steps=0)


def test_an_async_env_error_comes_back_as_one_exception_without_worker_logs(capfd):
    from pixelrl.train.episode import EnvRunner

    env = EnvRunner("dmc/cartpole-swingup", asynchronous=True, seed=0, env_kwargs={"obs": "state"})
    try:
        env.reset(seed=0)
        env.step_async(np.array([float("nan")], np.float32))
        with pytest.raises(Exception, match="BADCTRL|Physics|nan|NaN"):
            env.step_wait()
    finally:
        env.close()
    out = capfd.readouterr()
    assert "Traceback" not in out.err and "Received the following error" not in out.err


# ------------------------------------------------------------------------------------------ 3. disk full

SITES = ["chunk_", "replay/manifest.json", "tensors.safetensors", "latest.json", "train.csv"]
"""Write sites of a run (the checkpoint's other files are covered in tests/utils/test_storage_faults.py)."""


@pytest.mark.parametrize("site", SITES)
def test_disk_full_at_each_write_site_is_one_line_and_loses_nothing(tmp_path, capsys, monkeypatch, site):
    run = tmp_path / "run"
    real = os.fsync
    armed = {"on": False}

    def fsync(fd):  # the disk fills up after the first checkpoint (frame 0)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if armed["on"] and site in path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(fd)

    from pixelrl.train.loop import Trainer

    real_ckpt = Trainer._checkpoint

    def checkpoint(self):
        out = real_ckpt(self)
        armed["on"] = True
        return out

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Trainer, "_checkpoint", checkpoint)
    rc, err = _cli(capsys, "train", *TINY, "--frames", "2000", "--run-dir", str(run))
    monkeypatch.undo()
    assert rc == 1
    _one_error_line(err, "no space left on the device", str(run), "needs at least")
    assert _leftovers(run) == []
    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt.name == "frames_000000000000"
    load_checkpoint(ckpt)


def test_disk_full_while_drawing_the_curve_is_one_line(run, capsys, monkeypatch):
    from pixelrl.train import plot

    def full(runs, out, **kw):
        Path(out).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))

    monkeypatch.setattr(plot, "plot_runs", full)
    rc, err = _cli(capsys, "resume", str(run))
    assert rc == 1
    _one_error_line(err, "curve.png", "no space left")
    assert not (run / "curve.png").exists()


def test_after_a_full_disk_is_freed_resume_gives_the_same_rows(finished, run, capsys, monkeypatch):
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"name": "frames_000000001000"}))  # died at 1000+
    real = os.fsync

    def fsync(fd):
        if "tensors.safetensors" in os.readlink(f"/proc/self/fd/{fd}"):  # the checkpoint at frame 2000
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    rc, _ = _cli(capsys, "resume", str(run))
    monkeypatch.undo()
    assert rc == 1 and latest_checkpoint(run / "checkpoints").name == "frames_000000001000"
    rc, err = _cli(capsys, "resume", str(run))
    assert rc == 0, err
    assert _comparable(read_rows(run)) == _comparable(read_rows(finished))


def test_disk_full_while_appending_a_row_leaves_no_partial_row(tmp_path, monkeypatch):
    import builtins

    from pixelrl.errors import StorageError
    from pixelrl.train import logger as logger_mod

    log = logger_mod.Logger(tmp_path, tensorboard=False)
    log.log("train", {"frames": 1, "agent_steps": 1})
    before = (tmp_path / "metrics.jsonl").read_bytes()

    from pixelrl.utils.testing import HalfWriter

    def fake_open(path, mode="r", *a, **k):
        f = builtins.open(path, mode, *a, **k)
        return HalfWriter(f) if str(path).endswith("metrics.jsonl") and "a" in mode and a == () else f

    monkeypatch.setattr(logger_mod, "open", fake_open, raising=False)
    with pytest.raises(StorageError, match="metrics.jsonl: no space left"):
        log.log("train", {"frames": 2, "agent_steps": 2})
    monkeypatch.undo()
    assert (tmp_path / "metrics.jsonl").read_bytes() == before


# ------------------------------------------------------------------------------------------ 4. failed resume

def test_a_failed_resume_with_frames_changes_nothing(run, capsys):
    ckpt = latest_checkpoint(run / "checkpoints")
    t = ckpt / "tensors.safetensors"
    t.write_bytes(t.read_bytes()[:-100])
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rc, err = _cli(capsys, "resume", str(run), "--frames", "5000")
    assert rc == 1
    _one_error_line(err, "tensors.safetensors")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files
    assert json.loads((run / "config.json").read_text())["frames"] == 2000


# ------------------------------------------------------------------------------------------ 5. metrics.jsonl

@pytest.mark.parametrize("damage", ["delete", "truncate", "garble"])
def test_a_damaged_log_is_repaired_from_the_checkpoint(finished, run, capsys, damage):
    log = run / "metrics.jsonl"
    if damage == "delete":
        log.unlink()
    elif damage == "truncate":
        log.write_bytes(log.read_bytes()[: len(log.read_bytes()) // 2])
    else:
        log.write_bytes(b"{not json\n" + log.read_bytes()[10:])
    rc, err = _cli(capsys, "resume", str(run))
    assert rc == 0, err
    assert log.read_bytes() == (finished / "metrics.jsonl").read_bytes()


def test_a_damaged_log_without_a_copy_in_the_checkpoint_is_refused_in_one_line(run, capsys):
    from pixelrl.utils.checkpoint import save_checkpoint

    ckpt = latest_checkpoint(run / "checkpoints")
    state = load_checkpoint(ckpt)
    del state["metrics_jsonl"]  # a checkpoint written before checkpoints held a copy of the log
    save_checkpoint(run / "checkpoints", ckpt.name, state)
    log = run / "metrics.jsonl"
    log.write_bytes(log.read_bytes()[:100])
    rc, err = _cli(capsys, "resume", str(run))
    assert rc == 1
    _one_error_line(err, "metrics.jsonl", "no copy")


def test_read_rows_names_a_bad_line_and_skips_a_row_cut_off_by_a_kill(tmp_path):
    from pixelrl.errors import CorruptFileError

    (tmp_path / "metrics.jsonl").write_text('{"kind": "eval", "frames": 0}\n{"kind": "ev')
    assert read_rows(tmp_path) == [{"kind": "eval", "frames": 0}]
    (tmp_path / "metrics.jsonl").write_text('{"kind": "eval", "frames": 0}\nxx\n{"kind": "eval", "frames": 1}\n')
    with pytest.raises(CorruptFileError, match="line 2"):
        read_rows(tmp_path)


# ------------------------------------------------------------------------------------------ 6. one writer

def test_a_second_writer_is_refused_naming_the_holders_pid(run, capsys):
    code = ("import sys, time; from pixelrl.utils.atomic import RunLock; lock = RunLock(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (run / "metrics.jsonl").read_bytes()
        rc, err = _cli(capsys, "resume", str(run), "--frames", "3000")
        assert rc == 1
        _one_error_line(err, f"pid {holder.pid}", "in use")
        assert (run / "metrics.jsonl").read_bytes() == before
        assert json.loads((run / "config.json").read_text())["frames"] == 2000
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    rc, err = _cli(capsys, "resume", str(run))  # the lock died with its holder
    assert rc == 0, err


# ------------------------------------------------------------------------------------------ 9. eval --checkpoint

def test_eval_accepts_a_checkpoint_name_or_path_and_says_not_found(run, capsys):
    rc, _ = _cli(capsys, "eval", str(run), "--episodes", "1", "--checkpoint", "frames_000000001000")
    assert rc == 0
    rc, _ = _cli(capsys, "eval", str(run), "--episodes", "1", "--checkpoint",
                 str(run / "checkpoints" / "frames_000000002000"))
    assert rc == 0
    for bad in ("frames_123", str(run / "checkpoints" / "missing")):
        rc, err = _cli(capsys, "eval", str(run), "--episodes", "1", "--checkpoint", bad)
        assert rc == 1
        line = _one_error_line(err, "not found", "frames_000000001000")
        assert "never finished" not in line


# ------------------------------------------------------------------------------------------ 10. Ctrl-C

def test_ctrl_c_exits_cleanly_naming_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    from pixelrl.train.loop import Trainer

    real = Trainer._train_episode
    calls = {"n": 0}

    def episode(self, progress):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, progress)

    monkeypatch.setattr(Trainer, "_train_episode", episode)
    run = tmp_path / "run"
    rc, err = _cli(capsys, "train", *TINY, "--run-dir", str(run))
    assert rc == 130
    _one_error_line(err, "interrupted at frame 1,000", "frames_000000001000", f"pixelrl resume {run}")
    from pixelrl.utils import atomic

    assert str((run / ".lock").resolve()) not in atomic._HELD  # the run folder's lock was released


def test_env_workers_exit_quietly_when_the_parent_is_killed(tmp_path):
    code = ("import os, sys, time\n"
            "from pixelrl.envs import make_vector\n"
            "env = make_vector('dmc/cartpole-swingup', 1, seed=0, obs='state')\n"
            "env.reset(seed=[0])\n"
            "print(' '.join(str(p.pid) for p in env.processes), flush=True)\n"
            "time.sleep(120)\n")
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert workers
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    err = parent.stderr.read()  # EOF once every process holding the stream (the workers too) has exited
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    for pid in workers:  # gone, or a zombie waiting for init to reap it
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        assert state in ("gone", "Z", "X"), state
