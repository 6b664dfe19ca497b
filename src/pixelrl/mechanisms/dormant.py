"""Dormant neurons: measure them, and shrink-and-perturb the weights that hold them.

Dormant ratio (Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep RL"; used by DrM and MENTOR)
---------------------------------------------------------------------------------------------------------
For one forward pass of a batch ``x`` through a network, every unit ``i`` of a weight layer ``l`` gets the score

    s_i = E_x |h_i(x)|  /  ( (1/N_l) * sum_j E_x |h_j(x)| )          (mean over the batch, normalised by the
                                                                       layer's mean over its N_l units)

and is *dormant* when ``s_i < threshold`` (strictly, as the DrM code; default threshold 0.025). The dormant ratio
``beta`` is the number of dormant units over the number of units, summed over all weight layers (so a layer
weighs by its width -- the DrM code's count, not a mean of per-layer ratios). Weight layers are every
``nn.Linear`` and :class:`~pixelrl.nets.layers.EnsembleLinear` of the module, the output layer included; an
``EnsembleLinear`` of ``E`` members counts as ``E`` separate layers (each member normalised by its own mean),
which is what ``E`` separate ``nn.Linear`` would give. Mixture-of-experts layers count through the
``nn.Linear`` / ``EnsembleLinear`` they are built from. Convolutions are not counted. A layer whose units are all
exactly zero on the batch has all its units dormant (the DrM code would divide 0 by 0 and count none).

Which ``h``? (``mode``)

* ``"drm"`` (default) -- what the DrM / MENTOR authors' code measures on DrQ-v2's networks. Their hook keeps the
  ``nn.Linear`` output *tensor*, and in DrQ-v2's MLPs that tensor is then overwritten by ``ReLU(inplace=True)``,
  so hidden ReLU layers are measured *after* the ReLU, while the ``Linear -> LayerNorm -> tanh`` trunk and the
  output layer (its tanh is a function call) are measured on the Linear output. Here that is made explicit and
  architecture-independent: a layer immediately followed by an activation module (in its ``nn.Sequential``) is
  measured after that activation, any other layer on its own output. The DrM thresholds (beta target 0.2, the
  alpha and lambda formulas) were tuned on this measure, which is why it is the default.
* ``"pre"`` -- ``|W x + b|`` of every layer (the pure pre-activation reading of the DrM paper's text).
* ``"post"`` -- the original ReDo definition: the output of the activation that follows the layer, looking past a
  ``LayerNorm`` / ``Dropout`` in between (the trunk is measured after its tanh); a layer with no activation module
  after it (an output layer) is measured on its own output.

Shrink and perturb (Ash & Adams 2020; DrM section 4.1)
------------------------------------------------------
``theta <- alpha * theta + (1 - alpha) * theta_fresh`` for the weight *and bias* of every weight layer, where
``theta_fresh`` is a fresh initialisation of that layer with the network's own init (DrQ-v2: orthogonal weights,
zero biases -- so biases shrink by ``alpha``). ``LayerNorm`` parameters are left alone, as in the DrM code (it
perturbs only parameters of ``nn.Linear`` modules). The mix factor is ``alpha = clip(1 - k * beta, alpha_min,
alpha_max)`` (:func:`perturb_alpha`): the more dormant the actor, the harder the reset.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from pixelrl.errors import ConfigError
from pixelrl.nets.layers import EnsembleLinear, weight_init

__all__ = [
    "MODES",
    "WEIGHT_LAYERS",
    "dormant_masks",
    "dormant_ratio",
    "dormant_ratios",
    "perturb_alpha",
    "shrink_perturb_",
    "DormantTracker",
    "dormant_tracker",
]

MODES = ("drm", "pre", "post")
"""Accepted values of ``mode``; see the module docstring."""

WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, EnsembleLinear)
"""Layers whose units are counted and whose parameters are perturbed."""

_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus,
    nn.Hardtanh, nn.PReLU,
)
_PASS_THROUGH: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.Dropout, nn.Identity)


def _check(threshold: float, mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"dormant mode must be one of {list(MODES)}, got {mode!r}")
    if not threshold >= 0:
        raise ConfigError(f"dormant threshold must be >= 0, got {threshold}")


def _probes(module: nn.Module, mode: str) -> list[tuple[str, nn.Module, nn.Module]]:
    """``(layer name, layer, module whose output is measured)`` for every weight layer of ``module``."""
    follower: dict[int, nn.Module] = {}  # id(layer) -> the module to measure instead of the layer
    if mode != "pre":
        for parent in module.modules():
            if not isinstance(parent, nn.Sequential):
                continue
            children = list(parent.children())
            for i, child in enumerate(children):
                if not isinstance(child, WEIGHT_LAYERS):
                    continue
                probe = None
                for nxt in children[i + 1:]:
                    if isinstance(nxt, _ACTIVATIONS):
                        probe = nxt
                        if mode == "drm":
                            break
                    elif isinstance(nxt, _PASS_THROUGH) and mode == "post":
                        continue
                    else:
                        break
                if probe is not None:
                    follower[id(child)] = probe
    out = [(name, m, follower.get(id(m), m)) for name, m in module.named_modules() if isinstance(m, WEIGHT_LAYERS)]
    # a module instance shared by several layers cannot say which layer it follows: measure those layers directly
    counts: dict[int, int] = {}
    for _, _, p in out:
        counts[id(p)] = counts.get(id(p), 0) + 1
    return [(n, m, p if counts[id(p)] == 1 else m) for n, m, p in out]


@torch.no_grad()
def dormant_masks(
    module: nn.Module, inputs: Any, *, threshold: float = 0.025, mode: str = "drm"
) -> dict[str, torch.Tensor]:
    """Boolean dormant mask per weight layer, from one forward pass of ``inputs`` under ``no_grad``.

    ``inputs`` is the module's input tensor, or a tuple of its positional inputs. Masks are ``[out]`` for an
    ``nn.Linear`` and ``[E, out]`` for an ``EnsembleLinear``; a layer called ``k`` times in the pass gets ``k``
    stacked masks (each call counts as separate units, as in the DrM code). The module's train/eval mode is left
    as it is (the DrM code measures the actor in training mode).
    """
    _check(threshold, mode)
    probes = _probes(module, mode)
    scores: dict[str, list[torch.Tensor]] = {name: [] for name, _, _ in probes}
    handles = []

    def make_hook(name: str, layer: nn.Module):
        def hook(_mod, _inp, out):
            h = out.detach().abs().float()
            if isinstance(layer, EnsembleLinear):  # [E, B, out] -> per-member [E, out]
                m = h.mean(dim=1)
            else:  # [..., out] -> [out]; every leading dim is a batch dim
                m = h.reshape(-1, h.shape[-1]).mean(dim=0)
            # computed inside the hook: an in-place activation that runs next cannot change it
            scores[name].append(m)

        return hook

    try:
        for name, layer, probe in probes:
            handles.append(probe.register_forward_hook(make_hook(name, layer)))
        module(*inputs) if isinstance(inputs, (tuple, list)) else module(inputs)
    finally:
        for h in handles:
            h.remove()

    masks: dict[str, torch.Tensor] = {}
    for name, calls in scores.items():
        if not calls:
            continue  # a layer the forward pass did not use has no units to judge
        per_call = []
        for m in calls:
            layer_mean = m.mean(dim=-1, keepdim=True)
            dead_layer = layer_mean == 0  # all-zero layer: every unit dormant
            per_call.append((m < threshold * layer_mean) | dead_layer)
        masks[name] = per_call[0] if len(per_call) == 1 else torch.stack(per_call)
    return masks


def dormant_ratios(
    module: nn.Module, inputs: Any, *, threshold: float = 0.025, mode: str = "drm"
) -> dict[str, float]:
    """Fraction of dormant units per weight layer (keyed by the layer's qualified name). One host sync."""
    masks = dormant_masks(module, inputs, threshold=threshold, mode=mode)
    if not masks:
        return {}
    fr = torch.stack([m.float().mean() for m in masks.values()]).tolist()
    return dict(zip(masks, fr))


def dormant_ratio_tensor(module: nn.Module, inputs: Any, *, threshold: float = 0.025,
                         mode: str = "drm") -> torch.Tensor:
    """:func:`dormant_ratio` as a 0-d float32 tensor on the module's device, without a host sync."""
    masks = dormant_masks(module, inputs, threshold=threshold, mode=mode)
    if not masks:
        raise ConfigError(f"{type(module).__name__} has no nn.Linear / EnsembleLinear layer to measure")
    dormant = torch.stack([m.sum() for m in masks.values()]).sum()
    units = sum(m.numel() for m in masks.values())
    return dormant.float() / units


def dormant_ratio(module: nn.Module, inputs: Any, *, threshold: float = 0.025, mode: str = "drm") -> float:
    """Dormant units / units over all weight layers of ``module`` (see the module docstring). One host sync."""
    return float(dormant_ratio_tensor(module, inputs, threshold=threshold, mode=mode).item())


def perturb_alpha(beta: float, alpha_max: float, alpha_min: float = 0.2, k: float = 2.0) -> float:
    """DrM's shrink factor ``alpha = clip(1 - k * beta, alpha_min, alpha_max)`` (``alpha_max`` wins if the bounds
    cross, as ``min(max(alpha_min, 1 - k beta), alpha_max)`` in the authors' code)."""
    return min(max(alpha_min, 1.0 - k * beta), alpha_max)


@torch.no_grad()
def shrink_perturb_(
    module: nn.Module,
    alpha: float,
    init_fn: Callable[[nn.Module], None] = weight_init,
    layer_types: Iterable[type[nn.Module]] = WEIGHT_LAYERS,
) -> None:
    """In place, for every layer of ``layer_types``: ``p <- alpha * p + (1 - alpha) * p_fresh`` for each of its
    own parameters (weight and bias), ``p_fresh`` from a copy of the layer re-initialised by ``init_fn``.

    Other parameters (``LayerNorm``) are unchanged. Layers are visited in ``named_modules`` order, so the result
    is a deterministic function of the weights, ``alpha`` and torch's RNG state. Parameters keep their identity
    (optimizers and target-EMA lists that hold them stay valid).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"shrink-perturb alpha must be in [0, 1], got {alpha}")
    types = tuple(layer_types)
    for layer in [m for m in module.modules() if isinstance(m, types)]:
        fresh = copy.deepcopy(layer)
        init_fn(fresh)
        for p, q in zip(layer.parameters(recurse=False), fresh.parameters(recurse=False)):
            p.mul_(alpha).add_(q, alpha=1.0 - alpha)


class DormantTracker:
    """The actor's dormant ratio, measured after every update on that update's (detached) encoder features.

    ``beta`` starts at 1.0 (the DrM code's initial value: maximal exploration before the first measurement).
    Shared by every mechanism of an agent that asks for the same ``(threshold, mode)`` through
    :func:`dormant_tracker`, so the actor is measured once per update however many mechanisms read it.
    """

    def __init__(self, threshold: float, mode: str, metric: str) -> None:
        _check(threshold, mode)
        self.threshold = threshold
        self.mode = mode
        self.metric = metric
        self.beta = 1.0
        self._pending: torch.Tensor | None = None

    def _ratio(self, agent: Any) -> torch.Tensor | None:
        feat = agent.last_feat
        if feat is None:
            return None
        actor = agent.actor
        param = next(actor.parameters(), None)
        if param is not None and feat.dtype != param.dtype:
            feat = feat.to(param.dtype)  # bf16 features from an autocast update
        return dormant_ratio_tensor(actor, feat, threshold=self.threshold, mode=self.mode)

    def measure_tensor(self, agent: Any, step: int) -> dict[str, torch.Tensor]:
        """Metric hook (runs before the update's one host sync): queue the measurement as a tensor metric."""
        ratio = self._ratio(agent)
        self._pending = ratio
        return {} if ratio is None else {self.metric: ratio}

    def measure(self, agent: Any, step: int) -> dict[str, float] | None:
        """Update hook (after the sync): set ``beta`` from the queued measurement -- already computed, so reading
        it does not stall the device -- or measure now when the agent has no metric hooks."""
        ratio, self._pending = self._pending, None
        if ratio is None:
            ratio = self._ratio(agent)
            if ratio is None:
                return None
        self.beta = float(ratio.item())
        return {self.metric: self.beta}

    def state_dict(self) -> dict[str, float]:
        return {"beta": float(self.beta)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta = float(state["beta"])


_TRACKERS: "weakref.WeakKeyDictionary[Any, dict[tuple[float, str], DormantTracker]]" = weakref.WeakKeyDictionary()


def dormant_tracker(agent: Any, *, threshold: float = 0.025, mode: str = "drm") -> DormantTracker:
    """The agent's :class:`DormantTracker` for ``(threshold, mode)``, created and wired on first use.

    Creating one appends its measurement to ``agent.update_hooks`` (so hooks appended after this call see the
    fresh ``beta``) and registers ``beta`` with ``agent.register_state`` (exact resume). The first tracker logs
    ``dormant_ratio``; one with other settings logs ``dormant_ratio_<mode>_<threshold>``.
    """
    _check(threshold, mode)
    per_agent = _TRACKERS.setdefault(agent, {})
    key = (float(threshold), mode)
    if key not in per_agent:
        suffix = "" if not per_agent else f"_{mode}_{threshold:g}"
        tracker = DormantTracker(threshold, mode, metric=f"dormant_ratio{suffix}")
        if hasattr(agent, "metric_hooks"):  # measured before the update's sync, read after it (one sync in all)
            agent.metric_hooks.append(tracker.measure_tensor)
        agent.update_hooks.append(tracker.measure)
        agent.register_state(f"dormant{suffix}", tracker.state_dict, tracker.load_state_dict)
        per_agent[key] = tracker
    return per_agent[key]
