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

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from pixelrl.errors import ConfigError, NotFoundError
from pixelrl.genrl.shapes_data import ShapesVocabulary
from pixelrl.utils.atomic import fsync_dir, storage_errors, write_json_atomic

__all__ = ["training_progress", "GeneratorSize", "KINDS", "PIPELINE_CLASS", "SIZES", "init_generator", "read_generator_info",
           "write_generator_folder", "build_components"]

KINDS = ("ddpm", "lcm")
PIPELINE_CLASS = "PixelRLPixelPipeline"
INFO_FILE = "pixelrl_generator.json"


class _Bar:
    """A rich progress bar over ``total`` steps when stdout is a terminal (``live``), else nothing."""

    def __init__(self, total: int, title: str, enabled: bool) -> None:
        import sys

        self.live = bool(enabled) and sys.stdout.isatty()
        self._p = None
        if self.live:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                               TimeRemainingColumn(), refresh_per_second=2)
            self._task = self._p.add_task(title, total=total, info="")
            self._p.start()

    def advance(self, step: int, info: str = "") -> None:
        if self._p is not None:
            self._p.update(self._task, completed=step, info=info)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None


@contextlib.contextmanager
def training_progress(total: int, title: str, *, enabled: bool = True, start: int = 0):
    """A progress bar (rich, on a terminal) for a training loop of ``total`` steps: ``bar.advance(step, info)``;
    ``bar.live`` is False when there is no bar (then callers print plain lines)."""
    bar = _Bar(total, title, enabled)
    bar.advance(start)
    try:
        yield bar
    finally:
        bar.close()


def _diffusers():
    from pixelrl.genrl.model import require_diffusers

    return require_diffusers("image generators")


@dataclass(frozen=True)
class GeneratorSize:
    """Size of a locally built generator (unet + text encoder)."""

    block_out_channels: tuple[int, ...] = (32, 32, 64)
    """Channels of the unet's resolution levels (each level after the first halves the resolution)."""
    attention_levels: tuple[bool, ...] = (False, False, True)
    """Which levels have attention (self-attention and cross-attention to the prompt, ``CrossAttn*Block2D``); by
    default only the lowest (8x8 of a 32x32 image) and the mid block: on CPU, attention over the 256 positions of a
    16x16 level made a training step about 3x slower."""
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


def _replace_folder(tmp: Path, out: Path, keep: Sequence[str] = ()) -> None:
    """Move the finished ``tmp`` folder to ``out``: a reader sees the old folder or the new one, never a mix. The
    entries ``keep`` of the old folder (a training run's checkpoints and metrics) move into the new one."""
    old = None
    if out.exists():
        for name in keep:
            if (out / name).exists() and not (tmp / name).exists():
                os.replace(out / name, tmp / name)
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_generator_folder(out: str | os.PathLike, *, unet, scheduler, text_encoder, write_tokenizer,
                           info: dict[str, Any], keep: Sequence[str] = ()) -> Path:
    """Write a generator folder atomically (into a temporary sibling, then renamed over ``out``; the entries
    ``keep`` of an existing ``out`` are carried over)."""
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
        _replace_folder(tmp, out, keep)
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
                   size: str | GeneratorSize = "tiny", vocabulary: ShapesVocabulary | None = None,
                   **size_knobs: Any) -> Path:
    """Write a randomly initialised generator folder (pixel space, ``image_size`` square, 3 channels) and return it.

    ``size`` names a :data:`SIZES` entry or is a :class:`GeneratorSize`; ``size_knobs`` override its fields (e.g.
    ``block_out_channels=(16, 32)``, ``time_cond_proj_dim=32``). ``kind="lcm"`` writes an ``LCMScheduler``.
    ``vocabulary`` (default: the shapes vocabulary) is recorded as the prompts the generator is meant for."""
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
            "prompt_vocabulary": (vocabulary or ShapesVocabulary()).to_dict(), "uncond_prompt": "", "trained_on": None}
    return write_generator_folder(folder, unet=unet, scheduler=scheduler, text_encoder=text,
                                  write_tokenizer=write_tok, info=info)


# ------------------------------------------------------------------------------------------- sampling


def encode_prompts(tokenizer, text_encoder, prompts: Sequence[str]):
    """Text embeddings ``[B, max_length, D]`` (CLIP's last hidden state, prompts padded to the tokenizer's
    ``model_max_length``, as Stable Diffusion pipelines do)."""
    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


