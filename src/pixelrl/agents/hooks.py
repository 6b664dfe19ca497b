"""The hook API a mechanism may use on an agent, written once for the agents that offer it.

A mechanism of ``pixelrl.mechanisms`` wires itself into an agent through hooks only (its ``install(agent)`` never
patches anything else). The hooks every such agent has -- the DrQ-v2 core (:class:`pixelrl.agents.drqv2.DrQv2Agent`
and the agents built on it) and the DQN family (:class:`pixelrl.agents.dqn.DQNAgent`) -- live in
:class:`MechanismHooks`:

* ``add_aux_loss(fn, module=None, name=None)`` -- ``fn(inputs) -> loss | (loss, {name: tensor})`` is added to the
  agent's main loss before its single optimizer step (DrQ-v2: the critic/encoder loss, ``inputs`` an
  ``AuxInputs``; DQN: the TD loss, a ``DQNAuxInputs``). ``module``'s parameters join that optimizer and its state
  the checkpoint (``state_dict()["aux"][name]``). The loss and each metric are logged as ``<name>_loss`` and
  ``<name>_<metric>``.
* ``register_state(name, state_fn, load_fn)`` -- a mechanism's own state (schedules, snapshots, extra optimizers,
  RNGs): ``state_fn()`` returns tensors / JSON-able values (nested dicts and lists), ``load_fn(state)`` restores
  them; saved under ``state_dict()["mech"][name]``, so resumed runs continue exactly.
* ``update_hooks`` -- callables ``fn(agent, step) -> dict | None`` run after each update, outside the hot path
  (measure, perturb, log; their metrics join the update's). ``last_feat`` holds the detached encoder / torso
  features of the last update's batch.
* ``episode_hooks`` -- ``fn(agent, episode_return, step) -> dict | None`` run by :meth:`MechanismHooks.observe_episode`,
  which the trainer calls after each training episode.
* ``batch_extras`` -- extra replay fields a mechanism needs (TACO's / SPR's ``action_seq`` window).

Each agent keeps what differs between agents:

* ``reset_optimizer_state`` -- drop Adam's moments after a reset of weights: DrQ-v2's takes
  ``which='actor' | 'critic' | 'all'`` (it has an actor and a critic optimizer), DQN's takes no argument (one
  optimizer);
* DrQ-v2 only: ``add_actor_aux_loss``, ``metric_hooks``, ``stddev``, ``critic_target``, ``action_encoder``, the
  critic head (see the docstring of ``drqv2.py``); DQN only: ``td_target`` (see ``dqn.py``).

How an agent uses :class:`MechanismHooks`: call :meth:`~MechanismHooks._init_hooks` in its constructor before any
mechanism is installed, define :meth:`~MechanismHooks._aux_optimizer` (the optimizer that trains an auxiliary loss's
module) and ``_autocast()``, add the auxiliary losses to its loss with :meth:`~MechanismHooks._add_aux`, write
its checkpoint with :meth:`~MechanismHooks._save_aux` / :meth:`~MechanismHooks._save_mech`, and restore it with
:meth:`~MechanismHooks._check_hook_state` (before anything is loaded) and then :meth:`~MechanismHooks._load_aux` /
:meth:`~MechanismHooks._load_mech`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from pixelrl.errors import ConfigError

__all__ = ["AuxEntry", "MechanismHooks"]


class AuxEntry(NamedTuple):
    """One registered auxiliary loss: its name (the prefix of its metrics and its key under ``state_dict()["aux"]``),
    the loss function and the module whose parameters it trains (None: it trains only the agent's own networks)."""

    name: str
    fn: Callable[[Any], Any]
    module: torch.nn.Module | None = None


class MechanismHooks:
    """The hooks an agent offers to mechanisms (see the module docstring): auxiliary losses, mechanism state in
    checkpoints, update and episode hooks, replay extras. Needs ``device``, ``_autocast()`` and
    :meth:`_aux_optimizer` from the agent."""

    aux_losses: list[AuxEntry]
    """Auxiliary losses added to the agent's main loss, in the order they were registered."""
    update_hooks: list[Callable[[Any, int], dict | None]]
    """``fn(agent, step) -> dict | None``, run after each update; their metrics join the update's."""
    episode_hooks: list[Callable[[Any, float, int], dict | None]]
    """``fn(agent, episode_return, step) -> dict | None``, run by :meth:`observe_episode`."""
    batch_extras: set[str] | dict[str, Any]
    """Extra replay fields the mechanisms need (``{"action_seq"}`` or ``{"action_seq": K}``)."""
    last_feat: torch.Tensor | None
    """Detached encoder / torso features of the last update's batch (None before the first update)."""

    def _init_hooks(self) -> None:
        """Empty hook lists; the agent calls this in its constructor before any mechanism is installed."""
        self.aux_losses = []
        self.update_hooks = []
        self.episode_hooks = []
        self.batch_extras = set()
        self.last_feat = None
        self._states: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {}

    def _aux_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer that trains the modules of auxiliary losses (the one that steps on the agent's main loss)."""
        raise NotImplementedError(f"{type(self).__name__} must define _aux_optimizer()")

    # ------------------------------------------------------------------ hooks
    def add_aux_loss(self, fn: Callable[[Any], Any], module: torch.nn.Module | None = None,
                     name: str | None = None) -> None:
        """Add ``fn(inputs) -> loss | (loss, metrics)`` to the agent's main loss (DrQ-v2: the critic/encoder loss;
        DQN: the TD loss); ``module``'s parameters join that loss's optimizer (same learning rate) and its state the
        checkpoint. ``name`` (default ``aux<i>``) prefixes the logged metrics and must be new."""
        name = name or f"aux{len(self.aux_losses)}"
        if any(e.name == name for e in self.aux_losses):
            raise ConfigError(f"an auxiliary loss named {name!r} is already registered")
        if module is not None:
            module.to(self.device)
            self._aux_optimizer().add_param_group({"params": list(module.parameters())})
        self.aux_losses.append(AuxEntry(name, fn, module))

    def register_state(self, name: str, state_fn: Callable[[], Any], load_fn: Callable[[Any], None]) -> None:
        """Include a mechanism's state in checkpoints: ``state_fn()`` returns tensors / JSON-able values (nested
        dicts and lists), ``load_fn(state)`` restores them. Saved under ``state_dict()["mech"][name]``."""
        if name in self._states:
            raise ConfigError(f"a mechanism state named {name!r} is already registered")
        self._states[name] = (state_fn, load_fn)

    def observe_episode(self, episode_return: float, step: int) -> dict[str, float]:
        """Called by the trainer after every training episode; runs ``episode_hooks`` and returns their metrics."""
        out: dict[str, float] = {}
        for hook in self.episode_hooks:
            extra = hook(self, float(episode_return), int(step))
            if extra:
                out.update(extra)
        return out

    # ------------------------------------------------------------------ for the agent's update
    def _add_aux(self, entries: list[AuxEntry], inputs: Any, loss: torch.Tensor, metrics: dict) -> torch.Tensor:
        """``loss`` plus every entry's auxiliary loss (each computed under the agent's autocast, added in fp32);
        their losses and metrics go into ``metrics`` as ``<name>_loss`` and ``<name>_<metric>``."""
        for entry in entries:
            with self._autocast():
                out = entry.fn(inputs)
            aux_loss, aux_metrics = out if isinstance(out, tuple) else (out, {})
            loss = loss + aux_loss.float()
            metrics[f"{entry.name}_loss"] = aux_loss.detach().float()
            metrics.update({f"{entry.name}_{k}": v.detach().float() for k, v in aux_metrics.items()})
        return loss

    # ------------------------------------------------------------------ for the agent's checkpoints
    def _save_aux(self, state: dict) -> None:
        """``state["aux"]``: the state dicts of the auxiliary losses' modules by name (only when any is registered)."""
        if self.aux_losses:
            state["aux"] = {e.name: e.module.state_dict() for e in self.aux_losses if e.module is not None}

    def _save_mech(self, state: dict) -> None:
        """``state["mech"]``: every registered mechanism's ``state_fn()`` by name (only when any is registered)."""
        if self._states:
            state["mech"] = {name: fns[0]() for name, fns in self._states.items()}

    def _check_hook_state(self, state: dict) -> None:
        """Raise one ``ConfigError`` when ``state`` lacks an auxiliary module's or a mechanism's state; called
        before anything is loaded, so a checkpoint of an agent with other mechanisms loads nothing."""
        for e in self.aux_losses:
            if e.module is not None and e.name not in state.get("aux", {}):
                raise ConfigError(f"checkpoint has no state for auxiliary loss {e.name!r}; was it saved by an agent "
                                  "with the same mechanisms (config)?")
        missing_mech = sorted(set(self._states) - set(state.get("mech", {})))
        if missing_mech:
            raise ConfigError(f"checkpoint has no state for mechanism(s) {missing_mech}; was it saved by an agent "
                              "with the same mechanisms (config)?")

    def _load_aux(self, state: dict) -> None:
        """Load the auxiliary losses' modules from ``state["aux"]`` (after :meth:`_check_hook_state`)."""
        for e in self.aux_losses:
            if e.module is not None:
                e.module.load_state_dict(state["aux"][e.name])

    def _load_mech(self, state: dict) -> None:
        """Give every registered mechanism its state from ``state["mech"]`` (after :meth:`_check_hook_state`)."""
        for name, (_, load_fn) in self._states.items():
            load_fn(state["mech"][name])
