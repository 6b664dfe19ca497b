"""The fault matrix of a run's lifecycle (issue 14), on tiny runs: every fault a user can meet, each tried on a real
``pixelrl`` command, with three questions asked of each try:

* **named** -- was the fault reported as one clear line (``pixelrl <cmd>: error: ...`` naming the file, the step or
  the holder), or, for faults that are not errors (kill -9, Ctrl-C, a damaged log), handled as documented (resume
  continues, the run stops with its last checkpoint named, the log is repaired)?
* **traceback** -- did a Python traceback reach the user's terminal (the command's stdout/stderr, env workers
  included)?
* **lost** -- was anything lost: a resume whose metric rows differ from an uninterrupted run's (timing columns
  aside), a temporary file left behind, a finished checkpoint that no longer loads, or a failed command that changed
  the run folder?

Faults (the reference is one uninterrupted run of the same tiny configuration, in a subprocess):

* ``kill -9`` at ``--kills`` random moments between the run's first checkpoint and its end (the process group: the
  env worker too), then ``pixelrl resume``; and once before the first checkpoint (resume must say that nothing can
  be continued, and training again as it says must give the same rows);
* corrupt files of a finished run -- checkpoint tensors and state JSON (truncated, a bit flipped), ``latest.json``,
  a replay chunk, the replay manifest, ``config.json`` (truncated, a shape edited), ``metrics.jsonl`` (truncated,
  deleted: repaired from the checkpoint) -- then ``pixelrl resume``; a dataset file (truncated, a bit flipped), then
  ``pixelrl dataset stats``;
* disk full (ENOSPC) at each write site of a run, and a read-only remount (EROFS) at one, injected in-process by
  patching the write layer as ``tests/train/test_run_faults.py`` does (``os.fsync`` fails for the site's path after
  the first checkpoint; ``metrics.jsonl`` writes half a row; ``curve.png`` half a file), then ``pixelrl resume`` once
  the disk is "freed";
* the training env or the evaluation env raising MuJoCo's ``mjWARN_BADCTRL`` error mid-episode (in-process, a
  wrapper around the env), then ``pixelrl resume``;
* divergence (``--agent.lr 1000``), then resume with the learning rate put back in ``config.json``;
* a second writer (``pixelrl resume`` while ``pixelrl train`` writes the same folder);
* Ctrl-C (SIGINT to the process group, as a terminal sends it), then ``pixelrl resume``.

Usage: ``.venv/bin/python benchmarks/fault_matrix.py [--kills 3] [--seed 0] [--out PATH] [--keep DIR]``. A default
run takes a few minutes on 2 cores. Prints a table and, as its last line, the JSON written to
``benchmarks/results/fault_matrix_cpu.json`` (the machine named).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--env", "dmc/cartpole-swingup", "--preset", "none", "--size", "32", "--action-repeat", "8",
    "--fast-render", "--frames", "2000", "--eval-every-frames", "1000", "--eval-episodes", "1", "--no-eval-random",
    "--threads", "1", "--device", "cpu", "--no-progress", "--no-video", "--no-tensorboard",
    "--agent.batch-size", "16", "--agent.hidden-dim", "16", "--agent.feature-dim", "8",
    "--agent.encoder-channels", "4", "4", "4", "4", "--agent.num-seed-steps", "60",
    "--agent.update-every-steps", "2", "--agent.replay-capacity", "5000", "--agent.precision", "fp32",
]
"""Two 1000-frame episodes of 32 px cartpole (the env in its own worker process, as by default); checkpoints at 0,
1000 and 2000 frames (the last two kept)."""


# ------------------------------------------------------------------------------------------------ helpers

def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pixelrl.cli.main", *args]


def _run(*args: str, timeout: float = 600) -> tuple[int, str]:
    """``(exit code, stdout + stderr)`` of ``pixelrl ARGS`` in a subprocess."""
    p = subprocess.run(_cmd(*args), env=_env(), capture_output=True, text=True, timeout=timeout, check=False)
    return p.returncode, p.stdout + p.stderr


@contextlib.contextmanager
def _captured_fds():
    """Capture everything written to file descriptors 1 and 2 (this process and any child it forks) in-process;
    yields a function returning the text so far."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    buf = tempfile.TemporaryFile()
    os.dup2(buf.fileno(), 1)
    os.dup2(buf.fileno(), 2)

    def text() -> str:
        sys.stdout.flush()
        sys.stderr.flush()
        buf.seek(0)
        return buf.read().decode(errors="replace")

    try:
        yield text
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _main_in_process(*args: str) -> tuple[int, str]:
    """``pixelrl ARGS`` in this process (for faults injected by patching): an exception escaping ``main`` is what
    the CLI would print as a traceback, so it is recorded as one."""
    import traceback

    from pixelrl.cli.main import main

    with _captured_fds() as text:
        try:
            rc = main(list(args))
        except BaseException:  # noqa: BLE001 - what would reach the user
            traceback.print_exc()
            rc = 1
        out = text()
    return rc, out


