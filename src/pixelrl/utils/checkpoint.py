"""Checkpoints: safetensors weights + JSON state, written atomically and verified on load.

A checkpoint is a folder ``checkpoints/<name>/`` holding

* ``tensors.safetensors`` - every tensor and array of the state (network weights, optimizer moments, RNG states),
* ``state.json`` - everything else (counters, schedules, config), with references to the tensors,
* ``manifest.json`` - size and sha256 of the two files above; written last, so its presence marks a finished
  checkpoint.

The folder is written under a temporary name and renamed into place, then ``checkpoints/latest.json`` is replaced
atomically to point at it. A process killed at any moment leaves either the previous checkpoint or the new one as
``latest``. On load every file is checked against the manifest before anything is decoded; a truncated or corrupt
checkpoint raises :class:`~pixelrl.errors.CorruptFileError` naming the file, and nothing is half-loaded.

No pickle is involved anywhere: tensors go through safetensors, the rest through JSON.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pixelrl.errors import CorruptFileError, NotFoundError
from pixelrl.utils.atomic import ensure_free_space, fsync_dir, sha256_file, storage_errors, write_json_atomic

FORMAT_VERSION = 1
_TENSOR, _NDARRAY, _DICT, _TUPLE = "__tensor__", "__ndarray__", "__dict__", "__tuple__"


def flatten_state(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tuples, tensors, arrays, scalars) into tensors and a JSON tree."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().to("cpu").clone().contiguous()
            return {_TENSOR: path}
        if isinstance(x, np.ndarray):
            tensors[path] = torch.from_numpy(np.ascontiguousarray(x).copy())
            return {_NDARRAY: path}
        if isinstance(x, dict):
            return {_DICT: [[k, walk(v, f"{path}/{k}")] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {_TUPLE: [walk(v, f"{path}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(x)]
        if isinstance(x, (np.integer, np.floating, np.bool_)):
            return x.item()
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot checkpoint a value of type {type(x).__name__} at {path or '/'}")

    return tensors, walk(state, "")


def unflatten_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(tree, list):
        return [unflatten_state(v, tensors) for v in tree]
    if isinstance(tree, dict):
        if _TENSOR in tree:
            return tensors[tree[_TENSOR]]
        if _NDARRAY in tree:
            return tensors[tree[_NDARRAY]].numpy()
        if _TUPLE in tree:
            return tuple(unflatten_state(v, tensors) for v in tree[_TUPLE])
        if _DICT in tree:
            return {k: unflatten_state(v, tensors) for k, v in tree[_DICT]}
        raise ValueError(f"unexpected node in checkpoint state: {sorted(tree)}")
    return tree


def save_checkpoint(directory: str | os.PathLike, name: str, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as checkpoint ``name`` under ``directory`` atomically and point ``latest.json`` at it.

    Older checkpoints beyond the ``keep`` most recent are deleted after the new one is in place. The free space
    for the checkpoint (its tensors' size plus the JSON) is checked before anything is written; a full or read-only
    disk raises :class:`~pixelrl.errors.StorageError` with the temporary folder removed and the previous checkpoint
    (and ``latest.json``) untouched.
    """
    directory = Path(directory)
    final = directory / name
    tmp = directory / f".tmp-{name}"
    tensors, tree = flatten_state(state)
    state_json = json.dumps({"format_version": FORMAT_VERSION, "state": tree})
    needed = sum(t.numel() * t.element_size() for t in tensors.values()) + len(state_json) + 64 * 1024
    with storage_errors(tmp, cleanup=(tmp,), needed=needed):
        directory.mkdir(parents=True, exist_ok=True)
        ensure_free_space(directory, needed)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_file(tensors, str(tmp / "tensors.safetensors"))
        with open(tmp / "state.json", "w") as f:
            f.write(state_json)
        manifest = {"format_version": FORMAT_VERSION, "files": {}}
        for fname in ("tensors.safetensors", "state.json"):
            p = tmp / fname
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
            manifest["files"][fname] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        write_json_atomic(tmp / "manifest.json", manifest)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    fsync_dir(directory)
    write_json_atomic(directory / "latest.json", {"name": name})
    _prune(directory, keep=keep, protect=name)
    return final


