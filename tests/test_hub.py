"""pixelrl push / hf:// through a local stand-in of the Hugging Face Hub.

The stand-in is a small HTTP server (below) implementing the few endpoints ``huggingface_hub`` calls for
``HfApi.create_repo``, ``HfApi.upload_folder`` (metadata check, preupload, commit) and ``snapshot_download`` (repo
info, tree, file resolve), in the shapes the Hub answers; ``HF_ENDPOINT`` points the real client code at it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

pytest.importorskip("huggingface_hub", reason="huggingface_hub is not installed: pip install 'pixelrl[hub]'")

from pixelrl.cli.main import main  # noqa: E402


def _oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id, as the Hub reports it


class _Hub(BaseHTTPRequestHandler):
    """Repos: (type, id) -> {"branches": {name: sha}, "commits": {sha: {path: bytes}}}."""

    protocol_version = "HTTP/1.1"
    repos: dict
    requests: list
    metadata: list

    def log_message(self, *args):
        pass

    def _send(self, code, body=b"", headers=None, ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        self._route()

    do_HEAD = do_POST = do_GET

    def _url(self, rtype, rid):
        return f"http://{self.headers['Host']}{'' if rtype == 'model' else '/datasets'}/{rid}"

    def _rev(self, rtype, rid, rev):
        repo = self.repos.get((rtype, rid))
        if repo is None:
            return None, self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        sha = repo["branches"].get(rev, rev if rev in repo["commits"] else None)
        if sha is None:
            return None, self._send(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        return (repo, sha), None

    def _route(self):
        path = unquote(self.path.split("?")[0])
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if self.command == "POST" else b""
        self.requests.append((self.command, path))
        parts = path.strip("/").split("/")
        if self.command == "POST" and path == "/api/repos/create":
            d = json.loads(body)
            rtype, rid = d.get("type") or "model", f"{d['organization']}/{d['name']}"
            if (rtype, rid) in self.repos:
                return self._send(409, {"error": "You already created this repo", "url": self._url(rtype, rid)})
            self.repos[(rtype, rid)] = {"branches": {"main": "0" * 40}, "commits": {"0" * 40: {}}}
            return self._send(200, {"url": self._url(rtype, rid)})
        if self.command == "POST" and path == "/api/validate-yaml":
            import yaml

            content = json.loads(body)["content"]
            try:
                meta = yaml.safe_load(content.split("---")[1])
                assert isinstance(meta, dict)
            except Exception as e:  # the Hub refuses a card whose metadata is not YAML
                return self._send(400, {"errors": [{"message": str(e)}]})
            self.metadata.append(meta)
            return self._send(200, {})
        if parts[0] == "api" and parts[1] in ("models", "datasets") and len(parts) >= 5:
            rtype, rid, op, rev = parts[1][:-1], "/".join(parts[2:4]), parts[4], "/".join(parts[5:]) or "main"
            found, _ = self._rev(rtype, rid, rev)
            if found is None:
                return
            repo, sha = found
            if op == "preupload" and self.command == "POST":
                files = json.loads(body)["files"]
                return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                  for f in files], "commitOid": sha})
            if op == "commit" and self.command == "POST":
                files = dict(repo["commits"][sha])
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] != "header":
                        return self._send(400, {"error": f"the stand-in does not implement {item['key']}"})
                new = hashlib.sha1(sha.encode() + json.dumps(sorted((k, _oid(v)) for k, v in files.items()))
                                   .encode()).hexdigest()
                repo["commits"][new] = files
                repo["branches"][rev] = new
                return self._send(200, {"commitUrl": f"{self._url(rtype, rid)}/commit/{new}", "commitOid": new})
            if op == "tree" and self.command == "GET":
                return self._send(200, [{"type": "file", "path": p, "size": len(b), "oid": _oid(b)}
                                        for p, b in sorted(repo["commits"][sha].items())])
            if op == "revision" and self.command == "GET":
                return self._send(200, {"id": rid, "sha": sha, "private": False, "siblings": [
                    {"rfilename": p, "size": len(b)} for p, b in sorted(repo["commits"][sha].items())]})
        rtype = "dataset" if parts[0] == "datasets" else "model"
        rest = parts[1:] if rtype == "dataset" else parts
        if len(rest) >= 5 and rest[2] == "resolve" and self.command in ("GET", "HEAD"):  # /{repo}/resolve/{rev}/{path}
            found, _ = self._rev(rtype, "/".join(rest[:2]), rest[3])
            if found is None:
                return
            repo, sha = found
            data = repo["commits"][sha].get("/".join(rest[4:]))
            if data is None:
                return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            return self._send(200, data, {"X-Repo-Commit": sha, "ETag": f'"{_oid(data)}"'},
                              ctype="application/octet-stream")
        return self._send(404, {"error": f"the stand-in does not implement {self.command} {path}"})


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fresh stand-in Hub; HF_ENDPOINT points at it, the caches are in tmp."""
    handler = type("Hub", (_Hub,), {"repos": {}, "requests": [], "metadata": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HF_TOKEN", "hf_standin")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # the stand-in is local, whatever proxy CI has
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("PIXELRL_HUB_CACHE", str(tmp_path / "pixelrl_hub"))
    yield handler
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny run, with a checkpoint, eval rows, a curve and a video."""
    pytest.importorskip("dm_control")
    run = tmp_path_factory.mktemp("hub") / "run"
    args = ["train", "--env", "dmc/cartpole-swingup", "--preset", "none", "--size", "32", "--action-repeat", "8",
            "--fast-render", "--frames", "1000", "--eval-every-frames", "1000", "--eval-episodes", "1",
            "--no-eval-random", "--threads", "1", "--device", "cpu", "--no-progress", "--no-tensorboard",
            "--agent.batch-size", "4", "--agent.hidden-dim", "8", "--agent.feature-dim", "4",
            "--agent.encoder-channels", "4", "4", "4", "4", "--agent.num-seed-steps", "10", "--agent.precision",
            "fp32", "--run-dir", str(run)]
    assert main(args) == 0
    return run


def _eval(spec: str, capsys) -> dict:
    assert main(["eval", spec, "--episodes", "1", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_push_then_eval_from_the_hub_round_trip(hub, run_dir, tmp_path, capsys):
    assert main(["push", str(run_dir), "--repo", "alice/cartpole-drqv2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    files = hub.repos[("model", "alice/cartpole-drqv2")]["commits"]
    head = hub.repos[("model", "alice/cartpole-drqv2")]["branches"]["main"]
    pushed = files[head]
    assert sorted(pushed) == out["files"] and out["commit_url"].endswith(head)
    # what leaves the machine: safetensors, JSON, PNG, MP4 and the card; no pickle, replay or TensorBoard events
    assert {Path(p).suffix for p in pushed} == {".safetensors", ".json", ".png", ".mp4", ".md"}
    assert not any(p.startswith(("replay/", "tb/")) or p.endswith((".npz", ".pkl", ".pt")) for p in pushed)
    ckpt = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["name"]
    local = (run_dir / "checkpoints" / ckpt / "tensors.safetensors").read_bytes()
    assert pushed[f"checkpoints/{ckpt}/tensors.safetensors"] == local
    card = pushed["README.md"].decode()
    config = json.loads((run_dir / "config.json").read_text())
    assert "pixelrl eval hf://alice/cartpole-drqv2" in card and "![learning curve](curve.png)" in card
    assert "| frames | agent_steps | eval_return |" in card and json.dumps(config["agent"]["lr"]) in card
    meta = hub.metadata[-1]  # the card's YAML as the Hub parsed it
    assert meta["library_name"] == "pixelrl" and "dmc/cartpole-swingup" in meta["tags"]
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"]["name"] == "dmc/cartpole-swingup" and result["metrics"][0]["type"] == "mean_reward"

    remote = _eval("hf://alice/cartpole-drqv2", capsys)
    folder = Path(remote["run_dir"])
    assert (folder / "checkpoints" / ckpt / "tensors.safetensors").read_bytes() == local  # bit-identical weights
    assert remote["returns"] == _eval(str(run_dir), capsys)["returns"]  # the same policy, the same episode

    out = tmp_path / "collected"
    assert main(["collect", "--policy", "hf://alice/cartpole-drqv2", "--episodes", "1", "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0  # a pushed policy records a dataset
    capsys.readouterr()
    from pixelrl.data.dataset import load_dataset

    assert load_dataset(out).num_episodes == 1

    assert main(["push", str(run_dir), "--repo", "alice/cartpole-drqv2", "--message", "again"]) == 0  # a 2nd commit
    capsys.readouterr()
    assert _eval(f"hf://alice/cartpole-drqv2@{head}", capsys)["returns"] == remote["returns"]  # a pinned revision


def test_dataset_push_and_read_back(hub, tmp_path, capsys):
    from gymnasium import spaces

    from pixelrl.data.dataset import DatasetWriter, load_dataset

    space = spaces.Box(0, 255, (3, 8, 8), np.uint8)
    with DatasetWriter(tmp_path / "ds", space, spaces.Box(-1, 1, (1,), np.float32), env_id="dmc/cartpole-swingup",
                       frame_stack=1) as w:
        rng = np.random.default_rng(0)
        w.add_episode(rng.integers(0, 255, (4, 3, 8, 8), np.uint8), rng.uniform(-1, 1, (3, 1)).astype(np.float32),
                      [0.0, 1.0, 2.0], [False, False, False], [False, False, True])
    assert main(["push", str(tmp_path / "ds"), "--repo", "alice/frames", "--repo-type", "dataset"]) == 0
    capsys.readouterr()
    repo = hub.repos[("dataset", "alice/frames")]
    pushed = repo["commits"][repo["branches"]["main"]]
    assert sorted(pushed) == ["README.md", "data/main_data.hdf5", "data/metadata.json"]
    ds = load_dataset("hf://alice/frames")  # where datasets are read, hf:// works
    assert ds.num_episodes == 1 and ds.num_transitions == 3
    data = "data/main_data.hdf5"
    assert (Path(ds.path) / data).read_bytes() == (tmp_path / "ds" / data).read_bytes()
    assert main(["dataset", "stats", "hf://alice/frames"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 1


def _one_line_error(argv, capsys) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_bad_input_is_one_line_and_sends_nothing(hub, run_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "weights.pt").write_bytes(b"x")
    err = _one_line_error(["push", str(tmp_path / "notarun"), "--repo", "alice/x"], capsys)
    assert "is not a run folder" in err and "no config.json" in err
    for bad in ("alice", "alice/b/c", "-alice/x", "alice/x--y", "alice/ x"):
        err = _one_line_error(["push", str(run_dir), f"--repo={bad}"], capsys)
        assert "is not a Hub repo id: give it as user/name" in err
    err = _one_line_error(["push", str(run_dir)], capsys)
    assert "needs --repo user/name" in err
    err = _one_line_error(["eval", "hf://alice/never-pushed"], capsys)
    assert "no such model repo" in err
    assert hub.requests == [("GET", "/api/models/alice/never-pushed/revision/main")]  # nothing was sent or created
    assert not hub.repos
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if the package were not installed
    err = _one_line_error(["push", str(run_dir), "--repo", "alice/x"], capsys)
    assert "pip install 'pixelrl[hub]'" in err
