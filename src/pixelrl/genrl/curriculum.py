"""How often a generator already satisfies a verifiable reward, per prompt, and the prompt filter built on it.

A group-relative update (GRPO) learns only from groups whose rewards differ: with a 0/1 verifiable reward, a
prompt the model never (or always) gets right gives a group of equal rewards, zero advantages and no gradient.
Flow-GRPO drops such groups after the fact; DAPO's "dynamic sampling" (Yu et al. 2025) keeps sampling until each
batch holds groups with mixed outcomes. :func:`prompt_success` measures each prompt's success rate under the
current model and :func:`filter_prompts` keeps the prompts whose rate lies in a band, which ``pixelrl genrl
train --prompt-filter LOW HIGH`` applies once before the first epoch (a curriculum of prompts the model is
sometimes right on; our choice, named in :class:`pixelrl.genrl.config.GenRLConfig`).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from pixelrl.errors import ConfigError

__all__ = ["prompt_success", "filter_prompts", "summary"]


@torch.no_grad()
def prompt_success(gen, sched, reward_fn: Any, prompts: Sequence[str], *, per_prompt: int, guidance: float,
                   seed: int, batch_size: int = 32,
                   others: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """Sample ``per_prompt`` images of every prompt (the schedule ``sched``, guidance ``guidance``, noise from
    ``seed``) and score them with ``reward_fn``, which must report per-image success in ``last_info["success"]``
    (the shapes verifiers do). Returns one ``{"prompt", "success", "reward", "images"}`` per prompt, in order;
    ``others`` (``{name: reward}``) adds, per prompt, ``name`` (the mean reward) and, for a reward that reports
    success, ``name + "_success"``, all on the same images."""
    from pixelrl.genrl.sampler import sample

    if per_prompt < 1:
        raise ConfigError(f"per_prompt={per_prompt} must be >= 1")
    todo = [p for p in prompts for _ in range(per_prompt)]
    noise = torch.Generator().manual_seed(int(seed))
    ok, rew = [], []
    extra: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        traj = sample(gen, sched, chunk, guidance=guidance, generator=noise)
        for name, fn in (others or {}).items():
            extra.setdefault(name, []).append(torch.as_tensor(fn(traj.images, chunk)).double().reshape(-1))
            o = (getattr(fn, "last_info", None) or {}).get("success")
            if o is not None:
                extra.setdefault(name + "_success", []).append(torch.as_tensor(o).double().reshape(-1))
        r = torch.as_tensor(reward_fn(traj.images, chunk)).double().reshape(-1)
        s = (getattr(reward_fn, "last_info", None) or {}).get("success")
        if s is None:
            raise ConfigError(f"the reward {getattr(reward_fn, 'name', reward_fn)} reports no per-image success; "
                              "the prompt filter needs a verifiable reward (shapes-verifier:DIR)")
        ok.append(torch.as_tensor(s).double().reshape(-1))
        rew.append(r)
    ok_a = torch.cat(ok).reshape(len(prompts), per_prompt)
    rew_a = torch.cat(rew).reshape(len(prompts), per_prompt)
    ex = {name: torch.cat(v).reshape(len(prompts), per_prompt) for name, v in extra.items()}
    return [{"prompt": p, "success": float(ok_a[k].mean()), "reward": float(rew_a[k].mean()), "images": per_prompt,
             **{name: float(v[k].mean()) for name, v in ex.items()}} for k, p in enumerate(prompts)]


def filter_prompts(stats: Sequence[dict[str, Any]], low: float, high: float,
                   *, min_prompts: int = 1) -> list[str]:
    """The prompts of ``stats`` (from :func:`prompt_success`) whose success rate is in ``[low, high]``; a
    :class:`ConfigError` naming the rates when fewer than ``min_prompts`` remain."""
    if not 0 <= low <= high <= 1:
        raise ConfigError(f"the prompt filter's band [{low}, {high}] must satisfy 0 <= LOW <= HIGH <= 1")
    kept = [s["prompt"] for s in stats if low <= s["success"] <= high]
    if len(kept) < min_prompts:
        rates = np.array([s["success"] for s in stats])
        raise ConfigError(f"the prompt filter [{low:g}, {high:g}] kept {len(kept)} of {len(stats)} prompts (success "
                          f"rates: min {rates.min():.2f}, median {np.median(rates):.2f}, max {rates.max():.2f}); "
                          "widen the band, give other prompts or a better-trained generator")
    return kept


def summary(stats: Sequence[dict[str, Any]], group_size: int = 4) -> dict[str, Optional[float]]:
    """Mean success and reward over prompts, the share of prompts with a success rate strictly in (0, 1)
    (``mixed_frac``) and ``signal_groups``: the expected share of groups of ``group_size`` images of a prompt
    drawn uniformly whose 0/1 successes are not all equal, ``mean(1 - p^G - (1 - p)^G)`` -- the groups a
    group-relative update on success could learn from."""
    if not stats:
        return {"success": None, "reward": None, "mixed_frac": None, "signal_groups": None}
    s = np.array([x["success"] for x in stats])
    return {"success": float(s.mean()), "reward": float(np.mean([x["reward"] for x in stats])),
            "mixed_frac": float(((s > 0) & (s < 1)).mean()),
            "signal_groups": float(np.mean(1 - s ** group_size - (1 - s) ** group_size))}
