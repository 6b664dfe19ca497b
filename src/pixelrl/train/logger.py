"""Run logs: ``metrics.jsonl`` (every row), ``train.csv`` and ``eval.csv`` (one per row kind), TensorBoard.

Every row names its step units: ``frames`` (simulator steps, action repeat counted) and ``agent_steps``
(policy decisions). Timing columns (:data:`TIMING_COLUMNS`) are the only ones that differ between two runs
with the same seed on the same machine.

``metrics.jsonl`` is the source of truth and is only ever appended to. The CSV files are rewritten from it
(atomically) whenever a row is added, so a column that appears later (agent losses after the warm-up) simply
widens the table. For exact resume the trainer stores the byte size of ``metrics.jsonl`` in each checkpoint; a
resumed run truncates the file back to it, so rows written after the checkpoint by the run that died are
replaced by the resumed run's rows; each checkpoint also holds a copy of the log up to that size, from which a
log truncated, deleted or replaced after the checkpoint is written back (the rows up to a checkpoint never
change). TensorBoard events past the checkpoint are dropped with ``purge_step``. A full or read-only disk while
appending a row leaves no partial row and raises :class:`~pixelrl.errors.StorageError`.

A run whose ``config.json`` says ``"wandb": true`` (``pixelrl train --wandb``) also sends every row, the config and
the evaluation videos to Weights & Biases (:mod:`pixelrl.train.wandb_logger`), from here: one place for every trainer.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from pixelrl.errors import CorruptFileError
from pixelrl.utils.atomic import storage_errors, write_bytes_atomic

TIMING_COLUMNS = ("wall_s", "fps", "env_s", "act_s", "update_s", "eval_s")
KINDS = ("train", "eval")


class Logger:
    def __init__(self, run_dir: str | os.PathLike, *, tensorboard: bool = True,
                 jsonl_offset: int | None = None, purge_step: int | None = None,
                 jsonl_copy: bytes | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.repaired = False
        if jsonl_offset is not None:
            self._restore_jsonl(jsonl_offset, jsonl_copy)
        self.rows: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        for i, row in enumerate(read_rows(self.run_dir), 1):
            if not isinstance(row.get("kind"), str):
                raise CorruptFileError(self.jsonl, f"row {i} has no 'kind'")
            self.rows.setdefault(row["kind"], []).append(row)
        for kind in self.rows:
            self._write_csv(kind)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge_step)
        from pixelrl.train.wandb_logger import open_wandb

        self._wandb = open_wandb(self.run_dir)

    def _restore_jsonl(self, offset: int, copy: bytes | None) -> None:
        """Cut ``metrics.jsonl`` back to the checkpoint's ``offset``; if the file lost rows the checkpoint covers
        (truncated, deleted, replaced), write them back from the checkpoint's ``copy`` of the log, else refuse."""
        try:
            with open(self.jsonl, "rb") as f:
                head = f.read(offset)
        except FileNotFoundError:
            head = None
        if head is not None and len(head) == offset and (copy is None or head == copy[:offset]):
            with storage_errors(self.jsonl):
                with open(self.jsonl, "ab") as f:
                    f.truncate(offset)
            return
        if copy is None or len(copy) < offset:
            state = "is missing" if head is None else f"has {len(head)} bytes where the checkpoint recorded {offset}"
            raise CorruptFileError(self.jsonl, f"{state} (truncated, deleted or replaced after the checkpoint), and "
                                   "the checkpoint holds no copy to repair it from; restore the file or start a new "
                                   "run")
        write_bytes_atomic(self.jsonl, copy[:offset])
        self.repaired = True

    def read_bytes(self) -> bytes:
        """The whole of ``metrics.jsonl`` (stored in checkpoints, to repair the log on resume)."""
        return self.jsonl.read_bytes() if self.jsonl.exists() else b""

    def offset(self) -> int:
        """Byte size of metrics.jsonl now (stored in checkpoints)."""
        return self.jsonl.stat().st_size if self.jsonl.exists() else 0

    def log(self, kind: str, row: dict[str, Any]) -> None:
        """Append one row of ``kind`` ('train' or 'eval'); it must contain ``frames`` and ``agent_steps``."""
        row = {"kind": kind, **{k: _plain(v) for k, v in row.items()}}
        line = (json.dumps(row) + "\n").encode()
        before = self.offset()
        try:
            with storage_errors(self.jsonl, needed=len(line)):
                with open(self.jsonl, "ab") as f:
                    f.write(line)
                    f.flush()
        except BaseException:  # no half row left behind (a full disk can take part of it)
            try:
                with open(self.jsonl, "ab") as f:
                    f.truncate(before)
            except OSError:
                pass
            raise
        self.rows.setdefault(kind, []).append(row)
        self._write_csv(kind)
        if self._tb is not None:
            step = int(row["frames"])
            for k, v in row.items():
                if k != "frames" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
        if self._wandb is not None:
            self._wandb.log(kind, row)

    def _write_csv(self, kind: str) -> None:
        rows = self.rows.get(kind, [])
        if not rows:
            return
        cols: list[str] = []
        for r in rows:
            cols.extend(k for k in r if k != "kind" and k not in cols)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        write_bytes_atomic(self.run_dir / f"{kind}.csv", buf.getvalue().encode())

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.close()
            self._wandb = None


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def read_rows(run_dir: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """Rows of a run's ``metrics.jsonl`` (optionally only those of one kind).

    A last line without its newline (a row being written when the process died) is left out; any other line that
    is not a JSON object raises :class:`~pixelrl.errors.CorruptFileError` naming the file and the line."""
    p = Path(run_dir) / "metrics.jsonl"
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if lines and lines[-1].strip():  # unterminated last line: a row cut off by a kill
        lines = lines[:-1]
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptFileError(p, f"line {i} is not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise CorruptFileError(p, f"line {i} is not a JSON object")
        rows.append(row)
    return [r for r in rows if kind is None or r.get("kind") == kind]
