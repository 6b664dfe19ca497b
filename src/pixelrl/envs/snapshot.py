"""Snapshot RL (S3RL): start training episodes from states of a teacher's trajectories.

The method only changes the environment, so it works with any agent (see ``docs/snapshot_rl.md``):

1. :func:`collect_snapshots` runs a teacher ``episodes`` times and saves the full simulator state every
   ``every`` agent steps, tagged with the teacher's Q value of the action it took there (or, for a teacher
   without a critic, the discounted Monte-Carlo return-to-go from that step).
2. The bank keeps the ``keep_episodes`` episodes with the highest return and clusters the snapshots by value
   with k-means (:func:`kmeans`, k = 6): the clusters are "status classes" (early / middle / late progress).
3. :class:`SnapshotResetWrapper` resets to a snapshot (a cluster uniformly, then a snapshot uniformly in it) and
   truncates that episode ``horizon`` agent steps later; after ``active_agent_steps`` agent steps it only does
   plain resets.

Published defaults (S3RL): 10 teacher episodes, a snapshot every 10 steps, best 10 kept,
k = 6, truncation after 100 steps, snapshot resets for the first 100k steps.

Simulator state: :func:`capture_state` / :func:`restore_state` work on the envs of
:func:`pixelrl.envs.make` built on MuJoCo (``dmc/`` and Gymnasium MuJoCo ``gym/`` ids). The saved state is
MuJoCo's full integration state (``mj_getState(mjSTATE_INTEGRATION)``: time, qpos, qvel, act, warm-start
accelerations, controls, applied forces, mocap poses, ...), the model fields dm_control tasks randomise per
episode (body / geom / site poses and sizes, colours: e.g. reacher's target) and the env's step counter
(dm_control's step count, Gymnasium's ``TimeLimit``), so time-limit truncation stays right after a restore.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from pixelrl.envs.dmc import _flatten_state
from pixelrl.envs.wrappers import FrameStack
from pixelrl.errors import ConfigError, CorruptFileError

__all__ = [
    "MissingBankError",
    "SimState",
    "SnapshotBank",
    "SnapshotResetWrapper",
    "agent_policy",
    "agent_value_fn",
    "capture_state",
    "check_restorable",
    "collect_snapshots",
    "kmeans",
    "restore_state",
    "return_to_go",
]

FORMAT = "pixelrl.snapshot_bank"
VERSION = 1

#: MuJoCo model fields that dm_control tasks write per episode (target poses and sizes, colours). They are
#: saved with each snapshot so that a restored episode has the same task as the saved one.
MODEL_FIELDS = (
    "body_pos", "body_quat", "geom_pos", "geom_quat", "geom_size", "geom_rgba",
    "site_pos", "site_quat", "site_size", "mat_rgba",
)


class MissingBankError(ConfigError, FileNotFoundError):
    """No snapshot bank folder at the given path (a :class:`ConfigError` and a :class:`FileNotFoundError`)."""


# ------------------------------------------------------------------------------------ simulator state


@dataclass(frozen=True)
class SimState:
    """One saved simulator state (see the module docstring for what it covers)."""

    physics: np.ndarray
    """float64 ``mj_getState(model, data, mjSTATE_INTEGRATION)``."""
    model: np.ndarray
    """float64 concatenation of :data:`MODEL_FIELDS` of the MuJoCo model."""
    elapsed: int
    """The base env's step counter (dm_control ``_step_count``; Gymnasium ``TimeLimit._elapsed_steps``)."""


