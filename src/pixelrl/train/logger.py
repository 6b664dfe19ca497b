"""Run logs: ``metrics.jsonl`` (every row), ``train.csv`` and ``eval.csv`` (one per row kind), TensorBoard.

Every row names its step units: ``frames`` (simulator steps, action repeat counted) and ``agent_steps``
(policy decisions). Timing columns (:data:`TIMING_COLUMNS`) are the only ones that differ between two runs
with the same seed on the same machine.

``metrics.jsonl`` is the source of truth and is only ever appended to. The CSV files are rewritten from it
(atomically) whenever a row is added, so a column that appears later (agent losses after the warm-up) simply
widens the table. For exact resume the trainer stores the byte size of ``metrics.jsonl`` in each checkpoint; a
resumed run truncates the file back to it, so rows written after the checkpoint by the run that died are
replaced by the resumed run's rows. TensorBoard events past the checkpoint are dropped with ``purge_step``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from pixelrl.utils.atomic import write_bytes_atomic

TIMING_COLUMNS = ("wall_s", "fps", "env_s", "act_s", "update_s", "eval_s")
KINDS = ("train", "eval")


class Logger:
    def __init__(self, run_dir: str | os.PathLike, *, tensorboard: bool = True,
                 jsonl_offset: int | None = None, purge_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.run_dir / "metrics.jsonl"
        if jsonl_offset is not None:
            size = self.jsonl.stat().st_size if self.jsonl.exists() else 0
            if size < jsonl_offset:
                raise FileNotFoundError(
                    f"{self.jsonl} has {size} bytes but the checkpoint recorded {jsonl_offset}: the log was "
                    "truncated or replaced after the checkpoint was written")
            with open(self.jsonl, "ab") as f:
                f.truncate(jsonl_offset)
        self.rows: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        for row in read_rows(self.run_dir):
            self.rows.setdefault(row["kind"], []).append(row)
        for kind in self.rows:
            self._write_csv(kind)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge_step)

    def offset(self) -> int:
        """Byte size of metrics.jsonl now (stored in checkpoints)."""
        return self.jsonl.stat().st_size if self.jsonl.exists() else 0

    def log(self, kind: str, row: dict[str, Any]) -> None:
        """Append one row of ``kind`` ('train' or 'eval'); it must contain ``frames`` and ``agent_steps``."""
        row = {"kind": kind, **{k: _plain(v) for k, v in row.items()}}
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        self.rows.setdefault(kind, []).append(row)
        self._write_csv(kind)
        if self._tb is not None:
            step = int(row["frames"])
            for k, v in row.items():
                if k != "frames" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

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


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def read_rows(run_dir: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """Rows of a run's ``metrics.jsonl`` (optionally only those of one kind)."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return [r for r in rows if kind is None or r.get("kind") == kind]
