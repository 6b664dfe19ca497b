"""pixelrl train --wandb: an offline W&B run holds the run's rows, config and videos; bad settings are one line."""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("wandb", reason="wandb is not installed: pip install 'pixelrl[wandb]'")
pytest.importorskip("dm_control")

from pixelrl.cli.main import main  # noqa: E402
from pixelrl.train.logger import read_rows  # noqa: E402

TINY = ["--env", "dmc/cartpole-swingup", "--preset", "none", "--size", "32", "--action-repeat", "8", "--fast-render",
        "--frames", "250", "--eval-every-frames", "125", "--eval-episodes", "1", "--no-eval-random", "--threads", "1",
        "--device", "cpu", "--no-progress", "--agent.batch-size", "4", "--agent.hidden-dim", "8",
        "--agent.feature-dim", "4", "--agent.encoder-channels", "4", "4", "4", "4", "--agent.num-seed-steps", "10",
        "--agent.precision", "fp32"]


def wandb_records(path: Path):
    """The records of a ``.wandb`` file (W&B's LevelDB-style log of ``wandb_internal_pb2.Record`` protobufs: a 7-byte
    ':W&B' header, then 32 KiB blocks of chunks, each with a 7-byte header: crc32, length, type full/first/middle/
    last). wandb 0.31 ships no Python reader of its own."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block padding
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, last
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def history_and_config(wandb_dir: Path):
    files = sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    rows, config, videos = [], {}, []
    for r in wandb_records(files[0]):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            video = {k.removeprefix("eval/video/"): v for k, v in items.items() if k.startswith("eval/video/")}
            if video:
                videos.append(video)
            rows.append({k: v for k, v in items.items() if not k.startswith(("_", "eval/video/"))})
        elif kind == "run":
            config.update({u.key: json.loads(u.value_json) for u in r.run.config.update})
    return rows, config, videos


def test_offline_run_holds_the_rows_config_and_videos(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    run = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run), "--wandb", "--wandb-mode", "offline",
                 "--wandb-project", "pixelrl-test"]) == 0
    logged, config, videos = history_and_config(tmp_path / "wb")
    expected = []
    for row in read_rows(run):  # every row of metrics.jsonl, its numbers under <kind>/, against frames
        kind = row["kind"]
        expected.append({"frames": row["frames"], **{f"{kind}/{k}": v for k, v in row.items()
                                                      if k not in ("kind", "frames") and not isinstance(v, bool)
                                                      and isinstance(v, (int, float))}})
    assert len(expected) >= 3 and any(k.startswith("eval/") for k in expected[0])
    assert logged == expected  # JSON keeps floats exactly
    saved = json.loads((run / "config.json").read_text())
    assert config["wandb_project"] == "pixelrl-test" and config["env"] == saved["env"]
    assert config["agent"] == saved["agent"]
    evals = len(read_rows(run, "eval"))
    mp4s = sorted((run / "videos").glob("*.mp4"))
    assert len(videos) == evals == len(mp4s)  # one video per evaluation, the trainer's own file
    assert all(v["_type"] == "video-file" for v in videos)
    assert [v["size"] for v in videos] == [p.stat().st_size for p in mp4s]
    assert json.loads((run / "wandb.json").read_text())["id"] in str(next((tmp_path / "wb").glob("wandb/offline-*")))


def test_bad_settings_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run), "--wandb", "--wandb-mode", "sometimes"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--wandb-mode must be one of online, offline, disabled" in err
    assert main(["train", *TINY, "--run-dir", str(run), "--wandb", "--wandb-mode", "offline", "--seeds", "1-2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train the seeds as separate runs (--seed N)" in err
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no saved key (~/.netrc) either
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    assert main(["train", *TINY, "--run-dir", str(run), "--wandb"]) == 1  # online, nobody to type a key
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no W&B API key (run `wandb login`" in err and "--wandb-mode offline" in err
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if the package were not installed
    assert main(["train", *TINY, "--run-dir", str(run), "--wandb"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'pixelrl[wandb]'" in err
    assert not run.exists()


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path, monkeypatch):
    """The W&B run id lives in the run folder (wandb.json): a second sink there -- in a new process, as
    ``pixelrl resume`` is -- logs to the same W&B run; videos already in the folder are not logged again."""
    import subprocess

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    run = tmp_path / "run"
    (run / "videos").mkdir(parents=True)
    config = {"wandb": True, "wandb_project": "p", "wandb_entity": None, "wandb_mode": "offline", "env": "x"}

    def sink(kind: str, row: dict) -> str:
        code = ("import json, sys; from pixelrl.train.wandb_logger import WandbSink; "
                "s = WandbSink(sys.argv[1], json.loads(sys.argv[2])); s.log(sys.argv[3], json.loads(sys.argv[4])); "
                "print(s.run.id); s.close()")
        out = subprocess.run([sys.executable, "-c", code, str(run), json.dumps(config), kind, json.dumps(row)],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        return out.strip().splitlines()[-1]

    first = sink("train", {"frames": 10, "agent_steps": 5, "episode_return": 1.5, "flag": True, "bad": float("nan")})
    (run / "videos" / "old.mp4").write_bytes(b"")
    time.sleep(1.1)  # W&B names offline run folders by the second
    second = sink("eval", {"frames": 20, "agent_steps": 10, "eval_return": 2.0})
    assert second == first == json.loads((run / "wandb.json").read_text())["id"]
    logs = sorted((tmp_path / "wb").glob("wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 2 and all(first in p.name for p in logs)
    rows = [[{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
             for r in wandb_records(p) if r.WhichOneof("record_type") == "history"] for p in logs]
    strip = [[{k: v for k, v in row.items() if not k.startswith("_")} for row in part] for part in rows]
    assert sorted(strip, key=lambda part: part[0]["frames"]) == [
        [{"frames": 10, "train/agent_steps": 5, "train/episode_return": 1.5}],  # no bool, no NaN
        [{"frames": 20, "eval/agent_steps": 10, "eval/eval_return": 2.0}]]  # no video: old.mp4 was there before
