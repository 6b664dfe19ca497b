"""Preference reward models (RL-VLM-F, Wang et al. 2024; its offline use, Venkataraman et al. 2024): an ensemble of
small reward nets trained with Bradley-Terry on pairs of frames (or segments) that an oracle -- a script, a VLM or a
person -- compared.

The math, as in ``reward_model.py`` of github.com/yufeiwang63/RL-VLM-F (``RewardModel.train_reward``):

* each member ``r_k`` maps one observation (the newest RGB frame of a stack, or a state vector) to a reward in
  [-1, 1] (tanh output); a segment's score is the sum of its steps' rewards;
* a labelled pair ``(x1, x2, y)``, ``y = 0`` when the first is better and ``1`` when the second is, gives the
  cross-entropy of the logits ``[sum r_k(x1), sum r_k(x2)]`` with class ``y`` -- ``P(x1 > x2) = e^{R1} / (e^{R1} +
  e^{R2})``, Bradley-Terry; "equal" answers (``y = -1``) are dropped (RL-VLM-F) or trained towards 1/2 (PEBBLE's
  ``train_soft_reward``, ``equal='half'``);
* one fit is up to ``epochs`` passes over all labels; in each pass every member draws its own permutation, the
  members' losses of a minibatch are summed and one Adam step (one optimizer over all members, kept across fits)
  is taken; the fit stops after the first pass whose training accuracy (measured during the pass, averaged over
  members) exceeds ``target_acc`` (0.97);
* the reward used for RL is the ensemble mean.

Online (:class:`OnlinePreferenceLoop`, PEBBLE's schedule as RL-VLM-F runs it): when the agent's warm-up ends, and
then every ``query_every`` agent steps until ``max_queries`` pairs were sent (dropped ones count), ``query_batch``
pairs of steps are drawn uniformly from the replay, sent to the oracle, the model is fitted on every label so far
and the whole replay is relabelled. Offline (:func:`fit_from_dataset`): pairs drawn from a dataset, labelled, fitted,
saved as a model folder that ``--reward prefs:DIR`` loads (``pixelrl dataset relabel``, ``pixelrl train``).

A model folder holds ``preference_model.json`` (the input it reads, the architecture, the fit settings and
history) and ``ensemble.safetensors`` (the members' weights); no pickle.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelrl.errors import ConfigError, CorruptFileError, NotFoundError
from pixelrl.rewards.base import MODES, observation_array

__all__ = ["InputSpec", "ImageRewardNet", "StateRewardNet", "PreferenceRewardModel", "OnlinePreferenceLoop",
           "Schedule", "bradley_terry_loss", "sample_segment_starts", "segment_rows", "fit_from_dataset",
           "MODEL_FILE", "WEIGHTS_FILE", "EQUAL", "SKIP", "input_spec", "load_preference_model", "draw_pairs"]

MODEL_FILE, WEIGHTS_FILE = "preference_model.json", "ensemble.safetensors"
FORMAT = "pixelrl-preference-model"
EQUAL, SKIP = -1, -2
"""Label codes besides 0 (the first of the pair is better) and 1 (the second is): ``EQUAL`` -- equally good or
unsure (RL-VLM-F's -1), ``SKIP`` -- no answer (unparsable VLM reply, identical images, a person's skip)."""

CONV_KERNELS, CONV_CHANNELS, CONV_STRIDES = (5, 3, 3, 3), (16, 32, 64, 128), (3, 2, 2, 2)
"""RL-VLM-F's image reward net (``gen_image_net``: the run.sh default for cartpole, drawer, sweep, soccer)."""
MLP_HIDDEN, MLP_LAYERS = 256, 3
"""RL-VLM-F's state reward net (``gen_net`` with ``reward_model_H=256``, ``reward_model_layers=3``)."""
ACTION_HIDDEN = 256
"""Hidden units between the CNN's features (plus the action) and the output when the image net reads actions
(``--reward.pref-actions``; ours, PEBBLE's hidden width)."""


# ------------------------------------------------------------------------------------------- networks


def _fanin_init(t: torch.Tensor) -> None:
    """rlkit's ``fanin_init`` (RL-VLM-F's conv_net.py): uniform in +-1/sqrt(fan_in)."""
    fan_in = t.shape[0] if t.dim() == 2 else int(np.prod(t.shape[1:]))
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        t.uniform_(-bound, bound)


class ImageRewardNet(nn.Module):
    """RL-VLM-F's CNN: four valid convolutions (kernels 5, 3, 3, 3; channels 16, 32, 64, 128; strides 3, 2, 2, 2;
    ReLU; weights fan-in uniform, biases 0), a linear layer to one output (weights and bias uniform in +-1e-3) and
    tanh. Input: uint8 ``[B, C, H, W]`` scaled to [0, 1] (``C``: one frame's channels, or K stacked frames' with
    ``--reward.pref-frames K``).

    ``action_dim`` > 0 (``--reward.pref-actions``, our deviation: RL-VLM-F's image net reads no action): the
    flattened conv features and the action go through one hidden layer of ``ACTION_HIDDEN`` ReLU units before the
    output layer, ``r(s, a)`` as PEBBLE's / SURF's reward nets on states. A linear head on ``[features, a]`` could
    only make the reward monotone in each action component, while DMC's control costs are quadratic in it."""

    def __init__(self, channels: int, height: int, width: int, action_dim: int = 0) -> None:
        super().__init__()
        layers, c, h, w = [], channels, height, width
        for out, k, s in zip(CONV_CHANNELS, CONV_KERNELS, CONV_STRIDES):
            conv = nn.Conv2d(c, out, k, stride=s)
            _fanin_init(conv.weight)
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU()]
            c, h, w = out, (h - k) // s + 1, (w - k) // s + 1
            if h < 1 or w < 1:
                raise ConfigError(f"frames of {height}x{width} pixels are too small for the preference reward CNN "
                                  "(RL-VLM-F's 4 valid convolutions need at least 47x47); render larger frames "
                                  "(e.g. --size 64 or the default 84)")
        self.conv = nn.Sequential(*layers)
        self.action_dim = int(action_dim)
        out = nn.Linear(ACTION_HIDDEN if self.action_dim else c * h * w, 1)
        with torch.no_grad():
            out.weight.uniform_(-1e-3, 1e-3)
            out.bias.uniform_(-1e-3, 1e-3)
        self.head = nn.Sequential(nn.Linear(c * h * w + self.action_dim, ACTION_HIDDEN), nn.ReLU(), out) \
            if self.action_dim else out

    def forward(self, x: torch.Tensor, a: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.conv(x.float() / 255.0).flatten(1)
        if self.action_dim:
            h = torch.cat([h, a.float().reshape(len(h), -1)], 1)
        return torch.tanh(self.head(h)).squeeze(-1)


class StateRewardNet(nn.Module):
    """RL-VLM-F's / PEBBLE's MLP: 3 hidden layers of 256 with LeakyReLU, one output, tanh (PyTorch's default
    initialisation). ``action_dim`` > 0: the input is ``[state, action]``, as PEBBLE's (``reward_in = obs_dim +
    action_dim``)."""

    def __init__(self, dim: int, hidden: int = MLP_HIDDEN, layers: int = MLP_LAYERS, action_dim: int = 0) -> None:
        super().__init__()
        self.action_dim = int(action_dim)
        mods, d = [], dim + self.action_dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.LeakyReLU()]
            d = hidden
        mods.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor, a: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x.float()
        if self.action_dim:
            x = torch.cat([x, a.float().reshape(len(x), -1)], 1)
        return torch.tanh(self.net(x)).squeeze(-1)