def _error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("pixelrl ") and ": error:" in line]


def _one_line(out: str, rc: int, *needles: str, code: int = 1) -> tuple[bool, str]:
    """Whether ``out`` reports the fault as exactly one error line holding every needle; and that line."""
    lines = _error_lines(out) if code == 1 else [x for x in out.splitlines() if x.startswith("pixelrl ")
                                                 and "interrupted" in x]
    line = lines[0] if lines else (out.strip().splitlines() or [""])[-1]
    ok = rc == code and len(lines) == 1 and all(n in line for n in needles) and "Traceback" not in out
    return ok, line[:400]


def _rows(run: Path) -> list[dict[str, Any]] | None:
    from pixelrl.train.logger import TIMING_COLUMNS, read_rows

    try:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in read_rows(run)]
    except Exception:  # noqa: BLE001 - a log that does not read counts as lost
        return None


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith(".tmp") or p.name.startswith(".tmp-"))


def _latest_loads(run: Path) -> bool:
    from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint

    try:
        ckpt = latest_checkpoint(run / "checkpoints")
        return ckpt is not None and load_checkpoint(ckpt) is not None
    except Exception:  # noqa: BLE001
        return False


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


class Matrix:
    """The tries and their outcomes."""

    def __init__(self) -> None:
        self.tries: list[dict[str, Any]] = []

    def add(self, group: str, case: str, *, named: bool, out: str, lost: bool, line: str = "", why_lost: str = "",
            seconds: float = 0.0, **extra: Any) -> None:
        tb = "Traceback (most recent call last)" in out
        self.tries.append({"fault": group, "case": case, "named": bool(named and not tb), "traceback": tb,
                           "lost": bool(lost), "line": line, "why_lost": why_lost, "seconds": round(seconds, 1),
                           **extra})
        mark = "ok" if named and not tb and not lost else "FAIL"
        print(f"  [{mark}] {group}: {case} ({seconds:.0f} s){': ' + why_lost if why_lost else ''}"
              f"{' [traceback]' if tb else ''}\n        {line[:200]}", flush=True)


# ------------------------------------------------------------------------------------------------ the faults

