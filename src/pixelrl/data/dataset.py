"""Offline datasets on disk, in a layout that Minari reads, with pixel episodes stored compactly.

Layout
------
A dataset is a folder (``path`` everywhere in this module is that folder)::

    <path>/data/main_data.hdf5     one group per episode: episode_0, episode_1, ...
    <path>/data/metadata.json      Minari's metadata keys plus a "pixelrl" block (spaces, frame stack, checksums)

Put the folder at ``$MINARI_DATASETS_PATH/<dataset_id>`` and ``minari.load_dataset(dataset_id, download=False)``
reads it (Minari 0.5.x, HDF5 storage, ``jpeg_encoding`` false). Each ``episode_<i>`` group holds

* ``observations``: ``T + 1`` rows (a sub-group with one dataset per key for a ``Dict`` observation);
* ``actions``: ``T`` rows (int64 ``[T]`` for ``Discrete``; the space's dtype otherwise);
* ``rewards`` (float64), ``terminations``, ``truncations`` (bool): ``T`` rows;
* attributes ``id``, ``total_steps`` (and ``seed`` when known), as Minari writes them.

Pixel observations (a uint8 ``Box`` with 3 dims, channels first, as pixelrl's environments return them) are
stored one frame per step: of each frame-stacked observation ``uint8[S*C, H, W]`` only the newest ``C`` channels
are written, uint8, in per-frame chunks compressed with gzip. The frame stack ``S`` is recorded in the metadata and
:func:`load_dataset` rebuilds the stacks exactly as pixelrl's ``FrameStack`` wrapper builds them (at reset the
first frame repeated). So the observation space Minari sees is the *single-frame* space ``uint8[C, H, W]``, and
Minari's episodes hold single frames; pixelrl's :class:`OfflineDataset` gives the environment's stacked space and
stacked observations. State (float) observations and the non-pixel keys of a ``Dict`` are stored as they are.

Integrity
---------
The writer builds the dataset under a hidden temporary name next to ``path`` and renames it into place when
:meth:`DatasetWriter.close` has written everything: a killed writer leaves no dataset at ``path`` (only a hidden
``.<name>.partial-<pid>-...`` folder, removed by the next writer of that path). ``metadata.json`` carries the
size and sha256 of ``main_data.hdf5``, a sha256 of every episode's arrays and a checksum of itself.
:func:`load_dataset` checks all of it and every group, shape, dtype and row count before returning, and raises
:class:`~pixelrl.errors.CorruptFileError` naming the file and the problem; nothing is half-loaded. No pickle is
involved: arrays live in HDF5, everything else in JSON.

See ``docs/datasets.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from gymnasium import spaces

from pixelrl.data.replay import parse_obs_space
from pixelrl.errors import ConfigError, CorruptFileError, MissingExtraError
from pixelrl.utils.atomic import fsync_dir, sha256_file, write_json_atomic

__all__ = [
    "DatasetWriter",
    "OfflineDataset",
    "load_dataset",
    "convert_minari",
    "resolve_dataset_dir",
    "stack_frames",
    "space_to_json",
    "space_from_json",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MINARI_VERSION",
]

FORMAT_NAME = "pixelrl.dataset"
FORMAT_VERSION = 1
#: The Minari dataset version written into ``metadata.json`` (must be one Minari >= 0.5 supports).
MINARI_VERSION = "0.5.4"
DATA_DIR = "data"
MAIN_FILE = "main_data.hdf5"
METADATA_FILE = "metadata.json"
#: Minari's dataset id grammar, ``(namespace/)name-v<version>`` (the version is required to load it).
_DATASET_ID_RE = re.compile(r"^(?:[-_\w][-_\w/]*[-_\w]+/)?[-_\w]+?-v\d+$")
_PARTIAL_RE = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)-[0-9a-f]+$")
#: Metadata keys Minari knows that a user's ``metadata`` may set at the top level of ``metadata.json``.
_MINARI_OPTIONAL_KEYS = {
    "algorithm_name": str,
    "description": str,
    "code_permalink": str,
    "author": list,
    "author_email": list,
    "ref_min_score": (int, float),
    "ref_max_score": (int, float),
    "requirements": list,
}


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is part of the offline extra
        raise MissingExtraError("h5py", "offline", "datasets on disk") from e
    return h5py


# ----------------------------------------------------------------------------------------------- spaces


def space_to_json(space: spaces.Space) -> dict:
    """A Gymnasium space as the JSON object Minari writes (``minari.serialization.serialize_space``)."""
    if isinstance(space, spaces.Box):
        return {"type": "Box", "dtype": str(space.dtype), "shape": [int(d) for d in space.shape],
                "low": space.low.tolist(), "high": space.high.tolist()}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "dtype": "int64", "start": int(space.start), "n": int(space.n)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "dtype": str(space.dtype), "nvec": space.nvec.tolist(),
                "start": space.start.tolist()}
    if isinstance(space, spaces.MultiBinary):
        n = space.n
        return {"type": "MultiBinary", "n": n.tolist() if isinstance(n, np.ndarray) else n}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "subspaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    raise ConfigError(f"cannot store a {type(space).__name__} space in a dataset; use Box, Discrete, MultiDiscrete, "
                      "MultiBinary or a flat Dict of Box")


def space_from_json(d: Any) -> spaces.Space:
    """Inverse of :func:`space_to_json`; raises ``ValueError`` on anything malformed."""
    if not isinstance(d, dict):
        raise ValueError("a space must be a JSON object")
    kind = d.get("type")
    if kind == "Box":
        shape = tuple(int(x) for x in d["shape"])
        dtype = np.dtype(d["dtype"])
        low = np.array(d["low"], dtype=dtype)
        high = np.array(d["high"], dtype=dtype)
        if low.shape != shape or high.shape != shape:
            raise ValueError(f"Box bounds do not have shape {shape}")
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(n=int(d["n"]), start=int(d.get("start", 0)))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(nvec=d["nvec"], dtype=d.get("dtype", "int64"), start=d.get("start"))
    if kind == "MultiBinary":
        return spaces.MultiBinary(n=d["n"])
    if kind == "Dict":
        sub = d["subspaces"]
        if not isinstance(sub, dict):
            raise ValueError("Dict subspaces must be an object")
        return spaces.Dict({str(k): space_from_json(v) for k, v in sub.items()})
    raise ValueError(f"unsupported space type {kind!r}")


@dataclass(frozen=True)
class _ObsKey:
    """How one observation entry is stored (the same rule as the replay buffer's)."""

    name: str | None  # dict key, or None for a plain observation
    pixel: bool
    env_shape: tuple[int, ...]  # what the environment returns (stacked for pixels)
    frame_shape: tuple[int, ...]  # what is stored per step (one frame for pixels)
    dtype: np.dtype

    @property
    def label(self) -> str:
        return "observations" if self.name is None else f"observations/{self.name}"

    def describe(self) -> dict:
        return {"name": self.name, "pixel": self.pixel, "env_shape": list(self.env_shape),
                "frame_shape": list(self.frame_shape), "dtype": np.dtype(self.dtype).str}


def _parse_obs_space(space: spaces.Space, frame_stack: int) -> list[_ObsKey]:
    """The replay buffer's storage rule (:func:`pixelrl.data.replay.parse_obs_space`), as dataset keys."""
    return [_ObsKey(k.name, k.pixel, k.env_shape, k.slot_shape, k.dtype)
            for k in parse_obs_space(space, frame_stack, store="datasets store")]


def _action_layout(space: spaces.Space) -> tuple[tuple[int, ...], np.dtype]:
    if isinstance(space, spaces.Discrete):
        return (), np.dtype(np.int64)
    if isinstance(space, (spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)):
        dtype = np.dtype(np.int8) if isinstance(space, spaces.MultiBinary) else np.dtype(space.dtype)
        return tuple(int(d) for d in space.shape), dtype
    raise ConfigError(f"action space {type(space).__name__} is not supported; use Discrete, Box, MultiDiscrete or "
                      "MultiBinary")


def _frame_space(space: spaces.Space, keys: list[_ObsKey]) -> spaces.Space:
    """The single-frame space written for Minari: each pixel key keeps only the newest frame's channels."""
    def one(sub: spaces.Box, k: _ObsKey) -> spaces.Box:
        if not k.pixel:
            return sub
        c = k.frame_shape[0]
        return spaces.Box(sub.low[-c:], sub.high[-c:], shape=k.frame_shape, dtype=sub.dtype)

    if isinstance(space, spaces.Dict):
        return spaces.Dict({k.name: one(space.spaces[k.name], k) for k in keys})
    return one(space, keys[0])


def _stack_space(frame_space: spaces.Space, keys: list[_ObsKey], frame_stack: int) -> spaces.Space:
    """The environment's stacked space, built like pixelrl's ``FrameStack`` wrapper builds it."""
    def one(sub: spaces.Box, k: _ObsKey) -> spaces.Box:
        if not k.pixel:
            return sub
        low = np.concatenate([sub.low] * frame_stack, axis=0)
        high = np.concatenate([sub.high] * frame_stack, axis=0)
        return spaces.Box(low, high, shape=k.env_shape, dtype=sub.dtype)

    if isinstance(frame_space, spaces.Dict):
        return spaces.Dict({k.name: one(frame_space.spaces[k.name], k) for k in keys})
    return one(frame_space, keys[0])


def _space_signature(space: spaces.Space) -> Any:
    """What must agree between two spaces for data of one to fit the other (shapes, dtypes, sizes)."""
    if isinstance(space, spaces.Dict):
        return ("Dict", tuple(sorted((k, _space_signature(s)) for k, s in space.spaces.items())))
    if isinstance(space, spaces.Discrete):
        return ("Discrete", int(space.n), int(space.start))
    if isinstance(space, spaces.MultiDiscrete):
        return ("MultiDiscrete", tuple(space.nvec.reshape(-1).tolist()), tuple(space.shape))
    if isinstance(space, spaces.MultiBinary):
        return ("MultiBinary", tuple(space.shape))
    if isinstance(space, spaces.Box):
        return ("Box", tuple(space.shape), np.dtype(space.dtype).str)
    return (type(space).__name__,)


def stack_frames(frames: np.ndarray, frame_stack: int) -> np.ndarray:
    """``[T+1, C, H, W]`` single frames -> ``[T+1, S*C, H, W]`` stacks (oldest first), the first frame repeated at
    the start of the episode, exactly as pixelrl's ``FrameStack`` wrapper returns them."""
    n = frames.shape[0]
    if frame_stack == 1:
        return frames
    idx = np.maximum(np.arange(n)[:, None] + np.arange(-frame_stack + 1, 1)[None, :], 0)  # [T+1, S]
    out = frames[idx]  # [T+1, S, C, H, W]
    return out.reshape(n, frame_stack * frames.shape[1], *frames.shape[2:])


# ------------------------------------------------------------------------------------------------ paths


def resolve_dataset_dir(path: str | os.PathLike) -> Path:
    """The dataset folder for ``path``: the folder itself, or its ``data/`` folder, or ``data/main_data.hdf5``; or
    ``hf://user/name[@revision]``, a dataset repo on the Hugging Face Hub (``pixelrl push --repo-type dataset``),
    downloaded first (:mod:`pixelrl.hub`).

    Raises ``ConfigError`` when nothing exists at ``path``.
    """
    from pixelrl import hub

    if hub.is_hub_spec(path):
        return hub.download(str(path), repo_type="dataset")
    p = Path(path)
    if p.name == MAIN_FILE and p.parent.name == DATA_DIR:
        p = p.parent.parent
    elif p.name == DATA_DIR and ((p / METADATA_FILE).exists() or (p / MAIN_FILE).exists()) \
            and not (p / DATA_DIR).exists():
        p = p.parent
    if not p.exists():
        raise ConfigError(f"no dataset at {p}: the folder does not exist (a dataset is a folder holding "
                          f"{DATA_DIR}/{MAIN_FILE} and {DATA_DIR}/{METADATA_FILE}; make one with `pixelrl collect`)")
    if not p.is_dir():
        raise ConfigError(f"{p} is a file, not a dataset folder (a dataset is a folder holding "
                          f"{DATA_DIR}/{MAIN_FILE} and {DATA_DIR}/{METADATA_FILE})")
    return p


def _minari_root() -> Path:
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def default_dataset_id(path: str | os.PathLike) -> str:
    """Dataset id for a dataset written at ``path`` when none is given.

    Under the Minari root (``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``) it is the path relative to the
    root, so that ``minari.load_dataset(id)`` and ``minari.list_local_datasets()`` agree with the location; elsewhere
    it is ``pixelrl/<folder name>``. ``-v0`` is appended when the name has no ``-v<N>`` version suffix, and
    characters Minari does not allow become ``-``.
    """
    p = Path(path).absolute()
    try:
        rel = p.relative_to(_minari_root().absolute()).as_posix()
    except ValueError:
        rel = f"pixelrl/{p.name}"
    parts = [re.sub(r"[^-_\w]", "-", part) for part in rel.split("/") if part]
    out = "/".join(parts)
    if not re.search(r"-v\d+$", out):
        out += "-v0"
    return out


def _cleanup_stale_partials(final: Path) -> None:
    """Remove ``.<name>.partial-<pid>-*`` folders left next to ``final`` by writers that are no longer running."""
    try:
        entries = os.listdir(final.parent)
    except OSError:
        return
    for entry in entries:
        m = _PARTIAL_RE.match(entry)
        if not m or m.group("name") != final.name:
            continue
        pid = int(m.group("pid"))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # that writer is still running
        except ProcessLookupError:
            pass
        except OSError:
            continue
        shutil.rmtree(final.parent / entry, ignore_errors=True)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _metadata_checksum(meta: dict) -> str:
    body = dict(meta)
    block = dict(body.get("pixelrl") or {})
    block.pop("checksum", None)
    body["pixelrl"] = block
    return hashlib.sha256(_canonical(body)).hexdigest()


def _episode_digest(frames: Sequence[np.ndarray], actions: np.ndarray, rewards: np.ndarray, terminations: np.ndarray,
                    truncations: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (*frames, actions, rewards, terminations, truncations):
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- writer


class DatasetWriter:
    """Write episodes to a new dataset folder ``path`` (see the module docstring for the layout).

    Args:
        path: the dataset folder to create; it must not exist yet. To let ``minari.load_dataset(dataset_id)`` find
            it, use ``$MINARI_DATASETS_PATH/<dataset_id>``.
        observation_space: the environment's observation space (frame-stacked for pixels).
        action_space: the environment's action space (``Box``, ``Discrete``, ``MultiDiscrete``, ``MultiBinary``).
        env_id: the pixelrl env id the data comes from (``dmc/cartpole-swingup``...), recorded for evaluation.
        frame_stack: ``S``, the number of frames in each pixel observation (ignored for keys that are not pixels).
        dataset_id: Minari id ``(namespace/)name-v<N>``; default :func:`default_dataset_id` of ``path``.
        metadata: extra JSON-serialisable information kept under ``metadata.json["pixelrl"]["user"]`` (the keys
            Minari knows, e.g. ``algorithm_name``, ``description``, ``ref_min_score``, are also copied to the top
            level). ``env_kwargs`` (the other arguments of ``pixelrl.envs.make``) is read back by
            :attr:`OfflineDataset.env_kwargs`.
        compression: HDF5 filter of the pixel frames, ``"gzip"`` (default; every HDF5 reader has it), ``"lzf"``
            (faster, larger; h5py only) or ``None``.
        compression_level: gzip level 0-9 (default 4).

    Use as a context manager: leaving the block normally closes (publishes) the dataset, an exception discards it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        *,
        env_id: str,
        frame_stack: int,
        dataset_id: str | None = None,
        metadata: dict | None = None,
        compression: str | None = "gzip",
        compression_level: int = 4,
    ) -> None:
        h5py = _h5py()
        if int(frame_stack) < 1:
            raise ConfigError(f"frame_stack must be >= 1, got {frame_stack}")
        if compression not in ("gzip", "lzf", None):
            raise ConfigError(f"compression must be 'gzip', 'lzf' or None, got {compression!r}")
        if not isinstance(env_id, str) or not env_id:
            raise ConfigError("env_id must be a non-empty string such as 'dmc/cartpole-swingup'")
        self.path = Path(path)
        self.frame_stack = int(frame_stack)
        self.env_id = env_id
        self.observation_space = observation_space
        self.action_space = action_space
        self._keys = _parse_obs_space(observation_space, self.frame_stack)
        self._is_dict = isinstance(observation_space, spaces.Dict)
        self._action_shape, self._action_dtype = _action_layout(action_space)
        self._frame_space = _frame_space(observation_space, self._keys)
        stacked = _stack_space(self._frame_space, self._keys, self.frame_stack)
        if space_to_json(stacked) != space_to_json(observation_space):
            raise ConfigError("the pixel bounds of the observation space are not the same for every stacked frame; "
                              "datasets store one frame per step and rebuild the stacked space from it")
        space_to_json(action_space)  # raises ConfigError for unsupported spaces
        self.dataset_id = dataset_id if dataset_id is not None else default_dataset_id(self.path)
        if not isinstance(self.dataset_id, str) or not _DATASET_ID_RE.match(self.dataset_id):
            raise ConfigError(f"dataset_id {self.dataset_id!r} is not a Minari id: use (namespace/)name-v<N>, "
                              "e.g. 'pixelrl/cartpole-swingup-random-v0'")
        self.user_metadata = dict(metadata or {})
        try:
            json.dumps(self.user_metadata, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"metadata must be JSON-serialisable (plain dicts, lists, str, finite numbers): {e}") from None
        self.compression = compression
        self.compression_level = int(compression_level)
        if self.path.exists():
            raise ConfigError(f"{self.path} already exists; delete it or write the dataset to another path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _cleanup_stale_partials(self.path)
        self._tmp = self.path.parent / f".{self.path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        (self._tmp / DATA_DIR).mkdir(parents=True)
        self._file = h5py.File(self._tmp / DATA_DIR / MAIN_FILE, "w")
        self._episodes: list[dict] = []
        self._closed = False

    # -------------------------------------------------------------------------------------------- adding
    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_transitions(self) -> int:
        return int(sum(e["steps"] for e in self._episodes))

    def _obs_arrays(self, observations: Any, rows: int) -> list[np.ndarray]:
        """Per-key arrays ``[T+1, *env_shape]`` from a list of observations, an array, or a dict of arrays."""
        out = []
        for k in self._keys:
            where = f"observation key {k.name!r}" if k.name is not None else "observations"
            try:
                if self._is_dict:
                    if isinstance(observations, Mapping):
                        arr = np.asarray(observations[k.name])
                    else:
                        arr = np.stack([np.asarray(o[k.name]) for o in observations])
                else:
                    arr = np.asarray(observations) if isinstance(observations, np.ndarray) else np.stack(
                        [np.asarray(o) for o in observations])
            except (KeyError, TypeError, IndexError) as e:
                raise ConfigError(f"{where}: cannot read the observations ({type(e).__name__}: {e}); pass the T+1 "
                                  "observations of the episode as the environment returned them") from None
            except ValueError as e:
                raise ConfigError(f"{where}: observations have different shapes ({e})") from None
            if arr.shape != (rows, *k.env_shape):
                raise ConfigError(f"{where} have shape {arr.shape}, expected {(rows, *k.env_shape)}: an episode of "
                                  f"T={rows - 1} steps has T+1 observations (the reset one and one per step)")
            if k.pixel and arr.dtype != np.uint8:
                raise ConfigError(f"{where} are {arr.dtype}, expected uint8 pixels")
            if not k.pixel:
                if not np.can_cast(arr.dtype, k.dtype, casting="same_kind"):
                    raise ConfigError(f"{where} are {arr.dtype}, which does not fit the space's {k.dtype}")
                arr = arr.astype(k.dtype, copy=False)
            out.append(arr)
        return out

    def add_episode(self, observations: Any, actions: Any, rewards: Any, terminations: Any, truncations: Any, *,
                    seed: int | None = None) -> None:
        """Append one episode of ``T >= 1`` steps.

        Args:
            observations: the ``T + 1`` observations as the environment returned them (frame-stacked pixels): a
                list of observations (dicts for a ``Dict`` space), an array ``[T+1, ...]`` or a dict of such arrays.
            actions: ``T`` actions; ``rewards``, ``terminations``, ``truncations``: ``T`` values each. Only the last
                step may be terminated or truncated (an episode may also end with neither, e.g. cut by the
                collector: it then bootstraps from its last observation).
            seed: the seed the episode was reset with, stored as Minari's episode attribute ``seed``.
        """
        self._check_open()
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
        steps = rewards.shape[0]
        if steps < 1:
            raise ConfigError("an episode needs at least one step (T >= 1 rewards, T+1 observations)")
        obs = self._obs_arrays(observations, steps + 1)
        frames = []
        for k, arr in zip(self._keys, obs):
            if k.pixel:
                c = k.frame_shape[0]
                f = np.ascontiguousarray(arr[:, arr.shape[1] - c:])
                if self.frame_stack > 1 and not np.array_equal(stack_frames(f, self.frame_stack), arr):
                    where = f"observation key {k.name!r}" if k.name is not None else "the observations"
                    raise ConfigError(
                        f"{where} are not frame stacks of frame_stack={self.frame_stack} (each observation the "
                        "previous one shifted by one frame, the first frame repeated at reset); pass the frame_stack "
                        "the environment was built with, and the observations in order")
                frames.append(f)
            else:
                frames.append(np.ascontiguousarray(arr))
        self._write(frames, actions, rewards, terminations, truncations, seed)

    def _write(self, frames: list[np.ndarray], actions: Any, rewards: np.ndarray, terminations: Any, truncations: Any,
               seed: int | None) -> None:
        """Append an episode given as stored frames (one per step for pixel keys)."""
        self._check_open()
        steps = rewards.shape[0]
        if steps < 1:
            raise ConfigError("an episode needs at least one step (T >= 1 rewards, T+1 observations)")
        a = np.asarray(actions)
        if a.shape != (steps, *self._action_shape):
            a = a.reshape((steps, *self._action_shape)) if a.size == steps * int(np.prod(self._action_shape)) else a
        if a.shape != (steps, *self._action_shape):
            raise ConfigError(f"actions have shape {a.shape}, expected {(steps, *self._action_shape)} "
                              f"(T={steps} actions of the action space's shape)")
        if np.issubdtype(a.dtype, np.floating) and not np.issubdtype(self._action_dtype, np.floating):
            if not np.array_equal(a, np.round(a)):
                raise ConfigError(f"actions are fractional but the action space is {self.action_space}")
        a = a.astype(self._action_dtype)
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise ConfigError("actions contain NaN or infinity")
        if isinstance(self.action_space, spaces.Discrete):
            lo, n = int(self.action_space.start), int(self.action_space.n)
            if a.size and (a.min() < lo or a.max() >= lo + n):
                raise ConfigError(f"discrete actions must lie in [{lo}, {lo + n - 1}], got values in "
                                  f"[{a.min()}, {a.max()}]")
        if not np.all(np.isfinite(rewards)):
            raise ConfigError("rewards contain NaN or infinity")
        term = np.asarray(terminations).reshape(-1)
        trunc = np.asarray(truncations).reshape(-1)
        if term.shape != (steps,) or trunc.shape != (steps,):
            raise ConfigError(f"terminations and truncations need {steps} values each (one per step), got "
                              f"{term.shape[0]} and {trunc.shape[0]}")
        term, trunc = term.astype(bool), trunc.astype(bool)
        if (term[:-1] | trunc[:-1]).any():
            t = int(np.flatnonzero(term[:-1] | trunc[:-1])[0])
            raise ConfigError(f"step {t} of a {steps}-step episode is terminated or truncated; only the last step of "
                              "an episode may end it (split the data into one episode per reset)")
        for k, f in zip(self._keys, frames):
            if f.shape != (steps + 1, *k.frame_shape) or f.dtype != k.dtype:
                raise ConfigError(f"{k.label}: got {f.dtype}{list(f.shape)}, expected "
                                  f"{k.dtype}{[steps + 1, *k.frame_shape]}")
        i = len(self._episodes)
        g = self._file.create_group(f"episode_{i}")
        g.attrs["id"] = i
        g.attrs["total_steps"] = steps
        if seed is not None:
            g.attrs["seed"] = int(seed)
        parent = g.create_group("observations") if self._is_dict else g
        for k, f in zip(self._keys, frames):
            name = k.name if self._is_dict else "observations"
            if k.pixel:
                kw: dict[str, Any] = {"chunks": (1, *k.frame_shape)}
                if self.compression == "gzip":
                    kw.update(compression="gzip", compression_opts=self.compression_level)
                elif self.compression == "lzf":
                    kw.update(compression="lzf")
                parent.create_dataset(name, data=f, **kw)
            else:
                parent.create_dataset(name, data=f)
        g.create_dataset("actions", data=a)
        g.create_dataset("rewards", data=rewards)
        g.create_dataset("terminations", data=term)
        g.create_dataset("truncations", data=trunc)
        self._episodes.append({"steps": int(steps), "return": float(rewards.sum()),
                               "sha256": _episode_digest(frames, a, rewards, term, trunc)})

    # ------------------------------------------------------------------------------------------ finishing
    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("this DatasetWriter is closed; open a new one to write another dataset")

    def _metadata(self, file_bytes: int, file_sha: str) -> dict:
        meta: dict[str, Any] = {
            "dataset_id": self.dataset_id,
            "minari_version": MINARI_VERSION,
            "data_format": "hdf5",
            "jpeg_encoding": False,
            "observation_space": json.dumps(space_to_json(self._frame_space)),
            "action_space": json.dumps(space_to_json(self.action_space)),
            "total_episodes": len(self._episodes),
            "total_steps": self.num_transitions,
            "dataset_size": round(file_bytes / 1e6, 1),
        }
        for key, kind in _MINARI_OPTIONAL_KEYS.items():
            if isinstance(self.user_metadata.get(key), kind):
                meta[key] = self.user_metadata[key]
        meta["pixelrl"] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "env_id": self.env_id,
            "frame_stack": self.frame_stack,
            "observation_keys": [k.describe() for k in self._keys],
            "dict_observations": self._is_dict,
            "action": {"shape": list(self._action_shape), "dtype": self._action_dtype.str},
            "compression": self.compression,
            "episodes": self._episodes,
            "file": {"name": MAIN_FILE, "bytes": int(file_bytes), "sha256": file_sha},
            "user": self.user_metadata,
        }
        meta["pixelrl"]["checksum"] = _metadata_checksum(meta)
        return meta

    def close(self) -> Path:
        """Finish the file, write ``metadata.json`` with the checksums, and rename the dataset into place.

        Returns the dataset folder. Raises ``ConfigError`` (and writes nothing) if no episode was added.
        """
        if self._closed:
            return self.path
        if not self._episodes:
            self.abort()
            raise ConfigError("no episode was added to the dataset; nothing was written")
        self._file.close()
        main = self._tmp / DATA_DIR / MAIN_FILE
        with open(main, "rb+") as f:
            os.fsync(f.fileno())
        meta = self._metadata(main.stat().st_size, sha256_file(main))
        write_json_atomic(self._tmp / DATA_DIR / METADATA_FILE, meta)
        fsync_dir(self._tmp / DATA_DIR)
        fsync_dir(self._tmp)
        if self.path.exists():
            self.abort()
            raise ConfigError(f"{self.path} appeared while the dataset was being written; nothing was written there")
        os.rename(self._tmp, self.path)
        fsync_dir(self.path.parent)
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Discard everything written so far; ``path`` is left untouched."""
        if self._closed:
            return
        self._closed = True
        try:
            self._file.close()
        except Exception:  # noqa: BLE001 - closing a half-written file may fail; it is deleted next
            pass
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:  # a writer dropped without close() leaves no partial folder behind
        try:
            if not self._closed:
                self.abort()
        except Exception:  # noqa: BLE001
            pass


# ----------------------------------------------------------------------------------------------- reader


class OfflineDataset:
    """A verified dataset on disk (made by :func:`load_dataset`). Episodes are read from the HDF5 file on demand.

    Attributes:
        path: the dataset folder.
        dataset_id: the Minari dataset id.
        env_id: the pixelrl env id the data was collected in.
        frame_stack: frames per pixel observation.
        observation_space: the environment's (frame-stacked) observation space.
        frame_observation_space: the single-frame space stored on disk (what Minari sees).
        action_space: the environment's action space.
        metadata: the user metadata given to the writer (``collect`` records its settings there).
    """

    def __init__(self, path: Path, meta: dict, keys: list[_ObsKey], frame_space: spaces.Space,
                 action_space: spaces.Space, arrays: list[dict[str, np.ndarray]]) -> None:
        block = meta["pixelrl"]
        self.path = path
        self.file = path / DATA_DIR / MAIN_FILE
        self.dataset_id: str = meta["dataset_id"]
        self.env_id: str = block["env_id"]
        self.frame_stack: int = int(block["frame_stack"])
        self.metadata: dict = dict(block.get("user") or {})
        self._meta = meta
        self._keys = keys
        self._is_dict = bool(block["dict_observations"])
        self._action_shape, self._action_dtype = _action_layout(action_space)
        self.frame_observation_space = frame_space
        self.observation_space = _stack_space(frame_space, keys, self.frame_stack)
        self.action_space = action_space
        self._episodes = block["episodes"]
        self._small = arrays  # per episode: rewards, terminations, truncations
        self._lengths = np.array([int(e["steps"]) for e in self._episodes], dtype=np.int64)

    # ---------------------------------------------------------------------------------------- properties
    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_transitions(self) -> int:
        return int(self._lengths.sum())

    @property
    def env_kwargs(self) -> dict:
        """Keyword arguments of ``pixelrl.envs.make`` recorded by the collector (``size``, ``action_repeat``,
        ``obs``, ``frame_stack``, ``fast_render``...); empty when the writer did not record them."""
        kw = self.metadata.get("env_kwargs")
        return dict(kw) if isinstance(kw, dict) else {}

    @property
    def observation_keys(self) -> list[str | None]:
        """Names of the observation entries (``[None]`` for a plain, non-dict observation)."""
        return [k.name for k in self._keys]

    @property
    def pixel_keys(self) -> list[str | None]:
        """The observation entries stored as pixels (one frame per step)."""
        return [k.name for k in self._keys if k.pixel]

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        return (f"OfflineDataset({str(self.path)!r}, id={self.dataset_id!r}, env={self.env_id!r}, "
                f"episodes={self.num_episodes}, transitions={self.num_transitions}, frame_stack={self.frame_stack})")

    def episode_lengths(self) -> np.ndarray:
        """Steps ``T`` of every episode, int64 ``[num_episodes]``."""
        return self._lengths.copy()

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode, float64 ``[num_episodes]``."""
        return np.array([float(s["rewards"].sum()) for s in self._small], dtype=np.float64)

    # ----------------------------------------------------------------------------------------- reading
    def _read_episode(self, f: Any, i: int, keys: list[_ObsKey], stacked: bool) -> dict:
        g = f[f"episode_{i}"]
        steps = int(self._lengths[i])
        stored = []
        for k in keys:
            ds = g["observations"][k.name] if self._is_dict else g["observations"]
            arr = ds[()]
            if arr.shape != (steps + 1, *k.frame_shape) or arr.dtype != k.dtype:
                raise CorruptFileError(self.file, f"episode_{i}/{k.label} is {arr.dtype}{list(arr.shape)}, expected "
                                       f"{k.dtype}{[steps + 1, *k.frame_shape]}")
            stored.append(arr)
        actions = g["actions"][()]
        small = self._small[i]
        if len(keys) == len(self._keys):
            digest = _episode_digest(stored, actions, small["rewards"], small["terminations"], small["truncations"])
            if digest != self._episodes[i]["sha256"]:
                raise CorruptFileError(self.file, f"episode_{i}: the data does not match its sha256 in {METADATA_FILE}")
        obs_out = {}
        for k, arr in zip(keys, stored):
            obs_out[k.name] = stack_frames(arr, self.frame_stack) if (k.pixel and stacked) else arr
        return {
            "id": i,
            "observations": obs_out if self._is_dict else obs_out[None],
            "actions": actions,
            "rewards": small["rewards"].copy(),
            "terminations": small["terminations"].copy(),
            "truncations": small["truncations"].copy(),
        }

    def iter_episodes(self, *, stacked: bool = True, obs_keys: Sequence[str] | None = None,
                      episodes: Sequence[int] | None = None) -> Iterator[dict]:
        """Yield episodes as dicts: ``id``, ``observations`` (``[T+1, ...]``, or a dict of those), ``actions``
        ``[T, ...]``, ``rewards`` float64 ``[T]``, ``terminations`` / ``truncations`` bool ``[T]``.

        Args:
            stacked: pixel observations as the environment returned them (``[T+1, S*C, H, W]``, default) or as the
                stored single frames (``[T+1, C, H, W]``, less memory).
            obs_keys: for a ``Dict`` observation, read only these keys (e.g. ``["state"]``: no pixel decoding).
            episodes: indices of the episodes to read (default: all, in order).

        Every episode read in full is checked against its sha256; a mismatch or an unreadable chunk raises
        ``CorruptFileError``.
        """
        keys = self._keys
        if obs_keys is not None:
            if not self._is_dict:
                raise ConfigError("obs_keys applies to datasets with dict observations only")
            unknown = [k for k in obs_keys if k not in self.observation_keys]
            if unknown:
                raise ConfigError(f"unknown observation key(s) {unknown}; the dataset has {self.observation_keys}")
            keys = [k for k in self._keys if k.name in obs_keys]
        order = range(self.num_episodes) if episodes is None else [int(i) for i in episodes]
        for i in order:
            if not 0 <= i < self.num_episodes:
                raise ConfigError(f"episode index {i} is out of range (the dataset has {self.num_episodes})")
        return self._iter(order, keys, stacked)  # arguments are checked now, episodes read lazily

    def _iter(self, order: Sequence[int], keys: list[_ObsKey], stacked: bool) -> Iterator[dict]:
        h5py = _h5py()
        try:
            f = h5py.File(self.file, "r")
        except Exception as e:  # noqa: BLE001 - anything h5py raises here means an unreadable file
            raise CorruptFileError(self.file, f"cannot open the HDF5 file ({type(e).__name__}: {e})") from None
        with f:
            for i in order:
                try:
                    ep = self._read_episode(f, i, keys, stacked)
                except CorruptFileError:
                    raise
                except Exception as e:  # noqa: BLE001 - a damaged chunk surfaces as OSError/KeyError/ValueError...
                    raise CorruptFileError(self.file, f"episode_{i}: cannot read ({type(e).__name__}: {e})") from None
                yield ep

    def get_episode(self, index: int, *, stacked: bool = True) -> dict:
        """One episode, as :meth:`iter_episodes` yields it."""
        return next(self.iter_episodes(stacked=stacked, episodes=[index]))

    # ------------------------------------------------------------------------------------------ replay
    def replay_capacity_needed(self) -> int:
        """The smallest ``ReplayBuffer`` capacity that holds the whole dataset: every transition plus one slot per
        episode for its last observation, less the ring's own spare slot."""
        return int(self.num_transitions + self.num_episodes - 1)

    def fill_replay(self, replay: Any) -> int:
        """Add every episode to a pixelrl ``ReplayBuffer`` (``add_first`` + ``add``, so frames are stored once),
        in order; returns the number of transitions added.

        The buffer must have been built for this dataset: the same observation and action spaces, the same
        ``frame_stack`` (for pixels) and a capacity of at least :meth:`replay_capacity_needed` (else ``ConfigError``,
        before anything is added). The buffer's result is the one it would hold had it been fed while stepping the
        environment. An episode whose last step is neither terminated nor truncated is left to bootstrap (the next
        ``add_first`` ends it).
        """
        if _space_signature(replay.observation_space) != _space_signature(self.observation_space):
            raise ConfigError(f"the replay buffer's observation space {replay.observation_space} does not match the "
                              f"dataset's {self.observation_space}; build the ReplayBuffer with "
                              "dataset.observation_space")
        if _space_signature(replay.action_space) != _space_signature(self.action_space):
            raise ConfigError(f"the replay buffer's action space {replay.action_space} does not match the dataset's "
                              f"{self.action_space}; build the ReplayBuffer with dataset.action_space")
        if self.pixel_keys and int(replay.frame_stack) != self.frame_stack:
            raise ConfigError(f"the replay buffer stacks {replay.frame_stack} frames but the dataset was recorded "
                              f"with frame_stack={self.frame_stack}; build the ReplayBuffer with "
                              f"frame_stack={self.frame_stack}")
        need = self.replay_capacity_needed()
        if int(replay.capacity) < need:
            raise ConfigError(f"the replay buffer's capacity {replay.capacity} is too small for {self.path} "
                              f"({self.num_episodes} episodes, {self.num_transitions} transitions; each episode's last "
                              f"observation takes a slot too): build it with capacity >= {need}")
        added = 0
        for ep in self.iter_episodes(stacked=True):
            obs = ep["observations"]

            def at(t: int) -> Any:
                return {k: v[t] for k, v in obs.items()} if self._is_dict else obs[t]

            actions, rewards = ep["actions"], ep["rewards"]
            term, trunc = ep["terminations"], ep["truncations"]
            replay.add_first(at(0))
            for t in range(len(rewards)):
                replay.add(actions[t], float(rewards[t]), at(t + 1), bool(term[t]), bool(trunc[t]))
            added += len(rewards)
        return added


# ------------------------------------------------------------------------------------------------ load


def _read_metadata(mpath: Path) -> dict:
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise CorruptFileError(mpath, "the dataset's metadata file is missing") from None
    except OSError as e:
        raise CorruptFileError(mpath, f"cannot read ({e})") from None
    if not raw.strip():
        raise CorruptFileError(mpath, "the file is empty")
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CorruptFileError(mpath, f"not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise CorruptFileError(mpath, "not a JSON object")
    return meta


def _check_metadata(meta: dict, mpath: Path) -> tuple[list[_ObsKey], spaces.Space, spaces.Space]:
    """Validate the metadata's structure; returns the observation keys, single-frame space and action space."""
    block = meta.get("pixelrl")
    if block is None:
        if "dataset_id" in meta and "data_format" in meta:
            raise ConfigError(f"{mpath.parent.parent} is a Minari dataset that pixelrl did not write; convert it "
                              "first: pixelrl dataset convert <id or path> --out <new folder>")
        raise CorruptFileError(mpath, "no 'pixelrl' block: not a pixelrl dataset")
    if not isinstance(block, dict):
        raise CorruptFileError(mpath, "the 'pixelrl' block is not an object")
    if block.get("format") != FORMAT_NAME or block.get("version") != FORMAT_VERSION:
        raise CorruptFileError(mpath, f"not a {FORMAT_NAME} v{FORMAT_VERSION} dataset (format={block.get('format')!r}, "
                               f"version={block.get('version')!r})")
    if not isinstance(block.get("checksum"), str) or block["checksum"] != _metadata_checksum(meta):
        raise CorruptFileError(mpath, "the metadata checksum does not match its content (the file was edited or "
                               "damaged)")
    # The checksum matched; the checks below guard against a writer bug or a hand-made file with a fresh checksum.
    if meta.get("data_format") != "hdf5":
        raise CorruptFileError(mpath, f"data_format is {meta.get('data_format')!r}, expected 'hdf5'")
    if not isinstance(meta.get("dataset_id"), str) or not _DATASET_ID_RE.match(meta["dataset_id"]):
        raise CorruptFileError(mpath, f"dataset_id {meta.get('dataset_id')!r} is not a valid Minari id")
    frame_stack = block.get("frame_stack")
    if not isinstance(frame_stack, int) or isinstance(frame_stack, bool) or frame_stack < 1:
        raise CorruptFileError(mpath, f"frame_stack {frame_stack!r} is not a positive integer")
    if not isinstance(block.get("env_id"), str):
        raise CorruptFileError(mpath, "env_id is missing")
    try:
        frame_space = space_from_json(json.loads(meta["observation_space"]))
        action_space = space_from_json(json.loads(meta["action_space"]))
    except Exception as e:  # noqa: BLE001 - any malformed space is a corrupt metadata file
        raise CorruptFileError(mpath, f"unreadable observation/action space ({type(e).__name__}: {e})") from None
    if isinstance(frame_space, spaces.Dict) != bool(block.get("dict_observations")):
        raise CorruptFileError(mpath, "dict_observations disagrees with the observation space")
    # Keys: derived from the single-frame space and the frame stack, then compared with what the writer recorded.
    try:
        keys = _parse_obs_space(_stack_space_from_frames(frame_space, frame_stack), frame_stack)
    except (ConfigError, ValueError, KeyError) as e:
        raise CorruptFileError(mpath, f"the observation space is inconsistent ({e})") from None
    if [k.describe() for k in keys] != block.get("observation_keys"):
        raise CorruptFileError(mpath, "observation_keys disagree with the observation space and frame_stack")
    try:
        a_shape, a_dtype = _action_layout(action_space)
    except ConfigError as e:
        raise CorruptFileError(mpath, str(e)) from None
    if block.get("action") != {"shape": list(a_shape), "dtype": a_dtype.str}:
        raise CorruptFileError(mpath, "the action layout disagrees with the action space")
    episodes = block.get("episodes")
    if not isinstance(episodes, list) or not episodes:
        raise CorruptFileError(mpath, "the episode list is missing or empty")
    for i, e in enumerate(episodes):
        ok = (isinstance(e, dict) and isinstance(e.get("steps"), int) and not isinstance(e["steps"], bool)
              and e["steps"] >= 1 and isinstance(e.get("sha256"), str))
        if not ok:
            raise CorruptFileError(mpath, f"the entry of episode {i} is malformed")
    if meta.get("total_episodes") != len(episodes):
        raise CorruptFileError(mpath, f"total_episodes={meta.get('total_episodes')!r} but {len(episodes)} episodes "
                               "are listed")
    if meta.get("total_steps") != sum(e["steps"] for e in episodes):
        raise CorruptFileError(mpath, f"total_steps={meta.get('total_steps')!r} does not equal the sum of the episode "
                               "lengths")
    fmeta = block.get("file")
    if not (isinstance(fmeta, dict) and fmeta.get("name") == MAIN_FILE and isinstance(fmeta.get("bytes"), int)
            and isinstance(fmeta.get("sha256"), str)):
        raise CorruptFileError(mpath, "the data file's size and sha256 are missing")
    return keys, frame_space, action_space


def _frame_keys(frame_space: spaces.Space) -> list[_ObsKey]:
    """Keys of a single-frame space (frame_stack 1), used to rebuild the stacked space."""
    return _parse_obs_space(frame_space, 1)


def _stack_space_from_frames(frame_space: spaces.Space, frame_stack: int) -> spaces.Space:
    keys = _frame_keys(frame_space)
    stacked_keys = [
        _ObsKey(k.name, k.pixel, (k.frame_shape[0] * frame_stack, *k.frame_shape[1:]) if k.pixel else k.env_shape,
                k.frame_shape, k.dtype) for k in keys
    ]
    return _stack_space(frame_space, stacked_keys, frame_stack)


def _check_file(f: Any, fpath: Path, meta: dict, keys: list[_ObsKey], a_shape: tuple, a_dtype: np.dtype
                ) -> list[dict[str, np.ndarray]]:
    """Check every group, dataset, shape, dtype and row count; returns rewards/terminations/truncations per episode."""
    h5py = _h5py()
    episodes = meta["pixelrl"]["episodes"]
    is_dict = bool(meta["pixelrl"]["dict_observations"])
    expected = {f"episode_{i}" for i in range(len(episodes))}
    present = set(f.keys())
    missing = sorted(expected - present, key=lambda s: int(s.split("_")[1]))
    if missing:
        raise CorruptFileError(fpath, f"group {missing[0]} is missing ({len(missing)} episode group(s) missing)")
    extra = sorted(present - expected)
    if extra:
        raise CorruptFileError(fpath, f"unexpected entries {extra[:3]} (the metadata lists {len(episodes)} episodes)")
    small = []
    for i, e in enumerate(episodes):
        name = f"episode_{i}"
        g = f[name]
        if not isinstance(g, h5py.Group):
            raise CorruptFileError(fpath, f"{name} is not a group")
        steps = e["steps"]

        def dataset(path: str, shape: tuple, dtype: np.dtype | None, kind: str | None = None) -> Any:
            if path.split("/")[0] not in g:
                raise CorruptFileError(fpath, f"{name}/{path} is missing")
            ds = g[path]
            if not isinstance(ds, h5py.Dataset):
                raise CorruptFileError(fpath, f"{name}/{path} is not a dataset")
            if ds.shape != shape:
                if ds.shape and shape and ds.shape[0] != shape[0] and tuple(ds.shape[1:]) == tuple(shape[1:]):
                    raise CorruptFileError(fpath, f"{name}/{path} has {ds.shape[0]} rows, expected {shape[0]} "
                                           f"(an episode of T={steps} steps has T+1 observations and T of the rest)")
                raise CorruptFileError(fpath, f"{name}/{path} has shape {ds.shape}, expected {shape}")
            if dtype is not None and ds.dtype != dtype:
                raise CorruptFileError(fpath, f"{name}/{path} is {ds.dtype}, expected {dtype}")
            if kind is not None and ds.dtype.kind != kind:
                raise CorruptFileError(fpath, f"{name}/{path} is {ds.dtype}, expected a {kind!r}-kind dtype")
            return ds

        if is_dict:
            if "observations" not in g or not isinstance(g["observations"], h5py.Group):
                raise CorruptFileError(fpath, f"{name}/observations is missing or not a group")
            want = {k.name for k in keys}
            have = set(g["observations"].keys())
            if have != want:
                raise CorruptFileError(fpath, f"{name}/observations holds keys {sorted(have)}, expected {sorted(want)}")
        for k in keys:
            dataset(k.label, (steps + 1, *k.frame_shape), k.dtype)
        dataset("actions", (steps, *a_shape), a_dtype)
        rewards = dataset("rewards", (steps,), np.dtype(np.float64))[()]
        term = dataset("terminations", (steps,), np.dtype(bool))[()]
        trunc = dataset("truncations", (steps,), np.dtype(bool))[()]
        if not np.all(np.isfinite(rewards)):
            raise CorruptFileError(fpath, f"{name}/rewards contains NaN or infinity")
        if (term[:-1] | trunc[:-1]).any():
            raise CorruptFileError(fpath, f"{name} is terminated or truncated before its last step")
        if "total_steps" in g.attrs and int(g.attrs["total_steps"]) != steps:
            raise CorruptFileError(fpath, f"{name} attribute total_steps={g.attrs['total_steps']} disagrees with the "
                                   f"metadata's {steps}")
        small.append({"rewards": rewards, "terminations": term, "truncations": trunc})
    return small


def load_dataset(path: str | os.PathLike, *, verify: bool = True) -> OfflineDataset:
    """Open and verify the dataset folder ``path`` (also accepted: its ``data/`` folder or ``data/main_data.hdf5``).

    Everything is checked before the dataset is returned: both files exist; ``metadata.json`` is valid JSON with
    a matching checksum and consistent spaces, frame stack and counts; ``main_data.hdf5`` has the recorded size
    and (``verify=True``, default) sha256, opens as HDF5, and holds exactly the listed episode groups with every
    dataset present, of the right dtype and shape (``T + 1`` observations, ``T`` of the rest), finite rewards and
    episodes ending only at their last step. Pixel data is decoded (and checked against each episode's sha256)
    when episodes are read.

    Raises:
        ConfigError: nothing exists at ``path``, or it is a Minari dataset pixelrl did not write (convert it).
        CorruptFileError: anything else that is wrong, naming the file and the problem.
    """
    root = resolve_dataset_dir(path)
    data = root / DATA_DIR
    mpath = data / METADATA_FILE
    fpath = data / MAIN_FILE
    if not data.is_dir():
        raise CorruptFileError(root, f"the {DATA_DIR}/ folder is missing (not a dataset folder, or an incomplete copy)")
    meta = _read_metadata(mpath)
    keys, frame_space, action_space = _check_metadata(meta, mpath)
    fmeta = meta["pixelrl"]["file"]
    if not fpath.is_file():
        raise CorruptFileError(fpath, "the data file is missing")
    size = fpath.stat().st_size
    if size != fmeta["bytes"]:
        raise CorruptFileError(fpath, f"size is {size} bytes, {METADATA_FILE} says {fmeta['bytes']} (truncated or "
                               "modified)")
    if verify and sha256_file(fpath) != fmeta["sha256"]:
        raise CorruptFileError(fpath, f"sha256 does not match {METADATA_FILE} (the file is damaged or was modified)")
    a_shape, a_dtype = _action_layout(action_space)
    h5py = _h5py()
    try:
        with h5py.File(fpath, "r") as f:
            small = _check_file(f, fpath, meta, keys, a_shape, a_dtype)
    except CorruptFileError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever h5py raises on a damaged file
        raise CorruptFileError(fpath, f"unreadable HDF5 file ({type(e).__name__}: {e})") from None
    return OfflineDataset(root, meta, keys, frame_space, action_space, small)


def _resign(path: str | os.PathLike) -> None:
    """Recompute the file size/sha256 and the metadata checksum after editing a dataset by hand (tests use it to
    exercise the structural checks behind the checksums)."""
    root = Path(path)
    mpath = root / DATA_DIR / METADATA_FILE
    fpath = root / DATA_DIR / MAIN_FILE
    meta = json.loads(mpath.read_text())
    meta["pixelrl"]["file"]["bytes"] = fpath.stat().st_size
    meta["pixelrl"]["file"]["sha256"] = sha256_file(fpath)
    meta["pixelrl"]["checksum"] = _metadata_checksum(meta)
    mpath.write_text(json.dumps(meta))


# ---------------------------------------------------------------------------------------------- convert


def _minari_obs_layout(space: spaces.Space) -> tuple[str, tuple[int, ...] | None]:
    """How a Minari observation entry becomes a pixelrl one: ``("hwc", ...)`` image to channels-first,
    ``("hw", ...)`` greyscale image to ``[1, H, W]``, ``("chw", ...)`` already channels first, ``("state", None)``."""
    if isinstance(space, spaces.Box) and space.dtype == np.uint8:
        shape = space.shape
        if len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] > 4 and shape[1] > 4:
            return "hwc", (shape[2], shape[0], shape[1])
        if len(shape) == 3:
            return "chw", tuple(shape)
        if len(shape) == 2 and shape[0] >= 8 and shape[1] >= 8:
            return "hw", (1, shape[0], shape[1])
    return "state", None


def convert_minari(
    src: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    frame_stack: int | None = None,
    env_id: str | None = None,
    dataset_id: str | None = None,
    rescale_actions: bool = True,
    float32_states: bool = True,
    compression: str | None = "gzip",
) -> Path:
    """Convert a Minari dataset already on disk into a pixelrl dataset at ``out_path``.

    Args:
        src: a Minari dataset id (looked up under ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``; never
            downloaded) or the path of a Minari dataset folder (``<root>/<id>`` or its ``data/`` folder).
        out_path: the new dataset folder.
        frame_stack: frames per pixel observation, rebuilt from consecutive frames (default 3 when the data has
            image observations, as pixelrl's dmc/gym pixel envs; 1 otherwise).
        env_id: the pixelrl env id to record; default ``gym/<env_spec id>`` when the Minari dataset has an
            env_spec, else ``minari/<dataset id>``.
        dataset_id: id of the new dataset (default from ``out_path``).
        rescale_actions: map a ``Box`` action space with finite bounds other than [-1, 1] linearly to [-1, 1], as
            pixelrl's envs expose actions (``ActionScale``).
        float32_states: store float64 state observations as float32, as pixelrl's envs return them.
        compression: HDF5 filter for pixel frames (see :class:`DatasetWriter`).

    Image observations (uint8, ``[H, W, C]`` as Minari and Gymnasium store them, or ``[H, W]``) are transposed to
    pixelrl's channels-first ``[C, H, W]``. Episode infos are not kept. Returns the new dataset folder.
    """
    try:
        import minari
    except ImportError as e:
        raise MissingExtraError("minari", "offline", "converting Minari datasets") from e
    p = Path(src)
    if p.exists():
        data_path = p if (p / METADATA_FILE).exists() else p / DATA_DIR
        if not (data_path / METADATA_FILE).exists():
            raise ConfigError(f"{p} is not a Minari dataset folder (no {DATA_DIR}/{METADATA_FILE})")
        try:
            ds = minari.MinariDataset(data_path)
        except Exception as e:  # noqa: BLE001 - Minari raises ValueError/AssertionError/KeyError on bad folders
            raise CorruptFileError(data_path, f"Minari cannot read this dataset ({type(e).__name__}: {e})") from None
    else:
        try:
            ds = minari.load_dataset(str(src), download=False)
        except FileNotFoundError:
            raise ConfigError(f"no Minari dataset {str(src)!r} under {_minari_root()} (MINARI_DATASETS_PATH) and no "
                              f"folder of that name; download it first (`minari download {src}`) or pass its "
                              "folder") from None
        except Exception as e:  # noqa: BLE001
            raise CorruptFileError(src, f"Minari cannot read this dataset ({type(e).__name__}: {e})") from None
    src_obs, src_act = ds.observation_space, ds.action_space
    if isinstance(src_obs, spaces.Dict):
        entries = list(src_obs.spaces.items())
        if any(isinstance(s, (spaces.Dict, spaces.Tuple)) for _, s in entries):
            raise ConfigError("nested Dict/Tuple observations cannot be converted; pixelrl datasets store a flat "
                              "Dict of Box observations")
    else:
        entries = [(None, src_obs)]
    layouts = {}
    new_entries = {}
    for name, s in entries:
        if not isinstance(s, spaces.Box):
            raise ConfigError(f"observation {name or ''} is {type(s).__name__}; only Box observations can be converted")
        kind, chw = _minari_obs_layout(s)
        layouts[name] = kind
        if kind == "state":
            dtype = np.float32 if (float32_states and s.dtype == np.float64) else s.dtype
            new_entries[name] = spaces.Box(s.low.astype(dtype), s.high.astype(dtype), shape=s.shape, dtype=dtype)
        else:
            new_entries[name] = spaces.Box(0, 255, shape=chw, dtype=np.uint8)
    has_pixels = any(k != "state" for k in layouts.values())
    stack = (3 if has_pixels else 1) if frame_stack is None else int(frame_stack)
    frame_space = spaces.Dict(new_entries) if isinstance(src_obs, spaces.Dict) else new_entries[None]
    obs_space = _stack_space_from_frames(frame_space, stack)
    act_space, scale = src_act, None
    if (rescale_actions and isinstance(src_act, spaces.Box) and np.all(np.isfinite(src_act.low))
            and np.all(np.isfinite(src_act.high)) and not (np.all(src_act.low == -1) and np.all(src_act.high == 1))):
        scale = (src_act.low.astype(np.float64), src_act.high.astype(np.float64))
        act_space = spaces.Box(-1.0, 1.0, shape=src_act.shape, dtype=np.float32)
    spec = ds.env_spec
    if env_id is None:
        env_id = f"gym/{spec.id}" if spec is not None else f"minari/{ds.id}"
    user = {
        "source": {"minari_dataset_id": ds.id, "minari_version": ds.minari_version,
                   "env_spec_id": spec.id if spec is not None else None},
        "converted": {"image_layout": {str(k): v for k, v in layouts.items()},
                      "actions_rescaled_from": None if scale is None else [scale[0].tolist(), scale[1].tolist()],
                      "float32_states": bool(float32_states)},
    }
    raw_meta = ds.storage.metadata
    for key in ("ref_min_score", "ref_max_score", "algorithm_name", "description"):
        if raw_meta.get(key) is not None:
            user[key] = raw_meta[key]
    writer = DatasetWriter(out_path, obs_space, act_space, env_id=env_id, frame_stack=stack, dataset_id=dataset_id,
                           metadata=user, compression=compression)
    keys = writer._keys
    with writer:
        for ep in ds.iterate_episodes():
            obs = ep.observations
            frames = []
            for k in keys:
                arr = np.asarray(obs[k.name] if k.name is not None else obs)
                kind = layouts[k.name]
                if kind == "hwc":
                    arr = np.ascontiguousarray(np.moveaxis(arr, -1, 1))
                elif kind == "hw":
                    arr = arr[:, None]
                frames.append(np.ascontiguousarray(arr.astype(k.dtype, copy=False)))
            actions = np.asarray(ep.actions)
            if scale is not None:
                lo, hi = scale
                actions = (2.0 * (actions.astype(np.float64) - lo) / (hi - lo) - 1.0).astype(np.float32)
            writer._write(frames, actions, np.asarray(ep.rewards, dtype=np.float64).reshape(-1),
                          ep.terminations, ep.truncations, None)
    return writer.path