def bradley_terry_loss(r1: torch.Tensor, r2: torch.Tensor, labels: torch.Tensor, *,
                       equal: str = "drop") -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the logits ``[R1, R2]`` (segment scores ``[B]``) with the label as the class (mean over the
    batch) and the number of correct predictions (``argmax == label``; ties count as 0, as ``torch.max`` picks the
    first). ``equal='half'``: labels ``EQUAL`` get the soft target (1/2, 1/2) (PEBBLE's ``train_soft_reward``) and
    count as class 0 for the accuracy, as theirs do."""
    logits = torch.stack([r1, r2], dim=1)
    if equal == "half":
        eq = labels == EQUAL
        cls = torch.where(eq, torch.zeros_like(labels), labels)
        target = F.one_hot(cls, 2).float()
        target[eq] = 0.5
        loss = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    else:
        cls = labels
        loss = F.cross_entropy(logits, cls)
    correct = (logits.argmax(1) == cls).sum()
    return loss, correct


# ------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class InputSpec:
    """What the reward nets read of an observation: the newest frame (``pixel``: ``shape = (C, H, W)``, one frame's
    channels) or the state vector (``shape = (d,)``), under dict key ``key`` (None: the observation itself);
    ``frames``: how many of the stack's newest frames the image net reads (``--reward.pref-frames``; RL-VLM-F: 1);
    ``action_dim``: the length of the action the net also reads (``--reward.pref-actions``; 0: none, RL-VLM-F)."""

    key: Optional[str]
    pixel: bool
    shape: tuple
    frames: int = 1
    action_dim: int = 0

    @property
    def net_shape(self) -> tuple:
        """The observation part of a net input: ``(frames * C, H, W)`` or ``(d,)``."""
        if self.pixel:
            return (self.frames * self.shape[0], *self.shape[1:])
        return tuple(self.shape)

    def to_json(self) -> dict:
        """The spec as JSON; ``frames`` / ``action_dim`` only when not RL-VLM-F's defaults (1, 0), so a default spec
        reads as it did before they existed (label queues and model folders written then compare equal)."""
        out = {"key": self.key, "pixel": self.pixel, "shape": list(self.shape)}
        if self.frames != 1:
            out["frames"] = self.frames
        if self.action_dim:
            out["action_dim"] = self.action_dim
        return out

    @classmethod
    def from_json(cls, d: dict) -> "InputSpec":
        return cls(d.get("key"), bool(d["pixel"]), tuple(int(x) for x in d["shape"]), int(d.get("frames", 1)),
                   int(d.get("action_dim", 0)))


def _action_dim(action_space: Any) -> int:
    """The length of the flat float action a reward net reads: Box actions only (one ConfigError line otherwise)."""
    from gymnasium import spaces

    if not isinstance(action_space, spaces.Box):
        raise ConfigError(f"--reward.pref-actions reads continuous (Box) actions, got {type(action_space).__name__}; "
                          "leave it off for this env")
    return int(np.prod(action_space.shape))


def input_spec(observation_space: Any, frame_stack: int, frames: int = 1, action_space: Any = None,
               actions: bool = False, where: str = "") -> InputSpec:
    """The :class:`InputSpec` for observations of this (frame-stacked) space: the ``pixels`` entry of a dict (else
    its only entry), RGB or grey frames, or states; with ``frames`` K the newest K frames of the stack (1 <= K <=
    ``frame_stack``, pixels only), with ``actions`` also the action (``action_space`` needed: a path that has none,
    named by ``where``, is one line); one ConfigError line otherwise."""
    from gymnasium import spaces

    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ConfigError(f"--reward.pref-frames must be an integer >= 1, got {frames!r}")
    action_dim = 0
    if actions:
        if action_space is None:
            raise ConfigError("this preference reward model reads actions (--reward.pref-actions), but "
                              f"{where or 'this caller'} gives none; use a model fitted without --reward.pref-actions "
                              "here")
        action_dim = _action_dim(action_space)

    space, key = observation_space, None
    if isinstance(space, spaces.Dict):
        names = list(space.spaces)
        key = "pixels" if "pixels" in names else (names[0] if len(names) == 1 else None)
        if key is None:
            raise ConfigError(f"the preference reward reads one entry of dict observations ('pixels', or the only "
                              f"one); these have {names}")
        space = space.spaces[key]
    if not isinstance(space, spaces.Box):
        raise ConfigError(f"the preference reward needs Box observations (frames or states), got "
                          f"{type(space).__name__}")
    shape = tuple(int(s) for s in space.shape)
    if space.dtype == np.uint8 and len(shape) == 3:
        s = max(int(frame_stack), 1)
        if shape[0] % s:
            raise ConfigError(f"pixel observations of {shape[0]} channels are not {s} stacked frames")
        c = shape[0] // s
        if frames > s:
            raise ConfigError(f"--reward.pref-frames {frames} asks for more frames than the observation stacks "
                              f"({s}); use at most {s} or stack more frames (--frame-stack)")
        return InputSpec(key, True, (c, shape[1], shape[2]), frames, action_dim)
    if len(shape) == 1:
        if frames != 1:
            raise ConfigError(f"--reward.pref-frames {frames} stacks frames, but these observations are states "
                              f"{list(shape)}; leave it at 1")
        return InputSpec(key, False, shape, 1, action_dim)
    raise ConfigError(f"the preference reward reads uint8 [C, H, W] frame stacks or float [d] states, got "
                      f"{space.dtype} {list(shape)}")


def extract_inputs(obs: Any, spec: InputSpec) -> np.ndarray:
    """A batch of observations as the environment gives them (stacks, states, dicts) -> the nets' inputs
    ``[B, *spec.net_shape]`` (the newest ``spec.frames`` frames of each stack, oldest first)."""
    arr = observation_array(obs, spec.key, "the preference reward")
    if spec.pixel:
        c = spec.shape[0]
        k = spec.frames
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[2:] != spec.shape[1:] or arr.shape[1] % c or \
                arr.shape[1] < k * c:
            raise ConfigError(f"the preference reward scores uint8 [B, k*{c}, {spec.shape[1]}, {spec.shape[2]}] "
                              f"frame stacks of k >= {k} frames, got {arr.dtype} {list(arr.shape)}")
        return arr[:, -k * c:]
    if arr.ndim != 2 or arr.shape[1:] != spec.shape:
        raise ConfigError(f"the preference reward scores [B, {spec.shape[0]}] states, got {list(arr.shape)}")
    return arr.astype(np.float32, copy=False)


def stack_slots(frames: np.ndarray, rows: np.ndarray, floor: np.ndarray, k: int) -> np.ndarray:
    """Net inputs of K stacked frames from per-slot frames (a replay's ``obs_i``, ``[N, C, H, W]``): for each row of
    ``rows`` (any shape) the frames of rows ``r-k+1 .. r`` (oldest first), each clamped to ``floor[r]`` (the row of
    that slot's episode start: a stack reaching before it repeats the reset frame, as the env's frame stack does).
    Returns ``[*rows.shape, k*C, H, W]``."""
    rows = np.asarray(rows, dtype=np.int64)
    idx = np.maximum(rows[..., None] + np.arange(-k + 1, 1, dtype=np.int64), floor[rows][..., None])
    x = frames[idx]  # [*rows, k, C, H, W]
    return x.reshape(*rows.shape, k * frames.shape[1], *frames.shape[2:])


def to_rgb(frames: np.ndarray) -> np.ndarray:
    """Net inputs ``uint8 [..., C, H, W]`` (C = 3 or 1) -> displayable ``uint8 [..., H, W, 3]``."""
    x = np.moveaxis(np.asarray(frames), -3, -1)
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


# ------------------------------------------------------------------------------------------- sampling


def sample_segment_starts(first: np.ndarray, ep_start: np.ndarray, n: int, segment: int,
                          rng: np.random.Generator) -> np.ndarray:
    """``n`` rows drawn uniformly (with replacement) among the rows that start a segment of ``segment`` consecutive
    steps of one episode. Rows are those of a replay's live slots: ``first[i]`` marks an episode's first
    observation (not a step), ``ep_start[i]`` the absolute slot of its episode's start and ``base`` the absolute
    slot of row 0 (steps whose episode start was evicted still count). Returns int64 ``[n]`` (empty when no segment
    fits)."""
    first = np.asarray(first, dtype=bool)
    m = len(first)
    if m == 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    ok = ~first
    if segment > 1:
        end = np.arange(m) + segment - 1
        inside = end < m
        ok = ok & inside
        idx = np.flatnonzero(ok)
        same = (~first[np.minimum(idx[:, None] + np.arange(segment)[None], m - 1)]).all(1)
        same &= ep_start[np.minimum(idx + segment - 1, m - 1)] == ep_start[idx]
        valid = idx[same]
    else:
        valid = np.flatnonzero(ok)
    if valid.size == 0:
        return np.zeros(0, dtype=np.int64)
    return valid[rng.integers(0, valid.size, size=n)].astype(np.int64)


def segment_rows(starts: np.ndarray, segment: int) -> np.ndarray:
    """``[n] -> [n, segment]`` row indices of each segment."""
    return np.asarray(starts, dtype=np.int64)[:, None] + np.arange(segment, dtype=np.int64)[None]


# ------------------------------------------------------------------------------------------- the model


class PreferenceRewardModel:
    """An ensemble of reward nets fitted with Bradley-Terry, behind the
    :class:`~pixelrl.rewards.base.RewardModel` protocol (scores ``next_obs``: the frame or state after the step, as
    RL-VLM-F scores the image rendered after each step and the offline paper the next observation).

    ``spec`` None: the nets are built by :meth:`bind` from the observation space. ``seed`` fixes the nets'
    initialisation and the fit's shuffles (a model draws nothing from the global RNGs after construction).

    Two opt-in inputs beyond RL-VLM-F's single newest frame, both our deviations (the defaults keep theirs):

    * ``frames`` K (``--reward.pref-frames``): the image net reads the newest K frames of the observation's stack
      (``K * C`` input channels, oldest first), so it can see the pole's velocity. Why: at an action repeat the
      oracle's label sums several frames' rewards, which depend on the angular velocity, and one frame cannot show
      it (the fit ceiling in docs/rewards.md).
    * ``actions`` (``--reward.pref-actions``): the nets also read the action that led to the scored observation --
      ``r(s', a)``, PEBBLE's / SURF's reward nets -- because DMC's rewards carry a control cost. ``needs`` then
      includes ``actions`` and :meth:`bind` needs the ``action_space``; a caller that has no actions gets one
      ConfigError line.

    And one opt-in change to the fit: ``logit_scale`` T (``--reward.pref-logit-scale``; RL-VLM-F: 1) multiplies
    the segment scores before the Bradley-Terry cross-entropy, ``P(x1 > x2) = sigmoid(T (R1 - R2))``; the reward
    used for RL stays the ensemble mean in [-1, 1]. Why: with tanh-bounded steps a single-step pair's logit gap is
    at most 2 (P <= 0.88), so a noiseless oracle's labels keep pushing every step to -1 or +1 on either side of the
    median, and the reward becomes a threshold; with T = 5 the scores can stay graded (measured on cartpole in
    docs/reproduce/preferences.md)."""

    def __init__(self, spec: Optional[InputSpec] = None, *, ensemble: int = 3, lr: float = 3e-4,
                 fit_batch_size: Optional[int] = None, epochs: int = 50, target_acc: float = 0.97,
                 equal: str = "drop", segment: int = 1, mode: str = "replace", scale: float = 1.0,
                 batch_size: int = 64, device: str | torch.device = "cpu", seed: int = 0, frames: int = 1,
                 actions: bool = False, logit_scale: float = 1.0) -> None:
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if equal not in ("drop", "half"):
            raise ConfigError(f"equal must be 'drop' or 'half', got {equal!r}")
        for name, v, lo in (("ensemble", ensemble, 1), ("epochs", epochs, 1), ("segment", segment, 1),
                            ("batch_size", batch_size, 1), ("frames", frames, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
        if not isinstance(actions, bool):
            raise ConfigError(f"actions must be true or false, got {actions!r}")
        if isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)) or \
                not math.isfinite(logit_scale) or logit_scale <= 0:
            raise ConfigError(f"logit_scale must be a finite number > 0, got {logit_scale!r}")
        self.frames, self.actions, self.logit_scale = int(frames), bool(actions), float(logit_scale)
        self.needs = frozenset({"next_obs", "actions"} if self.actions else {"next_obs"})
        if spec is not None and (spec.frames != self.frames or (spec.action_dim > 0) != self.actions):
            raise ConfigError(f"the input spec reads {spec.frames} frame(s) and {spec.action_dim} action values, "
                              f"the model was asked for frames={self.frames}, actions={self.actions}")
        self.mode, self.scale, self.batch_size = mode, float(scale), int(batch_size)
        self.ensemble_size, self.lr, self.epochs = int(ensemble), float(lr), int(epochs)
        self.fit_batch_size, self.target_acc, self.equal = fit_batch_size, float(target_acc), equal
        self.segment, self.device, self.seed = int(segment), torch.device(device), int(seed)
        self.spec: Optional[InputSpec] = None
        self.members: nn.ModuleList | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1]))
        self.labels_a: list[np.ndarray] = []  # [n, segment, *shape] chunks
        self.labels_b: list[np.ndarray] = []
        self.labels_y: list[np.ndarray] = []  # int64 [n] in {0, 1, EQUAL}
        self.labels_act_a: list[np.ndarray] = []  # float32 [n, segment, action_dim] chunks (actions only)
        self.labels_act_b: list[np.ndarray] = []
        self.history: list[dict] = []  # one entry per fit
        self.online: Optional[OnlinePreferenceLoop] = None
        if spec is not None:
            self._build(spec)

    # ---- construction
    def _build(self, spec: InputSpec) -> None:
        self.spec = spec
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if spec.pixel:
                nets = [ImageRewardNet(*spec.net_shape, action_dim=spec.action_dim)
                        for _ in range(self.ensemble_size)]
            else:
                nets = [StateRewardNet(spec.shape[0], action_dim=spec.action_dim) for _ in range(self.ensemble_size)]
        self.members = nn.ModuleList(nets).to(self.device)
        self.opt = torch.optim.Adam(self.members.parameters(), lr=self.lr)

    def bind(self, observation_space: Any, frame_stack: int, action_space: Any = None, *, where: str = "") -> None:
        """Build the nets for these observations (and actions, with ``actions``), or check that a loaded model reads
        this kind of observation. ``where`` names the caller in the error a model with ``actions`` gives when no
        ``action_space`` is passed."""
        spec = input_spec(observation_space, frame_stack, self.frames, action_space, self.actions, where)
        if self.spec is None:
            self._build(spec)
        elif spec != self.spec:
            raise ConfigError(f"this preference reward model reads {_describe(self.spec)} but the observations give "
                              f"{_describe(spec)}; use a model fitted on the same observations (env, --size, --obs)")
        if self.online is not None:
            self.online.check_oracle(self.spec)

    @property
    def fit_batch(self) -> int:
        """Pairs per minibatch: RL-VLM-F's ``train_batch_size`` (64 for the image CNN, 128 for states) unless set."""
        if self.fit_batch_size is not None:
            return int(self.fit_batch_size)
        return 64 if (self.spec is None or self.spec.pixel) else 128

    # ---- scoring
    def _net_in(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), device=self.device)

    def _actions(self, actions: Any, n: int, what: str = "the actions") -> Optional[np.ndarray]:
        """float32 ``[n, action_dim]`` of a batch of actions (None when the nets read none); one line when a model
        that reads actions gets none or the wrong length."""
        if not self.spec.action_dim:
            return None
        if actions is None:
            raise ConfigError("this preference reward model reads actions (--reward.pref-actions), but none were "
                              "passed with the observations")
        if hasattr(actions, "detach"):
            actions = actions.detach().cpu().numpy()
        a = np.asarray(actions, dtype=np.float32).reshape(n, -1) if np.size(actions) == n * self.spec.action_dim \
            else None
        if a is None:
            raise ConfigError(f"{what} have shape {list(np.shape(actions))}; the preference reward model reads "
                              f"{self.spec.action_dim} action values for each of {n} steps")
        return a

    @torch.no_grad()
    def member_rewards(self, inputs: np.ndarray, actions: Optional[np.ndarray] = None) -> np.ndarray:
        """float32 ``[ensemble, B]`` rewards of net inputs ``[B, *spec.net_shape]`` (and actions ``[B, A]`` when
        the nets read them)."""
        self._need_nets()
        acts = self._actions(actions, len(inputs))
        out = np.empty((self.ensemble_size, len(inputs)), dtype=np.float32)
        for i in range(0, len(inputs), self.batch_size):
            x = self._net_in(inputs[i:i + self.batch_size])
            a = self._net_in(acts[i:i + self.batch_size]) if acts is not None else None
            for k, net in enumerate(self.members):
                out[k, i:i + len(x)] = net(x, a).float().cpu().numpy()
        return out

    def rewards(self, inputs: np.ndarray, actions: Optional[np.ndarray] = None) -> np.ndarray:
        """The ensemble-mean reward ``[B]`` of net inputs (and actions)."""
        return self.member_rewards(inputs, actions).mean(0).astype(np.float32)

    def __call__(self, obs: Any = None, *, actions: Any = None, next_obs: Any = None) -> np.ndarray:
        """float32 rewards ``[B]`` of each ``next_obs`` (of ``obs`` when ``next_obs`` is None), with the action that
        led to it when the nets read actions."""
        self._need_nets()
        x = extract_inputs(next_obs if next_obs is not None else obs, self.spec)
        return self.rewards(x, actions if self.spec.action_dim else None)

    def _need_nets(self) -> None:
        if self.members is None:
            raise ConfigError("the preference reward model has no networks yet: call bind(observation_space, "
                              "frame_stack) first")

    # ---- labels and fitting
    @property
    def num_labels(self) -> int:
        return int(sum(len(y) for y in self.labels_y))

    def _pair_actions(self, actions: Any, n: int, s: int, side: str) -> Optional[np.ndarray]:
        """float32 ``[n, s, action_dim]`` actions of one side of ``n`` pairs of ``s``-step segments (None when the
        nets read none)."""
        if not self.spec.action_dim:
            return None
        if actions is None:
            raise ConfigError(f"this preference reward model reads actions (--reward.pref-actions): pass "
                              f"actions_{side} with the pairs")
        return self._actions(actions, n * s, f"actions_{side}").reshape(n, s, -1)

    def add_labels(self, first: np.ndarray, second: np.ndarray, labels: Sequence[int], *,
                   actions_first: Any = None, actions_second: Any = None) -> int:
        """Keep the answered pairs: ``first`` / ``second`` are net inputs ``[n, segment, *spec.net_shape]`` (or
        ``[n, *net_shape]`` for segment 1), ``labels`` ``[n]`` in {0, 1, EQUAL, SKIP}; with ``actions`` also each
        step's action (``[n, segment, A]`` or ``[n, A]``). ``SKIP`` is dropped, and so is ``EQUAL`` unless
        ``equal='half'``. Returns the number kept."""
        self._need_nets()
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        a, b = np.asarray(first), np.asarray(second)
        shape = self.spec.net_shape
        if a.ndim == len(shape) + 1:
            a, b = a[:, None], b[:, None]
        if a.shape != b.shape or a.shape[0] != y.size or a.shape[2:] != shape:
            raise ConfigError(f"pairs of shape {list(a.shape)} / {list(b.shape)} with {y.size} labels do not fit "
                              f"segments of {list(shape)}")
        aa = self._pair_actions(actions_first, *a.shape[:2], "first")
        ab = self._pair_actions(actions_second, *a.shape[:2], "second")
        bad = ~np.isin(y, (0, 1, EQUAL, SKIP))
        if bad.any():
            raise ConfigError(f"labels must be 0, 1, {EQUAL} (equal) or {SKIP} (skip), got {y[bad][:5].tolist()}")
        keep = (y == 0) | (y == 1) | ((y == EQUAL) & (self.equal == "half"))
        if keep.any():
            self.labels_a.append(np.ascontiguousarray(a[keep]))
            self.labels_b.append(np.ascontiguousarray(b[keep]))
            self.labels_y.append(y[keep])
            if aa is not None:
                self.labels_act_a.append(np.ascontiguousarray(aa[keep]))
                self.labels_act_b.append(np.ascontiguousarray(ab[keep]))
        return int(keep.sum())

    def _segment_scores(self, net: nn.Module, x: np.ndarray, act: Optional[np.ndarray] = None) -> torch.Tensor:
        n, s = x.shape[:2]
        a = self._net_in(act.reshape(n * s, -1)) if act is not None else None
        r = net(self._net_in(x.reshape(n * s, *x.shape[2:])), a)
        return r.reshape(n, s).sum(1)

    def fit(self) -> dict[str, float]:
        """Fit the ensemble on every label kept so far (see the module docstring). Returns ``labels``, ``epochs``
        run, the last pass's ``acc`` (mean over members) and ``loss``, and ``seconds``."""
        self._need_nets()
        t0 = time.perf_counter()
        n = self.num_labels
        if n == 0:
            out = {"labels": 0, "epochs": 0, "acc": float("nan"), "loss": float("nan"), "seconds": 0.0}
            self.history.append(out)
            return out
        A = np.concatenate(self.labels_a)
        B = np.concatenate(self.labels_b)
        AA = np.concatenate(self.labels_act_a) if self.spec.action_dim else None
        AB = np.concatenate(self.labels_act_b) if self.spec.action_dim else None
        Y = torch.as_tensor(np.concatenate(self.labels_y), device=self.device)
        bs = self.fit_batch
        acc = loss_mean = float("nan")
        epochs = 0
        self.members.train()
        for _ in range(self.epochs):
            perms = [self.rng.permutation(n) for _ in range(self.ensemble_size)]
            correct = np.zeros(self.ensemble_size)
            losses = []
            for s in range(0, n, bs):
                self.opt.zero_grad(set_to_none=True)
                total = 0.0
                for k, net in enumerate(self.members):
                    idx = perms[k][s:s + bs]
                    r1 = self._segment_scores(net, A[idx], AA[idx] if AA is not None else None)
                    r2 = self._segment_scores(net, B[idx], AB[idx] if AB is not None else None)
                    loss, c = bradley_terry_loss(self.logit_scale * r1, self.logit_scale * r2,
                                                 Y[torch.as_tensor(idx, device=self.device)], equal=self.equal)
                    total = total + loss
                    correct[k] += float(c)
                    losses.append(float(loss.detach()))
                total.backward()
                self.opt.step()
            epochs += 1
            acc = float((correct / n).mean())
            loss_mean = float(np.mean(losses))
            if acc > self.target_acc:
                break
        self.members.eval()
        out = {"labels": n, "epochs": epochs, "acc": acc, "loss": loss_mean, "seconds": time.perf_counter() - t0}
        self.history.append({k: v for k, v in out.items() if k != "seconds"})
        return out

    @torch.no_grad()
    def accuracy(self, first: np.ndarray, second: np.ndarray, labels: Sequence[int], *,
                 actions_first: Any = None, actions_second: Any = None) -> float:
        """Share of pairs (labels 0/1 only) whose ensemble-mean segment scores order them as labelled."""
        y = np.asarray(labels).reshape(-1)
        a, b = np.asarray(first), np.asarray(second)
        if a.ndim == len(self.spec.net_shape) + 1:
            a, b = a[:, None], b[:, None]
        m = (y == 0) | (y == 1)
        if not m.any():
            return float("nan")
        n, s = a.shape[:2]
        aa = self._pair_actions(actions_first, n, s, "first")
        ab = self._pair_actions(actions_second, n, s, "second")
        ra = self.rewards(a[m].reshape(-1, *a.shape[2:]),
                          aa[m].reshape(-1, aa.shape[-1]) if aa is not None else None).reshape(-1, s).sum(1)
        rb = self.rewards(b[m].reshape(-1, *b.shape[2:]),
                          ab[m].reshape(-1, ab.shape[-1]) if ab is not None else None).reshape(-1, s).sum(1)
        return float(((rb > ra).astype(int) == y[m]).mean())

    # ---- state (checkpoints) and model folders
    def settings(self) -> dict:
        return {"ensemble": self.ensemble_size, "lr": self.lr, "fit_batch_size": self.fit_batch_size,
                "epochs": self.epochs, "target_acc": self.target_acc, "equal": self.equal, "segment": self.segment,
                "seed": self.seed, "frames": self.frames, "actions": self.actions, "logit_scale": self.logit_scale}

    def state_dict(self) -> dict:
        """Weights, the optimizer, the kept labels, the fit RNG and history, and the online loop's state: what an
        exact resume needs."""
        self._need_nets()
        shape = (0, self.segment, *self.spec.net_shape)
        dtype = np.uint8 if self.spec.pixel else np.float32
        state = {
            "spec": self.spec.to_json(),
            "settings": self.settings(),
            "members": {k: v.detach().clone() for k, v in self.members.state_dict().items()},
            "optimizer": _optimizer_state(self.opt),
            "labels_a": np.concatenate(self.labels_a) if self.labels_a else np.zeros(shape, dtype),
            "labels_b": np.concatenate(self.labels_b) if self.labels_b else np.zeros(shape, dtype),
            "labels_y": np.concatenate(self.labels_y) if self.labels_y else np.zeros(0, np.int64),
            "rng": self.rng.bit_generator.state,
            "history": json.dumps(self.history),
        }
        if self.spec.action_dim:
            empty = np.zeros((0, self.segment, self.spec.action_dim), np.float32)
            state["labels_act_a"] = np.concatenate(self.labels_act_a) if self.labels_act_a else empty
            state["labels_act_b"] = np.concatenate(self.labels_act_b) if self.labels_act_b else empty
        if self.online is not None:
            state["online"] = self.online.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        spec = InputSpec.from_json(state["spec"])
        if self.spec is None:
            self._build(spec)
        elif spec != self.spec:
            raise ConfigError(f"the checkpoint's preference model reads {_describe(spec)}, this one "
                              f"{_describe(self.spec)}")
        self.members.load_state_dict({k: torch.as_tensor(v) for k, v in state["members"].items()})
        _load_optimizer_state(self.opt, state["optimizer"])
        y = np.asarray(state["labels_y"], dtype=np.int64)
        self.labels_a = [np.asarray(state["labels_a"])] if y.size else []
        self.labels_b = [np.asarray(state["labels_b"])] if y.size else []
        self.labels_y = [y] if y.size else []
        if self.spec.action_dim:
            self.labels_act_a = [np.asarray(state["labels_act_a"], np.float32)] if y.size else []
            self.labels_act_b = [np.asarray(state["labels_act_b"], np.float32)] if y.size else []
        self.rng.bit_generator.state = state["rng"]
        self.history = json.loads(state["history"])
        if self.online is not None:
            if "online" not in state:
                raise ConfigError("the checkpoint's preference model was not learning online; resume with the "
                                  "original --reward spec")
            self.online.load_state_dict(state["online"])

    def save(self, folder: str | os.PathLike, *, extra: Optional[dict] = None) -> Path:
        """Write a model folder (``preference_model.json`` + ``ensemble.safetensors``), atomically per file; the
        labels are not included (they stay in the run's checkpoints or the label queue)."""
        from safetensors.torch import save_file

        from pixelrl.utils.atomic import storage_errors, write_json_atomic

        self._need_nets()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (WEIGHTS_FILE + ".tmp")
        with storage_errors(folder / WEIGHTS_FILE, cleanup=(tmp,)):
            save_file({k: v.detach().cpu().contiguous() for k, v in self.members.state_dict().items()}, str(tmp))
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, folder / WEIGHTS_FILE)
        write_json_atomic(folder / MODEL_FILE, {"format": FORMAT, "version": 1, "spec": self.spec.to_json(),
                                                "settings": self.settings(), "labels": self.num_labels,
                                                "history": self.history, **(extra or {})})
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, mode: str = "replace", scale: float = 1.0, batch_size: int = 64,
             device: str | torch.device = "cpu") -> "PreferenceRewardModel":
        """A model folder written by :meth:`save`, or a run folder whose checkpoints hold an online-learned model
        (the latest checkpoint's)."""
        return load_preference_model(folder, mode=mode, scale=scale, batch_size=batch_size, device=device)