def kill_9(m: Matrix, work: Path, ref_rows: list, window: float, n: int, rng: random.Random) -> None:
    """``n`` kills, each at a moment drawn uniformly between the run's first checkpoint and (about) its end -- the
    reference run's ``window`` seconds; a run that finished before its kill is started again with the moment drawn
    from half the window (so every try is a kill mid-run)."""
    for i in range(n):
        t0 = time.time()
        scale, attempts, out = 1.0, 0, ""
        while True:
            attempts += 1
            run = work / f"kill{i}_{attempts}"
            t_start = time.time()
            proc = subprocess.Popen(_cmd("train", *TINY, "--run-dir", str(run)), env=_env(), start_new_session=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            started = _wait_for(run / "checkpoints" / "latest.json", proc)
            first = time.time() - t_start
            delay = rng.uniform(0.0, 0.95 * window * scale)
            time.sleep(delay)
            finished = proc.poll() is not None
            if not finished:
                os.killpg(proc.pid, signal.SIGKILL)
            out += proc.communicate()[0]
            if not finished or attempts == 4:
                break
            scale /= 2
        rc, resume_out = _run("resume", str(run))
        rows = _rows(run)
        lost = rows != ref_rows
        at = (f"killed {delay:.1f} s after the first checkpoint ({first + delay:.1f} s after the start), "
              f"{'but the run had already finished' if finished else 'mid-run'}"
              + (f"; attempt {attempts} (earlier draws came after the run's end)" if attempts > 1 else ""))
        m.add("kill -9 at a random moment, then resume", f"try {i + 1}", named=rc == 0 and started and not finished,
              out=out + resume_out, lost=lost, line=at, why_lost="resumed rows differ from the uninterrupted run's"
              if lost else "", seconds=time.time() - t0, kill_after_first_checkpoint_s=round(delay, 2))


def kill_9_before_the_first_checkpoint(m: Matrix, work: Path, ref_rows: list) -> None:
    """A kill as soon as config.json exists: resume says there is nothing to continue, in one line; following its
    advice (delete the folder, train again) gives the uninterrupted run's rows."""
    run = work / "kill_early"
    t0 = time.time()
    proc = subprocess.Popen(_cmd("train", *TINY, "--run-dir", str(run)), env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(run / "config.json", proc)
    early = not (run / "checkpoints" / "latest.json").exists()
    os.killpg(proc.pid, signal.SIGKILL)
    out = proc.communicate()[0]
    rc, resume_out = _run("resume", str(run))
    ok, line = _one_line(resume_out, rc, "no checkpoint", "start the run again")
    shutil.rmtree(run)
    rc2, out2 = _run("train", *TINY, "--run-dir", str(run))
    lost = rc2 != 0 or _rows(run) != ref_rows
    m.add("kill -9 at a random moment, then resume", "kill before the first checkpoint, then resume",
          named=ok and early, out=out + resume_out + out2, lost=lost, line=line,
          why_lost="training again as told did not give the uninterrupted run's rows" if lost else "",
          seconds=time.time() - t0)


def _flip(p: Path, at: float = 0.5) -> None:
    b = bytearray(p.read_bytes())
    b[int(len(b) * at)] ^= 0x40
    p.write_bytes(bytes(b))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def corrupt_files(m: Matrix, work: Path, ref: Path, ref_rows: list) -> None:
    from pixelrl.utils.checkpoint import latest_checkpoint

    def ckpt(run: Path) -> Path:
        return latest_checkpoint(run / "checkpoints")

    def chunk(run: Path) -> Path:
        manifest = json.loads((run / "replay" / "manifest.json").read_text())
        return run / "replay" / manifest["chunks"][0]["file"]

    def edit_shape(run: Path) -> None:
        doc = json.loads((run / "config.json").read_text())
        doc["agent"]["hidden_dim"] = 24
        (run / "config.json").write_text(json.dumps(doc, indent=1))

    # (case, damage, needles of the one error line, or the file a resume must repair to the reference's bytes)
    cases: list[tuple[str, Callable[[Path], None], tuple[str, ...], str | None]] = [
        ("checkpoint tensors truncated", lambda r: _truncate(ckpt(r) / "tensors.safetensors"),
         ("tensors.safetensors",), None),
        ("checkpoint tensors, one bit flipped", lambda r: _flip(ckpt(r) / "tensors.safetensors"),
         ("tensors.safetensors",), None),
        ("checkpoint state JSON truncated", lambda r: _truncate(ckpt(r) / "state.json"), ("state.json",), None),
        ("checkpoint state JSON, one bit flipped", lambda r: _flip(ckpt(r) / "state.json", 0.3), ("state.json",),
         None),
        ("latest.json truncated", lambda r: _truncate(r / "checkpoints" / "latest.json"), ("latest.json",), None),
        ("replay chunk truncated", lambda r: _truncate(chunk(r)), ("chunk_",), None),
        ("replay chunk, one bit flipped", lambda r: _flip(chunk(r), 0.7), ("chunk_",), None),
        # the replay folder's manifest may be ahead of the checkpoint (a kill between the two saves), so resume
        # loads the copy recorded in the checkpoint and puts the file back: a damaged one is repaired
        ("replay manifest truncated (repaired from the checkpoint)",
         lambda r: _truncate(r / "replay" / "manifest.json"), (), "replay/manifest.json"),
        ("replay manifest, one bit flipped (repaired from the checkpoint)",
         lambda r: _flip(r / "replay" / "manifest.json", 0.2), (), "replay/manifest.json"),
        ("config.json truncated", lambda r: _truncate(r / "config.json"), ("config.json",), None),
        ("config.json with a shape edited (hidden_dim)", edit_shape, ("config.json", "hidden_dim"), None),
        ("metrics.jsonl truncated (repaired from the checkpoint)", lambda r: _truncate(r / "metrics.jsonl"), (),
         "metrics.jsonl"),
        ("metrics.jsonl deleted (repaired from the checkpoint)", lambda r: (r / "metrics.jsonl").unlink(), (),
         "metrics.jsonl"),
    ]
    for i, (case, damage, needles, repairable) in enumerate(cases):
        run = work / f"corrupt{i}"
        shutil.copytree(ref, run)
        t0 = time.time()
        damage(run)
        before = _files(run)
        rc, out = _run("resume", str(run))
        if repairable:
            ok = rc == 0
            line = (f"resumed; {repairable} repaired from the checkpoint's copy" if ok
                    else (out.strip().splitlines() or [""])[-1])
            fixed = (run / repairable).exists() and (run / repairable).read_bytes() == (ref / repairable).read_bytes()
            lost = _rows(run) != ref_rows or not fixed
            why = f"after the resume, {repairable} or the rows differ from the uninterrupted run's" if lost else ""
        else:
            ok, line = _one_line(out, rc, *needles)
            after = _files(run)
            lost = after != before
            why = f"the failed resume changed {sorted(k for k in after.keys() | before.keys() if after.get(k) != before.get(k))}" if lost else ""
        m.add("corrupt file, then resume", case, named=ok, out=out, lost=lost, line=line, why_lost=why,
              seconds=time.time() - t0)

    # a dataset file
    data = work / "dataset"
    rc, out = _run("collect", "--env", "dmc/cartpole-swingup", "--policy", "random", "--episodes", "1", "--size",
                   "32", "--action-repeat", "8", "--fast-render", "True", "--no-progress", "--out", str(data))
    if rc != 0:
        m.add("corrupt dataset, then dataset stats", "collect the dataset", named=False, out=out, lost=True,
              line=(out.strip().splitlines() or [""])[-1], why_lost="could not collect the dataset")
        return
    main_file = next(data.rglob("main_data.hdf5"))
    for case, damage in (("dataset file truncated", _truncate), ("dataset file, one bit flipped", _flip)):
        copy = work / f"dataset_{damage.__name__}"
        shutil.copytree(data, copy)
        t0 = time.time()
        damage(copy / main_file.relative_to(data))
        before = _files(copy)
        rc, out = _run("dataset", "stats", str(copy))
        ok, line = _one_line(out, rc, "main_data.hdf5")
        lost = _files(copy) != before
        m.add("corrupt dataset, then dataset stats", case, named=ok, out=out, lost=lost, line=line,
              why_lost="the failed command changed the dataset" if lost else "", seconds=time.time() - t0)


DISK_SITES: list[tuple[str, str]] = [
    ("config.json (at the start)", "config.json"),
    ("replay chunk", "chunk_"),
    ("replay manifest", "replay/manifest.json"),
    ("checkpoint tensors", "tensors.safetensors"),
    ("checkpoint state JSON", "state.json"),
    ("checkpoint manifest", "checkpoint-manifest"),
    ("checkpoints/latest.json", "latest.json"),
    ("train.csv", "train.csv"),
    ("eval.csv", "eval.csv"),
    ("metrics.jsonl (half a row written)", "metrics.jsonl"),
    ("summary.json (at the end)", "summary.json"),
    ("curve.png (half a file written, at the end)", "curve.png"),
    ("read-only remount (EROFS) at the replay chunk", "chunk_:EROFS"),
]


@contextlib.contextmanager
def _disk_full(site: str):
    """ENOSPC at ``site`` from the first checkpoint on (``config.json``: from the start), as the storage-fault
    tests inject it: ``os.fsync`` fails for the site's files; ``metrics.jsonl`` gets half a row; ``curve.png`` half
    a file."""
    import builtins

    from pixelrl.train import logger as logger_mod
    from pixelrl.train import loop as loop_mod
    from pixelrl.train import plot as plot_mod

    site, _, kind = site.partition(":")
    err = errno.EROFS if kind == "EROFS" else errno.ENOSPC
    armed = {"on": site == "config.json"}
    real_fsync, real_ckpt, real_plot = os.fsync, loop_mod.Trainer._checkpoint, plot_mod.plot_runs

    def hit(path: str) -> bool:
        if site == "checkpoint-manifest":
            return "/checkpoints/" in path and path.rsplit("/", 1)[-1].startswith("manifest.json")
        return site in path

    def fsync(fd: int) -> None:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if armed["on"] and hit(path):
            raise OSError(err, os.strerror(err), path)
        return real_fsync(fd)

    def checkpoint(self):
        out = real_ckpt(self)
        armed["on"] = True
        return out

    from pixelrl.utils.testing import HalfWriter

    def fake_open(path, mode="r", *a, **k):
        f = builtins.open(path, mode, *a, **k)
        return HalfWriter(f, lambda: armed["on"]) if str(path).endswith("metrics.jsonl") and "a" in mode else f

    def plot_runs(runs, out, **kw):
        if not armed["on"]:
            return real_plot(runs, out, **kw)
        Path(out).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))

    loop_mod.Trainer._checkpoint = checkpoint
    if site == "metrics.jsonl":
        logger_mod.open = fake_open
    elif site == "curve.png":
        plot_mod.plot_runs = plot_runs
    else:
        os.fsync = fsync
    try:
        yield
    finally:
        os.fsync, loop_mod.Trainer._checkpoint, plot_mod.plot_runs = real_fsync, real_ckpt, real_plot
        if hasattr(logger_mod, "open"):
            del logger_mod.open