def _prune(directory: Path, keep: int, protect: str) -> None:
    ckpts = sorted(
        (p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
    )
    for p in ckpts[: max(0, len(ckpts) - keep)]:
        if p.name != protect:
            shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The folder of the latest finished checkpoint under ``directory``, or None if there is none."""
    directory = Path(directory)
    pointer = directory / "latest.json"
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_bytes())["name"]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise CorruptFileError(pointer, f"unreadable checkpoint pointer ({e})") from None
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name:
        raise CorruptFileError(pointer, f"names no checkpoint folder ({name!r})")
    path = directory / name
    if not path.is_dir():
        raise CorruptFileError(pointer, f"points at checkpoint '{name}', which does not exist")
    return path


def resolve_checkpoint(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Path:
    """The checkpoint folder a command should load: ``checkpoint`` as a path (absolute, or relative to the current
    folder), else as the name of one of the run's checkpoints (``frames_000000010000``, or the folder under
    ``<run>/checkpoints/``), else (None) the run's latest. A name or path that matches nothing raises
    :class:`~pixelrl.errors.NotFoundError` listing the run's checkpoints."""
    run_dir = Path(run_dir)
    directory = run_dir / "checkpoints"
    if checkpoint is None:
        ckpt = latest_checkpoint(directory)
        if ckpt is None:
            raise NotFoundError(f"{run_dir} has no checkpoint yet (checkpoints/latest.json is missing)")
        return ckpt
    for cand in (Path(checkpoint), directory / str(checkpoint), directory / Path(checkpoint).name):
        if cand.is_dir():
            return cand
    names = sorted(p.name for p in directory.glob("*") if p.is_dir() and not p.name.startswith(".")) \
        if directory.is_dir() else []
    raise NotFoundError(f"checkpoint {str(checkpoint)!r} not found: it is neither a folder nor a checkpoint of "
                        f"{run_dir} (its checkpoints: {', '.join(names) or 'none'}); leave --checkpoint out to use "
                        "the latest")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and verify a checkpoint folder; raises CorruptFileError naming the bad file."""
    path = Path(path)
    if not path.is_dir():
        raise NotFoundError(f"checkpoint {path} not found" + (" (it is a file; a checkpoint is a folder)"
                                                             if path.exists() else ""))
    mpath = path / "manifest.json"
    if not mpath.exists():
        raise CorruptFileError(path, "manifest.json is missing (the checkpoint was never finished)")
    try:
        manifest = json.loads(mpath.read_bytes())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise CorruptFileError(mpath, f"unreadable manifest ({e})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CorruptFileError(mpath, f"unsupported checkpoint format {manifest.get('format_version')!r}")
    wanted = {"tensors.safetensors", "state.json"}
    if not isinstance(files, dict) or set(files) != wanted or not all(
            isinstance(m, dict) and isinstance(m.get("bytes"), int) and isinstance(m.get("sha256"), str)
            for m in files.values()):
        raise CorruptFileError(mpath, f"the manifest does not list {sorted(wanted)} with their size and sha256")
    for fname, meta in files.items():
        p = path / fname
        if not p.exists():
            raise CorruptFileError(p, "file listed in the manifest is missing")
        size = p.stat().st_size
        if size != meta["bytes"]:
            raise CorruptFileError(p, f"size is {size} bytes, the manifest says {meta['bytes']} (truncated?)")
        if sha256_file(p) != meta["sha256"]:
            raise CorruptFileError(p, "sha256 does not match the manifest")
    try:
        tensors = load_file(str(path / "tensors.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptFileError(path / "tensors.safetensors", f"unreadable safetensors file ({e})") from None
    try:
        doc = json.loads((path / "state.json").read_bytes())
        return unflatten_state(doc["state"], tensors)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError) as e:
        raise CorruptFileError(path / "state.json", f"unreadable state ({e})") from None