def load_preference_model(folder: str | os.PathLike, *, mode: str = "replace", scale: float = 1.0,
                          batch_size: int = 64, device: str | torch.device = "cpu") -> PreferenceRewardModel:
    """See :meth:`PreferenceRewardModel.load`; a folder that is neither is one line saying what to pass."""
    folder = Path(folder)
    if (folder / MODEL_FILE).is_file():
        try:
            meta = json.loads((folder / MODEL_FILE).read_text())
            if meta.get("format") != FORMAT:
                raise ValueError("not a preference model file")
            spec, settings = InputSpec.from_json(meta["spec"]), meta["settings"]
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptFileError(f"{folder / MODEL_FILE} is not a readable preference model description ({e})")
        model = PreferenceRewardModel(spec, mode=mode, scale=scale, batch_size=batch_size, device=device,
                                      **_settings_kwargs(settings))
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            weights = load_file(str(folder / WEIGHTS_FILE))
            model.members.load_state_dict(weights)
        except (FileNotFoundError, SafetensorError, RuntimeError, OSError) as e:
            raise CorruptFileError(f"{folder / WEIGHTS_FILE} does not hold this model's weights "
                                   f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        model.history = list(meta.get("history", []))
        model.members.eval()
        return model
    if (folder / "checkpoints" / "latest.json").is_file():
        from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint

        state = load_checkpoint(latest_checkpoint(folder / "checkpoints"))
        rm = state.get("reward_model")
        if not isinstance(rm, dict) or "members" not in rm:
            raise ConfigError(f"{folder} is a run folder whose checkpoints hold no preference reward model (it was "
                              "not trained with --reward prefs:...)")
        spec, settings = InputSpec.from_json(rm["spec"]), rm["settings"]
        model = PreferenceRewardModel(spec, mode=mode, scale=scale, batch_size=batch_size, device=device,
                                      **_settings_kwargs(settings))
        model.members.load_state_dict({k: torch.as_tensor(v) for k, v in rm["members"].items()})
        model.history = json.loads(rm["history"])
        model.members.eval()
        return model
    if not folder.exists():
        raise NotFoundError(f"preference model folder {folder} does not exist; pass a folder written by "
                            "PreferenceRewardModel.save / `pixelrl label QUEUE --fit DIR`, or a run folder trained "
                            "with --reward prefs:scripted|vlm|person")
    raise ConfigError(f"{folder} holds neither {MODEL_FILE} (a fitted preference model) nor checkpoints/ of a run "
                      "trained with --reward prefs:...; pass one of those")


def _settings_kwargs(settings: dict) -> dict:
    """Constructor arguments from a saved ``settings`` block (models saved before ``frames`` / ``actions`` /
    ``logit_scale`` existed read one frame and no action, and fitted with scale 1)."""
    out = {k: settings[k] for k in ("ensemble", "lr", "fit_batch_size", "epochs", "target_acc", "equal", "segment",
                                    "seed")}
    out["frames"], out["actions"] = int(settings.get("frames", 1)), bool(settings.get("actions", False))
    out["logit_scale"] = float(settings.get("logit_scale", 1.0))
    return out


def _describe(spec: InputSpec) -> str:
    where = f" under key {spec.key!r}" if spec.key else ""
    extra = "" if spec.frames == 1 else f" ({spec.frames} stacked)"
    extra += f" with {spec.action_dim}-d actions" if spec.action_dim else ""
    if spec.pixel:
        return f"{spec.shape[0]}-channel {spec.shape[1]}x{spec.shape[2]} frames{where}{extra}"
    return f"{spec.shape[0]}-d states{where}{extra}"


def _optimizer_state(opt: torch.optim.Optimizer) -> dict:
    sd = opt.state_dict()
    state = {str(k): {n: (t.detach().clone() if isinstance(t, torch.Tensor) else t) for n, t in v.items()}
             for k, v in sd["state"].items()}  # copies: the optimizer keeps updating its own tensors in place
    return {"state": state, "param_groups": json.dumps(sd["param_groups"])}


def _load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    opt.load_state_dict({"state": {int(k): v for k, v in state["state"].items()},
                         "param_groups": json.loads(state["param_groups"])})


# ------------------------------------------------------------------------------------------- the online loop


@dataclass(frozen=True)
class Schedule:
    """PEBBLE's feedback schedule as RL-VLM-F runs it (defaults: its run.sh for CartPole)."""

    query_batch: int = 50
    """Pairs sent per round (``reward_batch``)."""
    query_every: int = 5000
    """Agent steps between rounds after the first (``num_interact``)."""
    max_queries: int = 10000
    """Pairs sent in all, dropped ones included (``max_feedback``); the last round sends what is left."""
    first_query: Optional[int] = None
    """Agent step of the first round; None: when the agent's warm-up (random seed steps) ends."""


class OnlinePreferenceLoop:
    """The online part of a preference model: counts the agent steps stored through
    :class:`~pixelrl.rewards.wrapper.RewardedReplay`, keeps the env's reward of every replay slot (the scripted
    oracle compares true returns; relabelling combines with them), and runs a round -- sample, query, fit, relabel
    the replay -- when the schedule says so. Its whole state is in the model's ``state_dict`` (exact resume)."""

    def __init__(self, model: PreferenceRewardModel, oracle: Any, schedule: Schedule, *, seed: int = 0) -> None:
        self.model, self.oracle, self.schedule = model, oracle, schedule
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
        self.first_query = schedule.first_query
        self.steps = 0
        self.next_query: Optional[int] = None
        self.sent = 0
        self.kept = 0
        self.rounds = 0
        self.last: dict = {}
        self._ring: Optional[np.ndarray] = None  # env reward of absolute slot g at g % len
        self._hi = 0
        self._run = 0  # steps recorded since the last episode start
        self._longest = 0  # the most consecutive steps of one episode recorded so far
        self.replay: Any = None
        self.seconds = 0.0

    # ---- wiring
    def check_oracle(self, spec: InputSpec) -> None:
        check = getattr(self.oracle, "check", None)
        if check is not None:
            check(spec)

    def set_warmup(self, seed_steps: int) -> None:
        """The agent's warm-up length (its random seed steps): the first round, unless ``first_query`` is set."""
        if self.first_query is None:
            self.first_query = max(int(seed_steps), 1)

    def attach(self, replay: Any) -> None:
        self.replay = replay
        n = int(replay.capacity) + 1
        if self._ring is None or len(self._ring) != n:
            self._ring = np.zeros(n, dtype=np.float32)

    def record(self, env_reward: Optional[float]) -> None:
        """One replay slot was written: an episode's first observation (None) or a step with the env's reward."""
        self._ring[self._hi % len(self._ring)] = 0.0 if env_reward is None else env_reward
        self._hi += 1
        self._run = 0 if env_reward is None else self._run + 1
        self._longest = max(self._longest, self._run)

    def due(self) -> bool:
        if self.sent >= self.schedule.max_queries:
            return False
        if self.next_query is None:
            return self.steps >= (self.first_query if self.first_query is not None else 1)
        return self.steps >= self.next_query

    def step(self, store: Any) -> Optional[dict]:
        """Called after every stored agent step; runs a round when one is due. ``store`` is the
        :class:`~pixelrl.rewards.wrapper.RewardedReplay` (flushed first so every step is in the replay)."""
        self.steps += 1
        if not self.due():
            return None
        store.flush()
        return self.round()

    # ---- one round
    def round(self) -> dict:
        if self._longest < self.model.segment:
            # no episode has had `segment` steps yet: no segment fits, and a round would only copy the whole
            # replay to find that out -- at every step while it stays so (e.g. segments longer than the episodes)
            return {}
        t0 = time.perf_counter()
        model, replay = self.model, self.replay
        state = replay.state_dict()
        meta, arrays = state["meta"], state["arrays"]
        lo, hi = int(meta["lo"]), int(meta["hi"])
        if hi != self._hi:
            raise RuntimeError(f"the preference loop recorded {self._hi} replay slots but the replay holds up to "
                               f"{hi}: the replay was changed outside RewardedReplay")
        n_ring = len(self._ring)
        env_r = self._ring[np.arange(lo, hi) % n_ring]
        k = min(self.schedule.query_batch, self.schedule.max_queries - self.sent)
        query = draw_pairs(model, arrays["first"], arrays["ep_start"], env_r.astype(np.float64),
                           lambda rows: self._gather(arrays, lo, rows), k, self.rng, round=self.rounds)
        if query is None:  # nothing stored that fits a segment yet: try again at the next step
            return {}
        labels = np.asarray(self.oracle.label(query), dtype=np.int64)
        kept = model.add_labels(query.first, query.second, labels, actions_first=query.actions_first,
                                actions_second=query.actions_second)
        self.sent += k
        self.kept += kept
        fit = model.fit()
        from pixelrl.rewards.relabel import relabel_replay

        relabel_replay(replay, model, base_rewards=env_r)
        self.rounds += 1
        self.next_query = self.steps + self.schedule.query_every
        truth = (query.returns_first < query.returns_second).astype(np.int64)
        answered = (labels == 0) | (labels == 1)
        self.last = {"pref_round": self.rounds, "pref_sent": self.sent, "pref_labels": self.kept,
                     "pref_fit_acc": fit["acc"], "pref_fit_epochs": fit["epochs"],
                     "pref_label_agreement": float((labels[answered] == truth[answered]).mean())
                     if answered.any() else float("nan")}
        self.seconds += time.perf_counter() - t0
        return self.last

    def _inputs(self, arrays: dict) -> np.ndarray:
        """What the replay stores per live slot for the nets' input (the slot's frame or state)."""
        from pixelrl.data.replay import parse_obs_space

        keys = parse_obs_space(self.replay.observation_space, self.replay.frame_stack, store="the replay stores")
        spec = self.model.spec
        for i, key in enumerate(keys):
            if key.name == spec.key:
                return arrays[f"obs_{i}"]
        raise ConfigError(f"the replay stores no observation entry {spec.key!r}")

    def _gather(self, arrays: dict, lo: int, rows: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Net inputs ``[*rows.shape, *net_shape]`` of these live-slot rows -- the slot's frame, or with
        ``frames`` K the K frames ending there (clamped to the episode's reset frame, as the env stacks them) --
        and, when the nets read actions, the action stored with each slot (the one that led to it)."""
        spec = self.model.spec
        x = self._inputs(arrays)
        if spec.pixel and spec.frames > 1:
            x = stack_slots(x, rows, np.maximum(np.asarray(arrays["ep_start"], np.int64) - lo, 0), spec.frames)
        else:
            x = x[rows]
        acts = None
        if spec.action_dim:
            acts = np.asarray(arrays["action"][rows], dtype=np.float32).reshape(*rows.shape, spec.action_dim)
        return x, acts

    def stats(self) -> dict[str, float]:
        """What the train rows log: pairs sent, labels kept, rounds, and the last fit's accuracy."""
        return {"pref_sent": float(self.sent), "pref_labels": float(self.kept), "pref_rounds": float(self.rounds),
                "pref_fit_acc": float(self.last.get("pref_fit_acc", float("nan")))}

    # ---- state
    def state_dict(self) -> dict:
        oracle_state = getattr(self.oracle, "state_dict", None)
        return {"steps": self.steps, "next_query": -1 if self.next_query is None else self.next_query,
                "first_query": -1 if self.first_query is None else self.first_query,
                "sent": self.sent, "kept": self.kept, "rounds": self.rounds, "hi": self._hi,
                "run": self._run, "longest": self._longest,
                "ring": self._ring if self._ring is not None else np.zeros(0, np.float32),
                "rng": self.rng.bit_generator.state, "last": json.dumps(self.last),
                "oracle": oracle_state() if oracle_state is not None else {}}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.sent, self.kept = int(state["steps"]), int(state["sent"]), int(state["kept"])
        self.rounds, self._hi = int(state["rounds"]), int(state["hi"])
        # checkpoints written before these counters: assume a segment fits (the round checks the replay itself)
        self._run = int(state.get("run", 0))
        self._longest = int(state.get("longest", self.model.segment))
        nq, fq = int(state["next_query"]), int(state["first_query"])
        self.next_query = None if nq < 0 else nq
        self.first_query = None if fq < 0 else fq
        ring = np.asarray(state["ring"], dtype=np.float32)
        if self._ring is not None and len(ring) != len(self._ring):
            raise ConfigError(f"the checkpoint's preference loop kept {len(ring)} replay slots, this replay has "
                              f"{len(self._ring)}: the replay capacity changed; put it back to resume")
        self._ring = ring.copy()
        self.rng.bit_generator.state = state["rng"]
        self.last = json.loads(state["last"])
        load = getattr(self.oracle, "load_state_dict", None)
        if load is not None:
            load(state.get("oracle", {}))


@dataclass
class PairQuery:
    """A batch of pairs to compare: net inputs ``[n, segment, *net_shape]`` of each side, their true returns where
    known (the env's rewards summed over the segment; None offline without rewards), the round number (a person's
    queue keeps one batch per round), whether the inputs are frames, one frame's channels (None: the inputs are
    single frames) and, for nets that read actions, each step's action ``[n, segment, A]``."""

    first: np.ndarray
    second: np.ndarray
    returns_first: Optional[np.ndarray] = None
    returns_second: Optional[np.ndarray] = None
    round: int = 0
    pixel: bool = True
    channels: Optional[int] = None
    actions_first: Optional[np.ndarray] = None
    actions_second: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.first)

    def frames(self) -> tuple[np.ndarray, np.ndarray]:
        """``uint8 [n, segment, H, W, 3]`` of each side (the newest frame of stacked inputs), for a VLM or a
        person."""
        if not self.pixel:
            raise ConfigError("this oracle compares images, but the preference model reads states")
        c = self.channels
        if c is None:
            return to_rgb(self.first), to_rgb(self.second)
        return to_rgb(self.first[..., -c:, :, :]), to_rgb(self.second[..., -c:, :, :])


# ------------------------------------------------------------------------------------------- offline


def fit_from_dataset(dataset: Any, oracle: Any, *, queries: int, out: Optional[str | os.PathLike] = None,
                     model: Optional[PreferenceRewardModel] = None, query_batch: int = 50, seed: int = 0,
                     **model_kwargs: Any) -> PreferenceRewardModel:
    """Offline RL-VLM-F: draw ``queries`` pairs of steps uniformly from a dataset (``pixelrl.data.dataset``
    folder or :class:`~pixelrl.data.dataset.OfflineDataset`), label them with ``oracle`` in batches of
    ``query_batch``, fit the model once on all labels, and save it to ``out`` (a model folder for
    ``--reward prefs:DIR``). Each step is represented by its next observation, the image the offline paper scores."""
    from pixelrl.data.dataset import OfflineDataset, load_dataset

    ds = dataset if isinstance(dataset, OfflineDataset) else load_dataset(dataset)
    if model is None:
        model = PreferenceRewardModel(seed=seed, **model_kwargs)
    model.bind(ds.observation_space, ds.frame_stack, ds.action_space)
    inputs, rewards, first, ep_start = dataset_steps(ds, model.spec)
    acts = dataset_actions(ds) if model.spec.action_dim else None
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))
    sent = 0
    while sent < queries:
        k = min(query_batch, queries - sent)
        q = draw_pairs(model, first, ep_start, rewards,
                       lambda rows: (inputs[rows], acts[rows] if acts is not None else None), k, rng,
                       round=sent // query_batch)
        if q is None:
            raise ConfigError(f"the dataset has no {model.segment} consecutive steps of one episode to compare")
        model.add_labels(q.first, q.second, oracle.label(q), actions_first=q.actions_first,
                         actions_second=q.actions_second)
        sent += k
    model.fit()
    if out is not None:
        model.save(out, extra={"dataset": str(ds.path), "queries": queries})
    return model


def draw_pairs(model: PreferenceRewardModel, first: np.ndarray, ep_start: np.ndarray, rewards: np.ndarray,
               gather: Any, n: int, rng: np.random.Generator, *, round: int = 0) -> Optional[PairQuery]:
    """``n`` pairs of the model's segments, each side drawn uniformly among the rows laid out like replay slots
    (``first`` / ``ep_start``; :func:`sample_segment_starts`), as the query an oracle answers: ``gather(rows)`` gives
    the net inputs and the actions (or None) of row indices ``[n, segment]``, ``rewards`` the per-row reward summed
    into each side's true return. None when no segment fits yet. Shared by the online rounds, :func:`fit_from_dataset`
    and the benchmark's fits on a saved replay."""
    seg = model.segment
    a0 = sample_segment_starts(first, ep_start, n, seg, rng)
    b0 = sample_segment_starts(first, ep_start, n, seg, rng)
    if a0.size == 0:
        return None
    ra, rb = segment_rows(a0, seg), segment_rows(b0, seg)
    (xa, aa), (xb, ab) = gather(ra), gather(rb)
    return PairQuery(xa, xb, rewards[ra].sum(1), rewards[rb].sum(1), round=round, pixel=model.spec.pixel,
                     channels=model.spec.shape[0] if model.spec.pixel else None, actions_first=aa, actions_second=ab)


def dataset_steps(ds: Any, spec: InputSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every step of a dataset laid out like replay slots: per episode its first observation, then one row per
    step holding the step's next observation (net input) and reward. Returns ``(inputs, rewards, first,
    ep_start)``."""
    xs, rs, fs, es = [], [], [], []
    row = 0
    for ep in ds.iter_episodes(stacked=True):
        obs = extract_inputs(ep["observations"], spec)  # [T+1, ...]
        t = len(ep["rewards"])
        xs.append(obs)
        rs.append(np.concatenate([[0.0], np.asarray(ep["rewards"], dtype=np.float64)]))
        f = np.zeros(t + 1, dtype=bool)
        f[0] = True
        fs.append(f)
        es.append(np.full(t + 1, row, dtype=np.int64))
        row += t + 1
    if not xs:
        raise ConfigError(f"dataset {ds.path} holds no episodes")
    return np.concatenate(xs), np.concatenate(rs), np.concatenate(fs), np.concatenate(es)


def dataset_actions(ds: Any) -> np.ndarray:
    """float32 ``[rows, A]``: the action of each row of :func:`dataset_steps` (the one that led to the row's
    observation; zeros on each episode's first row, which is never a step)."""
    out = []
    for ep in ds.iter_episodes(stacked=False):
        a = np.asarray(ep["actions"], dtype=np.float32).reshape(len(ep["actions"]), -1)
        out.append(np.concatenate([np.zeros((1, a.shape[1]), np.float32), a]))
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------- --reward prefs:...


def _oracle_name(cfg: Any) -> Optional[str]:
    from pixelrl.rewards.oracles import ORACLES

    arg = cfg.argument.strip()
    return arg if arg in ORACLES else None


def check_config(cfg: Any) -> dict:
    """Check the ``prefs:`` fields of a :class:`~pixelrl.rewards.base.RewardConfig` (one ConfigError line each)."""
    ints = {"pref_ensemble": 1, "pref_epochs": 1, "pref_segment": 1, "query_batch": 1, "query_every": 1,
            "max_queries": 1, "pref_frames": 1}
    for name, lo in ints.items():
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"--reward.{name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")
    for name in ("pref_fit_batch", "first_query"):
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"--reward.{name.replace('_', '-')} must be an integer >= 1 (or None), got {v!r}")
    for name, lo, hi in (("pref_lr", 0.0, None), ("pref_logit_scale", 0.0, None), ("pref_target_acc", 0.0, 1.0),
                         ("oracle_noise", 0.0, 1.0), ("oracle_equal_rate", 0.0, 1.0)):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo or \
                (hi is not None and v > hi) or (name in ("pref_lr", "pref_logit_scale") and v <= 0):
            rng = f"in [{lo:g}, {hi:g}]" if hi is not None else "> 0"
            raise ConfigError(f"--reward.{name.replace('_', '-')} must be a number {rng}, got {v!r}")
    if cfg.pref_equal not in ("drop", "half"):
        raise ConfigError(f"--reward.pref-equal must be drop or half, got {cfg.pref_equal!r}")
    if not isinstance(cfg.pref_actions, bool):
        raise ConfigError(f"--reward.pref-actions must be true or false, got {cfg.pref_actions!r}")
    oracle = _oracle_name(cfg)
    if oracle == "person" and (cfg.pref_frames != 1 or cfg.pref_actions):
        raise ConfigError("--reward prefs:person labels single frames in the label queue; --reward.pref-frames and "
                          "--reward.pref-actions work with prefs:scripted and prefs:vlm")
    if oracle is None and (cfg.pref_frames != 1 or cfg.pref_actions or cfg.pref_logit_scale != 1.0):
        raise ConfigError("--reward.pref-frames, --reward.pref-actions and --reward.pref-logit-scale describe a model "
                          "learned online; a fitted model folder keeps its own inputs and fit (leave them out)")
    if oracle == "person" and not (isinstance(cfg.queue, str) and cfg.queue.strip()):
        raise ConfigError("--reward prefs:person needs --reward.queue DIR, the label queue a person answers with "
                          "`pixelrl label DIR`")
    if oracle == "vlm":
        if not (isinstance(cfg.goal, str) and cfg.goal.strip()):
            raise ConfigError("--reward prefs:vlm needs --reward.goal 'SENTENCE' (e.g. 'to balance the brown pole on "
                              "the black cart to be upright')")
        if not (isinstance(cfg.vlm, str) and cfg.vlm.strip()):
            raise ConfigError("--reward prefs:vlm needs --reward.vlm DIR, a local transformers vision-language model "
                              "folder (none is downloaded)")
        if not (Path(cfg.vlm) / "config.json").is_file():
            raise ConfigError(f"--reward.vlm {cfg.vlm} is not a transformers model folder (no config.json); pass a "
                              "local vision-language model folder")
    if oracle is None:
        folder = Path(cfg.argument.strip())
        if not folder.exists():
            raise ConfigError(f"--reward {cfg.spec!r}: {folder} does not exist; pass prefs:scripted, prefs:vlm, "
                                "prefs:person (learn online) or a fitted model / run folder")
        if not ((folder / MODEL_FILE).is_file() or (folder / "checkpoints" / "latest.json").is_file()):
            raise ConfigError(f"--reward {cfg.spec!r}: {folder} holds neither {MODEL_FILE} (a fitted preference "
                              "model) nor checkpoints/ of a run trained with --reward prefs:...")
    return {}