def disk_full(m: Matrix, work: Path, ref_rows: list) -> None:
    for i, (case, site) in enumerate(DISK_SITES):
        run = work / f"disk{i}"
        t0 = time.time()
        with _disk_full(site):
            rc, out = _main_in_process("train", *TINY, "--run-dir", str(run))
        ok, line = _one_line(out, rc, "read-only" if site.endswith("EROFS") else "no space left")
        left = _leftovers(run) if run.exists() else []
        why = []
        if left:
            why.append(f"temporary files left: {left}")
        if site == "config.json":  # nothing had started: nothing to resume, the folder is gone or empty
            rest = sorted(p.name for p in run.iterdir()) if run.exists() else []
            if [x for x in rest if x != ".lock"]:
                why.append(f"a failed start left {rest}")
        else:
            if not _latest_loads(run):
                why.append("the last complete checkpoint does not load")
            rc2, out2 = _main_in_process("resume", str(run))  # the disk freed
            out += out2
            if rc2 != 0:
                why.append(f"resume after freeing the disk failed: {(out2.strip().splitlines() or [''])[-1]}")
            elif _rows(run) != ref_rows:
                why.append("resumed rows differ from the uninterrupted run's")
        m.add("disk full (ENOSPC) or read-only at a write site, then resume", case, named=ok, out=out, lost=bool(why), line=line,
              why_lost="; ".join(why), seconds=time.time() - t0)


