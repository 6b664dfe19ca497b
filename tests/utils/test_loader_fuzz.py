"""Property-based fuzzing (Hypothesis) of every loader a user can point at a file: checkpoint, replay chunks,
dataset, config.json, metrics.jsonl and snapshot bank (issue 14). A file is truncated, has a bit flipped, or (for
JSON) gets a wrong but valid JSON value somewhere; the only allowed outcomes are a load identical to the intact
file's, or the loader's named error (:class:`CorruptFileError` / :class:`ConfigError`), never another exception."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pixelrl.errors import ConfigError, CorruptFileError  # noqa: E402

EXAMPLES = int(os.environ.get("PIXELRL_FUZZ_EXAMPLES", "40"))
"""Examples per loader: a fixed, quick set by default; ``PIXELRL_FUZZ_EXAMPLES=2000`` for a deeper, random search."""
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="PIXELRL_FUZZ_EXAMPLES" not in os.environ,
                database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


@st.composite
def damages(draw, files: list[str], json_files: tuple[str, ...] = ()):
    """``(file, kind, where, bit, value, path_pick)``: what to do to which file."""
    name = draw(st.sampled_from(files))
    kinds = ["truncate", "flip"] + (["json"] if name.endswith(".json") or name in json_files else [])
    return (name, draw(st.sampled_from(kinds)), draw(st.floats(0, 1)), draw(st.integers(0, 7)), draw(JSON_VALUES),
            draw(st.integers(0, 10_000)))


def _json_paths(doc, prefix=()):
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _json_paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _json_paths(v, prefix + (i,))
    return out


def apply_damage(root: Path, damage) -> None:
    name, kind, where, bit, value, pick = damage
    path = root / name
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[: int(where * len(data))])
    elif kind == "flip":
        if not data:
            return
        b = bytearray(data)
        b[min(int(where * len(b)), len(b) - 1)] ^= 1 << bit
        path.write_bytes(bytes(b))
    else:  # a wrong but valid JSON value in place of one of the document's values (or of the whole document)
        doc = json.loads(data)
        paths = _json_paths(doc)
        target = paths[pick % len(paths)]
        if not target:
            doc = value
        else:
            node = doc
            for k in target[:-1]:
                node = node[k]
            node[target[-1]] = value
        path.write_text(json.dumps(doc))


def fuzz_copy(pristine: Path) -> Path:
    d = Path(tempfile.mkdtemp(prefix="fuzz-"))
    shutil.copytree(pristine, d / "x")
    return d / "x"


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)


# ------------------------------------------------------------------------------------------ checkpoint

@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    from pixelrl.utils.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("ckpt") / "checkpoints"
    net = torch.nn.Linear(3, 2)
    state = {"net": net.state_dict(), "step": 7, "sched": (1.0, 0.5), "arr": np.arange(4, dtype=np.int16),
             "name": "x", "none": None}
    save_checkpoint(d, "frames_000000001000", state)
    return d, state


@FUZZ
@given(damage=damages(["latest.json", "frames_000000001000/manifest.json", "frames_000000001000/state.json",
                       "frames_000000001000/tensors.safetensors"]))
def test_checkpoint_loads_intact_or_is_named(checkpoint_dir, damage):
    from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint

    pristine, state = checkpoint_dir
    d = fuzz_copy(pristine)
    try:
        apply_damage(d, damage)
        try:
            loaded = load_checkpoint(latest_checkpoint(d))
        except CorruptFileError:
            return
        assert _same(state, loaded)
    finally:
        shutil.rmtree(d.parent)


@FUZZ
@given(damage=damages(["frames_000000001000/state.json", "frames_000000001000/tensors.safetensors"]))
def test_checkpoint_edited_and_re_signed_loads_or_is_named(checkpoint_dir, damage):
    """Past the manifest: sizes and sha256 recomputed after the damage, so decoding must catch it."""
    from pixelrl.utils.atomic import sha256_file
    from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint

    pristine, _ = checkpoint_dir
    d = fuzz_copy(pristine)
    try:
        apply_damage(d, damage)
        ckpt = d / "frames_000000001000"
        manifest = json.loads((ckpt / "manifest.json").read_text())
        for fname, meta in manifest["files"].items():
            meta["bytes"], meta["sha256"] = (ckpt / fname).stat().st_size, sha256_file(ckpt / fname)
        (ckpt / "manifest.json").write_text(json.dumps(manifest))
        try:
            load_checkpoint(latest_checkpoint(d))
        except CorruptFileError:
            return
    finally:
        shutil.rmtree(d.parent)


# ------------------------------------------------------------------------------------------ replay chunks

OBS = gym.spaces.Box(0, 255, (6, 8, 8), np.uint8)  # 2 stacked RGB frames
ACT = gym.spaces.Box(-1, 1, (2,), np.float32)


def _replay():
    from pixelrl.data.replay import ReplayBuffer

    return ReplayBuffer(OBS, ACT, 64, frame_stack=2, nstep=2, discount=0.9, seed=3)


@pytest.fixture(scope="module")
def replay_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("replay") / "replay"
    rng = np.random.default_rng(0)
    buf = _replay()
    for ep in range(3):
        buf.add_first(rng.integers(0, 256, OBS.shape, dtype=np.uint8))
        for t in range(7):
            buf.add(rng.uniform(-1, 1, 2).astype(np.float32), float(t), rng.integers(0, 256, OBS.shape, np.uint8),
                    False, t == 6)
        buf.save(d)  # one chunk per save
    return d


def _replay_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@FUZZ
@given(damage=damages(["manifest.json", "chunk_000000.npz", "chunk_000001.npz", "chunk_000002.npz"]))
def test_replay_loads_intact_or_is_named(replay_dir, damage):
    d = fuzz_copy(replay_dir)
    try:
        apply_damage(d, damage)
        buf = _replay()
        try:
            buf.load(d)
        except (CorruptFileError, ConfigError):
            return
        ref = _replay()
        ref.load(replay_dir)
        assert _same(ref.state_dict(), buf.state_dict())
    finally:
        shutil.rmtree(d.parent)


@FUZZ
@given(damage=damages(["manifest.json"]).filter(lambda d: d[1] == "json"))
def test_replay_manifest_edited_and_re_signed_loads_intact_or_is_named(replay_dir, damage):
    """Past the checksum: a manifest whose body was changed and whose checksum was recomputed to match. Such a file
    can hold a different but valid state (another sampler RNG state), so a load need not equal the original: it
    must be the named error or a buffer that works."""
    from pixelrl.data.replay import _json_checksum

    d = fuzz_copy(replay_dir)
    try:
        apply_damage(d, damage)
        doc = json.loads((d / "manifest.json").read_text())
        if isinstance(doc, dict):
            doc["checksum"] = _json_checksum({k: v for k, v in doc.items() if k != "checksum"})
            (d / "manifest.json").write_text(json.dumps(doc))
        buf = _replay()
        try:
            buf.load(d)
        except (CorruptFileError, ConfigError):
            return
        batch = buf.sample(4)
        assert batch.obs.shape == (4, *OBS.shape)
        _replay().load_state_dict(buf.state_dict())
    finally:
        shutil.rmtree(d.parent)


# ------------------------------------------------------------------------------------------ dataset

@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    pytest.importorskip("h5py")
    from pixelrl.data.dataset import DatasetWriter

    d = tmp_path_factory.mktemp("ds") / "ds"
    rng = np.random.default_rng(0)
    with DatasetWriter(d, OBS, ACT, env_id="toy/env", frame_stack=1) as w:
        for ep in range(2):
            T = 5
            w.add_episode(observations=rng.integers(0, 256, (T + 1, *OBS.shape), dtype=np.uint8),
                          actions=rng.uniform(-1, 1, (T, 2)).astype(np.float32), rewards=rng.normal(size=T),
                          terminations=np.zeros(T, bool), truncations=np.r_[np.zeros(T - 1, bool), True])
    return d


def _read_all(ds) -> list:
    return [ds.get_episode(i, stacked=False) for i in range(ds.num_episodes)]


@settings(FUZZ, max_examples=max(1, EXAMPLES * 2 // 3))
@given(damage=damages(["data/metadata.json", "data/main_data.hdf5"]))
def test_dataset_loads_intact_or_is_named(dataset_dir, damage):
    from pixelrl.data.dataset import load_dataset

    d = fuzz_copy(dataset_dir)
    try:
        apply_damage(d, damage)
        try:
            ds = load_dataset(d)
            episodes = _read_all(ds)
        except (CorruptFileError, ConfigError):
            return
        assert _same(_read_all(load_dataset(dataset_dir)), episodes)
    finally:
        shutil.rmtree(d.parent)


@settings(FUZZ, max_examples=max(1, EXAMPLES * 2 // 3))
@given(damage=damages(["data/metadata.json", "data/main_data.hdf5"]))
def test_dataset_edited_and_re_signed_loads_or_is_named(dataset_dir, damage):
    """Past the checksums: the file's size / sha256 and the metadata checksum recomputed after the damage, so the
    structural checks behind them are what must catch it (a load then reads every episode without another error)."""
    from pixelrl.data.dataset import _resign, load_dataset

    d = fuzz_copy(dataset_dir)
    try:
        apply_damage(d, damage)
        try:
            _resign(d)
        except (ValueError, KeyError, TypeError, IndexError):
            pass  # metadata no longer has the layout to re-sign: only the plain checks apply
        try:
            _read_all(load_dataset(d))
        except (CorruptFileError, ConfigError):
            return
    finally:
        shutil.rmtree(d.parent)


# ------------------------------------------------------------------------------------------ config.json

@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    from pixelrl.train.setup import build_config
    from pixelrl.utils.dataclass_io import to_dict

    d = tmp_path_factory.mktemp("cfg") / "run"
    d.mkdir()
    cfg = build_config("dmc/cartpole-swingup", "drqv2", "cpu-fast", "cpu", fill_run_dir=False)
    (d / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    return d


@FUZZ
@given(damage=damages(["config.json"]))
def test_config_json_loads_what_it_says_or_is_named(config_dir, damage):
    from pixelrl.train.setup import load_run_config
    from pixelrl.utils.dataclass_io import to_dict

    d = fuzz_copy(config_dir)
    try:
        apply_damage(d, damage)
        try:
            cfg = load_run_config(d)
        except (CorruptFileError, ConfigError):
            return
        # what loaded is what the file says (a valid value edited by hand loads as that value)
        doc = json.loads((d / "config.json").read_text())
        got = to_dict(cfg)
        for k, v in doc.items():
            if k != "agent":
                assert got[k] == v, k
    finally:
        shutil.rmtree(d.parent)


def test_every_agents_resolved_config_passes_validation(tmp_path):
    from pixelrl.agents import AGENTS
    from pixelrl.train.setup import build_config, load_run_config
    from pixelrl.utils.dataclass_io import to_dict

    for agent, spec in AGENTS.items():
        envs = (["dmc/cartpole-swingup"] if "continuous" in spec.actions else []) + (
            ["ale/Pong", "gym/CartPole-v1"] if "discrete" in spec.actions else [])
        for env, preset in [(e, p) for e in envs for p in ("paper", "cpu-fast")]:
            cfg = build_config(env, agent, preset, "cpu", fill_run_dir=False)
            d = tmp_path / f"{agent}-{preset}-{env.replace('/', '_')}"
            d.mkdir()
            (d / "config.json").write_text(json.dumps(to_dict(cfg)))
            assert to_dict(load_run_config(d)) == to_dict(cfg)


# ------------------------------------------------------------------------------------------ metrics.jsonl

@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    from pixelrl.train.logger import Logger

    d = tmp_path_factory.mktemp("log") / "run"
    log = Logger(d, tensorboard=False)
    for i in range(6):
        log.log("train" if i % 3 else "eval", {"frames": 100 * i, "agent_steps": 50 * i, "episode_return": i / 3})
    offset = log.offset()
    copy = log.read_bytes()
    log.log("train", {"frames": 700, "agent_steps": 350, "episode_return": 9.0})  # after the "checkpoint"
    return d, offset, copy


@FUZZ
@given(damage=damages(["metrics.jsonl"], json_files=()))
def test_metrics_log_is_repaired_from_the_checkpoint_or_rows_are_named(log_dir, damage):
    from pixelrl.train.logger import Logger, read_rows

    pristine, offset, copy = log_dir
    d = fuzz_copy(pristine)
    try:
        apply_damage(d, damage)
        try:
            read_rows(d)
        except CorruptFileError:
            pass
        log = Logger(d, tensorboard=False, jsonl_offset=offset, jsonl_copy=copy)  # a resume: always repairable
        assert (d / "metrics.jsonl").read_bytes() == copy
        assert sum(len(v) for v in log.rows.values()) == 6
    finally:
        shutil.rmtree(d.parent)


# ------------------------------------------------------------------------------------------ snapshot bank

@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory):
    from pixelrl.envs.snapshot import SnapshotBank

    n = 6
    bank = SnapshotBank(physics=np.arange(n * 3, dtype=np.float64).reshape(n, 3) / 7,
                        model=np.zeros((n, 2)), elapsed=np.arange(n), values=np.linspace(0, 1, n),
                        episode=np.zeros(n), step=np.arange(n), episode_return=np.ones(n),
                        cluster=np.array([0, 0, 0, 1, 1, 1]), centroids=np.array([0.2, 0.8]), meta={"env": "dmc/x"})
    d = tmp_path_factory.mktemp("bank") / "bank"
    bank.save(d)
    return d


@FUZZ
@given(damage=damages(["snapshots.json", "snapshots.npz"]))
def test_snapshot_bank_loads_intact_or_is_named(bank_dir, damage):
    from pixelrl.envs.snapshot import SnapshotBank

    d = fuzz_copy(bank_dir)
    try:
        apply_damage(d, damage)
        try:
            bank = SnapshotBank.load(d)
        except (CorruptFileError, ConfigError):
            return
        ref = SnapshotBank.load(bank_dir)
        for name in ("physics", "model", "elapsed", "values", "episode", "step", "episode_return", "cluster",
                     "centroids"):
            assert _same(getattr(ref, name), getattr(bank, name)), name
    finally:
        shutil.rmtree(d.parent)
