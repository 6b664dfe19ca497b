"""Seeding and RNG state capture, so that the same seed on the same machine gives the same run on CPU."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's RNGs (environments are seeded per episode by the trainer)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A 32-bit seed derived from integers (e.g. run seed, stream id, episode index); stable across platforms."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def capture_rng_state(generators: dict[str, np.random.Generator] | None = None) -> dict[str, Any]:
    """Every global RNG state plus the given NumPy generators, as tensors and JSON-able values."""
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy_global": _np_legacy_state(),
        "torch_cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    for name, g in (generators or {}).items():
        state[f"gen/{name}"] = _jsonable(g.bit_generator.state)
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, np.random.Generator] | None = None) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy_global"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
    for name, g in (generators or {}).items():
        g.bit_generator.state = state[f"gen/{name}"]


def _np_legacy_state() -> list[Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _to_lists(x: Any) -> Any:
    if isinstance(x, (tuple, list)):
        return [_to_lists(v) for v in x]
    return x


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.integer):
        return int(x)
    return x