def check_space(space: Any, frame_stack: int) -> InputSpec:
    """One ConfigError line when a ``prefs:`` reward cannot read these observations (checked before any model is
    built)."""
    return input_spec(space, frame_stack)


def build(cfg: Any, device: Any) -> PreferenceRewardModel:
    """The model a ``prefs:`` config describes: a fresh ensemble learning online from the oracle named, or a fitted
    model loaded from a folder. The online model's seed is drawn from torch's global generator (seeded with the
    run's seed before the model is built), so a run's seed fixes it."""
    oracle_name = _oracle_name(cfg)
    if oracle_name is None:
        return load_preference_model(cfg.argument.strip(), mode=cfg.mode, scale=cfg.scale,
                                     batch_size=cfg.batch_size, device=device)
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    model = PreferenceRewardModel(ensemble=cfg.pref_ensemble, lr=cfg.pref_lr, fit_batch_size=cfg.pref_fit_batch,
                                  epochs=cfg.pref_epochs, target_acc=cfg.pref_target_acc, equal=cfg.pref_equal,
                                  segment=cfg.pref_segment, mode=cfg.mode, scale=cfg.scale,
                                  batch_size=cfg.batch_size, device=device, seed=seed, frames=cfg.pref_frames,
                                  actions=cfg.pref_actions, logit_scale=cfg.pref_logit_scale)
    from pixelrl.rewards import oracles

    if oracle_name == "scripted":
        oracle = oracles.ScriptedOracle(cfg.oracle_noise, cfg.oracle_equal_rate, seed=seed)
    elif oracle_name == "vlm":
        oracle = oracles.VLMOracle(oracles.TransformersVLM(cfg.vlm, device=str(device)), cfg.goal)
    else:
        oracle = oracles.PersonOracle(cfg.queue, segment=cfg.pref_segment, goal=cfg.goal)
    schedule = Schedule(query_batch=cfg.query_batch, query_every=cfg.query_every, max_queries=cfg.max_queries,
                        first_query=cfg.first_query)
    model.online = OnlinePreferenceLoop(model, oracle, schedule, seed=seed)
    return model
