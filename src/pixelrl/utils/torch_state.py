"""Small helpers shared by the agents' ``update`` and checkpoint code."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["snapshot", "align_moments", "finish_update"]


def snapshot(tree: Any) -> Any:
    """Detached, contiguous copies of every tensor in a nested dict/list (a state later updates do not change)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone(memory_format=torch.contiguous_format)
    if isinstance(tree, dict):
        return {k: snapshot(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [snapshot(v) for v in tree]
    return tree


def align_moments(optimizers: Iterable[torch.optim.Optimizer]) -> None:
    """After ``load_state_dict``: put optimizer moments in their parameters' memory format (e.g. channels_last
    conv weights), so the fused optimizer step sees matching strides."""
    for opt in optimizers:
        for p, s in opt.state.items():
            for k, v in list(s.items()):
                if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    s[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def _scalar(t: torch.Tensor) -> torch.Tensor:
    """A 0-d float32 tensor outside autograd of a one-element metric (no op at all when it already is one: the
    agents' metrics mostly are, and each skipped ``detach`` / ``reshape`` is a dispatch saved per update)."""
    if t.requires_grad:
        t = t.detach()
    if t.dtype != torch.float32:
        t = t.float()
    return t if t.dim() == 0 else t.reshape(())


def finish_update(agent: Any, metrics: dict[str, torch.Tensor], step: int,
                  hooks: Iterable[Callable[[Any, int], dict | None]]) -> dict[str, float]:
    """Metrics tensors -> floats with one device sync, then the update hooks (whose metrics are merged in). The
    agent's ``metric_hooks`` (if any) add tensor metrics before the sync, so their values cost no extra sync."""
    for metric_hook in getattr(agent, "metric_hooks", ()):
        metrics.update(metric_hook(agent, step))
    names = list(metrics)
    values = torch.stack([_scalar(metrics[k]) for k in names]).tolist() if names else []
    out = dict(zip(names, values))
    for hook in hooks:
        extra = hook(agent, step)
        if extra:
            out.update(extra)
    return out