@contextlib.contextmanager
def _env_raises(which: str, after_steps: int):
    """The training env (``which='train'``, in-process: ``--no-async-env``) or the evaluation env (``'eval'``)
    raises MuJoCo's error at its ``after_steps``-th step after the run's first checkpoint."""
    import gymnasium as gym

    from pixelrl.train import episode as episode_mod
    from pixelrl.train import loop as loop_mod

    armed = {"on": False, "steps": 0}

    class Raising(gym.Wrapper):
        def step(self, action):
            if armed["on"]:
                armed["steps"] += 1
                if armed["steps"] == after_steps:
                    raise RuntimeError("Physics state is invalid. Warning(s) raised: mjWARN_BADCTRL")
            return self.env.step(action)

    mod = episode_mod if which == "train" else loop_mod
    real_make, real_ckpt = mod.make, loop_mod.Trainer._checkpoint

    def make(*a, **k):
        return Raising(real_make(*a, **k))

    def checkpoint(self):
        out = real_ckpt(self)
        armed["on"] = True
        return out

    mod.make, loop_mod.Trainer._checkpoint = make, checkpoint
    try:
        yield
    finally:
        mod.make, loop_mod.Trainer._checkpoint = real_make, real_ckpt


def env_raises(m: Matrix, work: Path, ref_rows: list) -> None:
    for which, case, needles in (
            ("train", "the training env raises mid-episode (in-process env)", ("mjWARN_BADCTRL", "agent step",
                                                                              "on the action")),
            ("eval", "the evaluation env raises mid-episode", ("mjWARN_BADCTRL", "evaluation episode 1",
                                                               "on the action"))):
        run = work / f"env_{which}"
        t0 = time.time()
        extra = ["--no-async-env"] if which == "train" else []
        with _env_raises(which, 40):
            rc, out = _main_in_process("train", *TINY, *extra, "--run-dir", str(run))
        ok, line = _one_line(out, rc, *needles)
        rc2, out2 = _main_in_process("resume", str(run))  # a transient fault: the run goes on from its checkpoint
        why = []
        if rc2 != 0:
            why.append(f"resume failed: {(out2.strip().splitlines() or [''])[-1]}")
        elif _rows(run) != ref_rows:
            why.append("resumed rows differ from the uninterrupted run's")
        m.add("an env that raises, then resume", case, named=ok, out=out + out2, lost=bool(why), line=line,
              why_lost="; ".join(why), seconds=time.time() - t0)


