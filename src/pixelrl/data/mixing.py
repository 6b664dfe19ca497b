"""Exact mixing of several replay sources in every batch (RLPD / SERL's "half prior data, half online data").

:class:`MixedSampler` holds named sources (replay buffers: offline data, online data, demos, interventions) and
a fraction of the batch for each. ``sample(B)`` draws exactly ``counts(B)[name]`` transitions from each source and
concatenates them; the counts are the largest-remainder rounding of ``fraction * B`` (so they sum to ``B``, each
differs from ``fraction * B`` by less than one, and ties go to the source listed first), the same for every call.
RLPD hard-wires 50/50; here the fractions are parameters.

It has the interface of :meth:`ReplayBuffer.sample <pixelrl.data.replay.ReplayBuffer.sample>` (same keywords,
same :class:`~pixelrl.data.batch.Batch`), so trainers and agents do not care which one they sample from. Rows
come in blocks, in the order of the ``sources`` mapping; ``batch.extras["source"]`` (int64 ``[B]``, on the batch's
device) holds the index of the source of each row in that order (:attr:`MixedSampler.names`).

Each source draws with its own random generator, so what one source returns does not depend on the others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from pixelrl.data.batch import Batch
from pixelrl.data.replay import ReplayBuffer
from pixelrl.errors import ConfigError

__all__ = ["MixedSampler", "split_counts", "ON_EMPTY"]

#: What :meth:`MixedSampler.sample` does when a source that should contribute has no sampleable transition.
ON_EMPTY = ("error", "redistribute")

_SUM_TOL = 1e-6


def split_counts(batch_size: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of ``fraction * batch_size``: non-negative integers summing to ``batch_size``.

    Every count is ``floor`` or ``ceil`` of its quota; the units left after flooring go to the largest
    fractional parts, ties to the lower index. A zero fraction always gets 0. ``fractions`` must be non-negative
    with a positive sum; they are normalised to sum to 1 first.
    """
    batch_size = int(batch_size)
    total = float(sum(fractions))
    if batch_size < 0 or not total > 0 or any(f < 0 for f in fractions):
        raise ConfigError(f"split_counts needs batch_size >= 0 and non-negative fractions with a positive sum, "
                          f"got {batch_size} and {list(fractions)}")
    quotas = [batch_size * float(f) / total for f in fractions]
    # The small tolerance absorbs float error (0.29 * 100 = 28.999999999999996 counts as 29).
    counts = [math.floor(q + 1e-9) for q in quotas]
    rest = batch_size - sum(counts)
    if rest < 0:  # only possible through float error; take the units back from the smallest remainders
        order = sorted(range(len(quotas)), key=lambda i: (quotas[i] - counts[i], -i))
        for i in order[:-rest]:
            counts[i] -= 1
        rest = 0
    eligible = [i for i, f in enumerate(fractions) if f > 0]
    order = sorted(eligible, key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    return counts


class MixedSampler:
    """Batches whose rows come from several replay sources in fixed proportions.

    Args:
        sources: ``{name: ReplayBuffer}``, in the order rows appear in a batch. Every source must have the same
            observation and action spaces, ``frame_stack``, ``nstep``, ``discount`` and sampling device, so that
            rows of different sources mean the same thing.
        fractions: ``{name: fraction}`` for exactly the names of ``sources``; non-negative, summing to 1. A
            source with fraction 0 is never sampled (it may be empty).
        on_empty: when a source that should contribute has no sampleable transition yet: ``"error"`` raises
            :class:`~pixelrl.errors.ConfigError` naming it; ``"redistribute"`` gives its rows to the non-empty
            sources with positive fractions, in proportion to their fractions (largest-remainder again) -- e.g.
            the first updates of an offline->online run, before the online buffer holds a complete transition.
            :attr:`last_counts` always holds what the last ``sample`` drew.
    """

    def __init__(self, sources: Mapping[str, ReplayBuffer], fractions: Mapping[str, float], *,
                 on_empty: str = "error") -> None:
        if not isinstance(sources, Mapping) or not sources:
            raise ConfigError("MixedSampler needs at least one source: {name: ReplayBuffer}")
        if not isinstance(fractions, Mapping):
            raise ConfigError(f"fractions must be a mapping {{name: fraction}}, got {type(fractions).__name__}")
        if on_empty not in ON_EMPTY:
            raise ConfigError(f"on_empty must be one of {list(ON_EMPTY)}, got {on_empty!r}")
        names = tuple(str(n) for n in sources)
        missing = [n for n in names if n not in fractions]
        extra = [n for n in fractions if n not in sources]
        if missing or extra:
            raise ConfigError(
                f"fractions must name exactly the sources {list(names)}"
                + (f"; missing: {missing}" if missing else "") + (f"; unknown: {extra}" if extra else ""))
        fr = []
        for n in names:
            f = fractions[n]
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or not 0 <= f <= 1:
                raise ConfigError(f"fraction of source {n!r} must be a number in [0, 1], got {f!r}")
            fr.append(float(f))
        if abs(sum(fr) - 1.0) > _SUM_TOL:
            raise ConfigError(f"source fractions must sum to 1, got {sum(fr):.6g} ({dict(zip(names, fr))})")
        self.names: tuple[str, ...] = names
        """Source names; ``extras["source"] == i`` marks rows of ``names[i]``."""
        self.fractions: dict[str, float] = dict(zip(names, fr))
        self.sources: dict[str, ReplayBuffer] = {n: sources[n] for n in names}
        self.on_empty = on_empty
        self._check_compatible()
        self.last_counts: dict[str, int] = {n: 0 for n in names}
        """Rows drawn from each source by the last :meth:`sample` (after any redistribution)."""

    # ------------------------------------------------------------------ checks
    def _check_compatible(self) -> None:
        first_name = self.names[0]
        first = self.sources[first_name]
        for n, buf in self.sources.items():
            for attr in ("sample", "num_sampleable", "observation_space", "action_space"):
                if not hasattr(buf, attr):
                    raise ConfigError(f"source {n!r} is a {type(buf).__name__}, not a ReplayBuffer (no {attr!r})")
            if n == first_name:
                continue
            for attr, what in (("observation_space", "observation space"), ("action_space", "action space"),
                               ("frame_stack", "frame_stack"), ("nstep", "nstep"), ("discount", "discount"),
                               ("device", "sampling device")):
                a, b = getattr(first, attr, None), getattr(buf, attr, None)
                if a != b:
                    raise ConfigError(
                        f"source {n!r} has {what} {b}, but source {first_name!r} has {a}; every source of a "
                        "MixedSampler must be built with the same spaces, frame_stack, nstep, discount and device "
                        "(a dataset must be collected with the env settings of the run that mixes it in)")

    # ------------------------------------------------------------------ the interface of ReplayBuffer
    @property
    def observation_space(self):
        return self.sources[self.names[0]].observation_space

    @property
    def action_space(self):
        return self.sources[self.names[0]].action_space

    @property
    def device(self) -> torch.device:
        return self.sources[self.names[0]].device

    def __len__(self) -> int:
        """Transitions held by the sources with a positive fraction."""
        return sum(len(b) for n, b in self.sources.items() if self.fractions[n] > 0)

    def num_sampleable(self) -> int:
        """Sampleable transitions of the sources with a positive fraction."""
        return sum(b.num_sampleable() for n, b in self.sources.items() if self.fractions[n] > 0)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {self.fractions[n]:g} of {self.sources[n].num_sampleable()}" for n in self.names)
        return f"MixedSampler({parts}, on_empty={self.on_empty!r})"

    def counts(self, batch_size: int) -> dict[str, int]:
        """Rows per source in a batch of ``batch_size`` when every source has data (largest remainder)."""
        return dict(zip(self.names, split_counts(batch_size, [self.fractions[n] for n in self.names])))

    def _counts_now(self, batch_size: int) -> dict[str, int]:
        counts = self.counts(batch_size)
        empty = [n for n in self.names if counts[n] > 0 and self.sources[n].num_sampleable() == 0]
        if not empty:
            return counts
        if self.on_empty == "error":
            raise ConfigError(
                f"source {empty[0]!r} of the batch mix has no sampleable transition yet "
                f"({len(self.sources[empty[0]])} stored) but its fraction is {self.fractions[empty[0]]:g}; fill it "
                "first, or build the MixedSampler with on_empty='redistribute' to give its rows to the other sources")
        live = [n for n in self.names if self.fractions[n] > 0 and self.sources[n].num_sampleable() > 0]
        if not live:
            raise ConfigError(
                f"no source of the batch mix has a sampleable transition yet "
                f"(sources with a positive fraction: {[n for n in self.names if self.fractions[n] > 0]})")
        split = dict(zip(live, split_counts(batch_size, [self.fractions[n] for n in live])))
        return {n: split.get(n, 0) for n in self.names}

    def sample(self, batch_size: int, **kwargs: Any) -> Batch:
        """A batch of ``batch_size`` rows: ``counts(batch_size)[name]`` from each source, in source order.

        Keywords go to every source's ``ReplayBuffer.sample`` (e.g. ``action_seq=True``); the result has the same
        fields plus ``extras["source"]`` (int64 ``[B]``).
        """
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        counts = self._counts_now(batch_size)
        parts: list[Batch] = []
        index: list[int] = []
        for i, n in enumerate(self.names):
            k = counts[n]
            if k > 0:
                parts.append(self.sources[n].sample(k, **kwargs))
                index.append(i)
        self.last_counts = counts
        source = torch.repeat_interleave(torch.tensor(index, dtype=torch.int64),
                                         torch.tensor([len(p) for p in parts], dtype=torch.int64))
        out = parts[0] if len(parts) == 1 else _concat(parts)
        out.extras["source"] = source.to(out.action.device)
        return out


def _concat(parts: list[Batch]) -> Batch:
    """Row-wise concatenation of batches with the same fields (dict observations key by key)."""

    def cat(values: list[Any]) -> Any:
        if isinstance(values[0], dict):
            return {k: torch.cat([v[k] for v in values], dim=0) for k in values[0]}
        return torch.cat(values, dim=0)

    keys = list(parts[0].extras)
    for p in parts[1:]:
        if list(p.extras) != keys:
            raise ConfigError(f"sources returned different batch extras ({keys} vs {list(p.extras)})")
    return Batch(
        obs=cat([p.obs for p in parts]),
        action=cat([p.action for p in parts]),
        reward=cat([p.reward for p in parts]),
        discount=cat([p.discount for p in parts]),
        next_obs=cat([p.next_obs for p in parts]),
        extras={k: cat([p.extras[k] for p in parts]) for k in keys},
    )
