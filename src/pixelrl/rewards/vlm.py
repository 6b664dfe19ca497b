"""VLM-RM (Rocamonde et al., "Vision-Language Models are Zero-Shot Reward Models for RL", ICLR 2024): the reward
of a frame is its CLIP similarity to a sentence describing the goal, optionally projected onto the direction from a
baseline sentence to the goal.

With ``x`` the normalised CLIP embedding of the frame, ``g`` the mean of the normalised goal-prompt embeddings and
``b`` the same for the baseline prompts (the means are not renormalised), ``d = g - b`` (a row vector)::

    P = alpha * d^T d / |d|^2 + (1 - alpha) * I
    reward = 1 - 1/2 * |(x - g) P|^2

alpha = 0 gives ``1 - |x - g|^2 / 2 = x.g + (1 - |g|^2) / 2``: the cosine similarity for one goal prompt. alpha = 1
keeps only the component of ``x - g`` along ``d``. This follows ``vlmrm/reward_model.py`` (``CLIPReward``) of
github.com/AlignmentResearch/vlmrm; the CLIP towers come from ``transformers`` instead of open_clip (open_clip drags
in a CUDA torchvision), so the model is a transformers CLIP checkpoint (``CLIPModel``), a folder or a hub id.

Preprocessing is the authors' (``vlmrm/contrib/open_clip/transform.py`` with torch 2.0.1 / torchvision 0.15 on
uint8 tensors): uint8 / 255, a bicubic resize straight to S x S (``align_corners=False``, no antialiasing: the aspect
ratio is not kept, so their centre crop that follows does nothing), then the OpenAI CLIP mean / std whatever the
model; frames are encoded under fp16 autocast on CUDA. Prompt embeddings are computed once, in fp32, and cached;
frames are encoded in chunks of ``batch_size`` under ``torch.inference_mode``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pixelrl.errors import ConfigError, MissingExtraError
from pixelrl.rewards.base import MODES, RewardConfig, observation_array, split_prompts

__all__ = ["OPENAI_MEAN", "OPENAI_STD", "CLIPEmbedder", "VLMRewardModel", "check_config", "image_key", "load_clip", "preprocess",
           "projection_matrix", "vlm_reward", "write_byte_tokenizer", "HOW_TO_GET"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
HOW_TO_GET = ("get one where there is network with `hf download openai/clip-vit-base-patch32 --local-dir DIR` "
              "(older huggingface_hub: `huggingface-cli download openai/clip-vit-base-patch32 --local-dir DIR`), "
              "copy DIR to this machine and pass --reward.model DIR")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ------------------------------------------------------------------------------------------- the math


def projection_matrix(goal: torch.Tensor, baseline: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """``P = alpha * d^T d / |d|^2 + (1 - alpha) I`` with ``d = goal - baseline`` (``[1, D]`` rows). alpha = 0 (no
    baseline needed) is the identity."""
    dim = goal.shape[-1]
    eye = torch.eye(dim, dtype=goal.dtype, device=goal.device)
    if alpha == 0:
        return eye
    if baseline is None:
        raise ConfigError(f"alpha = {alpha} projects onto the goal-baseline direction and needs baseline prompts")
    d = (goal - baseline).reshape(1, dim)
    n2 = float((d * d).sum())
    if not n2 > 0:
        raise ConfigError("the goal and baseline prompts have the same CLIP embedding, so there is no goal-baseline "
                          "direction to project on; use different prompts or --reward.alpha 0")
    return alpha * (d.T @ d) / n2 + (1 - alpha) * eye


def vlm_reward(x: torch.Tensor, goal: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """``1 - |(x/|x| - g) P|^2 / 2`` for image embeddings ``x`` ``[B, D]`` (normalised here, as the authors do)."""
    x = x / x.norm(dim=-1, keepdim=True)
    return 1 - ((x - goal) @ proj).norm(dim=-1) ** 2 / 2


def preprocess(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` -> the CLIP image input ``[B, 3, size, size]`` (see the module docstring)."""
    x = frames.to(torch.float32) / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=False)
    mean = torch.tensor(OPENAI_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


# ------------------------------------------------------------------------------------------- config


def check_config(cfg: RewardConfig) -> dict:
    """Check the ``vlm:`` fields of ``cfg`` (one ConfigError line each); returns the resolved ``alpha``."""
    goals = split_prompts(cfg.argument, "the goal prompt list (--reward vlm:...)")
    baselines = split_prompts(cfg.baseline, "--reward.baseline") if cfg.baseline is not None else ()
    if baselines and len(baselines) != len(goals):
        raise ConfigError(f"{len(goals)} goal prompt(s) but {len(baselines)} baseline prompt(s): VLM-RM averages each "
                          "list and the authors require the same number in both (separate prompts with '|')")
    alpha = cfg.alpha
    if alpha is None:
        alpha = 0.5 if baselines else 0.0
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ConfigError(f"--reward.alpha must be a number in [0, 1], got {alpha!r}")
    if alpha > 0 and not baselines:
        raise ConfigError(f"--reward.alpha {alpha} projects onto the goal-baseline direction and needs "
                          "--reward.baseline PROMPT (e.g. 'a cartpole'); or pass --reward.alpha 0 for plain CLIP "
                          "similarity to the goal")
    if not isinstance(cfg.model, str) or not cfg.model.strip():
        raise ConfigError(f"--reward.model must be a CLIP model folder or hub id, got {cfg.model!r}")
    return {"alpha": float(alpha)}


# ------------------------------------------------------------------------------------------- CLIP


def _transformers():
    try:
        import transformers
    except ImportError:
        raise MissingExtraError("transformers", "rewards", "the VLM reward, --reward vlm:...") from None
    return transformers


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else '(no message)'}"