def divergence(m: Matrix, work: Path) -> None:
    run = work / "diverge"
    t0 = time.time()
    rc, out = _run("train", *TINY, "--agent.lr", "1000", "--run-dir", str(run))
    ok, line = _one_line(out, rc, "diverged", "agent step", "pixelrl resume")
    why = []
    if not _latest_loads(run):
        why.append("no loadable last good checkpoint")
    else:  # go on from it with the learning rate put back
        cfg = json.loads((run / "config.json").read_text())
        cfg["agent"]["lr"] = 1e-4
        (run / "config.json").write_text(json.dumps(cfg, indent=1))
        rc2, out2 = _run("resume", str(run))
        out += out2
        if rc2 != 0:
            why.append(f"resume with agent.lr put back failed: {(out2.strip().splitlines() or [''])[-1]}")
    m.add("divergence (--agent.lr 1000)", "train, then resume with agent.lr 1e-4", named=ok, out=out,
          lost=bool(why), line=line, why_lost="; ".join(why), seconds=time.time() - t0)


def second_writer(m: Matrix, work: Path, ref_rows: list) -> None:
    run = work / "two_writers"
    t0 = time.time()
    proc = subprocess.Popen(_cmd("train", *TINY, "--run-dir", str(run)), env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(run / "checkpoints" / "latest.json", proc)
    rc, out = _run("resume", str(run), "--frames", "3000")
    ok, line = _one_line(out, rc, "in use", f"pid {proc.pid}")
    first_out = proc.communicate()[0]
    why = []
    if proc.returncode != 0:
        why.append(f"the first writer failed: {(first_out.strip().splitlines() or [''])[-1]}")
    elif _rows(run) != ref_rows:
        why.append("the first writer's rows differ from the uninterrupted run's")
    if json.loads((run / "config.json").read_text()).get("frames") != 2000:
        why.append("the refused resume changed config.json")
    m.add("a second writer on the run folder", "pixelrl resume while pixelrl train runs", named=ok,
          out=out + first_out, lost=bool(why), line=line, why_lost="; ".join(why), seconds=time.time() - t0)


def ctrl_c(m: Matrix, work: Path, ref_rows: list) -> None:
    run = work / "ctrl_c"
    t0 = time.time()
    proc = subprocess.Popen(_cmd("train", *TINY, "--run-dir", str(run)), env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(run / "checkpoints" / "latest.json", proc)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground process group
    out = proc.communicate()[0]
    ok, line = _one_line(out, proc.returncode, "interrupted at frame", "pixelrl resume", code=130)
    rc2, out2 = _run("resume", str(run))
    why = []
    if rc2 != 0:
        why.append(f"resume failed: {(out2.strip().splitlines() or [''])[-1]}")
    elif _rows(run) != ref_rows:
        why.append("resumed rows differ from the uninterrupted run's")
    m.add("Ctrl-C (SIGINT), then resume", "1 s after the first checkpoint", named=ok, out=out + out2,
          lost=bool(why), line=line, why_lost="; ".join(why), seconds=time.time() - t0)


# ------------------------------------------------------------------------------------------------ report

def table(tries: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    groups: dict[str, dict[str, Any]] = {}
    for t in tries:
        g = groups.setdefault(t["fault"], {"fault": t["fault"], "tried": 0, "named": 0, "tracebacks": 0, "lost": 0})
        g["tried"] += 1
        g["named"] += t["named"]
        g["tracebacks"] += t["traceback"]
        g["lost"] += t["lost"]
    rows = list(groups.values())
    total = {"fault": "all", **{k: sum(r[k] for r in rows) for k in ("tried", "named", "tracebacks", "lost")}}
    w = max(len(r["fault"]) for r in rows + [total])
    lines = [f"{'fault':<{w}}  tried  named  tracebacks  lost", "-" * (w + 33)]
    for r in rows + [total]:
        lines.append(f"{r['fault']:<{w}}  {r['tried']:>5}  {r['named']:>5}  {r['tracebacks']:>10}  {r['lost']:>4}")
    return "\n".join(lines), rows + [total]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=3, help="kill -9 tries at random moments (default 3)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fault_matrix_cpu.json"))
    ap.add_argument("--keep", default=None, help="keep the run folders under this folder (default: a temp folder)")
    ap.add_argument("--only", nargs="*", default=None,
                    choices=["kill", "corrupt", "disk", "env", "divergence", "writer", "ctrl_c"])
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    sys.path.insert(0, str(ROOT / "src"))
    from pixelrl.utils.machine import machine_description

    t_start = time.time()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fault_matrix_"))
    work.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ["kill", "corrupt", "disk", "env", "divergence", "writer", "ctrl_c"])
    try:
        ref = work / "reference"
        shutil.rmtree(ref, ignore_errors=True)
        t0 = time.time()
        proc = subprocess.Popen(_cmd("train", *TINY, "--run-dir", str(ref)), env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        _wait_for(ref / "checkpoints" / "latest.json", proc)
        t_first = time.time() - t0
        out = proc.communicate()[0]
        ref_wall = time.time() - t0
        if proc.returncode != 0:
            print(out[-3000:])
            raise SystemExit("the reference run failed")
        ref_rows = _rows(ref)
        print(f"reference run: {ref_wall:.1f} s ({ref_wall - t_first:.1f} s after its first checkpoint), "
              f"{len(ref_rows)} rows", flush=True)
        m = Matrix()
        if "kill" in only:
            kill_9(m, work, ref_rows, ref_wall - t_first, args.kills, random.Random(args.seed))
            kill_9_before_the_first_checkpoint(m, work, ref_rows)
        if "corrupt" in only:
            corrupt_files(m, work, ref, ref_rows)
        if "disk" in only:
            disk_full(m, work, ref_rows)
        if "env" in only:
            env_raises(m, work, ref_rows)
        if "divergence" in only:
            divergence(m, work)
        if "writer" in only:
            second_writer(m, work, ref_rows)
        if "ctrl_c" in only:
            ctrl_c(m, work, ref_rows)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text, rows = table(m.tries)
    print()
    print(text)
    total = rows[-1]
    result = {
        "benchmark": "fault_matrix",
        "machine": machine_description(),
        "command": "benchmarks/fault_matrix.py " + " ".join(sys.argv[1:]),
        "tiny_run": " ".join(TINY),
        "kills": args.kills, "seed": args.seed,
        "goal": "every fault named, zero runs lost, zero tracebacks reaching the user",
        "met": total["named"] == total["tried"] and total["lost"] == 0 and total["tracebacks"] == 0,
        "table": rows, "tries": m.tries,
        "reference_wall_s": round(ref_wall, 1), "reference_first_checkpoint_s": round(t_first, 1),
        "wall_s": round(time.time() - t_start, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
