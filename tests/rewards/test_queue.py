"""The on-disk label queue: batches and clips, one answer per pair, a torn last line, the append lock, and a
labelling process killed with SIGKILL mid-labelling: every acknowledged label is on disk, none is duplicated,
and a restart goes on with the first pair without an answer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from pixelrl.errors import ConfigError, NotFoundError, RunInUseError
from pixelrl.rewards.queue import LABELS_FILE, LabelQueue


def _frames(n, seed=0, seg=1):
    return np.random.default_rng(seed).integers(0, 256, size=(n, seg, 3, 48, 48), dtype=np.uint8)


def test_batches_clips_and_pairs_round_trip(tmp_path):
    q = LabelQueue.create(tmp_path / "q", segment=1, goal="g")
    a, b = _frames(3, 0), _frames(3, 1)
    assert q.add_batch(a, b, batch=0) == [0, 1, 2]
    assert q.add_batch(_frames(2, 2)[:, 0], _frames(2, 3)[:, 0]) == [3, 4]  # [n, C, H, W] for segment 1
    assert q.batch_ids(0) == [0, 1, 2] and q.batch_ids(1) == [3, 4] and q.batch_ids(2) is None
    fa, fb, ids = q.pairs([1, 3])
    assert ids == [1, 3] and np.array_equal(fa[0], a[1]) and np.array_equal(fb[1, 0], _frames(2, 3)[0, 0])
    from PIL import Image

    with Image.open(q.clip_path(2, "left")) as im:
        assert im.size == (192, 192) and im.n_frames == 1  # 48 px upscaled by 4 for the page; a still for segment 1
    q2 = LabelQueue.create(tmp_path / "q2", segment=3)
    flat = np.zeros((1, 3, 3, 48, 48), np.uint8)
    flat[0, :, 0] = np.array([0, 120, 240])[:, None, None]  # three frames of different reds
    q2.add_batch(flat, flat)
    with Image.open(q2.clip_path(0, "right")) as im:
        assert im.n_frames == 3
        reds = []
        for k in range(3):
            im.seek(k)
            reds.append(int(np.asarray(im.convert("RGB"))[0, 0, 0]))
        assert reds == [0, 120, 240]
    with pytest.raises(ConfigError, match="batch 0 .* exists"):
        q.add_batch(a, b, batch=0)
    with pytest.raises(ConfigError, match="segments of 1"):
        q.add_batch(_frames(1, seg=2), _frames(1, seg=2))
    with pytest.raises(NotFoundError, match="not a label queue"):
        LabelQueue(tmp_path / "nothing")


def test_one_answer_per_pair_and_a_torn_line_is_dropped(tmp_path):
    q = LabelQueue.create(tmp_path / "q")
    q.add_batch(_frames(4), _frames(4, 1))
    with q.writer():
        assert q.append_label(0, "left") and q.append_label(1, 1)
        assert not q.append_label(0, "right")  # already answered: refused, nothing written
        with pytest.raises(ConfigError, match="not in"):
            q.append_label(9, "left")
        with pytest.raises(ConfigError, match="a label is one of"):
            q.append_label(2, "up")
    assert q.labels() == {0: 0, 1: 1} and q.next_unlabelled() == 2
    with open(tmp_path / "q" / LABELS_FILE, "ab") as f:  # a write cut short by a crash
        f.write(b'{"pair": 2, "lab')
    assert q.labels() == {0: 0, 1: 1}  # the torn line is no answer
    with LabelQueue(tmp_path / "q").writer() as w:  # the next writer cuts it off before appending
        assert w.append_label(2, "equal")
    lines = (tmp_path / "q" / LABELS_FILE).read_text().splitlines()
    assert [json.loads(x)["pair"] for x in lines] == [0, 1, 2]
    assert q.progress() == {"pairs": 4, "labelled": 3, "left": 1, "right": 1, "equal": 1, "skip": 0}


def test_a_second_writer_is_refused(tmp_path):
    q = LabelQueue.create(tmp_path / "q")
    q.add_batch(_frames(1), _frames(1, 1))
    with q.writer():
        with pytest.raises(RunInUseError, match="another process is labelling"):
            LabelQueue(tmp_path / "q").writer()
    LabelQueue(tmp_path / "q").writer().close()  # released with the first


LABELLER = textwrap.dedent("""
    import sys, time
    from pixelrl.rewards.queue import LabelQueue
    q = LabelQueue(sys.argv[1]).writer()
    while True:
        pair = q.next_unlabelled()
        if pair is None:
            break
        assert q.append_label(pair, ["left", "right", "equal", "skip"][pair % 4])
        print(pair, flush=True)  # acknowledged: the label is on disk
        time.sleep(float(sys.argv[2]))
    print("done", flush=True)
""")


def test_a_labeller_killed_mid_labelling_loses_nothing_and_duplicates_nothing(tmp_path):
    q = LabelQueue.create(tmp_path / "q")
    q.add_batch(_frames(60), _frames(60, 1))
    script = tmp_path / "labeller.py"
    script.write_text(LABELLER)
    acked: list[int] = []
    for _ in range(3):  # kill it twice mid-labelling, then let it finish
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "q"), "0.01"], stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        got = 0
        while True:
            line = proc.stdout.readline().strip()
            if not line or line == "done":
                break
            acked.append(int(line))
            got += 1
            if got == 15 and len(acked) < 45:
                os.kill(proc.pid, signal.SIGKILL)  # mid-labelling, between or during appends
                break
        proc.wait(timeout=30)
        labels = LabelQueue(tmp_path / "q").labels()
        assert set(acked) <= set(labels)  # every acknowledged label survived
    lines = [json.loads(x) for x in (tmp_path / "q" / LABELS_FILE).read_text().splitlines()]
    pairs = [r["pair"] for r in lines]
    assert sorted(pairs) == list(range(60))  # each pair answered exactly once, none lost, none twice
    assert all(r["label"] == [0, 1, -1, -2][r["pair"] % 4] for r in lines)
    assert LabelQueue(tmp_path / "q").next_unlabelled() is None