def ddim_sample(unet, scheduler, cond, uncond=None, *, steps: int = 20, guidance: float = 1.0, eta: float = 0.0,
                generator=None):
    """Images in [0, 1] ``[B, 3, S, S]`` by DDIM (``scheduler`` a DDIMScheduler; classifier-free guidance
    ``eps_u + guidance * (eps_c - eps_u)`` when ``uncond`` is given and ``guidance != 1``). For evaluation and sample
    grids; the fine-tuning sampler with log-probabilities is :mod:`pixelrl.genrl`'s. ``generator``: a CPU
    ``torch.Generator`` (the noise is moved to ``cond``'s device)."""
    import torch

    size = unet.config.sample_size
    x = torch.randn((len(cond), unet.config.in_channels, size, size), generator=generator).to(cond.device)
    scheduler.set_timesteps(steps)
    use_cfg = uncond is not None and guidance != 1.0
    for t in scheduler.timesteps:
        if use_cfg:
            eps_u, eps_c = unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).sample.chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
        else:
            eps = unet(x, t, cond).sample
        x = scheduler.step(eps, t, x, eta=eta, generator=generator).prev_sample
    return (x.clamp(-1, 1) + 1) / 2


def lcm_sample(unet, scheduler, cond, *, steps: int = 4, guidance: float = 1.0, generator=None):
    """Images in [0, 1] from a latent consistency model (``scheduler`` an LCMScheduler; the guidance scale goes in
    through the unet's guidance embedding when it has one, ``w = guidance - 1`` as diffusers' LCM pipeline).
    ``generator``: a CPU ``torch.Generator`` (the noise is moved to ``cond``'s device)."""
    import torch

    from pixelrl.genrl.sampler import guidance_embedding

    size = unet.config.sample_size
    x = torch.randn((len(cond), unet.config.in_channels, size, size), generator=generator).to(cond.device)
    scheduler.set_timesteps(steps)
    w_emb = None
    if unet.config.time_cond_proj_dim is not None:
        w = torch.full((len(cond),), float(guidance) - 1.0)  # the embedding's tables are made on the CPU
        w_emb = guidance_embedding(w, unet.config.time_cond_proj_dim).to(cond)
    denoised = x
    for t in scheduler.timesteps:
        eps = unet(x, t, cond, timestep_cond=w_emb).sample
        x, denoised = scheduler.step(eps, t, x, generator=generator, return_dict=False)
    return (denoised.clamp(-1, 1) + 1) / 2


def load_components(folder: str | os.PathLike):
    """``(unet, scheduler, text_encoder, tokenizer)`` of a pixel-space generator folder, read by
    :func:`pixelrl.genrl.model.load_generator` on the CPU."""
    from pixelrl.genrl.model import load_generator

    g = load_generator(folder)
    if g.vae is not None:
        raise ConfigError(f"{folder} is a latent (vae) pipeline; this reads pixel-space generators only")
    return g.unet, g.scheduler, g.text_encoder, g.tokenizer