@contextlib.contextmanager
def _quiet_transformers(tf):
    log = tf.utils.logging
    level = log.get_verbosity()
    log.set_verbosity_error()
    bars = log.is_progress_bar_enabled() if hasattr(log, "is_progress_bar_enabled") else None
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(level)
        if bars:
            log.enable_progress_bar()


def _check_clip_folder(path: Path) -> None:
    if not path.is_dir():
        raise ConfigError(f"--reward.model {path} is a file, not a model folder; a CLIP model is a folder with "
                          f"config.json, the weights and the tokenizer files; {HOW_TO_GET}")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(f"--reward.model {path} is not a CLIP model folder (it has no config.json); "
                          f"{HOW_TO_GET}")
    try:
        model_type = json.loads(cfg_file.read_text()).get("model_type")
    except (ValueError, OSError, AttributeError) as e:
        raise ConfigError(f"--reward.model {path}: config.json is not a readable JSON object ({e})") from None
    if model_type != "clip":
        raise ConfigError(f"--reward.model {path} holds a {model_type!r} model, not a CLIP model (its config.json "
                          f"has model_type {model_type!r}, a CLIP model 'clip'); {HOW_TO_GET}")


class CLIPEmbedder:
    """A transformers ``CLIPModel`` and its tokenizer: normalised text and image embeddings."""

    def __init__(self, model: Any, tokenizer: Any, *, device: str | torch.device = "cpu", autocast: bool = True,
                 source: str = "") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).float().eval()
        self.tokenizer = tokenizer
        self.source = source
        self.autocast = bool(autocast) and self.device.type == "cuda"
        self.image_size = int(model.config.vision_config.image_size)
        self.max_text_len = int(model.config.text_config.max_position_embeddings)

    @staticmethod
    def _pooled(out: Any) -> torch.Tensor:
        # transformers 4 returns the projected embeddings; 5 returns an output whose pooler_output holds them
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.inference_mode()
    def embed_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Normalised fp32 embeddings ``[len(prompts), D]``."""
        tok = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_text_len,
                             return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        x = self._pooled(self.model.get_text_features(**tok)).float()
        return x / x.norm(dim=-1, keepdim=True)

    @torch.inference_mode()
    def embed_images(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised fp32 embeddings ``[B, D]`` of uint8 RGB frames ``[B, 3, H, W]``."""
        x = preprocess(frames.to(self.device), self.image_size)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast):
            x = self._pooled(self.model.get_image_features(pixel_values=x))
        x = x.float()
        return x / x.norm(dim=-1, keepdim=True)


