"""Live progress display of a training run (rich), or plain lines when stdout is not a terminal."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, total_frames: int, start_frames: int = 0, *, enabled: bool = True, title: str = "") -> None:
        self.console = Console(stderr=False)
        self.live = enabled and sys.stdout.isatty()
        self.enabled = enabled
        self.total = total_frames
        self.last_eval = "-"
        self._t0 = time.perf_counter()
        self._f0 = start_frames
        self._progress = None
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("frames | {task.fields[fps]} fps | {task.fields[split]} | eval {task.fields[eval]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                refresh_per_second=2,
            )
            self._task = self._progress.add_task(title or "train", total=total_frames, completed=start_frames,
                                                 fps="-", split="-", eval="-")
            self._progress.start()

    def update(self, frames: int, *, env_s: float, act_s: float, update_s: float) -> None:
        if not self._progress:
            return
        dt = max(time.perf_counter() - self._t0, 1e-9)
        fps = (frames - self._f0) / dt
        tot = max(env_s + act_s + update_s, 1e-9)
        split = f"env {100 * env_s / tot:.0f}% act {100 * act_s / tot:.0f}% upd {100 * update_s / tot:.0f}%"
        self._progress.update(self._task, completed=frames, fps=f"{fps:.0f}", split=split, eval=self.last_eval)

    def eval_done(self, frames: int, mean: float, std: float, extra: str = "") -> None:
        self.last_eval = f"{mean:.1f}"
        if not self.enabled:
            return
        msg = f"eval @ {frames:,} frames: return {mean:.1f} ± {std:.1f}{extra}"
        if self._progress:
            self._progress.console.print(msg)
        else:
            dt = time.perf_counter() - self._t0
            fps = (frames - self._f0) / max(dt, 1e-9)
            print(f"[{dt:7.0f}s] {msg} | {fps:.0f} frames/s", flush=True)

    def print(self, msg: str) -> None:
        if self._progress:
            self._progress.console.print(msg)
        elif self.enabled:
            print(msg, flush=True)

    def close(self) -> None:
        if self._progress:
            self._progress.stop()
            self._progress = None