class _Sim:
    """Reach the MuJoCo model/data of an env from :func:`pixelrl.envs.make` through its wrappers."""

    def __init__(self, env: gym.Env) -> None:
        try:
            import mujoco
        except ImportError:  # no MuJoCo installed: nothing can be restorable
            mujoco = None
        self._mujoco = mujoco
        base = env.unwrapped
        self.chain = _wrapper_chain(env)  # outermost first, base env last
        self.time_limit = next((w for w in self.chain if isinstance(w, gym.wrappers.TimeLimit)), None)
        physics = getattr(base, "physics", None)
        if mujoco is not None and physics is not None and hasattr(base, "dm_env"):  # pixelrl.envs.dmc.DMCEnv
            self.kind = "dmc"
            self.base = base
            self.physics = physics
            self.model, self.data = physics.model.ptr, physics.data.ptr
        elif mujoco is not None and isinstance(getattr(base, "model", None), mujoco.MjModel) and isinstance(
            getattr(base, "data", None), mujoco.MjData
        ):
            self.kind = "gym-mujoco"
            self.base = base
            self.model, self.data = base.model, base.data
        else:
            eid = _env_id(env)
            raise ConfigError(
                f"snapshot resets need a restorable MuJoCo simulator; {eid or type(base).__name__} has none "
                "(supported: dmc/ ids and Gymnasium MuJoCo gym/ ids such as gym/Hopper-v5; ale/ and other "
                "simulators cannot be saved and restored)"
            )
        self.sig = int(mujoco.mjtState.mjSTATE_INTEGRATION)
        self.physics_size = int(mujoco.mj_stateSize(self.model, self.sig))
        self.model_size = sum(int(np.asarray(getattr(self.model, f)).size) for f in MODEL_FIELDS)

    def spec(self) -> dict[str, int | str]:
        """What must match between the env a bank was collected on and the env it is restored into."""
        m = self.model
        return {
            "sim": self.kind, "nq": int(m.nq), "nv": int(m.nv), "na": int(m.na), "nu": int(m.nu),
            "nbody": int(m.nbody), "ngeom": int(m.ngeom), "physics_size": self.physics_size,
            "model_size": self.model_size, "state_sig": self.sig,
        }

    def capture(self) -> SimState:
        phys = np.empty(self.physics_size, np.float64)
        self._mujoco.mj_getState(self.model, self.data, phys, self.sig)
        model = np.concatenate([np.asarray(getattr(self.model, f), np.float64).reshape(-1) for f in MODEL_FIELDS])
        if self.kind == "dmc":
            elapsed = int(self.base.dm_env._step_count)
        else:
            elapsed = int(self.time_limit._elapsed_steps) if self.time_limit is not None else 0
        return SimState(phys, model, elapsed)

    def _set_model(self, flat: np.ndarray) -> None:
        i = 0
        for f in MODEL_FIELDS:
            arr = getattr(self.model, f)
            n = int(np.asarray(arr).size)
            arr[...] = flat[i:i + n].reshape(np.shape(arr))
            i += n

    def restore(self, state: SimState) -> Any:
        """Write ``state`` into the simulator; return the base env's observation in that state."""
        phys = np.asarray(state.physics, np.float64)
        model = np.asarray(state.model, np.float64)
        if phys.shape != (self.physics_size,) or model.shape != (self.model_size,):
            raise ConfigError(
                f"snapshot does not fit this env: physics state {phys.shape} / model state {model.shape}, expected "
                f"({self.physics_size},) / ({self.model_size},); restore snapshots into the env they were taken on"
            )
        mj = self._mujoco
        if self.kind == "dmc":
            with self.physics.reset_context():  # reset data, write the state; forward() on exit
                self._set_model(model)
                mj.mj_setState(self.model, self.data, phys, self.sig)
            dm_env = self.base.dm_env
            dm_env._step_count = int(state.elapsed)
            dm_env._reset_next_step = False
            return _flatten_state(dm_env.task.get_observation(self.physics))
        self._set_model(model)
        mj.mj_resetData(self.model, self.data)
        mj.mj_setState(self.model, self.data, phys, self.sig)
        mj.mj_forward(self.model, self.data)
        if self.time_limit is not None:
            self.time_limit._elapsed_steps = int(state.elapsed)
        return self.base._get_obs()


def _wrapper_chain(env: gym.Env) -> list[gym.Env]:
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


def _env_id(env: gym.Env) -> str | None:
    try:
        return env.get_wrapper_attr("env_id")
    except AttributeError:
        return None


#: Wrappers that leave observations alone (their per-episode state, if any, is fresh after the inner reset).
_PASS_THROUGH = ("ActionRepeat", "ActionScale", "EnvInfo", "TimeLimit", "OrderEnforcing", "PassiveEnvChecker",
                 "RecordEpisodeStatistics", "_AleFrames", "SnapshotResetWrapper")


def _rebuild_observation(env: gym.Env, base_obs: Any) -> Any:
    """Pass the base env's observation out through the wrappers as a reset would: pixels re-rendered by
    ``PixelObservation``, the frame stack filled with copies of the restored frame."""
    obs = base_obs
    for w in reversed(_wrapper_chain(env)[:-1]):  # innermost wrapper first
        if isinstance(w, FrameStack):
            frame = w._pixels(obs)
            w._frames.clear()
            for _ in range(w.frame_stack):
                w._frames.append(frame)
            obs = w._stacked(obs)
        elif isinstance(w, gym.ObservationWrapper):
            obs = w.observation(obs)
        elif isinstance(w, (gym.ActionWrapper, gym.RewardWrapper)) or type(w).__name__ in _PASS_THROUGH:
            continue
        else:
            raise ConfigError(
                f"cannot restore a snapshot through wrapper {type(w).__name__}: it may change observations on "
                "reset. Wrap the env from pixelrl.envs.make with SnapshotResetWrapper before adding other wrappers"
            )
    return obs