def load_clip(name: str, device: str | torch.device = "cpu", *, autocast: bool = True) -> CLIPEmbedder:
    """Load a transformers CLIP model and tokenizer from a folder or a hub id (the local cache first; a download
    when the network allows and ``HF_HUB_OFFLINE`` is not set). Every failure is one ConfigError line saying how to get
    a model."""
    tf = _transformers()
    path = Path(str(name)).expanduser()
    if path.exists():
        _check_clip_folder(path)
        tries = [True]
    elif _HUB_ID.match(str(name)):
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        tries = [True] if offline else [True, False]
    else:
        raise ConfigError(f"--reward.model {name}: no such folder (nor a hub id such as openai/clip-vit-base-patch32); "
                          f"{HOW_TO_GET}")
    source = str(path) if path.exists() else str(name)
    error: BaseException | None = None
    for local_only in tries:
        try:
            with _quiet_transformers(tf), torch.random.fork_rng(devices=[]):  # loading draws no numbers of the run's
                config = tf.AutoConfig.from_pretrained(source, local_files_only=local_only)
                if getattr(config, "model_type", None) != "clip":
                    raise ConfigError(f"--reward.model {name} holds a {config.model_type!r} model, not a CLIP model; "
                                      f"{HOW_TO_GET}")
                model, info = tf.CLIPModel.from_pretrained(source, local_files_only=local_only,
                                                           output_loading_info=True)
                tokenizer = tf.AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            break
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever transformers / the hub raise: one line below
            error = e
    else:
        if path.exists():
            raise ConfigError(f"--reward.model {path}: cannot load a CLIP model and tokenizer from it "
                              f"({_first_line(error)}); it needs config.json, model.safetensors (or pytorch_model.bin) "
                              f"and the tokenizer files; {HOW_TO_GET}")
        how = "is not in the Hugging Face cache" + ("" if len(tries) == 1 else " and could not be downloaded")
        raise ConfigError(f"--reward.model {name} {how} ({_first_line(error)}); {HOW_TO_GET}")
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise ConfigError(f"--reward.model {name}: the weights lack {len(missing)} tensor(s) of a CLIP model (e.g. "
                          f"{missing[0]!r}), so part of it would be random; use a complete CLIP checkpoint; "
                          f"{HOW_TO_GET}")
    return CLIPEmbedder(model, tokenizer, device=device, autocast=autocast, source=source)


# ------------------------------------------------------------------------------------------- the reward model