def save_sample_grid(images, path: str | os.PathLike, *, columns: int = 8, scale: int = 4,
                     labels: Sequence[str] | None = None) -> Path:
    """Write images ``[B, 3, H, W]`` in [0, 1] as a PNG grid (nearest-neighbour upscaled ``scale`` times), with one
    label per row drawn above it when ``labels`` is given."""
    import io as _io

    import numpy as np
    from PIL import Image, ImageDraw

    from pixelrl.utils.atomic import write_bytes_atomic

    arr = (images.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    B, H, W, _ = arr.shape
    rows = (B + columns - 1) // columns
    label_h = 12 if labels else 0
    pad = 2
    grid = Image.new("RGB", (columns * (W * scale + pad) + pad, rows * (H * scale + pad + label_h) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for i, im in enumerate(arr):
        r, c = divmod(i, columns)
        y = pad + r * (H * scale + pad + label_h)
        if labels and c == 0:
            draw.text((pad, y), labels[r], fill="black")
        grid.paste(Image.fromarray(im).resize((W * scale, H * scale), Image.NEAREST),
                   (pad + c * (W * scale + pad), y + label_h))
    buf = _io.BytesIO()
    grid.save(buf, format="PNG")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buf.getvalue())
    return path


def sample_grid(folder: str | os.PathLike, out_png: str | os.PathLike, prompts: Sequence[str], *, per_prompt: int = 8,
                steps: int | None = None, guidance: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Sample ``per_prompt`` images of each prompt from a pixel-space generator folder and write them as a PNG grid
    (one row per prompt). DDPM: DDIM with eta = 0, ``steps`` 50, classifier-free ``guidance`` 3 by default; LCM: LCM
    sampling, ``steps`` 4, ``guidance`` the folder's recommended one. Returns what was done (and the wall time)."""
    import torch

    unet, sched, text, tok = load_components(folder)
    info = read_generator_info(folder)
    lcm = type(sched).__name__ == "LCMScheduler"
    steps = int(steps if steps is not None else (4 if lcm else 50))
    if guidance is None:
        guidance = float(info.get("guidance_scale", 3.0))
    g = torch.Generator().manual_seed(int(seed))
    t0 = time.time()
    with torch.no_grad():
        all_prompts = [p for p in prompts for _ in range(per_prompt)]
        cond = encode_prompts(tok, text, all_prompts)
        if lcm:
            images = lcm_sample(unet, sched, cond, steps=steps, guidance=guidance, generator=g)
        else:
            uncond = encode_prompts(tok, text, [""]).expand(len(cond), -1, -1)
            images = ddim_sample(unet, sched, cond, uncond, steps=steps, guidance=guidance, generator=g)
    wall = time.time() - t0
    save_sample_grid(images, out_png, columns=per_prompt, labels=list(prompts))
    return {"out": str(out_png), "model": str(folder), "kind": "lcm" if lcm else "ddpm", "steps": steps,
            "guidance": guidance, "images": len(images), "sample_wall_s": wall}


# ------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class _RunKnobs:
    """Fields every training command here shares (their documentation is the CLI help)."""

    seed: int = 0
    """Seed of the data, the initialisation and the noise."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    device: str = "auto"
    """auto (CUDA if available, else CPU), cpu, cuda or cuda:N: where the models train (as ``pixelrl genrl train
    --device``). The training images are rendered and the noise drawn on the CPU from the seeded streams and moved
    to the device per batch, so a seed gives the same data on any device; the folder written loads on the CPU
    wherever it was trained. The device used is recorded in pixelrl_generator.json (``train_device``,
    ``distill_device``) and the printed summary (``device``)."""
    log_every: int = 50
    """Steps between metrics rows (and plain progress lines without a terminal)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (and exports of the generator folder)."""

    def _check(self, positive: Sequence[str]) -> None:
        for name in (*positive, "log_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("--lr must be > 0 and --warmup-steps, --weight-decay, --grad-clip >= 0")
        check_device(self.device)


def check_device(device: str) -> None:
    """One error line unless ``device`` is auto, cpu, cuda or cuda:N (whether CUDA is there is checked when the
    command starts, by :func:`pixelrl.train.loop.resolve_device`)."""
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")


@dataclass(frozen=True)
class GeneratorTrainConfig(_RunKnobs):
    """Training of the local text-conditioned pixel DDPM (``pixelrl genrl pretrain-generator``)."""

    steps: int = 1000
    """AdamW steps (each a fresh batch: 1000 x 32 = 32k generated images). About 20 minutes on two idle CPU cores;
    more steps give cleaner shapes (run the same command again with a higher --steps to continue)."""
    batch_size: int = 32
    """Generated images per step (fresh every step)."""
    lr: float = 1e-3
    """Peak AdamW learning rate (unet and text encoder). Deviation: diffusers' text-to-image scripts use 1e-4 to
    fine-tune Stable Diffusion; this small model trains from scratch in a few thousand steps."""
    warmup_steps: int = 200
    """Linear learning-rate warm-up, then constant."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (diffusers' scripts: 1.0)."""
    cond_dropout: float = 0.1
    """Probability of training on the empty prompt instead of the image's, so the model also learns the
    unconditional prediction classifier-free guidance needs (Ho & Salimans: 0.1-0.2)."""
    ema_max_decay: float = 0.9999
    """EMA of the weights (what is exported): decay ``min(max, 1 - (1 + step) ** -0.75)`` (diffusers' EMAModel with
    inv_gamma 1, power 3/4, as its unconditional training script)."""
    image_size: int = 32
    """Side of the generated images."""
    size: str = "small"
    """Model size: a name of :data:`SIZES`."""
    vocabulary: ShapesVocabulary = field(default_factory=ShapesVocabulary)
    """What the training images hold (one colour-shape group of 1-3 shapes per image by default)."""
    task: Optional[str] = None
    """A named task family that sets ``vocabulary`` (``pixelrl.genrl.shapes_data.TASKS``): ``scenes`` (the default
    vocabulary) or ``one-shape`` (one large shape of 4 colours x 3 shapes on flat grey: 12 prompts, learnt in tens of
    minutes on one CPU thread). None: ``vocabulary`` as given. Train the verifier with the same --task."""

    def __post_init__(self) -> None:
        from pixelrl.genrl.shapes_data import resolve_task

        object.__setattr__(self, "vocabulary", resolve_task(self.task, self.vocabulary, ShapesVocabulary(),
                                                            role="generator"))
        self._check(("steps", "batch_size", "image_size"))
        if not 0 <= self.cond_dropout < 1:
            raise ConfigError(f"--cond-dropout must be in [0, 1), got {self.cond_dropout}")
        if not 0 <= self.ema_max_decay < 1:
            raise ConfigError(f"--ema-max-decay must be in [0, 1), got {self.ema_max_decay}")
        if self.size not in SIZES:
            raise ConfigError(f"--size {self.size!r} is unknown; use one of {', '.join(SIZES)}")


class _EMA:
    """Exponential moving average of a module list's parameters (diffusers EMAModel's warm-up decay)."""

    def __init__(self, modules, max_decay: float) -> None:
        import torch

        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.max_decay = max_decay
        self._torch = torch

    def update(self, step: int) -> None:
        d = min(self.max_decay, 1 - (1 + step) ** -0.75)
        with self._torch.no_grad():
            for s, p in zip(self.shadow, self.params):
                s.lerp_(p.detach(), 1 - d)

    @contextlib.contextmanager
    def swapped(self):
        """The EMA weights in the modules for the duration (to export or evaluate them)."""
        with self._torch.no_grad():
            saved = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with self._torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)


def _training_noise_scheduler(scheduler):
    """A DDPMScheduler with the generator's betas (``add_noise`` and the alphas of training)."""
    diffusers = _diffusers()
    return diffusers.DDPMScheduler.from_config(scheduler.config)


def denoising_loss(unet, text_encoder, tokenizer, noise_sched, images, prompts, *, generator=None,
                   timesteps=None):
    """The DDPM epsilon-prediction MSE on images in [0, 1] (timesteps uniform unless given). The noise and
    timesteps are drawn from ``generator`` (a CPU one) and moved to the images' device."""
    import torch

    x0 = images * 2 - 1
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)  # a CPU generator: the same noise anywhere
    if timesteps is None:
        timesteps = torch.randint(0, noise_sched.config.num_train_timesteps, (len(x0),), generator=generator)
    timesteps = timesteps.to(x0.device)
    xt = noise_sched.add_noise(x0, noise, timesteps)
    cond = encode_prompts(tokenizer, text_encoder, prompts)
    return torch.nn.functional.mse_loss(unet(xt, timesteps, cond).sample, noise)


def _lr_at(cfg, step: int) -> float:
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr


def _resume_or_start(out: Path, cfg, name: str, check_keys: Sequence[str]):
    """Record the config in ``out/train.json`` (refusing a different one there) and return the latest checkpoint's
    state or None."""
    from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint
    from pixelrl.utils.dataclass_io import to_dict

    out.mkdir(parents=True, exist_ok=True)
    saved = to_dict(cfg)
    p = out / "train.json"
    if p.exists():
        old = json.loads(p.read_text()).get(name, {})
        diff = [k for k in check_keys if old.get(k) != saved.get(k)]
        if diff:
            raise ConfigError(f"{out} holds a {name} run with other {', '.join(diff)}; use another --out (or delete "
                              f"{out / 'checkpoints'})")
    write_json_atomic(p, {name: saved})
    ckpt = latest_checkpoint(out / "checkpoints")
    return (load_checkpoint(ckpt), ckpt.name) if ckpt is not None else (None, None)


class _LossLog:
    """The running mean of the loss between metrics rows: a row in metrics.jsonl every ``cfg.log_every`` steps (and
    at the end), a plain line when there is no progress bar, the mean shown on the bar."""

    def __init__(self, metrics, name: str, cfg, bar, progress: bool, log) -> None:
        self.metrics, self.name, self.every, self.total = metrics, name, cfg.log_every, cfg.steps
        self.bar, self.plain, self.log = bar, bool(progress) and not bar.live, log
        self.sum, self.n, self.images, self.t, self.last = 0.0, 0, 0, time.time(), float("nan")

    def add(self, step: int, loss: float, images: int, **extra: Any) -> None:
        self.sum, self.n, self.images = self.sum + loss, self.n + 1, self.images + images
        self.bar.advance(step, f"loss {self.sum / self.n:.5f}")
        if step % self.every == 0 or step == self.total:
            self.last = self.sum / self.n
            ips = self.images / max(time.time() - self.t, 1e-9)
            self.metrics.write(json.dumps({"step": step, "loss": self.last, **extra, "images_per_s": ips}) + "\n")
            self.metrics.flush()
            if self.plain:
                self.log(f"{self.name}: step {step}/{self.total} loss {self.last:.5f} ({ips:.0f} images/s)")
            self.sum, self.n, self.images, self.t = 0.0, 0, 0, time.time()


def _restore(state: dict, modules: dict, opt, data_rng, gen) -> int:
    """Load a checkpoint's modules, optimizer, data RNG and noise generator; returns its step."""
    for name, m in modules.items():
        m.load_state_dict(state[name])
    opt.load_state_dict(state["opt"])
    data_rng.bit_generator.state = state["data_rng"]
    gen.set_state(state["gen"].cpu())
    return int(state["step"])


def train_generator(out: str | os.PathLike, cfg: GeneratorTrainConfig | None = None, *, progress: bool = True,
                    log=print, **overrides: Any) -> dict[str, Any]:
    """Train the local text-conditioned pixel DDPM on generated shapes images and write it to ``out`` (a generator
    folder, exported with the EMA weights at every checkpoint and at the end; checkpoints under ``out/checkpoints``,
    so the same call continues a killed run). ``overrides`` replace fields of ``cfg`` (e.g. ``steps=500``).
    Returns a summary: steps, wall time, and the denoising loss on a fixed held-out batch (fixed noise and
    timesteps) before and after."""
    import dataclasses

    import numpy as np
    import torch

    from pixelrl.genrl.shapes_data import sample_batch
    from pixelrl.train.loop import resolve_device
    from pixelrl.utils.checkpoint import save_checkpoint

    cfg = dataclasses.replace(cfg or GeneratorTrainConfig(), **overrides)
    out = Path(out)
    device = resolve_device(cfg.device)  # before anything is written: no CUDA is one line
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    state, ckpt_name = _resume_or_start(out, cfg, "pretrain-generator",
                                        ("batch_size", "image_size", "size", "vocabulary", "seed", "lr"))
    sz = SIZES[cfg.size]
    unet, scheduler, text, write_tok = build_components(sz, cfg.image_size, kind="ddpm", seed=cfg.seed)
    import transformers as tf

    with tempfile.TemporaryDirectory() as d:
        write_tok(Path(d))
        tokenizer = tf.CLIPTokenizer.from_pretrained(d)
    unet.to(device)  # initialised on the CPU (seeded), so a seed gives the same start on any device
    text.to(device)
    noise_sched = _training_noise_scheduler(scheduler)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = _EMA([unet, text], cfg.ema_max_decay)
    data_rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 11]))
    gen = torch.Generator().manual_seed(int(cfg.seed) + 1)
    step = 0
    if state is not None:
        step = _restore(state, {"unet": unet, "text": text}, opt, data_rng, gen)
        for s, v in zip(ema.shadow, state["ema"]):
            s.copy_(v)
        log(f"pretrain-generator: continuing from {ckpt_name} (step {step})")
    held_rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 12]))
    held_img, held_prompts, _ = sample_batch(64, held_rng, cfg.vocabulary, size=cfg.image_size)
    held_x = (torch.from_numpy(held_img).float() / 255).to(device)
    held_t = torch.linspace(0, noise_sched.config.num_train_timesteps - 1, len(held_x)).long()

    def held_loss() -> float:
        with torch.no_grad(), ema.swapped():
            return float(denoising_loss(unet, text, tokenizer, noise_sched, held_x, held_prompts,
                                        generator=torch.Generator().manual_seed(0), timesteps=held_t))

    loss_before = held_loss()
    info = {"kind": "ddpm", "image_size": cfg.image_size, "size": asdict(sz), "seed": cfg.seed,
            "prompt_vocabulary": cfg.vocabulary.to_dict(), "uncond_prompt": "",
            "trained_on": "pixelrl.genrl.shapes_data (generated coloured shapes on grey backgrounds)",
            "train": to_jsonable(cfg), "train_device": str(device)}

    def export(loss: float) -> None:
        with ema.swapped():
            write_generator_folder(out, unet=unet, scheduler=scheduler, text_encoder=text, write_tokenizer=write_tok,
                                   info={**info, "steps": step, "train_loss": loss}, keep=("checkpoints",
                                                                                          "metrics.jsonl", "train.json"))

    t0 = time.time()
    unet.train()
    text.train()
    with training_progress(cfg.steps, "pretrain-generator", enabled=progress, start=step) as bar, \
            open(out / "metrics.jsonl", "a") as metrics:
        losses = _LossLog(metrics, "pretrain-generator", cfg, bar, progress, log)
        while step < cfg.steps:
            img, prompts, _ = sample_batch(cfg.batch_size, data_rng, cfg.vocabulary, size=cfg.image_size)
            drop = data_rng.random(len(prompts)) < cfg.cond_dropout
            prompts = ["" if d else p for p, d in zip(prompts, drop)]
            lr = _lr_at(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            x = (torch.from_numpy(img).float() / 255).to(device)  # rendered on the CPU, moved per batch
            loss = denoising_loss(unet, text, tokenizer, noise_sched, x, prompts, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            ema.update(step)
            losses.add(step, float(loss.detach()), len(img), lr=lr)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_checkpoint(out / "checkpoints", f"step_{step:09d}", {
                    "unet": unet.state_dict(), "text": text.state_dict(), "opt": opt.state_dict(),
                    "ema": list(ema.shadow), "data_rng": data_rng.bit_generator.state, "gen": gen.get_state(),
                    "step": step}, keep=1)
                export(losses.last)
    return {"out": str(out), "steps": step, "device": str(device), "wall_s": time.time() - t0, "loss": losses.last,
            "held_loss_before": loss_before, "held_loss_after": held_loss()}


def to_jsonable(cfg) -> dict[str, Any]:
    """A config dataclass as a JSON-able dict."""
    from pixelrl.utils.dataclass_io import to_dict

    return to_dict(cfg)


# ------------------------------------------------------------------------------------ consistency distillation


@dataclass(frozen=True)
class DistillConfig(_RunKnobs):
    """Latent consistency distillation (Luo et al. 2023, LCM) of a trained generator into a few-step one
    (``pixelrl genrl distill``). Defaults: diffusers' ``examples/consistency_distillation/train_lcm_distill_sd_wds.py``
    unless named."""

    steps: int = 300
    """Optimizer steps. Deviation: the script's runs are far longer; this is sized for minutes on a CPU (run the
    same command again with a higher --steps to continue)."""
    batch_size: int = 16
    """Images per step (the script: 16 per device)."""
    lr: float = 1e-4
    """AdamW learning rate after warm-up, then constant (the script: 1e-4, constant)."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up. Deviation: the script warms up over 500 steps of a much longer run; 100 here
    so that a run of the default length spends most of it at the full rate."""
    weight_decay: float = 1e-2
    """AdamW weight decay (the script: 1e-2)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (the script: 1.0)."""
    num_ddim_timesteps: int = 50
    """Timesteps of the teacher's DDIM solver; the skipping step is ``1000 // num_ddim_timesteps`` (LCM: 50, k = 20)."""
    w_min: float = 1.0
    """Smallest guidance weight w drawn per image (the teacher's estimate is ``cond + w (cond - uncond)``).
    Deviation: the script draws w in [5, 15] for Stable Diffusion; for this small 32x32 pixel-space teacher
    (sampled with guidance 3) such weights would put the guided x0 estimates far outside [-1, 1], so [1, 5] by
    default. A judgement, not a measured comparison of the two ranges."""
    w_max: float = 5.0
    """Largest guidance weight w (see ``w_min``; the script: 15)."""
    time_cond_proj_dim: int = 256
    """Width of the student's guidance-scale embedding when the teacher has none (the script: 256); 0 distils a
    student without it (w then still shapes the teacher's targets, as the LCM-LoRA script)."""
    timestep_scaling: float = 10.0
    """Scaling of the timestep in the boundary conditions c_skip, c_out (the script and LCMScheduler: 10)."""
    ema_decay: float = 0.95
    """EMA rate of the target student (the script: 0.95)."""
    loss: str = "l2"
    """``l2`` (the script's default) or ``huber`` (sqrt(d^2 + c^2) - c)."""
    huber_c: float = 1e-3
    """Huber constant c (the script: 0.001)."""

    def __post_init__(self) -> None:
        self._check(("steps", "batch_size", "num_ddim_timesteps"))
        if not 0 <= self.w_min <= self.w_max:
            raise ConfigError(f"need 0 <= --w-min <= --w-max, got {self.w_min}, {self.w_max}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.loss not in ("l2", "huber"):
            raise ConfigError(f"--loss must be l2 or huber, got {self.loss!r}")
        if self.time_cond_proj_dim < 0 or self.timestep_scaling <= 0 or self.huber_c <= 0:
            raise ConfigError("--time-cond-proj-dim must be >= 0, --timestep-scaling and --huber-c > 0")


def boundary_scalings(t, sigma_data: float = 0.5, timestep_scaling: float = 10.0):
    """LCM's ``(c_skip, c_out)`` at timesteps ``t``: ``c_skip = s^2 / ((k t)^2 + s^2)``, ``c_out = k t /
    sqrt((k t)^2 + s^2)`` with s = sigma_data = 0.5, k = timestep_scaling (LCMScheduler
    ``get_scalings_for_boundary_condition_discrete``); c_skip(0) = 1 and c_out(0) = 0, so f(x, 0) = x."""
    scaled = timestep_scaling * t
    return sigma_data ** 2 / (scaled ** 2 + sigma_data ** 2), scaled / (scaled ** 2 + sigma_data ** 2) ** 0.5


class DDIMSolver:
    """The teacher's DDIM ODE solver of LCM distillation: timesteps ``[k-1, 2k-1, ..., 999]`` (k = 1000 / n) and one
    deterministic step from timestep index i to the previous solver timestep."""

    def __init__(self, alphas_cumprod, num_train_timesteps: int = 1000, ddim_timesteps: int = 50) -> None:
        import torch

        ratio = num_train_timesteps // ddim_timesteps
        self.timesteps = torch.arange(1, ddim_timesteps + 1, dtype=torch.long) * ratio - 1
        ac = alphas_cumprod.float()
        self.alpha_prev = torch.cat([ac[:1], ac[self.timesteps[:-1]]])

    def to(self, device) -> "DDIMSolver":
        """The solver's tables on ``device`` (returns itself)."""
        self.timesteps, self.alpha_prev = self.timesteps.to(device), self.alpha_prev.to(device)
        return self

    def step(self, pred_x0, pred_noise, index):
        a = self.alpha_prev[index].view(-1, 1, 1, 1)
        return a.sqrt() * pred_x0 + (1 - a).sqrt() * pred_noise


def distill_consistency(teacher: str | os.PathLike, out: str | os.PathLike, cfg: DistillConfig | None = None, *,
                        progress: bool = True, log=print, **overrides: Any) -> dict[str, Any]:
    """Distil the generator folder ``teacher`` into a latent consistency model written to ``out`` (same format,
    ``LCMScheduler``, ``pixelrl_generator.json`` kind ``lcm``; the target (EMA) student is exported, as the LCM
    pipeline uses it). Checkpoints under ``out/checkpoints``: the same call continues a killed run. Returns a
    summary with the wall time and the consistency loss."""
    import copy
    import dataclasses

    import numpy as np
    import torch

    from pixelrl.genrl.sampler import guidance_embedding
    from pixelrl.genrl.shapes_data import sample_batch
    from pixelrl.train.loop import resolve_device
    from pixelrl.utils.checkpoint import save_checkpoint

    cfg = dataclasses.replace(cfg or DistillConfig(), **overrides)
    teacher, out = Path(teacher), Path(out)
    device = resolve_device(cfg.device)  # before anything is written: no CUDA is one line
    if teacher.resolve() == out.resolve():
        raise ConfigError(f"--out {out} is the teacher's folder; write the student to another folder")
    t_info = read_generator_info(teacher)
    if t_info.get("kind") == "lcm":
        raise ConfigError(f"{teacher} is already a consistency model (kind lcm); distil a DDPM generator")
    vocab_d = t_info.get("prompt_vocabulary")
    if not isinstance(vocab_d, dict):
        raise ConfigError(f"{teacher} records no shapes prompt vocabulary (pixelrl_generator.json); distillation "
                          "draws its training images from the teacher's vocabulary: distil a generator trained by "
                          "`pixelrl genrl pretrain-generator`")
    vocab = ShapesVocabulary.from_dict(vocab_d)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    state, ckpt_name = _resume_or_start(out, cfg, "distill", ("batch_size", "num_ddim_timesteps", "time_cond_proj_dim",
                                                              "seed"))
    diffusers = _diffusers()
    t_unet, t_sched, text, tokenizer = load_components(teacher)
    for m in (t_unet, text):
        m.requires_grad_(False).eval()
    noise_sched = diffusers.DDPMScheduler.from_config(t_sched.config)
    ac = noise_sched.alphas_cumprod.float()
    alpha_s, sigma_s = ac.sqrt().to(device), (1 - ac).sqrt().to(device)
    solver = DDIMSolver(ac, noise_sched.config.num_train_timesteps, cfg.num_ddim_timesteps).to(device)
    k = noise_sched.config.num_train_timesteps // cfg.num_ddim_timesteps
    proj = t_unet.config.time_cond_proj_dim or (cfg.time_cond_proj_dim or None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        unet = diffusers.UNet2DConditionModel.from_config(t_unet.config, time_cond_proj_dim=proj)
    unet.load_state_dict(t_unet.state_dict(), strict=False)  # the guidance embedding starts random
    for m in (t_unet, text, unet):  # built on the CPU (seeded), then moved: the same start on any device
        m.to(device)
    unet.train()
    target = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    data_rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 31]))
    gen = torch.Generator().manual_seed(int(cfg.seed) + 3)
    step = 0
    if state is not None:
        step = _restore(state, {"unet": unet, "target": target}, opt, data_rng, gen)
        log(f"distill: continuing from {ckpt_name} (step {step})")
    lcm_sched = diffusers.LCMScheduler.from_config(
        {**dict(t_sched.config), "original_inference_steps": cfg.num_ddim_timesteps,
         "timestep_scaling": cfg.timestep_scaling})
    with torch.no_grad():
        uncond = encode_prompts(tokenizer, text, [""])

    def x0_of(eps, t, x):
        return (x - sigma_s[t].view(-1, 1, 1, 1) * eps) / alpha_s[t].view(-1, 1, 1, 1)

    def export(loss: float) -> None:
        info = {**t_info, "kind": "lcm", "teacher": str(teacher), "steps": step, "distill_loss": loss,
                "distill_device": str(device),
                "guidance_embedding": proj is not None, "guidance_range": [cfg.w_min + 1, cfg.w_max + 1],
                "guidance_scale": 1 + (cfg.w_min + cfg.w_max) / 2,
                "distill": to_jsonable(cfg)}

        def write_tok(folder: Path) -> None:
            tokenizer.save_pretrained(folder)

        write_generator_folder(out, unet=target, scheduler=lcm_sched, text_encoder=text, write_tokenizer=write_tok,
                               info=info, keep=("checkpoints", "metrics.jsonl", "train.json"))

    t0 = time.time()
    with training_progress(cfg.steps, "distill", enabled=progress, start=step) as bar, \
            open(out / "metrics.jsonl", "a") as metrics:
        losses = _LossLog(metrics, "distill", cfg, bar, progress, log)
        while step < cfg.steps:
            img, prompts, _ = sample_batch(cfg.batch_size, data_rng, vocab, size=t_unet.config.sample_size)
            x0 = (torch.from_numpy(img).float() / 255 * 2 - 1).to(device)  # rendered on the CPU, moved per batch
            B = len(x0)
            with torch.no_grad():
                cond = encode_prompts(tokenizer, text, prompts)
            # every draw from the CPU generator ``gen`` (the same stream on any device), then moved
            index = torch.randint(0, cfg.num_ddim_timesteps, (B,), generator=gen).to(device)
            t_start = solver.timesteps[index]
            t_end = (t_start - k).clamp(min=0)
            cs_s, co_s = (v.view(-1, 1, 1, 1) for v in boundary_scalings(t_start.float(),
                                                                         timestep_scaling=cfg.timestep_scaling))
            cs_e, co_e = (v.view(-1, 1, 1, 1) for v in boundary_scalings(t_end.float(),
                                                                         timestep_scaling=cfg.timestep_scaling))
            noise = torch.randn(x0.shape, generator=gen).to(device)
            x_t = noise_sched.add_noise(x0, noise, t_start)
            w = cfg.w_min + (cfg.w_max - cfg.w_min) * torch.rand(B, generator=gen)
            w_emb = guidance_embedding(w, proj).to(device) if proj is not None else None
            w4 = w.to(device).view(-1, 1, 1, 1)
            pred = cs_s * x_t + co_s * x0_of(unet(x_t, t_start, cond, timestep_cond=w_emb).sample, t_start, x_t)
            with torch.no_grad():
                eps_c, eps_u = t_unet(torch.cat([x_t, x_t]), torch.cat([t_start, t_start]),
                                      torch.cat([cond, uncond.expand(B, -1, -1)])).sample.chunk(2)
                x0_c, x0_u = x0_of(eps_c, t_start, x_t), x0_of(eps_u, t_start, x_t)
                x_prev = solver.step(x0_c + w4 * (x0_c - x0_u), eps_c + w4 * (eps_c - eps_u), index)
                tgt = cs_e * x_prev + co_e * x0_of(target(x_prev, t_end, cond, timestep_cond=w_emb).sample, t_end,
                                                    x_prev)
            if cfg.loss == "l2":
                loss = torch.nn.functional.mse_loss(pred, tgt)
            else:
                loss = torch.mean(torch.sqrt((pred - tgt) ** 2 + cfg.huber_c ** 2) - cfg.huber_c)
            for g in opt.param_groups:
                g["lr"] = _lr_at(cfg, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                for p_t, p in zip(target.parameters(), unet.parameters()):
                    p_t.lerp_(p, 1 - cfg.ema_decay)
            step += 1
            losses.add(step, float(loss.detach()), B)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_checkpoint(out / "checkpoints", f"step_{step:09d}", {
                    "unet": unet.state_dict(), "target": target.state_dict(), "opt": opt.state_dict(),
                    "data_rng": data_rng.bit_generator.state, "gen": gen.get_state(), "step": step}, keep=1)
                export(losses.last)
    return {"out": str(out), "teacher": str(teacher), "steps": step, "device": str(device),
            "wall_s": time.time() - t0, "loss": losses.last}