def check_restorable(env: gym.Env) -> None:
    """Raise :class:`ConfigError` unless ``env``'s simulator state can be captured and restored (a MuJoCo env from
    :func:`pixelrl.envs.make`: ``dmc/`` or Gymnasium MuJoCo ``gym/``)."""
    _Sim(env)


def capture_state(env: gym.Env) -> SimState:
    """The current full simulator state of a MuJoCo env from :func:`pixelrl.envs.make` (``dmc/``, ``gym/``)."""
    return _Sim(env).capture()


def restore_state(env: gym.Env, state: SimState) -> Any:
    """Put ``env`` (reset at least once) into ``state`` and return the observation it emits there.

    The observation is what the env would emit in that state right after a reset: pixels are rendered from the
    restored simulator and the frame stack is filled with copies of that frame. (Gymnasium MuJoCo envs render
    after ``mj_step`` without recomputing kinematics, so body poses there lag the state by one physics
    substep, ~1e-7 m on Hopper; the restored frame is rendered after ``mj_forward``. The rendered pixels matched
    in our tests, and every later step is bitwise identical.)
    """
    sim = _Sim(env)
    return _rebuild_observation(env, sim.restore(state))


# ----------------------------------------------------------------------------------------------- k-means


def kmeans(
    x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 10, max_iter: int = 300, tol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ initialisation; returns ``(labels[N], centroids[k, D])``.

    ``x`` is ``[N]`` or ``[N, D]``. ``k`` is lowered to the number of distinct points if there are fewer.
    The best of ``n_init`` runs (lowest inertia) is kept. Deterministic given ``seed``; clusters are numbered
    by ascending first centroid coordinate (for Q values: cluster 0 = lowest values).
    """
    pts = np.asarray(x, np.float64)
    if pts.ndim == 1:
        pts = pts[:, None]
    if pts.ndim != 2 or len(pts) == 0:
        raise ConfigError(f"kmeans needs a non-empty [N] or [N, D] array, got shape {np.shape(x)}")
    if not np.all(np.isfinite(pts)):
        raise ConfigError("kmeans got non-finite values (NaN or inf); check the teacher's value function")
    if int(k) < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    k = min(int(k), len(np.unique(pts, axis=0)))
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(max(1, int(n_init))):
        centers = _kmeans_pp(pts, k, rng)
        for _ in range(int(max_iter)):
            d2 = ((pts[:, None, :] - centers[None]) ** 2).sum(-1)
            labels = d2.argmin(1)
            new = centers.copy()
            for c in range(k):
                members = pts[labels == c]
                if len(members):
                    new[c] = members.mean(0)
                else:  # empty cluster: move it to the point farthest from its centre
                    far = d2[np.arange(len(pts)), labels].argmax()
                    new[c] = pts[far]
                    labels[far] = c
            shift = float(((new - centers) ** 2).sum())
            centers = new
            if shift <= tol:
                break
        d2 = ((pts[:, None, :] - centers[None]) ** 2).sum(-1)
        labels = d2.argmin(1)
        inertia = float(d2[np.arange(len(pts)), labels].sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels, centers)
    _, labels, centers = best
    order = np.lexsort(centers.T[::-1])  # ascending by first coordinate
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    return rank[labels].astype(np.int64), centers[order]


def _kmeans_pp(pts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centers = [pts[rng.integers(len(pts))]]
    d2 = ((pts - centers[0]) ** 2).sum(-1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # cannot happen while k <= distinct points; guard anyway
            idx = rng.integers(len(pts))
        else:
            idx = rng.choice(len(pts), p=d2 / total)
        centers.append(pts[idx])
        d2 = np.minimum(d2, ((pts - pts[idx]) ** 2).sum(-1))
    return np.stack(centers).astype(np.float64)


# ------------------------------------------------------------------------------------------------ bank

_ARRAYS = {  # name -> (dtype, ndim)
    "physics": (np.float64, 2), "model": (np.float64, 2), "elapsed": (np.int64, 1), "values": (np.float64, 1),
    "episode": (np.int64, 1), "step": (np.int64, 1), "episode_return": (np.float64, 1), "cluster": (np.int64, 1),
    "centroids": (np.float64, 1),
}


@dataclass
class SnapshotBank:
    """Teacher snapshots with their values and value clusters. Build with :func:`collect_snapshots` or
    :meth:`from_snapshots`; save / load with :meth:`save` / :meth:`load` (NPZ arrays + JSON metadata).

    Row ``i`` is one snapshot: ``physics[i]``, ``model[i]``, ``elapsed[i]`` (its :class:`SimState`),
    ``values[i]`` (teacher Q), ``episode[i]`` (teacher episode index), ``step[i]`` (agent step in that
    episode), ``episode_return[i]`` (that episode's return), ``cluster[i]`` (k-means label, 0 = lowest values).
    """

    physics: np.ndarray
    model: np.ndarray
    elapsed: np.ndarray
    values: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    episode_return: np.ndarray
    cluster: np.ndarray
    centroids: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.values)
        for name, (dtype, ndim) in _ARRAYS.items():
            arr = np.asarray(getattr(self, name), dtype)
            if arr.ndim != ndim:
                raise ConfigError(f"SnapshotBank.{name} must have {ndim} dimension(s), got shape {arr.shape}")
            if name != "centroids" and len(arr) != n:
                raise ConfigError(f"SnapshotBank.{name} has {len(arr)} rows, values has {n}")
            setattr(self, name, arr)
        if n == 0:
            raise ConfigError("a SnapshotBank needs at least one snapshot")
        k = len(self.centroids)
        if k < 1 or self.cluster.min() < 0 or self.cluster.max() >= k:
            raise ConfigError(f"cluster labels must lie in [0, {k}) (one per centroid)")
        self._members = [np.flatnonzero(self.cluster == c) for c in range(k)]
        if any(len(m) == 0 for m in self._members):
            raise ConfigError("every cluster of a SnapshotBank must hold at least one snapshot")

    @classmethod
    def from_snapshots(
        cls,
        states: list[SimState],
        values: np.ndarray,
        episode: np.ndarray,
        step: np.ndarray,
        episode_return: np.ndarray,
        *,
        k: int = 6,
        seed: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> SnapshotBank:
        """Stack snapshots and cluster them by value with :func:`kmeans` (``k`` lowered to the number of
        distinct values if there are fewer)."""
        if not states:
            raise ConfigError("no snapshots to build a bank from")
        labels, centers = kmeans(np.asarray(values, np.float64), k, seed=seed)
        meta = dict(meta or {})
        meta.update(k_requested=int(k), k=int(len(centers)), kmeans_seed=int(seed))
        return cls(
            physics=np.stack([s.physics for s in states]), model=np.stack([s.model for s in states]),
            elapsed=np.array([s.elapsed for s in states]), values=np.asarray(values), episode=np.asarray(episode),
            step=np.asarray(step), episode_return=np.asarray(episode_return), cluster=labels,
            centroids=centers[:, 0], meta=meta,
        )

    def __len__(self) -> int:
        return len(self.values)

    @property
    def num_clusters(self) -> int:
        return len(self.centroids)

    def members(self, cluster: int) -> np.ndarray:
        """Indices of the snapshots in ``cluster``."""
        return self._members[int(cluster)]

    def state(self, index: int) -> SimState:
        i = int(index)
        return SimState(self.physics[i], self.model[i], int(self.elapsed[i]))

    def sample(self, rng: np.random.Generator) -> tuple[int, int]:
        """``(cluster, index)``: a cluster uniformly, then a snapshot uniformly within it (S3RL)."""
        c = int(rng.integers(self.num_clusters))
        m = self._members[c]
        return c, int(m[rng.integers(len(m))])

    def check_env(self, env: gym.Env) -> None:
        """Raise :class:`ConfigError` if this bank's snapshots cannot be restored into ``env``."""
        spec = _Sim(env).spec()
        want = self.meta.get("sim_spec")
        if want is not None and dict(want) != spec:
            diff = {k: (want.get(k), spec.get(k)) for k in set(want) | set(spec) if want.get(k) != spec.get(k)}
            raise ConfigError(
                f"snapshot bank was collected on {self.meta.get('env_id')!r} and does not fit env "
                f"{_env_id(env)!r} (bank vs env: {diff}); collect a bank on the same task"
            )
        if self.physics.shape[1] != spec["physics_size"] or self.model.shape[1] != spec["model_size"]:
            raise ConfigError(
                f"snapshot bank state sizes {self.physics.shape[1]}/{self.model.shape[1]} do not fit env "
                f"{_env_id(env)!r} ({spec['physics_size']}/{spec['model_size']}); collect a bank on the same task"
            )

    def summary(self) -> dict[str, Any]:
        """A JSON-able description: ``snapshots``, ``env_id``, ``value`` (what the values are), ``values``
        (min / max / mean), ``clusters`` (one entry per cluster: ``centroid``, ``size``, value ``min`` / ``max``),
        ``episodes`` (teacher episodes run and kept, their returns and the kept ones' mean return), ``every``,
        ``elapsed`` (the env step counters of the snapshots: min / max) and ``teacher`` (as recorded at collection)."""
        m = self.meta
        clusters = []
        for c in range(self.num_clusters):
            v = self.values[self._members[c]]
            clusters.append({"cluster": c, "centroid": float(self.centroids[c]), "size": int(len(v)),
                             "min": float(v.min()), "max": float(v.max())})
        kept = sorted({int(e) for e in self.episode})
        kept_returns = [float(self.episode_return[self.episode == e][0]) for e in kept]
        return {
            "snapshots": len(self), "env_id": m.get("env_id"), "value": m.get("value", "q"),
            "values": {"min": float(self.values.min()), "max": float(self.values.max()),
                       "mean": float(self.values.mean())},
            "k": self.num_clusters, "k_requested": m.get("k_requested"), "clusters": clusters,
            "episodes": {"run": m.get("episodes"), "kept": kept, "kept_mean_return": float(np.mean(kept_returns)),
                         "returns": m.get("episode_returns")},
            "every": m.get("every"), "elapsed": {"min": int(self.elapsed.min()), "max": int(self.elapsed.max())},
            "teacher": m.get("teacher"),
        }

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike, *, new: bool = False) -> Path:
        """Write ``<path>/snapshots.npz`` and ``<path>/snapshots.json`` (a folder; created if needed).

        Each file is written to a temporary name and renamed; the JSON (written last) holds the NPZ's SHA-256,
        shapes and metadata, so a damaged, truncated or mismatched pair is detected by :meth:`load`.

        ``new=True``: ``path`` must not exist (:class:`ConfigError` otherwise); the bank is written into a hidden
        sibling folder that is renamed to ``path`` once complete, so ``path`` appears whole or not at all.
        """
        if new:
            final = Path(path)
            if final.exists():
                raise ConfigError(f"{final} already exists; delete it or choose another path for the snapshot bank")
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
            if tmp.exists():
                shutil.rmtree(tmp)
            try:
                self.save(tmp)
                os.replace(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
            return final
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        npz, meta_path = root / "snapshots.npz", root / "snapshots.json"
        tmp = root / "snapshots.npz.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **{name: getattr(self, name) for name in _ARRAYS})
            f.flush()
            os.fsync(f.fileno())
        digest = _sha256(tmp)
        os.replace(tmp, npz)
        doc = {
            "format": FORMAT, "version": VERSION, "sha256": digest,
            "shapes": {name: list(getattr(self, name).shape) for name in _ARRAYS},
            "meta": self.meta,
        }
        tmpj = root / "snapshots.json.tmp"
        tmpj.write_text(json.dumps(doc, indent=2, sort_keys=True))
        os.replace(tmpj, meta_path)
        return root

    @classmethod
    def load(cls, path: str | os.PathLike) -> SnapshotBank:
        """Load a bank written by :meth:`save`; :class:`CorruptFileError` if anything is damaged or missing."""
        root = Path(path)
        npz, meta_path = root / "snapshots.npz", root / "snapshots.json"
        if not root.is_dir():
            raise MissingBankError(f"no snapshot bank at {root}: the folder does not exist (write one with "
                                   "`pixelrl snapshots collect` or SnapshotBank.save)")
        for p in (npz, meta_path):
            if not p.is_file():
                raise CorruptFileError(p, "missing (a snapshot bank folder holds snapshots.npz and snapshots.json)")
        try:
            doc = json.loads(meta_path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptFileError(meta_path, f"not valid JSON ({e})") from e
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CorruptFileError(meta_path, f"not a snapshot bank description (format != {FORMAT!r})")
        if doc.get("version") != VERSION:
            raise CorruptFileError(
                meta_path, f"unsupported version {doc.get('version')!r} (this pixelrl reads {VERSION})"
            )
        shapes, meta = doc.get("shapes", {}), doc.get("meta", {})
        if not isinstance(shapes, dict) or not isinstance(meta, dict):
            raise CorruptFileError(meta_path, "'shapes' and 'meta' must be JSON objects")
        if _sha256(npz) != doc.get("sha256"):
            raise CorruptFileError(npz, "SHA-256 does not match snapshots.json (damaged, truncated or replaced)")
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {name: z[name] for name in _ARRAYS}
        except Exception as e:  # BadZipFile, KeyError, ValueError from a damaged member
            raise CorruptFileError(npz, f"cannot read arrays ({type(e).__name__}: {e})") from e
        for name, arr in arrays.items():
            dtype, _ = _ARRAYS[name]
            if shapes.get(name) != list(arr.shape) or arr.dtype != dtype:
                raise CorruptFileError(npz, f"array {name!r} is {arr.dtype}{list(arr.shape)}, "
                                            f"snapshots.json says {np.dtype(dtype)}{shapes.get(name)}")
        for name in ("physics", "model", "values", "episode_return", "centroids"):
            if not np.all(np.isfinite(arrays[name])):
                raise CorruptFileError(npz, f"array {name!r} holds NaN or inf")
        try:
            return cls(**arrays, meta=dict(meta))
        except ConfigError as e:
            raise CorruptFileError(npz, f"inconsistent contents ({e})") from e


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- collect


def return_to_go(rewards: np.ndarray, discount: float) -> np.ndarray:
    """``G_t = sum_{j >= t} discount^(j - t) r_j`` for every step ``t`` of one episode (float64)."""
    r = np.asarray(rewards, np.float64)
    out = np.empty_like(r)
    g = 0.0
    for t in range(len(r) - 1, -1, -1):
        g = r[t] + float(discount) * g
        out[t] = g
    return out


def collect_snapshots(
    env: gym.Env,
    policy: Callable[[Any], np.ndarray],
    value_fn: Callable[[Any, np.ndarray], float] | None,
    *,
    episodes: int = 10,
    every: int = 10,
    keep_episodes: int = 10,
    k: int = 6,
    seed: int = 0,
    max_steps: int | None = None,
    discount: float = 0.99,
    on_episode: Callable[[int, float], None] | None = None,
    meta: dict[str, Any] | None = None,
) -> SnapshotBank:
    """Run the teacher and build a :class:`SnapshotBank` (S3RL defaults).

    Episode ``i`` starts with ``env.reset(seed=seed + i)``. At every agent step ``t`` with ``t % every == 0``
    (``t = 0`` is the reset state) the simulator state is saved with ``value_fn(obs_t, a_t)``, the teacher's
    Q of the action ``a_t = policy(obs_t)`` it then takes. The ``keep_episodes`` episodes with the highest
    return are kept and their snapshots clustered by value (k-means, ``k``, seeded by ``seed``).

    ``value_fn=None`` (a teacher without a critic, e.g. a random or scripted policy): the value of the snapshot at
    step ``t`` is the discounted Monte-Carlo return-to-go ``sum_{j >= t} discount^(j - t) r_j`` of that episode
    (:func:`return_to_go`; an estimate of the teacher's Q. It is cut at the episode's end, so states within about
    ``1 / (1 - discount)`` steps of a time limit get lower values than a critic would give them).

    Args:
        env: an env from :func:`pixelrl.envs.make` with a MuJoCo simulator (``dmc/``, Gymnasium MuJoCo ``gym/``).
        policy: ``obs -> action`` (e.g. :func:`agent_policy`).
        value_fn: ``(obs, action) -> float`` (e.g. :func:`agent_value_fn`), or None for the return-to-go.
        episodes: teacher episodes (paper: 10).
        every: agent steps between snapshots (paper: 10 env steps on Gymnasium MuJoCo, action repeat 1).
        keep_episodes: best episodes kept by return (paper: 10).
        k: clusters of values (paper: 6).
        seed: reset seeds and k-means seed.
        max_steps: stop an episode after this many agent steps (None = the env's own time limit).
        discount: per-agent-step discount of the return-to-go (``value_fn=None`` only; DrQ-v2's 0.99).
        on_episode: called as ``on_episode(episodes_done, episode_return)`` after each teacher episode (progress).
        meta: extra JSON-able entries for ``bank.meta`` (e.g. what the teacher was).

    ``bank.meta["value"]`` records ``"q"`` or ``"return_to_go"`` (with ``"discount"``).
    """
    if int(episodes) < 1 or int(every) < 1 or int(keep_episodes) < 1:
        raise ConfigError(f"episodes, every and keep_episodes must be >= 1; got {episodes}, {every}, {keep_episodes}")
    if int(keep_episodes) > int(episodes):
        raise ConfigError(f"keep_episodes={keep_episodes} exceeds episodes={episodes}; keep at most as many as run")
    if value_fn is None and not 0.0 <= float(discount) <= 1.0:
        raise ConfigError(f"discount must be in [0, 1], got {discount}")
    sim = _Sim(env)
    per_episode: list[dict[str, Any]] = []
    for ep in range(int(episodes)):
        obs, _ = env.reset(seed=int(seed) + ep)
        states, vals, steps, rewards = [], [], [], []
        ret, t, done = 0.0, 0, False
        while not done:
            action = np.asarray(policy(obs))
            if t % int(every) == 0:
                states.append(sim.capture())
                if value_fn is not None:
                    vals.append(float(value_fn(obs, action)))
                steps.append(t)
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(float(reward))
            ret += float(reward)
            t += 1
            done = terminated or truncated or (max_steps is not None and t >= int(max_steps))
        if value_fn is None:
            vals = [float(v) for v in return_to_go(np.array(rewards), discount)[steps]]
        per_episode.append({"states": states, "values": vals, "steps": steps, "return": ret, "length": t})
        if on_episode is not None:
            on_episode(ep + 1, ret)
    order = sorted(range(len(per_episode)), key=lambda i: -per_episode[i]["return"])  # stable: ties keep order
    kept = sorted(order[: int(keep_episodes)])
    states, values, episode, step, rets = [], [], [], [], []
    for i in kept:
        e = per_episode[i]
        states += e["states"]
        values += e["values"]
        episode += [i] * len(e["states"])
        step += e["steps"]
        rets += [e["return"]] * len(e["states"])
    value_meta = {"value": "q"} if value_fn is not None else {"value": "return_to_go", "discount": float(discount)}
    meta = {
        **dict(meta or {}), **value_meta,
        "env_id": _env_id(env), "sim_spec": sim.spec(), "episodes": int(episodes), "every": int(every),
        "keep_episodes": int(keep_episodes), "seed": int(seed),
        "episode_returns": [float(e["return"]) for e in per_episode],
        "episode_lengths": [int(e["length"]) for e in per_episode], "kept_episodes": [int(i) for i in kept],
    }
    return SnapshotBank.from_snapshots(states, np.array(values), np.array(episode), np.array(step),
                                       np.array(rets), k=k, seed=seed, meta=meta)


def agent_policy(agent: Any, *, step: int = 10**9) -> Callable[[Any], np.ndarray]:
    """``obs -> agent.act(obs, step=step, eval_mode=True)``: a trained pixelrl agent's deterministic action."""
    return lambda obs: agent.act(obs, step=step, eval_mode=True)


def agent_value_fn(agent: Any) -> Callable[[Any, np.ndarray], float]:
    """``(obs, action) -> min_j Q_j(obs, action)`` of a pixelrl actor-critic agent (duck-typed).

    Uses ``agent.encoder``, ``agent.critic.values`` (or ``agent.critic(feat, action)`` returning
    ``[num_q, B, 1]``), ``agent.action_encoder`` if present and ``agent._obs_to_tensor`` if present (else the
    observation is batched with ``torch.as_tensor``). Networks are evaluated in eval mode without gradients.
    """
    import torch

    for name in ("encoder", "critic"):
        if not hasattr(agent, name):
            raise ConfigError(f"agent_value_fn needs an agent with .encoder and .critic; {type(agent).__name__} "
                              f"has no .{name}. Pass your own value_fn(obs, action) -> float instead")

    def to_tensor(obs):
        if hasattr(agent, "_obs_to_tensor"):
            return agent._obs_to_tensor(obs)
        if isinstance(obs, dict):
            return {k: torch.as_tensor(np.asarray(v))[None] for k, v in obs.items()}
        return torch.as_tensor(np.asarray(obs))[None]

    def value(obs, action) -> float:
        mods = [m for m in (agent.encoder, agent.critic, getattr(agent, "action_encoder", None))
                if isinstance(m, torch.nn.Module)]
        modes = [m.training for m in mods]
        for m in mods:
            m.eval()
        try:
            with torch.no_grad():
                feat = agent.encoder(to_tensor(obs))
                a = torch.as_tensor(np.asarray(action, np.float32), device=feat.device)[None]
                if getattr(agent, "action_encoder", None) is not None:
                    a = agent.action_encoder(a)
                critic = agent.critic
                q = critic.values(feat, a) if hasattr(critic, "values") else critic(feat, a)
                return float(q.float().reshape(q.shape[0], -1)[:, 0].min())
        finally:
            for m, was in zip(mods, modes):
                m.train(was)

    return value


# ---------------------------------------------------------------------------------------------- wrapper


class SnapshotResetWrapper(gym.Wrapper):
    """S3RL resets: start episodes from teacher snapshots for the first ``active_agent_steps`` agent steps.

    While the wrapper's own count of agent steps (every ``step`` call, snapshot episodes or not) is below
    ``active_agent_steps``, ``reset`` resets the env, then restores a snapshot chosen by
    :meth:`SnapshotBank.sample` (a cluster uniformly, then a snapshot uniformly) and returns the observation of
    that state; the episode is truncated ``horizon`` agent steps later (or earlier if the env ends it). After
    that every reset is a plain reset. ``info["snapshot"]`` (reset and step infos) is the bank index of the
    episode's snapshot, or None for a plain episode; ``info["snapshot_cluster"]`` its cluster.

    Wrap the env returned by :func:`pixelrl.envs.make` directly (the observation is rebuilt through its
    wrappers). :meth:`state_dict` / :meth:`load_state_dict` (JSON-able) checkpoint the counters and the RNG.

    Args:
        env: a MuJoCo env from :func:`pixelrl.envs.make` (``dmc/`` or Gymnasium MuJoCo ``gym/``).
        bank: the teacher's :class:`SnapshotBank` (collected on the same task).
        horizon: agent steps before a snapshot episode is truncated (paper: 100).
        active_agent_steps: agent steps during which resets use snapshots (paper: 100k env steps on Gymnasium
            MuJoCo with action repeat 1; here agent steps, so on dmc with action repeat 2 this is 200k frames).
        seed: seed of the snapshot choice.
    """

    def __init__(self, env: gym.Env, bank: SnapshotBank, *, horizon: int = 100,
                 active_agent_steps: int = 100_000, seed: int = 0) -> None:
        super().__init__(env)
        if int(horizon) < 1:
            raise ConfigError(f"horizon must be >= 1 agent step, got {horizon}")
        if int(active_agent_steps) < 0:
            raise ConfigError(f"active_agent_steps must be >= 0, got {active_agent_steps}")
        if not isinstance(bank, SnapshotBank):
            raise ConfigError(
                f"bank must be a SnapshotBank (load one with SnapshotBank.load), got {type(bank).__name__}"
            )
        bank.check_env(env)
        self.bank = bank
        self.horizon = int(horizon)
        self.active_agent_steps = int(active_agent_steps)
        self._seed = int(seed)
        self._rng = np.random.default_rng(self._seed)
        self.agent_steps = 0
        self._episode_steps = 0
        self._snapshot: int | None = None
        self._cluster: int | None = None

    @property
    def active(self) -> bool:
        """Whether the next reset starts from a snapshot."""
        return self.agent_steps < self.active_agent_steps

    def _tag(self, info: dict) -> dict:
        info = dict(info)
        info["snapshot"] = self._snapshot
        info["snapshot_cluster"] = self._cluster
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._episode_steps = 0
        self._snapshot = self._cluster = None
        if self.active:
            self._cluster, self._snapshot = self.bank.sample(self._rng)
            obs = restore_state(self.env, self.bank.state(self._snapshot))
        return obs, self._tag(info)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.agent_steps += 1
        self._episode_steps += 1
        if self._snapshot is not None and self._episode_steps >= self.horizon and not terminated:
            truncated = True
        return obs, reward, terminated, truncated, self._tag(info)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able counters and RNG state (the env's own simulator state is not included)."""
        return {
            "agent_steps": self.agent_steps, "episode_steps": self._episode_steps, "snapshot": self._snapshot,
            "cluster": self._cluster, "rng": self._rng.bit_generator.state,
            "horizon": self.horizon, "active_agent_steps": self.active_agent_steps, "bank_size": len(self.bank),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output. The env should be reset afterwards (a snapshot episode in progress
        cannot be resumed mid-way: the simulator state is not checkpointed)."""
        try:
            if int(state["bank_size"]) != len(self.bank):
                raise ConfigError(f"state was saved with a bank of {state['bank_size']} snapshots, this wrapper has "
                                  f"{len(self.bank)}; load it with the same bank")
            rng = np.random.default_rng()
            rng.bit_generator.state = state["rng"]
            self.agent_steps = int(state["agent_steps"])
            self._episode_steps = int(state["episode_steps"])
            self._snapshot = None if state["snapshot"] is None else int(state["snapshot"])
            self._cluster = None if state["cluster"] is None else int(state["cluster"])
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"not a SnapshotResetWrapper state dict ({type(e).__name__}: {e})") from e
        self._rng = rng
