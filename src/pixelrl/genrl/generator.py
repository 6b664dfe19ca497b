"""Generators to fine-tune that exist on this machine: a tiny text-conditioned pixel-space DDPM built, trained and
distilled here, written as a diffusers-style folder that any diffusers loader reads component by component.

The folder (see docs/genrl_models.md)::

    GEN_DIR/
      model_index.json          {"_class_name": "PixelRLPixelPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                                 "scheduler": ["diffusers", "DDIMScheduler" | "LCMScheduler"], "text_encoder":
                                 ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"]}
      unet/ scheduler/ text_encoder/ tokenizer/      (save_pretrained, safetensors)
      pixelrl_generator.json    {"kind": "ddpm" | "lcm", "image_size", "prompt_vocabulary", "trained_on", ...}

Pixel space: there is no ``vae``; the unet's sample space is the image in [-1, 1] with 3 channels. The tokenizer is
:func:`pixelrl.rewards.vlm.write_byte_tokenizer`'s (every character a token, no download) and the text encoder a
tiny ``CLIPTextModel`` trained jointly with the unet. The empty prompt ``""`` is the unconditional prompt of
classifier-free guidance (training drops the prompt with probability ``cond_dropout``).

* :func:`init_generator` writes a randomly initialised tiny generator (the tests' fixture).
* :func:`train_generator` trains one on generated shapes images (:mod:`pixelrl.genrl.shapes_data`).
* :func:`distill_consistency` distils a trained one into a few-step latent consistency model (LCM).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from pixelrl.errors import ConfigError, MissingExtraError, NotFoundError
from pixelrl.utils.atomic import fsync_dir, storage_errors, write_json_atomic

__all__ = ["GeneratorSize", "KINDS", "PIPELINE_CLASS", "SIZES", "init_generator", "read_generator_info",
           "write_generator_folder", "build_components"]

KINDS = ("ddpm", "lcm")
PIPELINE_CLASS = "PixelRLPixelPipeline"
INFO_FILE = "pixelrl_generator.json"


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise MissingExtraError("diffusers", "genrl", "image generators") from None
    return diffusers


@dataclass(frozen=True)
class GeneratorSize:
    """Size of a locally built generator (unet + text encoder)."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """Channels of the unet's resolution levels (each level after the first halves the resolution)."""
    attention_levels: tuple[bool, ...] = (False, True, True)
    """Which levels have cross-attention to the prompt (``CrossAttn*Block2D``); the first (full resolution) has none
    by default because attention over every pixel costs most and the prompt's content is coarse."""
    layers_per_block: int = 1
    """Resnet layers per level (diffusers' ``layers_per_block``; Stable Diffusion has 2)."""
    attention_head_dim: int = 8
    """Width of one attention head."""
    norm_num_groups: int = 8
    """GroupNorm groups (must divide every channel count)."""
    text_hidden_size: int = 32
    """Width of the CLIP text encoder (it is also the unet's ``cross_attention_dim``)."""
    text_layers: int = 2
    """Transformer layers of the text encoder."""
    text_heads: int = 2
    """Attention heads of the text encoder."""
    max_length: int = 40
    """Tokens per prompt, begin and end tokens included (the byte tokenizer makes one token per character; Stable
    Diffusion's CLIP uses 77 BPE tokens; 40 characters hold every prompt of the shapes vocabulary)."""
    time_cond_proj_dim: int | None = None
    """LCM guidance-scale embedding width (``UNet2DConditionModel.time_cond_proj_dim``); None: no embedding."""

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        if n < 1 or any(int(c) <= 0 for c in self.block_out_channels):
            raise ConfigError(f"block_out_channels={self.block_out_channels} must be a non-empty tuple of positive ints")
        if len(self.attention_levels) != n:
            raise ConfigError(f"attention_levels has {len(self.attention_levels)} entries but block_out_channels has "
                              f"{n}; give one True/False per level")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ConfigError(f"norm_num_groups={self.norm_num_groups} must divide every block_out_channels entry "
                              f"{self.block_out_channels}")
        for name in ("layers_per_block", "attention_head_dim", "text_hidden_size", "text_layers", "text_heads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.text_hidden_size % self.text_heads:
            raise ConfigError(f"text_hidden_size={self.text_hidden_size} must be a multiple of text_heads="
                              f"{self.text_heads}")
        if self.max_length < 3:
            raise ConfigError(f"max_length={self.max_length} must be >= 3 (begin, one character, end)")


SIZES = {
    "tiny": GeneratorSize(block_out_channels=(16, 32), attention_levels=(False, True), text_hidden_size=16,
                          text_layers=1, max_length=40),
    "small": GeneratorSize(),
}
"""Named sizes: ``tiny`` (tests: a 2-step sample of 4 images in a few tens of ms) and ``small`` (the default of
:func:`train_generator`)."""


def _scheduler_config(kind: str) -> dict[str, Any]:
    """The noise schedule shared by training, DDIM sampling and the LCM: DDPM's linear betas 1e-4..0.02 over 1000
    steps (Ho et al. for pixel-space images), epsilon prediction, x0 clipped to [-1, 1] (pixel space), and
    ``trailing`` timestep spacing with ``set_alpha_to_one=False`` so that a few-step sample starts at t = 999 and the
    last DDIM step has sigma > 0 (the eta = 1 log-probability trap)."""
    cfg: dict[str, Any] = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                               prediction_type="epsilon", clip_sample=True, clip_sample_range=1.0,
                               set_alpha_to_one=False, steps_offset=0, timestep_spacing="trailing")
    if kind == "lcm":
        cfg.update(original_inference_steps=50, timestep_scaling=10.0)
    return cfg


