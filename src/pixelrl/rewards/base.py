"""The reward-model protocol, the reward configuration (``--reward SPEC`` and ``--reward.*``), spec parsing and the
registry of reward kinds.

A reward model maps a batch of transitions to one float32 reward each. The trainer, the replay relabeller and the
dataset relabeller all call it the same way::

    rewards = model(obs, actions=actions, next_obs=next_obs)      # float32 [B]

``obs`` / ``next_obs`` are observations as the environment returns them, batched: ``uint8 [B, S*C, H, W]`` frame
stacks (oldest frame first, so the newest frame is the last ``C`` channels: the last 3 for RGB), ``float32 [B, d]``
states, or a dict of those. The reward of a transition ``(o_t, a_t, o_{t+1})`` is the reward of the step that led to
``o_{t+1}``, as the environment's own reward is; a model that scores states scores ``next_obs`` (VLM-RM scores the
frame rendered after the step). A model says what it reads in ``needs`` so that callers build only that.

This module imports neither torch nor transformers: the trainer's config (:class:`RewardConfig`) lives here and the
command line reads it before anything heavy is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Protocol, runtime_checkable

import numpy as np

from pixelrl.errors import ConfigError

__all__ = ["RewardModel", "RewardConfig", "RewardKind", "REWARD_KINDS", "MODES", "parse_spec", "split_prompts",
           "build_reward_model", "bind_model", "check_observations", "combine", "split_reward_args",
           "reward_config_from_args", "accepted_specs"]

MODES = ("replace", "add")
INPUTS = ("obs", "actions", "next_obs")


@runtime_checkable
class RewardModel(Protocol):
    """What every reward model provides. Models that learn (preference models, classifiers) also have
    ``fit(...) -> dict[str, float]``; a frozen model (VLM-RM) has none."""

    mode: str
    """``replace``: the learner's reward is ``scale * r_model``; ``add``: ``r_env + scale * r_model``."""
    scale: float
    """Factor on the model's reward."""
    batch_size: int
    """Transitions scored per forward pass; callers may hand over more (the model splits them) or fewer."""
    needs: frozenset
    """Which of ``obs``, ``actions``, ``next_obs`` the model reads; callers pass None for the others."""

    def bind(self, observation_space: Any, frame_stack: int) -> None:
        """Check that the model can score observations of this space (frame-stacked ``frame_stack`` times) and
        record how to read them; raise :class:`ConfigError` (one line) otherwise. Called before training starts.
        A model whose nets read actions also takes ``action_space`` (see :func:`bind_model`)."""

    def __call__(self, obs: Any, *, actions: Any = None, next_obs: Any = None) -> np.ndarray:
        """float32 rewards ``[B]`` of a batch of transitions."""

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the model (a learned model's weights; a frozen model's fingerprint)."""

    def load_state_dict(self, state: dict) -> None:
        """Restore (or, for a frozen model, check) what :meth:`state_dict` returned."""


def bind_model(model: RewardModel, observation_space: Any, frame_stack: int, action_space: Any = None, *,
               where: str = "") -> None:
    """``model.bind`` as every caller does it: a model whose ``bind`` takes ``action_space`` (one whose nets read
    actions, e.g. ``prefs:`` with ``--reward.pref-actions``) also gets it and ``where`` (the caller, named in its
    error when it has no actions to give)."""
    import inspect

    if "action_space" in inspect.signature(model.bind).parameters:
        model.bind(observation_space, frame_stack, action_space, where=where)
    else:
        model.bind(observation_space, frame_stack)


def combine(model: RewardModel, env_reward: Any, model_reward: Any) -> np.ndarray:
    """The learner's reward from the env's and the model's: ``scale * r_model`` (``replace``) or
    ``r_env + scale * r_model`` (``add``), float32."""
    r = np.float32(model.scale) * np.asarray(model_reward, dtype=np.float32)
    if model.mode == "add":
        r = np.asarray(env_reward, dtype=np.float32) + r
    return r.astype(np.float32)


# ------------------------------------------------------------------------------------------- spec parsing


class RewardKind(NamedTuple):
    """One kind of ``--reward`` spec: ``<name>:<argument>``."""

    name: str
    usage: str
    """The accepted form, e.g. ``vlm:<goal prompt>[|<goal prompt>...]``."""
    summary: str
    check: Callable[["RewardConfig"], dict]
    """Checks a config of this kind (one :class:`ConfigError` line) and returns resolved values of its fields."""
    build: Callable[["RewardConfig", Any], RewardModel]
    """``build(cfg, device)``: the model, loaded on ``device``."""
    check_space: Callable[[Any, int], Any]
    """``check_space(observation_space, frame_stack)``: one ConfigError line when the kind cannot score such
    observations (checked before the model is loaded)."""


def observation_array(obs: Any, key: Optional[str], what: str, hint: str = "") -> np.ndarray:
    """A batch of observations as the environment gives them -> a NumPy array: the ``key`` entry of a dict
    observation (one ConfigError line naming ``what`` when it is missing, ``hint`` appended), a tensor moved to the
    CPU, anything else as ``np.asarray`` sees it."""
    if isinstance(obs, dict):
        if key is None or key not in obs:
            raise ConfigError(f"{what} got a dict observation without its entry {key!r} (keys {list(obs)}){hint}")
        obs = obs[key]
    if hasattr(obs, "detach"):  # a torch tensor (torch is not imported by this module)
        obs = obs.detach().cpu().numpy()
    return np.asarray(obs)


def image_layout(observation_space: Any, frame_stack: int, what: str) -> tuple[Optional[str], int, int, int]:
    """``(key, channels per frame, height, width)`` of the frames in observations of this space: ``key`` None for a
    plain image observation, else the dict entry (``pixels`` when there is one). One ConfigError line, naming
    ``what`` needs frames, when the observations hold none."""
    from gymnasium import spaces

    def is_image(s: Any) -> bool:
        return isinstance(s, spaces.Box) and s.dtype == np.uint8 and len(s.shape) == 3

    key, space = None, observation_space
    if isinstance(observation_space, spaces.Dict):
        images = [k for k, s in observation_space.spaces.items() if is_image(s)]
        key = "pixels" if "pixels" in observation_space.spaces else (images[0] if len(images) == 1 else None)
        if key is None:
            raise ConfigError(f"{what} scores frames, but the observation has no 'pixels' entry (keys "
                              f"{list(observation_space.spaces)}); use --obs pixels or pixels+state")
        space = observation_space.spaces[key]
    if not is_image(space):
        shape = getattr(space, "shape", None)
        raise ConfigError(f"{what} scores frames, but the observations are {getattr(space, 'dtype', '?')} "
                          f"{list(shape) if shape is not None else type(space).__name__}, not uint8 [C, H, W] images; "
                          "use pixel observations (--obs pixels or pixels+state)")
    stack = max(int(frame_stack), 1)
    c, h, w = (int(x) for x in space.shape)
    if c % stack:
        raise ConfigError(f"{what}: {c} channels are not a stack of {stack} frames")
    return key, c // stack, h, w


def _check_vlm(cfg: "RewardConfig") -> dict:
    from pixelrl.rewards.vlm import check_config

    return check_config(cfg)


def _build_vlm(cfg: "RewardConfig", device: Any) -> RewardModel:
    from pixelrl.rewards.vlm import VLMRewardModel

    return VLMRewardModel.from_config(cfg, device=device)


def _vlm_space(space: Any, frame_stack: int) -> Any:
    from pixelrl.rewards.vlm import image_key

    return image_key(space, frame_stack)


def _check_prefs(cfg: "RewardConfig") -> dict:
    from pixelrl.rewards.preference import check_config

    return check_config(cfg)


def _build_prefs(cfg: "RewardConfig", device: Any) -> RewardModel:
    from pixelrl.rewards.preference import build

    return build(cfg, device)


def _prefs_space(space: Any, frame_stack: int) -> Any:
    from pixelrl.rewards.preference import check_space

    return check_space(space, frame_stack)


def _check_classifier(cfg: "RewardConfig") -> dict:
    from pixelrl.rewards.classifier import check_config

    return check_config(cfg)


def _build_classifier(cfg: "RewardConfig", device: Any) -> RewardModel:
    from pixelrl.rewards.classifier import ClassifierReward

    return ClassifierReward.from_config(cfg, device=device)


def _frames_space(what: str) -> Callable[[Any, int], Any]:
    def check(space: Any, frame_stack: int) -> Any:
        return image_layout(space, frame_stack, what)

    return check


def _check_demo_reward(cfg: "RewardConfig") -> dict:
    from pixelrl.rewards.perceptual import check_config

    return check_config(cfg)


def _build_ot(cfg: "RewardConfig", device: Any) -> RewardModel:
    from pixelrl.rewards.perceptual import OTReward

    return OTReward.from_config(cfg, device=device)


def _build_perceptual(cfg: "RewardConfig", device: Any) -> RewardModel:
    from pixelrl.rewards.perceptual import PerceptualReward

    return PerceptualReward.from_config(cfg, device=device)


REWARD_KINDS: dict[str, RewardKind] = {
    "vlm": RewardKind("vlm", "vlm:<goal prompt>[|<goal prompt>...]",
                      "VLM-RM, the CLIP similarity of each frame to a sentence; options --reward.baseline, "
                      "--reward.alpha, --reward.model", _check_vlm, _build_vlm, _vlm_space),
    "classifier": RewardKind("classifier", "classifier:<folder>",
                             "a success classifier (SERL): 1 where the frame after a step shows success, else 0; "
                             "options --reward.threshold, --reward.end-on-success", _check_classifier,
                             _build_classifier, _frames_space("the success classifier")),
    "ot": RewardKind("ot", "ot:<demo dataset or frame folder>",
                     "RAPL's optimal-transport reward of each episode's frames against a preferred demonstration's; "
                     "options --reward.encoder, --reward.ot-eps, --reward.ot-iters", _check_demo_reward, _build_ot,
                     _frames_space("the OT reward")),
    "perceptual": RewardKind("perceptual", "perceptual:<demo dataset or folder of demo folders>",
                             "Sermanet et al.'s unsupervised perceptual reward from a few demos' features; options "
                             "--reward.encoder, --reward.subgoals, --reward.features", _check_demo_reward,
                             _build_perceptual, _frames_space("the perceptual reward")),
    "prefs": RewardKind("prefs", "prefs:scripted|vlm|person|<model or run folder>",
                        "a preference reward model (RL-VLM-F): learned online from an oracle's comparisons, or a "
                        "fitted one loaded from a folder; options --reward.query-batch, --reward.query-every, "
                        "--reward.max-queries, --reward.queue, ... (docs/rewards.md)", _check_prefs, _build_prefs,
                        _prefs_space),
}
"""The reward kinds ``--reward`` accepts, by the name before the colon."""


def accepted_specs() -> str:
    return "; ".join(f"{k.usage} ({k.summary})" for k in REWARD_KINDS.values())


def parse_spec(spec: Any) -> tuple[str, str]:
    """``'vlm:a pole upright'`` -> ``('vlm', 'a pole upright')``; anything else is one ConfigError line naming what
    was wrong and the accepted forms."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"--reward needs a spec, got {spec!r}; accepted: {accepted_specs()}")
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if not sep:
        if kind in REWARD_KINDS:
            raise ConfigError(f"--reward {spec!r} has no argument after '{kind}:'; use {REWARD_KINDS[kind].usage}")
        raise ConfigError(f"--reward {spec!r} is not a reward spec (no ':'); accepted: {accepted_specs()}")
    if kind not in REWARD_KINDS:
        raise ConfigError(f"--reward {spec!r}: unknown reward kind {kind!r}; accepted: {accepted_specs()}")
    if not arg.strip():
        raise ConfigError(f"--reward {spec!r} has nothing after '{kind}:'; use {REWARD_KINDS[kind].usage}")
    return kind, arg


