"""The write layer under a full or read-only disk, the run-folder lock, and finding a checkpoint by name or path
(issue 14: disk full, two writers, ``--checkpoint NAME``)."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelrl.errors import NotFoundError, RunInUseError, StorageError
from pixelrl.utils import atomic
from pixelrl.utils.atomic import RunLock, ensure_free_space, write_bytes_atomic
from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint, resolve_checkpoint, save_checkpoint


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".tmp") or
                  p.name.startswith(".tmp-"))


def _fail_fsync(monkeypatch, match: str, err: int = errno.ENOSPC, after: int = 0):
    """os.fsync raises ``err`` for files whose path contains ``match`` (after ``after`` successful calls): a disk
    that fills up (or is remounted read-only) while that file is written."""
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if match in path:
            calls["n"] += 1
            if calls["n"] > after:
                raise OSError(err, os.strerror(err), path)
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_atomic_write_on_a_full_or_read_only_disk_is_one_named_error(tmp_path, monkeypatch, err):
    target = tmp_path / "eval.csv"
    write_bytes_atomic(target, b"old")
    _fail_fsync(monkeypatch, "eval.csv", err)
    with pytest.raises(StorageError) as info:
        write_bytes_atomic(target, b"new contents")
    msg = str(info.value)
    assert str(target) in msg and "\n" not in msg
    assert ("no space left" in msg and "needs at least" in msg) if err == errno.ENOSPC else "read-only" in msg
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_other_os_errors_are_not_disguised(tmp_path, monkeypatch):
    _fail_fsync(monkeypatch, "x.bin", errno.EIO)
    with pytest.raises(OSError) as info:
        write_bytes_atomic(tmp_path / "x.bin", b"1")
    assert not isinstance(info.value, StorageError)


def _state(v: float):
    return {"w": torch.full((64, 64), v), "i": int(v), "a": np.arange(3)}


@pytest.mark.parametrize("site", ["tensors.safetensors", "state.json", "manifest.json", "latest.json"])
def test_checkpoint_write_fault_leaves_the_previous_checkpoint(tmp_path, monkeypatch, site):
    save_checkpoint(tmp_path, "c1", _state(1.0))
    _fail_fsync(monkeypatch, site)
    with pytest.raises(StorageError, match="no space left"):
        save_checkpoint(tmp_path, "c2", _state(2.0))
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "c1" and load_checkpoint(latest)["i"] == 1


def test_checkpoint_checks_free_space_before_writing(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, "c1", _state(1.0))

    class Usage:
        total, used, free = 10**9, 10**9 - 1000, 1000

    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(StorageError, match=r"needs at least .*KB \(1000 B free now\)"):
        save_checkpoint(tmp_path, "c2", _state(2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1", "latest.json"]
    with pytest.raises(StorageError):
        ensure_free_space(tmp_path, 10_000)
    ensure_free_space(tmp_path, 10)


def test_replay_chunk_fault_removes_the_temporary_chunk(tmp_path, monkeypatch):
    import gymnasium as gym

    from pixelrl.data.replay import ReplayBuffer

    obs = gym.spaces.Box(-1, 1, (3,), np.float32)
    act = gym.spaces.Box(-1, 1, (2,), np.float32)
    buf = ReplayBuffer(obs, act, 100, seed=0)
    buf.add_first(np.zeros(3, np.float32))
    for i in range(5):
        buf.add(np.zeros(2, np.float32), 1.0, np.full(3, i, np.float32), False, False)
    buf.save(tmp_path)
    manifest = (tmp_path / "manifest.json").read_bytes()
    for i in range(5):
        buf.add(np.zeros(2, np.float32), 1.0, np.full(3, i, np.float32), False, False)
    _fail_fsync(monkeypatch, "chunk_")
    with pytest.raises(StorageError, match="chunk_000001.npz"):
        buf.save(tmp_path)
    monkeypatch.undo()
    assert _leftovers(tmp_path) == [] and (tmp_path / "manifest.json").read_bytes() == manifest
    again = ReplayBuffer(obs, act, 100, seed=0)
    again.load(tmp_path)
    assert len(again) == 5


# ------------------------------------------------------------------------------------------ the run lock

def _hold_lock(run: Path) -> subprocess.Popen:
    code = ("import sys, time; from pixelrl.utils.atomic import RunLock; lock = RunLock(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_second_process_is_refused_naming_the_holder_and_kill_9_releases(tmp_path):
    run = tmp_path / "run"
    holder = _hold_lock(run)
    try:
        with pytest.raises(RunInUseError, match=rf"pid {holder.pid}\b"):
            RunLock(run)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(run):  # the OS released the dead holder's lock
        with RunLock(run):  # shared within one process (a trainer resumed where it ran)
            pass


# ------------------------------------------------------------------------------------------ finding a checkpoint

def test_resolve_checkpoint_accepts_a_name_a_path_or_nothing(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints", "frames_000000001000", _state(1.0))
    save_checkpoint(run / "checkpoints", "frames_000000002000", _state(2.0))
    c1 = run / "checkpoints" / "frames_000000001000"
    assert resolve_checkpoint(run) == run / "checkpoints" / "frames_000000002000"
    assert resolve_checkpoint(run, "frames_000000001000") == c1
    assert resolve_checkpoint(run, str(c1)) == c1
    monkeypatch.chdir(run)
    assert resolve_checkpoint(run, "checkpoints/frames_000000001000").resolve() == c1.resolve()
    with pytest.raises(NotFoundError, match=r"'frames_9' not found.*frames_000000001000, frames_000000002000"):
        resolve_checkpoint(run, "frames_9")


def test_loading_a_missing_checkpoint_says_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="not found") as info:
        load_checkpoint(tmp_path / "nope")
    assert "never finished" not in str(info.value)


def test_storage_error_says_resume_only_where_a_checkpoint_exists(tmp_path):
    import errno

    from pixelrl.errors import StorageError

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    full = OSError(errno.ENOSPC, "No space left on device")
    fresh = str(StorageError(run / "metrics.jsonl", full, needed=1000))
    assert "no checkpoint yet" in fresh and "start the run again" in fresh and "pixelrl resume" not in fresh
    (run / "checkpoints" / "latest.json").write_text('{"name": "frames_000000001000"}')
    later = str(StorageError(run / "replay" / "chunk.npz", full, needed=1000))
    assert f"pixelrl resume {run.resolve()}" in later and "intact" in later
    outside = str(StorageError(tmp_path / "elsewhere.bin", full))
    assert "pixelrl resume <run folder>" in outside