def build_components(size: GeneratorSize, image_size: int, *, kind: str = "ddpm", seed: int = 0):
    """``(unet, scheduler, text_encoder, tokenizer_files)`` randomly initialised (seeded). ``tokenizer_files`` is a
    callable writing the byte tokenizer into a folder."""
    if kind not in KINDS:
        raise ConfigError(f"generator kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    if int(image_size) < 8 or int(image_size) % (2 ** (len(size.block_out_channels) - 1)):
        raise ConfigError(f"image_size={image_size} must be >= 8 and divisible by 2**(levels - 1) = "
                          f"{2 ** (len(size.block_out_channels) - 1)}")
    diffusers = _diffusers()
    import torch
    import transformers as tf

    from pixelrl.rewards.vlm import write_byte_tokenizer

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in size.attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(size.attention_levels))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = diffusers.UNet2DConditionModel(
            sample_size=int(image_size), in_channels=3, out_channels=3, block_out_channels=tuple(size.block_out_channels),
            layers_per_block=size.layers_per_block, down_block_types=down, up_block_types=up,
            mid_block_type="UNetMidBlock2DCrossAttn" if any(size.attention_levels) else None,
            cross_attention_dim=size.text_hidden_size, attention_head_dim=size.attention_head_dim,
            norm_num_groups=size.norm_num_groups, time_cond_proj_dim=size.time_cond_proj_dim)
        with tempfile.TemporaryDirectory() as d:  # only the vocabulary sizes are needed here
            tok = write_byte_tokenizer(d)
        text = tf.CLIPTextModel(tf.CLIPTextConfig(
            vocab_size=tok["vocab_size"], hidden_size=size.text_hidden_size, intermediate_size=2 * size.text_hidden_size,
            num_hidden_layers=size.text_layers, num_attention_heads=size.text_heads,
            max_position_embeddings=size.max_length, bos_token_id=tok["bos_token_id"],
            eos_token_id=tok["eos_token_id"], pad_token_id=tok["eos_token_id"]))
    sched_cls = diffusers.LCMScheduler if kind == "lcm" else diffusers.DDIMScheduler
    scheduler = sched_cls(**_scheduler_config(kind))

    def write_tokenizer(folder: Path) -> None:
        write_byte_tokenizer(folder)
        tf.CLIPTokenizer.from_pretrained(folder, model_max_length=size.max_length).save_pretrained(folder)

    return unet, scheduler, text, write_tokenizer


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out``: a reader sees the old folder or the new one, never a mix."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_generator_folder(out: str | os.PathLike, *, unet, scheduler, text_encoder, write_tokenizer,
                           info: dict[str, Any]) -> Path:
    """Write a generator folder atomically (into a temporary sibling, then renamed over ``out``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    diffusers = _diffusers()
    with storage_errors(out, cleanup=(tmp,)):
        tmp.mkdir()
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        scheduler.save_pretrained(tmp / "scheduler")
        text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        write_tokenizer(tmp / "tokenizer")
        index = {"_class_name": PIPELINE_CLASS, "_diffusers_version": diffusers.__version__,
                 "unet": ["diffusers", type(unet).__name__], "scheduler": ["diffusers", type(scheduler).__name__],
                 "text_encoder": ["transformers", type(text_encoder).__name__],
                 "tokenizer": ["transformers", "CLIPTokenizer"]}
        (tmp / "model_index.json").write_text(json.dumps(index, indent=1) + "\n")
        write_json_atomic(tmp / INFO_FILE, info)
        _replace_folder(tmp, out)
    return out


def read_generator_info(folder: str | os.PathLike) -> dict[str, Any]:
    """``pixelrl_generator.json`` of a generator folder (``{}`` for a folder pixelrl did not write)."""
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise NotFoundError(f"{folder} is not a generator folder (no model_index.json); make one with "
                            "`pixelrl genrl pretrain-generator --out DIR` or point to a diffusers pipeline folder")
    p = folder / INFO_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def init_generator(folder: str | os.PathLike, *, image_size: int = 32, kind: str = "ddpm", seed: int = 0,
                   size: str | GeneratorSize = "tiny", prompt_vocabulary: Sequence[str] | None = None,
                   **size_knobs: Any) -> Path:
    """Write a randomly initialised generator folder (pixel space, ``image_size`` square, 3 channels) and return it.

    ``size`` names a :data:`SIZES` entry or is a :class:`GeneratorSize`; ``size_knobs`` override its fields (e.g.
    ``block_out_channels=(16, 32)``, ``time_cond_proj_dim=32``). ``kind="lcm"`` writes an ``LCMScheduler``."""
    base = SIZES.get(size) if isinstance(size, str) else size
    if base is None:
        raise ConfigError(f"generator size {size!r} is unknown; use one of {', '.join(SIZES)} or a GeneratorSize")
    fields = set(GeneratorSize.__dataclass_fields__)
    bad = sorted(set(size_knobs) - fields)
    if bad:
        raise ConfigError(f"unknown generator size option(s) {', '.join(bad)}; known: {', '.join(sorted(fields))}")
    sz = GeneratorSize(**{**asdict(base), **size_knobs})
    unet, scheduler, text, write_tok = build_components(sz, image_size, kind=kind, seed=seed)
    info = {"kind": kind, "image_size": int(image_size), "size": asdict(sz), "seed": int(seed),
            "prompt_vocabulary": list(prompt_vocabulary) if prompt_vocabulary is not None else None,
            "uncond_prompt": "", "trained_on": None}
    return write_generator_folder(folder, unet=unet, scheduler=scheduler, text_encoder=text,
                                  write_tokenizer=write_tok, info=info)
