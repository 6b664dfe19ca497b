"""Replay buffer that stores every frame once and builds frame stacks and n-step returns at sample time.

Storage layout
--------------
The buffer is a ring of ``capacity + 1`` *slots*; slot ``j`` holds one observation of one episode:

* for each pixel key (a uint8 ``Box`` with 3 dims) only the newest frame, ``uint8[C, H, W]`` with
  ``C = channels / frame_stack``;
* for each other key (proprioception, a state vector) the whole value;
* the step that *led into* it: ``action``, ``reward``, ``terminated``, ``truncated`` (unset in the first slot of
  an episode), plus ``first`` (the slot is the observation returned by ``reset``) and ``ep_start`` (the absolute
  index of the episode's first slot).

Slots are addressed by an absolute, ever-increasing index ``g``; the live window is ``[lo, hi)`` and slot ``g``
lives at row ``g % (capacity + 1)``. Writing into a full ring evicts the oldest slot (FIFO, step by step).
A transition is identified with the slot of its observation ``obs_t``; its step record lives in slot ``t + 1``.

Sampling
--------
Transition ``t`` is *sampleable* when

* it has a step after it (``t + 1`` exists and starts no new episode);
* its n-step target is final: ``nstep`` steps of the same episode are stored after it, or the episode ended
  (terminated, truncated, or a new episode was started with ``add_first``) after ``m < nstep`` steps;
* every frame of its stack is still stored: the stack ``[t-S+1 .. t]`` is clamped to the episode's first slot
  (the environment pads with copies of the first frame), and every index read must be ``>= lo``.

``reward = sum_{k<m} gamma^k r_{t+k}``, ``discount = gamma^m`` or 0 when the episode terminated inside those
``m`` steps (truncation bootstraps), ``next_obs = obs_{t+m}``. Indices are drawn uniformly (with replacement)
over sampleable transitions with the buffer's own ``numpy.random.Generator(PCG64(seed))``.

On request (``sample(..., action_seq=True)``) a batch also carries the window's actions
``a_t .. a_{t+n-1}`` (zero-padded after the ``m`` steps, with a mask), read from the stored step records;
``action_seq=K`` (an int) asks for a K-step window whatever ``nstep`` is, and then also for the observation at its
end (TACO's contrastive horizon K with a different n-step return).

Persistence
-----------
``save(dir)`` writes only the slots added since the last save to ``dir`` as append-only chunk files
(``chunk_000012.npz``) and then atomically replaces ``manifest.json`` (counters, ring pointers, sampler RNG state,
the sha256 and size of every chunk still needed, and a checksum of itself). ``load(dir)`` verifies everything,
rebuilds the buffer in new arrays and swaps them in only when all checks passed. See ``docs/replay.md``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError, CorruptFileError
from pixelrl.utils.atomic import ensure_free_space, fsync_dir, sha256_file, storage_errors, write_json_atomic

__all__ = ["ReplayBuffer", "EXTRAS", "sample_kwargs"]

FORMAT_NAME = "pixelrl.replay"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_CHUNK_RE = re.compile(r"^chunk_(\d{6,})\.npz(\.tmp)?$")
#: Largest number of slots written to one chunk file (~87 MB of 84x84 RGB frames).
MAX_CHUNK_SLOTS = 4096
#: Below this fraction of sampleable slots in the live window, sampling enumerates the valid slots instead of
#: rejecting draws.
_DENSE_FRACTION = 0.25
#: Optional per-sample fields ``sample(..., <name>=True)`` can add to ``batch.extras``.
EXTRAS = ("action_seq",)


def sample_kwargs(batch_extras: Any) -> dict[str, Any]:
    """The :meth:`ReplayBuffer.sample` keywords for an agent's ``batch_extras``: a set of names (each asked with
    ``True``) or a mapping ``name -> value`` (e.g. ``{"action_seq": 3}``: a 3-step window)."""
    if isinstance(batch_extras, Mapping):
        return {name: batch_extras[name] for name in sorted(batch_extras)}
    return {name: True for name in sorted(batch_extras)}


@dataclass(frozen=True)
class _ObsKey:
    """How one observation entry is stored."""

    name: str | None  # dict key, or None for a plain (non-dict) observation
    pixel: bool
    env_shape: tuple[int, ...]  # shape the environment returns
    slot_shape: tuple[int, ...]  # shape stored per slot (one frame for pixel keys)
    dtype: np.dtype

    def describe(self) -> dict:
        return {
            "name": self.name,
            "pixel": self.pixel,
            "env_shape": list(self.env_shape),
            "slot_shape": list(self.slot_shape),
            "dtype": np.dtype(self.dtype).str,
        }


def _is_pixel_space(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def parse_obs_space(space: spaces.Space, frame_stack: int, *, store: str) -> list[_ObsKey]:
    """How each entry of an observation space is stored: pixel keys (uint8 ``[S*C, H, W]``) one frame per step,
    other Box keys as they are. Shared by the replay buffer and the on-disk datasets; ``store`` names the storer in
    the error ("the replay buffer stores", "datasets store")."""
    if isinstance(space, spaces.Dict):
        items = [(str(k), s) for k, s in space.spaces.items()]
        if not items:
            raise ConfigError("the observation Dict space has no keys")
    else:
        items = [(None, space)]
    keys = []
    for name, sub in items:
        where = f"observation key {name!r}" if name is not None else "the observation space"
        if not isinstance(sub, spaces.Box):
            raise ConfigError(f"{where} is {type(sub).__name__}; {store} Box observations (uint8 [S*C, H, W] pixels "
                              "or vectors) or a flat Dict of them")
        shape = tuple(int(d) for d in sub.shape)
        if _is_pixel_space(sub):
            if shape[0] % frame_stack:
                raise ConfigError(f"{where} has {shape[0]} channels, not a multiple of frame_stack={frame_stack}; "
                                  "pass the frame_stack the environment was built with")
            keys.append(_ObsKey(name, True, shape, (shape[0] // frame_stack, *shape[1:]), np.dtype(np.uint8)))
        else:
            keys.append(_ObsKey(name, False, shape, shape, np.dtype(sub.dtype)))
    return keys


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


class ReplayBuffer:
    """Uniform n-step replay over single stored frames.

    Args:
        observation_space: the environment's (frame-stacked) observation space: a uint8 ``Box[S*C, H, W]``, a
            float ``Box[d]``, or a ``Dict`` of those. A key is stored as pixels when its space is a uint8 ``Box``
            with 3 dims; only the newest ``C`` channels of each observation are kept.
        action_space: ``Discrete`` (stored and sampled as int64 ``[B]``), ``Box`` (float32 ``[B, *shape]``),
            ``MultiDiscrete`` / ``MultiBinary`` (int64 ``[B, *shape]``).
        capacity: the most transitions held. The ring has ``capacity + 1`` observation slots; each episode's
            last observation takes a slot without being a transition, so ``len(buffer)`` can stay slightly below
            ``capacity`` once several episodes are stored.
        frame_stack: ``S``, the number of frames concatenated on the channel axis of pixel observations.
        nstep: ``n`` of the n-step return.
        discount: ``gamma`` of the n-step return and of the bootstrap discount ``gamma^m``.
        device: where ``sample`` puts the batch.
        seed: seed of the sampler's own ``numpy.random.Generator(PCG64(seed))``.
        storage_device: where observations are stored; ``"cuda"`` keeps the whole buffer on the GPU.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        capacity: int,
        *,
        frame_stack: int = 3,
        nstep: int = 3,
        discount: float = 0.99,
        device: str | torch.device = "cpu",
        seed: int = 0,
        storage_device: str | torch.device = "cpu",
    ) -> None:
        if int(capacity) < 1:
            raise ConfigError(f"replay capacity must be >= 1 transition, got {capacity}")
        if int(frame_stack) < 1:
            raise ConfigError(f"frame_stack must be >= 1, got {frame_stack}")
        if int(nstep) < 1:
            raise ConfigError(f"nstep must be >= 1, got {nstep}")
        if not 0.0 <= float(discount) <= 1.0:
            raise ConfigError(f"discount must be in [0, 1], got {discount}")
        self.capacity = int(capacity)
        self.frame_stack = int(frame_stack)
        self.nstep = int(nstep)
        self.discount = float(discount)
        self.device = torch.device(device)
        self.storage_device = torch.device(storage_device)
        self.seed = int(seed)
        self.observation_space = observation_space
        self.action_space = action_space
        self._slots = self.capacity + 1  # N
        self._keys = parse_obs_space(observation_space, self.frame_stack, store="the replay buffer stores")
        self._is_dict = isinstance(observation_space, spaces.Dict)
        self._action_shape, self._action_dtype, self._discrete = self._parse_action_space(action_space)
        self._gamma_pows = self.discount ** np.arange(self.nstep + 1, dtype=np.float64)
        self._state = self._allocate()
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        # Persistence bookkeeping (which directory holds which chunks); not part of the buffer's content.
        self._persist: dict[str, Any] | None = None

    # ------------------------------------------------------------------ spaces
    @staticmethod
    def _parse_action_space(space: spaces.Space) -> tuple[tuple[int, ...], np.dtype, bool]:
        if isinstance(space, spaces.Discrete):
            return (), np.dtype(np.int64), True
        if isinstance(space, spaces.Box):
            return tuple(int(d) for d in space.shape), np.dtype(np.float32), False
        if isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
            return tuple(int(d) for d in space.shape), np.dtype(np.int64), False
        raise ConfigError(
            f"action space {type(space).__name__} is not supported by the replay buffer; "
            "use Discrete, Box, MultiDiscrete or MultiBinary"
        )

    def _spec(self) -> dict:
        """What must match between a saved buffer and the buffer loading it."""
        return {
            "capacity": self.capacity,
            "frame_stack": self.frame_stack,
            "nstep": self.nstep,
            "discount": self.discount,
            "dict_obs": self._is_dict,
            "obs": [k.describe() for k in self._keys],
            "action_shape": list(self._action_shape),
            "action_dtype": self._action_dtype.str,
            "discrete": self._discrete,
        }

    # ------------------------------------------------------------------ storage
    def _allocate(self) -> dict[str, Any]:
        """Fresh, empty storage. Large arrays use ``torch.empty`` so untouched pages cost no physical memory."""
        n = self._slots
        obs = []
        for k in self._keys:
            obs.append(
                torch.empty((n, *k.slot_shape), dtype=_torch_dtype(k.dtype), device=self.storage_device)
            )
        return {
            "obs": obs,
            "obs_np": [t.numpy() if t.device.type == "cpu" else None for t in obs],
            "action": np.zeros((n, *self._action_shape), dtype=self._action_dtype),
            "reward": np.zeros(n, dtype=np.float32),
            "terminated": np.zeros(n, dtype=bool),
            "truncated": np.zeros(n, dtype=bool),
            "first": np.zeros(n, dtype=bool),
            "ep_start": np.zeros(n, dtype=np.int64),
            "valid": np.zeros(n, dtype=bool),
            "lo": 0,  # absolute index of the oldest live slot
            "hi": 0,  # absolute index of the next slot to write
            "len": 0,  # live transitions (slots followed by a step of the same episode)
            "num_valid": 0,
            "episode_open": False,  # True between add_first and a terminated/truncated add
        }

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer's preallocated arrays (observations, actions, rewards, flags, indices)."""
        s = self._state
        total = sum(t.numel() * t.element_size() for t in s["obs"])
        for name in ("action", "reward", "terminated", "truncated", "first", "ep_start", "valid"):
            total += s[name].nbytes
        return int(total)

    def __len__(self) -> int:
        return int(self._state["len"])

    def num_sampleable(self) -> int:
        """Number of transitions ``sample`` can currently return."""
        return int(self._state["num_valid"])

    def rng_state(self) -> dict:
        """The sampler's random state, JSON-able (for callers that refill a buffer from a file on resume)."""
        return _jsonable_rng_state(self._rng)

    def set_rng_state(self, state: dict) -> None:
        """Restore a state returned by :meth:`rng_state`; the next ``sample`` draws what it would have drawn."""
        self._rng.bit_generator.state = _rng_state_from_json(state)

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer(len={len(self)}, sampleable={self.num_sampleable()}, capacity={self.capacity}, "
            f"frame_stack={self.frame_stack}, nstep={self.nstep}, discount={self.discount})"
        )

    # ------------------------------------------------------------------ adding
    def _split_obs(self, obs: Any) -> list[np.ndarray]:
        if self._is_dict:
            if not isinstance(obs, Mapping):
                raise ConfigError(f"expected a dict observation with keys {[k.name for k in self._keys]}")
            try:
                values = [obs[k.name] for k in self._keys]
            except KeyError as e:
                raise ConfigError(
                    f"observation is missing key {e.args[0]!r}; expected keys {[k.name for k in self._keys]}"
                ) from None
        else:
            values = [obs]
        out = []
        for k, v in zip(self._keys, values):
            if isinstance(v, torch.Tensor):
                v = v.detach().cpu().numpy()
            v = np.asarray(v)
            if v.shape != k.env_shape:
                where = f"observation key {k.name!r}" if k.name is not None else "observation"
                raise ConfigError(f"{where} has shape {v.shape}, expected {k.env_shape} from the observation space")
            if k.pixel:
                v = v[-k.slot_shape[0]:]  # newest frame only; older ones are stored in earlier slots
            out.append(v)
        return out

    def _write_slot(self, values: list[np.ndarray], *, first: bool, action=None, reward=0.0,
                    terminated=False, truncated=False) -> None:
        s = self._state
        n = self._slots
        if s["hi"] - s["lo"] == n:
            self._evict_oldest()
        g = s["hi"]
        pos = g % n
        for i, v in enumerate(values):
            arr = s["obs_np"][i]
            if arr is not None:
                arr[pos] = v
            else:
                s["obs"][i][pos].copy_(torch.from_numpy(np.ascontiguousarray(v, dtype=self._keys[i].dtype)))
        s["first"][pos] = first
        if first:
            s["ep_start"][pos] = g
            s["action"][pos] = 0
        else:
            s["ep_start"][pos] = s["ep_start"][(g - 1) % n]
            s["action"][pos] = action
        s["reward"][pos] = reward
        s["terminated"][pos] = terminated
        s["truncated"][pos] = truncated
        if s["valid"][pos]:  # stale flag from an evicted slot (always cleared on eviction; belt and braces)
            s["valid"][pos] = False
            s["num_valid"] -= 1
        s["hi"] = g + 1
        # The new slot can change sampleability of the nstep slots before it.
        self._refresh(max(s["lo"], g - self.nstep), g + 1)

    def _evict_oldest(self) -> None:
        s = self._state
        n = self._slots
        lo = s["lo"]
        pos = lo % n
        if lo + 1 < s["hi"] and not s["first"][(lo + 1) % n]:
            s["len"] -= 1
        if s["valid"][pos]:
            s["valid"][pos] = False
            s["num_valid"] -= 1
        s["lo"] = lo + 1
        # Stacks of the next S-1 slots may have needed the evicted frame.
        self._refresh(lo + 1, min(lo + self.frame_stack, s["hi"]))

    def add_first(self, obs: Any) -> None:
        """Store the first observation of an episode (what ``env.reset()`` returned).

        Only the newest frame of each pixel key is kept (at reset the stack is that frame repeated). Calling it
        while an episode is still open ends that episode without termination: its last transitions bootstrap.
        """
        self._write_slot(self._split_obs(obs), first=True)
        self._state["episode_open"] = True

    def add(self, action: Any, reward: float, next_obs: Any, terminated: bool, truncated: bool, *,
            learner_terminal: bool = False) -> None:
        """Store one environment step: the action taken, its reward and the observation it led to.

        ``learner_terminal``: store the step as terminated for the learner (no bootstrap from ``next_obs``; n-step
        returns and action windows stop at it) while the episode stays open, so later steps continue it and frame
        stacks run across it (DQN's Atari protocol: a lost life ends the learner's return, not the scored
        episode)."""
        s = self._state
        if not s["episode_open"]:
            raise ConfigError(
                "ReplayBuffer.add() called without an open episode: call add_first(obs) after env.reset() "
                "(and again after every terminated/truncated step)"
            )
        if isinstance(action, torch.Tensor):
            action = action.detach().cpu().numpy()
        a = np.asarray(action, dtype=self._action_dtype)
        if self._discrete and a.size == 1:
            a = a.reshape(())
        if a.shape != self._action_shape:
            raise ConfigError(f"action has shape {a.shape}, expected {self._action_shape} from the action space")
        values = self._split_obs(next_obs)
        s["len"] += 1
        self._write_slot(values, first=False, action=a, reward=float(reward),
                         terminated=bool(terminated or learner_terminal), truncated=bool(truncated))
        if terminated or truncated:
            s["episode_open"] = False

    # ------------------------------------------------------------------ n-step bookkeeping
    def _nstep(self, g: np.ndarray, s: dict | None = None):
        """n-step quantities of the transitions at absolute indices ``g`` (vectorised over ``g``).

        Returns ``(valid, m, ret, terminated)``: whether the transition is sampleable, the number of steps
        summed, the discounted reward sum (float64) and whether the episode terminated inside them.
        """
        s = self._state if s is None else s
        n = self._slots
        lo, hi = s["lo"], s["hi"]
        first, term, trunc, reward = s["first"], s["terminated"], s["truncated"], s["reward"]
        alive = np.ones(g.shape, dtype=bool)  # steps 1..k-1 exist in the episode and none ended it
        ended = np.zeros(g.shape, dtype=bool)
        terminated = np.zeros(g.shape, dtype=bool)
        has_step = np.zeros(g.shape, dtype=bool)
        m = np.zeros(g.shape, dtype=np.int64)
        ret = np.zeros(g.shape, dtype=np.float64)
        for k in range(1, self.nstep + 1):
            j = g + k
            exists = j < hi
            jp = j % n
            is_first = first[jp]
            step = alive & exists & ~is_first
            if k == 1:
                has_step = step.copy()
            else:
                ended |= alive & exists & is_first  # a new episode started: the previous one ended
            done = step & (term[jp] | trunc[jp])
            ret += np.where(step, self._gamma_pows[k - 1] * reward[jp].astype(np.float64), 0.0)
            m += step
            terminated |= step & term[jp]
            ended |= done
            alive = step & ~done
        complete = alive  # nstep steps of one open episode
        stack_ok = (s["ep_start"][g % n] >= lo) | (g - self.frame_stack + 1 >= lo)
        valid = has_step & (complete | ended) & stack_ok & (g >= lo) & (g < hi)
        return valid, m, ret, terminated

    def _valid_one(self, g: int) -> bool:
        """Scalar twin of ``_nstep(g)[0]`` for the few slots ``add`` touches (numpy call overhead dominates there)."""
        s = self._state
        n = self._slots
        lo, hi = s["lo"], s["hi"]
        first = s["first"]
        if g < lo or g + 1 >= hi or first[(g + 1) % n]:
            return False  # no step after it
        if s["ep_start"][g % n] < lo and g - self.frame_stack + 1 < lo:
            return False  # a frame of its stack was evicted
        term, trunc = s["terminated"], s["truncated"]
        for j in range(g + 1, g + self.nstep + 1):
            if j >= hi:
                return False  # episode still running and fewer than nstep steps stored after g
            jp = j % n
            if first[jp] or term[jp] or trunc[jp]:
                return True  # the episode ended: the shorter return is final
        return True

    def _refresh(self, a: int, b: int) -> None:
        """Recompute sampleability of absolute slots ``[a, b)`` and keep the count in step."""
        s = self._state
        valid = s["valid"]
        n = self._slots
        for g in range(a, b):
            new = self._valid_one(g)
            pos = g % n
            if new != valid[pos]:
                valid[pos] = new
                s["num_valid"] += 1 if new else -1

    # ------------------------------------------------------------------ sampling
    def _draw(self, batch_size: int) -> np.ndarray:
        s = self._state
        n = self._slots
        lo, hi, count = s["lo"], s["hi"], s["num_valid"]
        live = hi - lo
        rng = self._rng
        if count >= _DENSE_FRACTION * live:
            parts, need = [], batch_size
            valid = s["valid"]
            while need > 0:
                cand = lo + rng.integers(0, live, size=2 * need + 8)
                cand = cand[valid[cand % n]][:need]
                parts.append(cand)
                need -= cand.size
            return np.concatenate(parts)
        allg = np.arange(lo, hi, dtype=np.int64)
        allg = allg[s["valid"][allg % n]]
        return allg[rng.integers(0, allg.size, size=batch_size)]

    def _gather(self, store: torch.Tensor, pos: np.ndarray, pin: bool) -> torch.Tensor:
        """Rows ``pos`` of ``store`` as one contiguous tensor ``[len(pos), *row]`` (pinned when asked)."""
        flat = store.view(store.shape[0], -1)
        index = torch.from_numpy(pos.reshape(-1))
        if flat.device.type == "cpu":
            out = torch.empty((index.numel(), flat.shape[1]), dtype=flat.dtype, pin_memory=pin)
            torch.index_select(flat, 0, index, out=out)
            return out
        return flat.index_select(0, index.to(flat.device))

    def sample(self, batch_size: int, *, action_seq: bool | int = False) -> Batch:
        """Draw ``batch_size`` transitions uniformly (with replacement) over sampleable ones.

        Returns a :class:`~pixelrl.data.batch.Batch` on ``device``: pixel obs uint8 ``[B, S*C, H, W]`` (not
        augmented, not scaled), other obs as stored, action int64 ``[B]`` or float32 ``[B, *shape]``, reward and
        discount float32 ``[B, 1]``.

        Optional per-sample fields go to ``batch.extras`` when their keyword is true (names in :data:`EXTRAS`;
        a trainer passes ``**{name: True for name in agent.batch_extras}``):

        * ``action_seq=True``: ``extras["action_seq"]``, the actions ``a_t .. a_{t+n-1}`` of each sampled n-step
          window, ``[B, n, *shape]`` in the action dtype (float32 for ``Box``), and ``extras["seq_mask"]`` float32
          ``[B, n]``: 1 for the ``m`` steps inside the episode, 0 after it. A window cut by the episode's end
          (``m < n``: terminated, truncated or a new episode started) is zero-padded, so ``action_seq[:, k]`` is 0
          wherever ``seq_mask[:, k]`` is 0. Built from the stored step records (no extra storage);
          ``action_seq[:, 0]`` equals ``batch.action``.
        * ``action_seq=K`` (an int >= 1): the same for a K-step window ``a_t .. a_{t+K-1}`` whatever the buffer's
          ``nstep`` (``[B, K, ...]``, masked where the episode ended or was not stored that far yet), plus
          ``extras["seq_next_obs"]``, the observation ``o_{t+k}`` after the window's last step inside it (``o_{t+K}``
          for a complete window), stacked like ``next_obs``. ``K == nstep`` gives what ``True`` gives
          (``seq_next_obs`` would be ``next_obs`` and is left out).

        Drawing the indices does not depend on the extras: the same seed gives the same transitions with or
        without them.
        """
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        s = self._state
        if s["num_valid"] == 0:
            raise ConfigError(
                f"the replay buffer has no sampleable transition yet ({len(self)} stored; a transition needs "
                f"{self.nstep} later steps or the end of its episode): add more steps before sampling"
            )
        if isinstance(action_seq, (bool, np.bool_)):
            horizon = self.nstep if action_seq else 0
        elif isinstance(action_seq, (int, np.integer)) and action_seq >= 1:
            horizon = int(action_seq)
        else:
            raise ConfigError(f"action_seq must be True/False or a window length >= 1, got {action_seq!r}")
        n = self._slots
        g = self._draw(batch_size)
        _, m, ret, terminated = self._nstep(g)
        discount = np.where(terminated, 0.0, self._gamma_pows[m])
        nxt = g + m
        m_seq = m if horizon == self.nstep else self._window_steps(g, horizon)
        rows = [g, nxt]
        if horizon and horizon != self.nstep:
            rows.append(g + m_seq)  # o at the end of the K-step window
        both = np.concatenate(rows)
        ep = s["ep_start"][g % n]
        ep2 = np.concatenate([ep] * len(rows))
        offsets = np.arange(-self.frame_stack + 1, 1, dtype=np.int64)
        stack_idx = np.maximum(both[:, None] + offsets[None, :], ep2[:, None]) % n  # [R*B, S]
        flat_pos = both % n
        dev = self.device
        pin = dev.type == "cuda" and torch.cuda.is_available()
        obs, next_obs, seq_next_obs = {}, {}, {}
        for i, k in enumerate(self._keys):
            store = s["obs"][i]
            if k.pixel:
                out = self._gather(store, stack_idx, pin).view(len(rows) * batch_size, *k.env_shape)
            else:
                out = self._gather(store, flat_pos, pin).view(len(rows) * batch_size, *k.slot_shape)
            out = out.to(dev, non_blocking=True)
            obs[k.name], next_obs[k.name] = out[:batch_size], out[batch_size:2 * batch_size]
            if len(rows) == 3:
                seq_next_obs[k.name] = out[2 * batch_size:]
        action = torch.from_numpy(s["action"][(g + 1) % n])
        reward = torch.from_numpy(ret.astype(np.float32)[:, None])
        disc = torch.from_numpy(discount.astype(np.float32)[:, None])
        if not self._is_dict:
            obs, next_obs = obs[None], next_obs[None]
            seq_next_obs = seq_next_obs.get(None)
        out_extras = {}
        if horizon:
            seq, mask = self._action_seq(g, m_seq, horizon)
            out_extras["action_seq"] = torch.from_numpy(seq).to(dev, non_blocking=True)
            out_extras["seq_mask"] = torch.from_numpy(mask).to(dev, non_blocking=True)
            if len(rows) == 3:
                out_extras["seq_next_obs"] = seq_next_obs
        return Batch(
            obs=obs,
            action=action.to(dev, non_blocking=True),
            reward=reward.to(dev, non_blocking=True),
            discount=disc.to(dev, non_blocking=True),
            next_obs=next_obs,
            extras=out_extras,
        )

    def _window_steps(self, g: np.ndarray, horizon: int) -> np.ndarray:
        """Steps of the ``horizon``-step windows of transitions ``g`` that are stored and inside their episode
        (stops after a terminated / truncated step, before a new episode or the newest slot)."""
        s = self._state
        n = self._slots
        first, term, trunc, hi = s["first"], s["terminated"], s["truncated"], s["hi"]
        alive = np.ones(g.shape, dtype=bool)
        m = np.zeros(g.shape, dtype=np.int64)
        for k in range(1, horizon + 1):
            j = g + k
            jp = j % n
            step = alive & (j < hi) & ~first[jp]
            m += step
            alive = step & ~(term[jp] | trunc[jp])
        return m

    def _action_seq(self, g: np.ndarray, m: np.ndarray, horizon: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Actions of the ``horizon``-step (default n-step) windows of transitions ``g`` (``m`` steps inside the
        episode), zero-padded.

        The action of step ``t + k`` lives in slot ``t + k + 1``; slots past the window's ``m`` steps may belong to
        another episode (or not be written yet), so they are masked to zero rather than read as data.
        """
        k = np.arange(self.nstep if horizon is None else horizon, dtype=np.int64)
        mask = k[None, :] < m[:, None]  # [B, n]
        seq = self._state["action"][(g[:, None] + 1 + k[None, :]) % self._slots]  # [B, n, *shape]
        seq[~mask] = 0
        return seq, mask.astype(np.float32)

    # ------------------------------------------------------------------ state
    _ARRAYS = ("action", "reward", "terminated", "truncated", "first", "ep_start")

    def _meta(self) -> dict:
        s = self._state
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "spec": self._spec(),
            "lo": int(s["lo"]),
            "hi": int(s["hi"]),
            "len": int(s["len"]),
            "num_sampleable": int(s["num_valid"]),
            "episode_open": bool(s["episode_open"]),
            "rng": _jsonable_rng_state(self._rng),
        }

    def _slice(self, a: int, b: int) -> dict[str, np.ndarray]:
        """Arrays of absolute slots ``[a, b)`` (which must not wrap around the ring) as numpy."""
        s = self._state
        n = self._slots
        pa, pb = a % n, a % n + (b - a)
        assert pb <= n
        out = {}
        for i, t in enumerate(s["obs"]):
            arr = s["obs_np"][i]
            out[f"obs_{i}"] = arr[pa:pb] if arr is not None else t[pa:pb].cpu().numpy()
        for name in self._ARRAYS:
            out[name] = s[name][pa:pb]
        return out

    def _pieces(self, a: int, b: int) -> list[tuple[int, int]]:
        """Split ``[a, b)`` into ranges that do not wrap the ring and hold at most MAX_CHUNK_SLOTS slots."""
        n = self._slots
        out = []
        while a < b:
            stop = min(b, a + MAX_CHUNK_SLOTS, (a // n + 1) * n)
            out.append((a, stop))
            a = stop
        return out

    def state_dict(self) -> dict:
        """The whole buffer as ``{"meta": <JSON-serialisable dict>, "arrays": {name: np.ndarray}}``.

        Arrays hold the live slots ``[lo, hi)`` in order (copies). Restore with :meth:`load_state_dict`.
        """
        s = self._state
        parts = [self._slice(a, b) for a, b in self._pieces(s["lo"], s["hi"])]
        names = [f"obs_{i}" for i in range(len(self._keys))] + list(self._ARRAYS)
        arrays = {}
        for name in names:
            if parts:
                arrays[name] = np.concatenate([p[name] for p in parts])
            else:
                arrays[name] = np.zeros((0, *self._array_row_shape(name)), dtype=self._array_dtype(name))
        return {"meta": self._meta(), "arrays": arrays}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`; raises ``ConfigError`` when it does not fit this buffer."""
        meta, arrays = state["meta"], state["arrays"]
        new, rng = self._build_state(meta, [(meta["lo"], meta["hi"], arrays)], where="state_dict")
        self._state, self._rng = new, rng
        self._persist = None

    def _array_row_shape(self, name: str) -> tuple[int, ...]:
        if name.startswith("obs_"):
            return self._keys[int(name[4:])].slot_shape
        return self._action_shape if name == "action" else ()

    def _array_dtype(self, name: str) -> np.dtype:
        if name.startswith("obs_"):
            return self._keys[int(name[4:])].dtype
        return {
            "action": self._action_dtype,
            "reward": np.dtype(np.float32),
            "terminated": np.dtype(bool),
            "truncated": np.dtype(bool),
            "first": np.dtype(bool),
            "ep_start": np.dtype(np.int64),
        }[name]

    def _check_meta(self, meta: Any, where: object) -> None:
        if not isinstance(meta, dict):
            raise CorruptFileError(where, "the replay manifest is not a JSON object")
        if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
            raise CorruptFileError(
                where, f"not a {FORMAT_NAME} v{FORMAT_VERSION} manifest (format={meta.get('format')!r}, "
                f"version={meta.get('version')!r})"
            )
        spec = meta.get("spec")
        mine = self._spec()
        if not isinstance(spec, dict):
            raise CorruptFileError(where, "field 'spec' is missing or not a JSON object")
        if spec != mine:
            diff = sorted(str(k) for k in set(mine) | set(spec) if spec.get(k) != mine.get(k))
            raise ConfigError(
                f"the replay buffer saved in {where} was built with a different configuration "
                f"(differs in: {', '.join(diff)}); build the ReplayBuffer with the same spaces, capacity, "
                "frame_stack, nstep and discount to load it"
            )
        for key in ("lo", "hi", "len", "num_sampleable"):
            if not isinstance(meta.get(key), int) or meta[key] < 0:
                raise CorruptFileError(where, f"field {key!r} is missing or not a non-negative integer")
        if not (meta["lo"] <= meta["hi"] <= meta["lo"] + self._slots):
            raise CorruptFileError(where, f"ring pointers lo={meta['lo']} hi={meta['hi']} are inconsistent")
        if not isinstance(meta.get("episode_open"), bool):
            raise CorruptFileError(where, "field 'episode_open' is missing")

    def _build_state(self, meta: dict, pieces: list[tuple[int, int, Any]], where: object):
        """Build a complete new state from metadata and ``(start, stop, arrays)`` pieces covering ``[lo, hi)``.

        ``arrays`` may be a callable returning the dict (so files are read one at a time). Nothing of ``self``
        changes; returns ``(state, rng)``.
        """
        self._check_meta(meta, where)
        lo, hi = meta["lo"], meta["hi"]
        n = self._slots
        new = self._allocate()
        new["lo"], new["hi"] = lo, hi
        names = [f"obs_{i}" for i in range(len(self._keys))] + list(self._ARRAYS)
        for start, stop, arrays in pieces:
            src = where
            if callable(arrays):
                arrays, src = arrays()
            count = stop - start
            for name in names:
                arr = arrays.get(name) if isinstance(arrays, Mapping) else None
                want = (count, *self._array_row_shape(name))
                if arr is None or arr.shape != want or arr.dtype != self._array_dtype(name):
                    got = None if arr is None else f"{arr.dtype}{list(arr.shape)}"
                    raise CorruptFileError(
                        src, f"array {name!r} is {got}, expected {self._array_dtype(name)}{list(want)}"
                    )
            a = max(start, lo)
            for ra, rb in self._pieces(a, stop):
                pa, pb = ra % n, ra % n + (rb - ra)
                sl = slice(ra - start, rb - start)
                for i in range(len(self._keys)):
                    val = arrays[f"obs_{i}"][sl]
                    if new["obs_np"][i] is not None:
                        new["obs_np"][i][pa:pb] = val
                    else:
                        new["obs"][i][pa:pb].copy_(torch.from_numpy(np.ascontiguousarray(val)))
                for name in self._ARRAYS:
                    new[name][pa:pb] = arrays[name][sl]
        # Consistency of the episode bookkeeping.
        g = np.arange(lo, hi, dtype=np.int64)
        pos = g % n
        ep = new["ep_start"][pos]
        first = new["first"][pos]
        bad = (ep > g) | (first & (ep != g))
        if hi > lo:
            bad[1:] |= ~first[1:] & (ep[1:] != ep[:-1])
        if bad.any():
            raise CorruptFileError(where, f"episode bookkeeping is inconsistent at slot {int(g[bad][0])}")
        new["len"] = int((~first[1:]).sum()) if hi > lo else 0
        valid = self._nstep(g, new)[0]
        new["valid"][pos] = valid
        new["num_valid"] = int(valid.sum())
        new["episode_open"] = meta["episode_open"]
        if new["len"] != meta["len"] or new["num_valid"] != meta["num_sampleable"]:
            raise CorruptFileError(
                where, f"stored counts (len={meta['len']}, sampleable={meta['num_sampleable']}) do not match "
                f"the data (len={new['len']}, sampleable={new['num_valid']})"
            )
        rng = np.random.Generator(np.random.PCG64(0))
        try:
            rng.bit_generator.state = _rng_state_from_json(meta["rng"])
        except Exception as e:  # noqa: BLE001 - any malformed RNG state is a corrupt manifest
            raise CorruptFileError(where, f"sampler RNG state is invalid ({e})") from None
        return new, rng

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | os.PathLike) -> None:
        """Persist the buffer to ``directory`` for exact resume.

        Repeated saves to the same directory append only the slots added since the previous save (one or more
        ``chunk_NNNNNN.npz`` files) and then atomically replace ``manifest.json``; chunks wholly evicted from the
        ring are dropped from the manifest, and deleted one save later. Chunk files never change once written,
        so both the new manifest and the one it replaced stay loadable: a save interrupted at any point, or a
        save that ran ahead of a trainer's checkpoint, leaves the previous save loadable (restore its
        ``manifest.json`` and call ``load``).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        s = self._state
        lo, hi = s["lo"], s["hi"]
        p = self._persist
        try:
            on_disk = json.loads((directory / MANIFEST).read_text())
        except (OSError, ValueError):
            on_disk = None
        # Chunks of the manifest being replaced stay on disk until the next save, so that manifest (e.g. one a
        # trainer recorded with its last checkpoint) remains loadable if this save runs ahead of a crash.
        previous_files = set()
        if isinstance(on_disk, dict) and isinstance(on_disk.get("chunks"), list):
            previous_files = {c.get("file") for c in on_disk["chunks"] if isinstance(c, dict)}
        incremental = (
            p is not None
            and p["dir"] == directory.resolve()
            and isinstance(on_disk, dict)
            and on_disk.get("checksum") == p["checksum"]
        )
        if incremental:
            chunks = list(p["chunks"])
            next_id = p["next_chunk"]
            start = max(p["saved_hi"], lo)
        else:
            chunks = []
            next_id = 1 + max((int(m.group(1)) for m in map(_CHUNK_RE.match, _listdir(directory)) if m),
                              default=-1)
            start = lo
        for a, b in self._pieces(start, hi):
            name = f"chunk_{next_id:06d}.npz"
            next_id += 1
            size, digest = _write_npz_atomic(directory / name, self._slice(a, b))
            chunks.append({"file": name, "start": a, "stop": b, "bytes": size, "sha256": digest})
        chunks = [c for c in chunks if c["stop"] > lo]  # chunks wholly evicted from the ring are not needed
        body = self._meta()
        body["next_chunk"] = next_id
        body["chunks"] = chunks
        checksum = _json_checksum(body)
        write_json_atomic(directory / MANIFEST, {**body, "checksum": checksum})
        self._persist = {"dir": directory.resolve(), "chunks": chunks, "next_chunk": next_id,
                         "saved_hi": hi, "checksum": checksum}
        # Garbage: chunks neither this manifest nor the one it replaced references (evicted before the previous
        # save, leftovers of interrupted saves, an older buffer's chunks), and a stale manifest.json.tmp.
        keep = {c["file"] for c in chunks} | previous_files
        for fname in _listdir(directory):
            if (_CHUNK_RE.match(fname) and fname not in keep) or fname == MANIFEST + ".tmp":
                try:
                    os.unlink(directory / fname)
                except OSError:
                    pass

    def load(self, directory: str | os.PathLike, manifest: str | bytes | None = None) -> None:
        """Restore the buffer saved in ``directory`` exactly, sampler RNG state included.

        ``manifest`` (the text of a ``manifest.json``, e.g. one a trainer recorded with its checkpoint) is used
        instead of the folder's own; nothing is written either way.

        Verifies the manifest checksum, every chunk's size and sha256, array names, shapes and dtypes and the
        episode bookkeeping; raises :class:`~pixelrl.errors.CorruptFileError` naming the file at fault (and
        ``ConfigError`` if the buffer was saved with another configuration). The new state is built completely
        before it replaces the current one, so a failed load leaves the buffer unchanged.
        """
        directory = Path(directory)
        mpath = directory / MANIFEST
        if manifest is not None:
            raw = manifest.encode() if isinstance(manifest, str) else manifest
        else:
            try:
                raw = mpath.read_bytes()
            except FileNotFoundError:
                raise CorruptFileError(mpath, "manifest.json is missing (no completed replay save here)") from None
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptFileError(mpath, f"not valid JSON ({e})") from None
        if not isinstance(doc, dict) or "checksum" not in doc:
            raise CorruptFileError(mpath, "manifest has no checksum")
        body = {k: v for k, v in doc.items() if k != "checksum"}
        if _json_checksum(body) != doc["checksum"]:
            raise CorruptFileError(mpath, "manifest checksum mismatch")
        self._check_meta(body, mpath)
        chunks = body.get("chunks")
        if not isinstance(chunks, list) or not isinstance(body.get("next_chunk"), int):
            raise CorruptFileError(mpath, "chunk list is missing")
        lo, hi = body["lo"], body["hi"]
        expect = None
        for c in chunks:
            ok = (
                isinstance(c, dict)
                and isinstance(c.get("file"), str)
                and _CHUNK_RE.match(c["file"])
                and not c["file"].endswith(".tmp")
                and all(isinstance(c.get(k), int) for k in ("start", "stop", "bytes"))
                and isinstance(c.get("sha256"), str)
                and c["start"] < c["stop"]
            )
            if not ok or (expect is not None and c["start"] != expect):
                raise CorruptFileError(mpath, f"chunk entry {c!r} is malformed or not contiguous")
            expect = c["stop"]
        if hi > lo and (not chunks or chunks[0]["start"] > lo or chunks[-1]["stop"] != hi):
            raise CorruptFileError(mpath, f"chunks do not cover the live slots [{lo}, {hi})")

        def reader(c: dict):
            def read():
                path = directory / c["file"]
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    raise CorruptFileError(path, "chunk file is missing") from None
                if len(data) != c["bytes"]:
                    raise CorruptFileError(path, f"size is {len(data)} bytes, manifest says {c['bytes']} (truncated?)")
                if hashlib.sha256(data).hexdigest() != c["sha256"]:
                    raise CorruptFileError(path, "sha256 mismatch")
                try:
                    with np.load(io.BytesIO(data), allow_pickle=False) as z:
                        arrays = {k: z[k] for k in z.files}
                except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
                    raise CorruptFileError(path, f"cannot read npz ({e})") from None
                return arrays, path
            return read

        pieces = [(c["start"], c["stop"], reader(c)) for c in chunks if c["stop"] > lo]
        new, rng = self._build_state(body, pieces, mpath)
        self._state, self._rng = new, rng
        self._persist = {"dir": directory.resolve(), "chunks": chunks, "next_chunk": body["next_chunk"],
                         "saved_hi": hi, "checksum": doc["checksum"]}


# ---------------------------------------------------------------------- helpers
def _listdir(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def _json_checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _jsonable_rng_state(rng: np.random.Generator) -> dict:
    """``bit_generator.state`` with every value JSON-serialisable (PCG64 uses plain Python ints)."""
    def conv(x):
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, np.integer):
            return int(x)
        if isinstance(x, np.ndarray):
            return {"__ndarray__": x.tolist(), "dtype": x.dtype.str}
        return x

    return conv(rng.bit_generator.state)


def _rng_state_from_json(state: dict) -> dict:
    def conv(x):
        if isinstance(x, dict):
            if "__ndarray__" in x:
                return np.asarray(x["__ndarray__"], dtype=np.dtype(x["dtype"]))
            return {k: conv(v) for k, v in x.items()}
        return x

    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise ValueError("expected a PCG64 state")
    return conv(state)


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> tuple[int, str]:
    """Write an uncompressed npz via ``path.tmp`` + fsync + rename; returns ``(size, sha256)``."""
    tmp = path.with_name(path.name + ".tmp")
    needed = sum(int(a.nbytes) for a in arrays.values()) + 4096 * (len(arrays) + 1)
    with storage_errors(path, cleanup=(tmp,), needed=needed):
        ensure_free_space(path.parent, needed)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        size = tmp.stat().st_size
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    fsync_dir(path.parent)
    return size, digest
