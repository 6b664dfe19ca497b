"""The on-disk label queue: pairs of clips waiting for a person's comparison, and the labels given so far.

A queue is a folder::

    queue.json              what the pairs are (the preference model's input spec, segment length, clip fps, goal)
    batches/000000.npz      the pairs of one batch: ids and both sides' net inputs uint8 [n, segment, C, H, W]
    batches/000000.json     the batch's ids -- written last, so its presence marks a complete batch
    clips/000012_a.gif      each side of each pair as a small animated image (a still for segment 1), for the page
    labels.jsonl            one line per answer, appended as it is given: {"pair": 12, "label": 0, "key": "left", ...}

Labels: 0 = the left (first) clip is better, 1 = the right one, -1 = equal, -2 = skipped (the pair is done and
gives no label). Every answer is appended to ``labels.jsonl`` with one ``write`` and ``fsync``'d before the
call returns, so an acknowledged label survives a crash or power cut; a torn last line (a write cut short) is
ignored when reading and cut off before the next append. A pair is answered at most once: an answer for a pair that
already has one is refused, so a page that re-sends after a reconnect cannot duplicate it. A restart reads the file
and goes on with the first pair without an answer. One process at a time appends (``labels.lock``, an advisory
``flock`` released by the OS when the process dies). No pickle: NumPy ``.npz`` without objects and JSON.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from pixelrl.errors import ConfigError, CorruptFileError, NotFoundError, RunInUseError
from pixelrl.utils.atomic import fsync_dir, storage_errors, write_json_atomic

__all__ = ["LabelQueue", "LABELS", "KEYS", "QUEUE_FILE", "LABELS_FILE"]

FORMAT = "pixelrl-label-queue"
QUEUE_FILE, LABELS_FILE, LOCK_FILE = "queue.json", "labels.jsonl", "labels.lock"
KEYS = {"left": 0, "right": 1, "equal": -1, "skip": -2}
"""The answers a person gives, by name, and their label codes."""
LABELS = {v: k for k, v in KEYS.items()}
CLIP_MIN_SIZE = 192
"""Clips are upscaled (nearest neighbour) so their short side is at least this many pixels."""


def write_gif(path: Path, frames: np.ndarray, fps: float) -> None:
    """``uint8 [T, H, W, 3]`` -> an animated GIF (a still for T = 1), upscaled by an integer factor, atomically."""
    from PIL import Image

    h, w = frames.shape[1:3]
    scale = max(1, int(np.ceil(CLIP_MIN_SIZE / max(1, min(h, w)))))
    imgs = [Image.fromarray(np.repeat(np.repeat(f, scale, 0), scale, 1)) for f in frames]
    tmp = path.with_name(path.name + ".tmp")
    kw = {"save_all": True, "append_images": imgs[1:], "duration": int(round(1000 / fps)), "loop": 0} \
        if len(imgs) > 1 else {}
    imgs[0].save(tmp, format="GIF", **kw)
    os.replace(tmp, path)


class LabelQueue:
    """A label queue folder (see the module docstring). Reading is safe from any process at any time; appending
    labels takes the queue's lock (:meth:`writer`)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        qf = self.path / QUEUE_FILE
        if not qf.is_file():
            raise NotFoundError(f"{self.path} is not a label queue (no {QUEUE_FILE}); a training run with --reward "
                                "prefs:person --reward.queue DIR creates one, or `pixelrl label DIR --dataset DATA "
                                "--pairs N`")
        try:
            self.meta = json.loads(qf.read_text())
            if self.meta.get("format") != FORMAT:
                raise ValueError(f"format {self.meta.get('format')!r}")
        except (ValueError, OSError) as e:
            raise CorruptFileError(f"{qf} is not a label queue description ({e})") from None
        self._lock_fd: Optional[int] = None
        self._fd: Optional[int] = None
        self._given: set[int] = set()

    # ---- creation
    @classmethod
    def create(cls, path: str | os.PathLike, *, spec: Optional[dict] = None, segment: int = 1, fps: float = 10.0,
               goal: Optional[str] = None, source: Optional[dict] = None) -> "LabelQueue":
        """A new, empty queue at ``path`` (which must not hold one already)."""
        path = Path(path)
        if (path / QUEUE_FILE).exists():
            raise ConfigError(f"{path} already holds a label queue; open it instead")
        (path / "batches").mkdir(parents=True, exist_ok=True)
        (path / "clips").mkdir(exist_ok=True)
        write_json_atomic(path / QUEUE_FILE, {"format": FORMAT, "version": 1, "spec": spec, "segment": int(segment),
                                              "fps": float(fps), "goal": goal, "source": source,
                                              "created": time.time()})
        return cls(path)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, **kwargs: Any) -> "LabelQueue":
        path = Path(path)
        return cls(path) if (path / QUEUE_FILE).is_file() else cls.create(path, **kwargs)

    def set_spec(self, spec: dict) -> None:
        """Record what the pairs are (a preference model's input spec); refuse a queue holding other inputs."""
        have = self.meta.get("spec")
        if have is not None and have != spec:
            raise ConfigError(f"label queue {self.path} holds pairs of {have}, not {spec}; use another queue folder")
        if have is None:
            self.meta = {**self.meta, "spec": spec}
            write_json_atomic(self.path / QUEUE_FILE, self.meta)

    # ---- batches of pairs
    def _batch_files(self) -> list[Path]:
        return sorted((self.path / "batches").glob("[0-9]*.json"))

    def batches(self) -> list[dict]:
        """Every complete batch: ``{"batch": b, "ids": [...]}`` in order."""
        out = []
        for f in self._batch_files():
            try:
                out.append(json.loads(f.read_text()))
            except ValueError as e:
                raise CorruptFileError(f"{f} is not a batch description ({e})") from None
        return out

    def batch_ids(self, batch: int) -> Optional[list[int]]:
        """The pair ids of batch ``batch``, or None if it was not written (completely)."""
        f = self.path / "batches" / f"{int(batch):06d}.json"
        return list(json.loads(f.read_text())["ids"]) if f.is_file() else None

    def pair_ids(self) -> list[int]:
        return [i for b in self.batches() for i in b["ids"]]

    def num_pairs(self) -> int:
        return len(self.pair_ids())

    def add_batch(self, first: np.ndarray, second: np.ndarray, *, batch: Optional[int] = None) -> list[int]:
        """Append a batch of pairs (net inputs ``uint8 [n, segment, C, H, W]`` or ``[n, C, H, W]``, C = 3 or 1):
        writes the clips, then the frames, then the batch's description (the commit). Returns the new pair ids."""
        from pixelrl.rewards.preference import to_rgb

        a, b = np.asarray(first), np.asarray(second)
        if a.ndim == 4:
            a, b = a[:, None], b[:, None]
        if a.dtype != np.uint8 or a.ndim != 5 or a.shape != b.shape or a.shape[2] not in (1, 3):
            raise ConfigError(f"a label queue holds pairs of uint8 [n, segment, C, H, W] frames (C = 1 or 3), got "
                              f"{a.dtype} {list(a.shape)} / {list(b.shape)}")
        if a.shape[1] != int(self.meta.get("segment", 1)):
            raise ConfigError(f"this queue holds segments of {self.meta.get('segment')} steps, not {a.shape[1]}")
        done = self.batches()
        number = (done[-1]["batch"] + 1 if done else 0) if batch is None else int(batch)
        if self.batch_ids(number) is not None:
            raise ConfigError(f"batch {number} of {self.path} exists already")
        start = max((max(d["ids"]) + 1 for d in done if d["ids"]), default=0)
        ids = list(range(start, start + len(a)))
        fps = float(self.meta.get("fps", 10.0))
        desc = self.path / "batches" / f"{number:06d}.json"
        with storage_errors(desc):
            ra, rb = to_rgb(a), to_rgb(b)
            for i, pid in enumerate(ids):
                write_gif(self.path / "clips" / f"{pid:06d}_a.gif", ra[i], fps)
                write_gif(self.path / "clips" / f"{pid:06d}_b.gif", rb[i], fps)
            frames = self.path / "batches" / f"{number:06d}.npz"
            tmp = frames.with_name(frames.name + ".tmp")
            with open(tmp, "wb") as f:
                np.savez(f, ids=np.asarray(ids, dtype=np.int64), first=a, second=b)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, frames)
            fsync_dir(self.path / "clips")
            write_json_atomic(desc, {"batch": number, "ids": ids, "time": time.time()})
        return ids

    def pairs(self, ids: Optional[list[int]] = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Both sides' net inputs of the pairs ``ids`` (default: all), ``[n, segment, C, H, W]``, and the ids."""
        want = None if ids is None else set(int(i) for i in ids)
        fa, fb, got = [], [], []
        for d in self.batches():
            if want is not None and not want.intersection(d["ids"]):
                continue
            with np.load(self.path / "batches" / f"{d['batch']:06d}.npz", allow_pickle=False) as z:
                bid = z["ids"].tolist()
                sel = [j for j, i in enumerate(bid) if want is None or i in want]
                fa.append(z["first"][sel])
                fb.append(z["second"][sel])
                got += [bid[j] for j in sel]
        if not got:
            return np.zeros((0,), np.uint8), np.zeros((0,), np.uint8), []
        return np.concatenate(fa), np.concatenate(fb), got

    def clip_path(self, pair: int, side: str) -> Path:
        return self.path / "clips" / f"{int(pair):06d}_{'a' if side in ('a', 'left') else 'b'}.gif"

    # ---- labels
    def _read_lines(self) -> Iterator[dict]:
        f = self.path / LABELS_FILE
        if not f.exists():
            return
        data = f.read_bytes()
        end = data.rfind(b"\n")
        for line in data[:end + 1].splitlines():  # a torn last line (no newline) is not an answer
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line garbled by a crash mid-write: never acknowledged, so nothing is lost
            if isinstance(rec, dict) and isinstance(rec.get("pair"), int) and rec.get("label") in LABELS:
                yield rec

    def labels(self) -> dict[int, int]:
        """``{pair id: label}`` of every answer on disk (the first answer of a pair, if a pair has several)."""
        out: dict[int, int] = {}
        for rec in self._read_lines():
            out.setdefault(rec["pair"], rec["label"])
        return out

    def num_labelled(self) -> int:
        return len(self.labels())

    def next_unlabelled(self, after: Optional[int] = None) -> Optional[int]:
        """The first pair without an answer (after pair ``after``, wrapping around), or None when all are done."""
        done = self.labels()
        todo = [i for i in self.pair_ids() if i not in done]
        if not todo:
            return None
        if after is not None:
            later = [i for i in todo if i > after]
            if later:
                return later[0]
        return todo[0]

    def writer(self) -> "LabelQueue":
        """Take the queue's append lock (one labelling process at a time) and repair a torn last line. Returns
        self; :meth:`close` releases it."""
        if self._fd is not None:
            return self
        lock = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            raise RunInUseError(f"another process is labelling {self.path} (it holds {self.path / LOCK_FILE}); "
                                "stop it first") from None
        self._lock_fd = lock
        f = self.path / LABELS_FILE
        if f.exists():
            data = f.read_bytes()
            cut = data.rfind(b"\n") + 1
            if cut != len(data):  # a write cut short by a crash: drop the partial line before appending
                with open(f, "rb+") as fh:
                    fh.truncate(cut)
                    fh.flush()
                    os.fsync(fh.fileno())
        self._fd = os.open(f, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        fsync_dir(self.path)
        self._given = set(self.labels())
        return self

    def append_label(self, pair: int, label: int | str, **extra: Any) -> bool:
        """Record the answer for ``pair`` (a label code or a key name: left / right / equal / skip), durably, before
        returning True; False (nothing written) when the pair already has an answer. ``extra`` is stored with it
        (e.g. the seconds the person took)."""
        if self._fd is None:
            self.writer()
        pair = int(pair)
        code = KEYS[label] if isinstance(label, str) and label in KEYS else label
        if code not in LABELS or isinstance(code, bool):
            raise ConfigError(f"a label is one of {', '.join(KEYS)} (or {sorted(LABELS)}), got {label!r}")
        if pair not in set(self.pair_ids()):
            raise ConfigError(f"pair {pair} is not in {self.path}")
        if pair in self._given:
            return False
        line = json.dumps({"pair": pair, "label": int(code), "key": LABELS[int(code)], "time": time.time(),
                           **extra}, sort_keys=True) + "\n"
        with storage_errors(self.path / LABELS_FILE):
            data = line.encode()
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(28, "short write")
            os.fsync(self._fd)
        self._given.add(pair)
        return True

    def close(self) -> None:
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, None)

    def progress(self) -> dict:
        total, done = self.pair_ids(), self.labels()
        counts = {k: 0 for k in KEYS}
        for i in total:
            if i in done:
                counts[LABELS[done[i]]] += 1
        return {"pairs": len(total), "labelled": sum(1 for i in total if i in done), **counts}

    def __enter__(self) -> "LabelQueue":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