class VLMRewardModel:
    """VLM-RM behind the :class:`~pixelrl.rewards.base.RewardModel` protocol: scores the newest RGB frame of each
    ``next_obs`` (the frame rendered after the step, as vlmrm does).

    ``embedder`` is anything with ``embed_text(prompts) -> [n, D]`` and ``embed_images(uint8 [B, 3, H, W]) ->
    [B, D]`` returning normalised embeddings (a :class:`CLIPEmbedder`, or hand-made vectors in tests)."""

    needs = frozenset({"next_obs"})

    def __init__(self, embedder: Any, goal_prompts: Sequence[str], baseline_prompts: Sequence[str] = (),
                 alpha: float = 0.0, *, mode: str = "replace", scale: float = 1.0, batch_size: int = 64) -> None:
        goal_prompts, baseline_prompts = tuple(goal_prompts), tuple(baseline_prompts)
        if not goal_prompts or any(not str(p).strip() for p in goal_prompts + baseline_prompts):
            raise ConfigError("VLM-RM needs one or more non-empty goal prompts (and non-empty baseline prompts)")
        if baseline_prompts and len(baseline_prompts) != len(goal_prompts):
            raise ConfigError(f"{len(goal_prompts)} goal prompt(s) but {len(baseline_prompts)} baseline prompt(s): "
                              "the lists must have the same length")
        if mode not in MODES or int(batch_size) < 1:
            raise ConfigError(f"mode must be one of {', '.join(MODES)} and batch_size >= 1, got {mode!r} and "
                              f"{batch_size!r}")
        self.embedder = embedder
        self.goal_prompts, self.baseline_prompts = goal_prompts, baseline_prompts
        self.alpha = float(alpha)
        self.mode, self.scale, self.batch_size = mode, float(scale), int(batch_size)
        self.goal = embedder.embed_text(goal_prompts).float().mean(dim=0, keepdim=True)  # not renormalised
        self.baseline = (embedder.embed_text(baseline_prompts).float().mean(dim=0, keepdim=True)
                         if baseline_prompts else None)
        self.projection = projection_matrix(self.goal, self.baseline, self.alpha)
        self._key: Any = None
        self._channels = 3

    @classmethod
    def from_config(cls, cfg: RewardConfig, device: str | torch.device = "cpu") -> "VLMRewardModel":
        goals = split_prompts(cfg.argument, "the goal prompt list")
        baselines = split_prompts(cfg.baseline, "--reward.baseline") if cfg.baseline is not None else ()
        embedder = load_clip(cfg.model, device, autocast=cfg.autocast)
        return cls(embedder, goals, baselines, float(cfg.alpha), mode=cfg.mode, scale=cfg.scale,
                   batch_size=cfg.batch_size)

    # ---- observations
    def bind(self, observation_space: Any, frame_stack: int) -> None:
        """Use the ``pixels`` entry of dict observations; refuse observations that are not stacks of RGB frames."""
        self._key = image_key(observation_space, frame_stack)

    def _frames(self, obs: Any) -> np.ndarray:
        arr = observation_array(obs, self._key, "the VLM reward",
                                "; call bind(observation_space, frame_stack) first")
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1] < 3 or arr.shape[1] % 3:
            raise ConfigError(f"the VLM reward scores batches of uint8 [B, 3*k, H, W] frame stacks, got "
                              f"{arr.dtype} {list(arr.shape)}")
        return arr[:, -self._channels:]  # the newest frame: FrameStack puts it last

    def __call__(self, obs: Any = None, *, actions: Any = None, next_obs: Any = None) -> np.ndarray:
        """float32 rewards ``[B]`` of the newest frame of each ``next_obs`` (of ``obs`` when ``next_obs`` is None)."""
        frames = self._frames(next_obs if next_obs is not None else obs)
        out = np.empty(len(frames), dtype=np.float32)
        for i in range(0, len(frames), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[i:i + self.batch_size]))
            out[i:i + len(chunk)] = self.rewards_from_embeddings(self.embedder.embed_images(chunk)).cpu().numpy()
        return out

    @torch.inference_mode()
    def rewards_from_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """The VLM-RM reward of image embeddings ``x`` ``[B, D]``."""
        x = x.float().to(self.goal.device)
        return vlm_reward(x, self.goal, self.projection)

    # ---- checkpoints
    def state_dict(self) -> dict:
        """The prompt embeddings and alpha: a resume checks that the model still gives the same reward."""
        return {"goal_embedding": self.goal.cpu().numpy()[0],
                "baseline_embedding": (self.baseline.cpu().numpy()[0] if self.baseline is not None
                                       else np.zeros(0, np.float32)),
                "alpha": self.alpha}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        same = (abs(float(state.get("alpha", -1)) - self.alpha) < 1e-12
                and all(np.shape(state.get(k)) == mine[k].shape and np.allclose(state[k], mine[k], atol=1e-4)
                        for k in ("goal_embedding", "baseline_embedding")))
        if not same:
            raise ConfigError("the VLM reward model now gives other prompt embeddings (or alpha) than when the "
                              "checkpoint was written: the CLIP model or the prompts changed; resume with the "
                              "original --reward.model and prompts")


def image_key(observation_space: Any, frame_stack: int) -> Any:
    """Where the frames are (None: the observation itself; else the dict key, ``pixels`` when there is one); one
    ConfigError line when the observations are not stacks of RGB frames."""
    from pixelrl.rewards.base import image_layout

    key, channels, _, _ = image_layout(observation_space, 1, "the VLM reward")
    stack = max(int(frame_stack), 1)
    if channels % stack or channels // stack != 3:
        raise ConfigError(f"the VLM reward needs RGB frames (3 channels each), but the observations hold "
                          f"{channels / stack:g}-channel frames ({channels} channels in a stack of {stack}); grayscale "
                          "frames (Atari) cannot be scored by CLIP")
    return key


def write_byte_tokenizer(folder: str | Path) -> dict[str, int]:
    """Write a CLIP tokenizer that needs no download to ``folder`` (``vocab.json`` + ``merges.txt``, which
    ``CLIPTokenizer.from_pretrained`` reads): CLIP's byte-level BPE with the smallest vocabulary that encodes any
    text -- the 256 byte symbols of GPT-2's byte-to-unicode table, each also with CLIP's end-of-word suffix
    ``</w>``, then ``<|startoftext|>`` and ``<|endoftext|>`` -- and no merges, so every word becomes its characters.
    For offline tests and benchmarks with randomly initialised CLIPs (their text towers need a tokenizer); returns
    ``{"vocab_size", "bos_token_id", "eos_token_id"}`` for the model's text config."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    symbols = [chr(c) for c in cs]
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    bos, eos = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = bos, eos
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return {"vocab_size": len(vocab), "bos_token_id": bos, "eos_token_id": eos}