def split_prompts(text: str, what: str) -> tuple[str, ...]:
    """``'a b|c d'`` -> ``('a b', 'c d')``; an empty prompt is one ConfigError line naming ``what``."""
    prompts = tuple(p.strip() for p in str(text).split("|"))
    if not prompts or any(not p for p in prompts):
        raise ConfigError(f"{what} {text!r} holds an empty prompt; give one or more non-empty prompts separated by '|'"
                          " (e.g. 'a pole standing upright|a balanced pole')")
    return prompts


@dataclass(frozen=True)
class RewardConfig:
    """A reward model that replaces or adds to the env's reward (``pixelrl train --reward SPEC``) or relabels a
    dataset (``pixelrl dataset relabel SRC --reward SPEC --out DST``). Options: ``--reward.mode``,
    ``--reward.scale``, ``--reward.batch-size``, ``--reward.device``, and for ``vlm:`` ``--reward.baseline``,
    ``--reward.alpha``, ``--reward.model``, ``--reward.autocast`` (see docs/rewards.md)."""

    spec: str
    """What gives the reward (``--reward SPEC``): ``vlm:<goal prompt>`` -- VLM-RM (Rocamonde et al. 2024), the CLIP
    similarity of the newest frame of each observation to a sentence; several goal prompts are separated by ``|``
    (their normalised embeddings are averaged). ``prefs:scripted`` / ``prefs:vlm`` / ``prefs:person`` -- a preference
    reward model (RL-VLM-F) learned during training from that oracle's comparisons; ``prefs:<folder>`` -- a fitted
    preference model (a model folder or a run trained with ``prefs:``), frozen."""
    mode: str = "replace"
    """``replace`` (VLM-RM: the learner sees only ``scale * r_model``) or ``add`` (``r_env + scale * r_model``: shaping
    on top of the task reward). Evaluation always reports the env's own return."""
    scale: float = 1.0
    """Factor on the model's reward in both modes (VLM-RM: 1)."""
    batch_size: int = 64
    """Frames per forward pass of the reward model. Online, steps are stored in the replay once their rewards are
    computed: every ``batch_size`` steps and at the end of each episode (see docs/rewards.md). Deviation: vlmrm uses
    1600 frames spread over its GPUs after whole episodes; on a CPU, chunks of 64 ran 1.5x faster than chunks of 16
    and 6.9x faster than one frame per call for ViT-B/32 (benchmarks/vlm_reward_throughput.py) while 1600 frames of
    224x224 would hold about 1 GB of input alone; raise it on a GPU."""
    device: Optional[str] = None
    """Device of the reward model: None = the training device (``pixelrl dataset relabel``: cuda if available), or
    ``cpu``, ``cuda``, ``cuda:1``..."""
    baseline: Optional[str] = None
    """``vlm:`` baseline prompt(s) b describing the scene without the goal (e.g. ``a cartpole``); several separated by
    ``|``, as many as goal prompts (vlmrm requires equal lengths). Needed when ``alpha`` > 0."""
    alpha: Optional[float] = None
    """``vlm:`` projection strength in [0, 1]: 0 = cosine similarity to the goal, 1 = only the component along the
    goal-baseline direction counts. None: 0.5 with a baseline (the value of the vlmrm README's config), 0 without one.
    (The authors' humanoid runs used 0 with a baseline given.)"""
    model: str = "openai/clip-vit-base-patch32"
    """``vlm:`` CLIP model in transformers format: a local folder (config.json, weights, tokenizer files) or a Hugging
    Face hub id (used from the local cache, downloaded when the network allows). Deviation: the authors used open_clip's
    ViT-bigG-14 laion2b_s39b_b160k (humanoid; hub id laion/CLIP-ViT-bigG-14-laion2B-39B-b160k, about 2.5B parameters)
    and ViT-g-14 in the README; the default is ViT-B/32, which runs on a CPU (docs/rewards.md has the measured
    frames/s). The paper reports that larger CLIP models give better rewards."""
    autocast: bool = True
    """``vlm:`` encode frames under fp16 autocast on CUDA, as the authors do (no effect on CPU, where it is fp32)."""
    threshold: Optional[float] = None
    """``classifier:`` success when the ensemble's probability is >= this; None: the threshold saved with the
    classifier (``pixelrl reward fit-classifier --threshold``, default SERL's 0.5; HIL-SERL uses 0.7 - 0.85)."""
    end_on_success: bool = False
    """``classifier:`` also end a training episode (terminated) at the first step the classifier calls a success,
    as SERL / HIL-SERL do (``done = done or success``). Evaluation episodes run to the env's own end."""
    encoder: Optional[str] = None
    """``ot:`` / ``perceptual:`` frozen image encoder: None or ``random`` -- DrQ-v2's conv net with fixed random
    weights (no pretrained weights can be downloaded here; RAPL uses an ImageNet ResNet-18 fine-tuned on preferences,
    Sermanet et al. an ImageNet Inception); a pixelrl run folder -- the encoder of that run's agent."""
    ot_eps: float = 1.0
    """``ot:`` entropic regularisation of Sinkhorn (RAPL's reference scripts: gamma = 1 (verify)); smaller is closer to
    exact OT and needs more iterations."""
    ot_iters: int = 100
    """``ot:`` Sinkhorn iterations (log domain)."""
    subgoals: int = 2
    """``perceptual:`` steps each demonstration is split into (the paper's n; its value per task (verify))."""
    features: int = 32
    """``perceptual:`` features kept per step (the paper selects a few per step; the count (verify))."""
    pref_ensemble: int = 3
    """``prefs:`` reward nets in the ensemble (RL-VLM-F: 3); the reward is their mean."""
    pref_lr: float = 3e-4
    """``prefs:`` Adam learning rate of the reward nets (RL-VLM-F's ``reward_lr`` for cartpole: 3e-4)."""
    pref_fit_batch: Optional[int] = None
    """``prefs:`` pairs per minibatch of a fit; None: RL-VLM-F's 64 for the image CNN, 128 for state MLPs."""
    pref_epochs: int = 50
    """``prefs:`` most passes over the labels per fit (``reward_update``: 50 in RL-VLM-F's cartpole run)."""
    pref_logit_scale: float = 1.0
    """``prefs:`` factor T on the segment scores in the Bradley-Terry fit, ``P(x1 > x2) = sigmoid(T (R1 - R2))``
    (RL-VLM-F: 1). Deviation when > 1: with tanh-bounded per-step rewards a single-step pair's logit gap is at most
    2, so noiseless labels push every step to -1 or +1 around the median and the learned reward becomes a
    threshold; T = 5 keeps it graded. The RL reward is still the ensemble mean in [-1, 1]."""
    pref_target_acc: float = 0.97
    """``prefs:`` a fit stops after the first pass whose training accuracy exceeds this (RL-VLM-F: 0.97)."""
    pref_equal: str = "drop"
    """``prefs:`` what "equal" answers do: ``drop`` (RL-VLM-F drops -1 labels) or ``half`` (PEBBLE's soft target)."""
    pref_segment: int = 1
    """``prefs:`` steps per compared segment (RL-VLM-F: 1, single frames); a segment's score sums its rewards."""
    pref_frames: int = 1
    """``prefs:`` how many of the observation stack's newest frames the reward net reads (1 .. the frame stack;
    RL-VLM-F: 1, the newest frame). Deviation when > 1: the frames are stacked as input channels so the net can see
    velocities, which an oracle's label at an action repeat depends on and one frame cannot show."""
    pref_actions: bool = False
    """``prefs:`` the reward net also reads the action that led to the scored frame, ``r(s', a)`` as PEBBLE's and
    SURF's reward nets on states (RL-VLM-F's image net reads none). Deviation when on: DMC's rewards carry a control
    cost that no frame shows. Box actions only."""
    query_batch: int = 50
    """``prefs:`` pairs sent to the oracle per round (``reward_batch``; RL-VLM-F's cartpole run.sh: 50)."""
    query_every: int = 5000
    """``prefs:`` agent steps between rounds (``num_interact``; cartpole: 5000)."""
    max_queries: int = 10000
    """``prefs:`` pairs sent in all, dropped ones included (``max_feedback``; cartpole: 10000)."""
    first_query: Optional[int] = None
    """``prefs:`` agent step of the first round; None: when the agent's random warm-up ends. Deviation: RL-VLM-F
    queries first after PEBBLE's state-entropy exploration (1000 steps for cartpole) and then resets the critic;
    here no update ever sees an unfitted reward, so there is nothing to reset."""
    oracle_noise: float = 0.0
    """``prefs:scripted`` share of labels flipped (PEBBLE's ``teacher_eps_mistake``; RL-VLM-F's runs: 0)."""
    oracle_equal_rate: float = 0.0
    """``prefs:scripted`` share of pairs answered "equal" at random, as an unsure VLM does."""
    queue: Optional[str] = None
    """``prefs:person`` the label queue folder a person labels with ``pixelrl label QUEUE`` (created if missing)."""
    goal: Optional[str] = None
    """``prefs:vlm`` the task's goal in the VLM prompts (RL-VLM-F's cartpole: 'to balance the brown pole on the black
    cart to be upright')."""
    vlm: Optional[str] = None
    """``prefs:vlm`` a local transformers vision-language model folder answering the two-stage query."""

    def __post_init__(self) -> None:
        kind, _ = parse_spec(self.spec)
        if self.mode not in MODES:
            raise ConfigError(f"--reward.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        s = self.scale
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise ConfigError(f"--reward.scale must be a finite number, got {s!r}")
        b = self.batch_size
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(f"--reward.batch-size must be an integer >= 1, got {b!r}")
        if self.device is not None and (not isinstance(self.device, str) or not self.device.strip()):
            raise ConfigError(f"--reward.device must be a device name such as cpu or cuda, got {self.device!r}")
        if self.end_on_success and kind != "classifier":
            raise ConfigError(f"--reward.end-on-success needs a success classifier (--reward classifier:DIR), not {kind}:")
        for name, value in REWARD_KINDS[kind].check(self).items():
            object.__setattr__(self, name, value)  # resolved values (e.g. alpha None -> 0.5), recorded in config.json

    @property
    def kind(self) -> str:
        return parse_spec(self.spec)[0]

    @property
    def argument(self) -> str:
        return parse_spec(self.spec)[1]


def check_observations(cfg: RewardConfig, observation_space: Any, frame_stack: int) -> None:
    """One ConfigError line when the reward ``cfg`` describes cannot score these observations; loads no model."""
    REWARD_KINDS[cfg.kind].check_space(observation_space, frame_stack)


def build_reward_model(cfg: RewardConfig, device: Any = "cpu") -> RewardModel:
    """The reward model ``cfg`` describes, loaded on ``cfg.device`` or else ``device``."""
    kind = REWARD_KINDS[cfg.kind]
    return kind.build(cfg, cfg.device if cfg.device is not None else device)


# ------------------------------------------------------------------------------------------- command line


def split_reward_args(argv: list[str]) -> tuple[Optional[str], list[str]]:
    """Remove ``--reward SPEC`` and every ``--reward.<option> VALUE`` from ``argv`` (in place); return the spec (None
    if not given; the last one wins) and the options as ``--<option> VALUE`` arguments."""
    spec, options, i = None, [], 0
    while i < len(argv):
        a = argv[i]
        key, eq, value = a.partition("=")
        if key == "--reward":
            if eq:
                spec = value
                del argv[i]
            elif i + 1 < len(argv):
                spec = argv[i + 1]
                del argv[i:i + 2]
            else:
                raise ConfigError(f"--reward needs a spec; accepted: {accepted_specs()}")
        elif key.startswith("--reward."):
            name = "--" + key[len("--reward."):].replace("_", "-")
            del argv[i]
            options.append(f"{name}={value}" if eq else name)
            if not eq and i < len(argv) and not argv[i].startswith("--"):
                options.append(argv.pop(i))
        else:
            i += 1
    return spec, options


def _option_names() -> dict[str, dataclasses.Field]:
    return {"--" + f.name.replace("_", "-"): f for f in dataclasses.fields(RewardConfig) if f.name != "spec"}


def reward_config_from_args(argv: list[str]) -> Optional[RewardConfig]:
    """Take ``--reward SPEC`` and ``--reward.*`` out of ``argv`` (in place) and build the :class:`RewardConfig`
    (None when neither is given). An unknown option, a value of the wrong type or a bad spec is one ConfigError
    line."""
    spec, options = split_reward_args(argv)
    if spec is None:
        if options:
            raise ConfigError(f"{' '.join(options[:1]).replace('--', '--reward.', 1)} needs --reward SPEC; accepted: "
                              f"{accepted_specs()}")
        return None
    known = _option_names()
    values: dict[str, Any] = {}
    i = 0
    while i < len(options):
        key, eq, value = options[i].partition("=")
        negated = key.startswith("--no-") and "--" + key[5:] in known
        f = known.get("--" + key[5:] if negated else key)
        if f is None:
            valid = ", ".join("--reward." + n[2:] for n in known)
            raise ConfigError(f"unknown option --reward.{key[2:]}; the reward options are {valid}")
        if str(f.type) == "bool":
            if eq:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ConfigError(f"--reward.{key[2:]} takes true or false, got {value!r}")
                values[f.name] = value.lower() in ("true", "1")
            else:
                values[f.name] = not negated
            i += 1
            continue
        if not eq:
            if i + 1 >= len(options) or options[i + 1].startswith("--"):
                raise ConfigError(f"--reward.{key[2:]} needs a value")
            value = options[i + 1]
            i += 1
        i += 1
        values[f.name] = _convert(f, value)
    return RewardConfig(spec=spec, **values)


def _convert(f: dataclasses.Field, value: str) -> Any:
    t = str(f.type)
    option = "--reward." + f.name.replace("_", "-")
    if "Optional" in t and value.lower() in ("none", "null"):
        return None
    try:
        if "float" in t:
            return float(value)
        if "int" in t:
            return int(value)
    except ValueError:
        kind = "a number" if "float" in t else "an integer"
        raise ConfigError(f"{option} must be {kind}, got {value!r}") from None
    return value

