"""``pixelrl genrl pretrain-generator | distill | pretrain-verifier``: build the local generator, its consistency
model and the shapes verifier. Parsing only; the work is in :mod:`pixelrl.genrl.generator` and
:mod:`pixelrl.genrl.rewards`. :data:`COMMANDS` and :data:`USAGE_LINES` join ``pixelrl genrl``'s table
(:mod:`pixelrl.cli.genrl`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Optional

from pixelrl.errors import ConfigError
from pixelrl.genrl.generator import DistillConfig, GeneratorTrainConfig
from pixelrl.genrl.rewards import VerifierConfig

__all__ = ["COMMANDS", "USAGE_LINES"]

USAGE_LINES = """  pretrain-generator   train the local text-conditioned pixel DDPM on generated shapes images:
          pixelrl genrl pretrain-generator --out DIR --steps N   (the same command again continues DIR)
  distill   latent consistency distillation of a generator into a few-step (LCM) one:
          pixelrl genrl distill --teacher DIR --out DIR2 --steps N
  pretrain-verifier   train the shapes count detector behind the reward shapes-verifier:DIR:
          pixelrl genrl pretrain-verifier --out DIR
  samples   a PNG grid of a generator's samples, one row per prompt:
          pixelrl genrl samples --model DIR --out grid.png [--prompts "two red circles" "one blue square"]"""


@dataclass(frozen=True)
class _PretrainGenerator(GeneratorTrainConfig):
    """Train the local text-conditioned pixel-space DDPM (diffusers UNet2DConditionModel + a tiny CLIP text encoder)
    on generated coloured shapes and write it to --out as a diffusers-style generator folder; checkpoints under
    DIR/checkpoints (the same command continues). See docs/genrl_models.md."""

    out: Optional[str] = None
    """Generator folder to write. Required."""
    progress: bool = True
    """Show a progress bar (plain lines when stdout is not a terminal)."""


@dataclass(frozen=True)
class _Distill(DistillConfig):
    """Latent consistency distillation (LCM) of --teacher into a few-step generator written to --out (same folder
    format, LCMScheduler); checkpoints under DIR/checkpoints (the same command continues). See
    docs/genrl_models.md."""

    teacher: Optional[str] = None
    """Generator folder to distil (from ``pixelrl genrl pretrain-generator``). Required."""
    out: Optional[str] = None
    """Folder to write the consistency model to. Required."""
    progress: bool = True
    """Show a progress bar (plain lines when stdout is not a terminal)."""


@dataclass(frozen=True)
class _PretrainVerifier(VerifierConfig):
    """Train the small CNN that counts shapes per colour, behind the reward ``shapes-verifier:DIR``, on generated
    images; writes DIR/detector.safetensors and DIR/detector.json (with its held-out accuracy). See
    docs/genrl_models.md."""

    out: Optional[str] = None
    """Folder to write the detector to. Required."""
    progress: bool = True
    """Show a progress bar (plain lines when stdout is not a terminal)."""


@dataclass(frozen=True)
class _Samples:
    """Sample a pixel-space generator folder (DDIM for a DDPM, LCM sampling for a consistency model) and write a PNG
    grid, one row per prompt. See docs/genrl_models.md."""

    model: Optional[str] = None
    """Generator folder. Required."""
    out: Optional[str] = None
    """PNG file to write. Required."""
    prompts: tuple[str, ...] = ("one red circle", "two green squares", "three blue triangles", "two yellow circles")
    """Prompts, one row each."""
    per_prompt: int = 8
    """Images per prompt."""
    steps: Optional[int] = None
    """Sampling steps (None: 50 DDIM steps, 4 LCM steps)."""
    guidance: Optional[float] = None
    """Classifier-free guidance scale (None: the folder's recommended one, else 3)."""
    seed: int = 0
    """Seed of the initial noise."""


def _samples(args: _Samples) -> int:
    from pixelrl.genrl.generator import sample_grid

    model = _need(args.model, "pixelrl genrl samples needs --model DIR (a generator folder)")
    out = _need(args.out, "pixelrl genrl samples needs --out FILE.png")
    if args.per_prompt < 1 or not args.prompts:
        raise ConfigError("pixelrl genrl samples needs --per-prompt >= 1 and at least one prompt")
    print(json.dumps(sample_grid(model, out, list(args.prompts), per_prompt=args.per_prompt, steps=args.steps,
                                 guidance=args.guidance, seed=args.seed)))
    return 0


def _config(cls: type, args, where: str):
    from pixelrl.utils.dataclass_io import from_dict, to_dict

    names = {f.name for f in dataclasses.fields(cls)}
    return from_dict(cls, {k: v for k, v in to_dict(args).items() if k in names}, where=where)


def _need(value, message: str) -> str:
    if value is None:
        raise ConfigError(message)
    return value


def _pretrain_generator(args: _PretrainGenerator) -> int:
    from pixelrl.genrl.generator import train_generator

    out = _need(args.out, "pixelrl genrl pretrain-generator needs --out DIR (the generator folder to write)")
    summary = train_generator(out, _config(GeneratorTrainConfig, args, "pretrain-generator options"),
                              progress=args.progress)
    print(json.dumps(summary))
    return 0


def _distill(args: _Distill) -> int:
    from pixelrl.genrl.generator import distill_consistency

    teacher = _need(args.teacher, "pixelrl genrl distill needs --teacher DIR (a generator folder)")
    out = _need(args.out, "pixelrl genrl distill needs --out DIR (the folder to write the consistency model to)")
    summary = distill_consistency(teacher, out, _config(DistillConfig, args, "distill options"),
                                  progress=args.progress)
    print(json.dumps(summary))
    return 0


def _pretrain_verifier(args: _PretrainVerifier) -> int:
    from pixelrl.genrl.rewards import train_verifier

    out = _need(args.out, "pixelrl genrl pretrain-verifier needs --out DIR (the detector folder to write)")
    summary = train_verifier(out, _config(VerifierConfig, args, "pretrain-verifier options"), progress=args.progress)
    summary.pop("config", None)
    print(json.dumps(summary))
    return 0


def _commands() -> dict:
    from pixelrl.cli.main import _unchecked

    return {"pretrain-generator": (_unchecked(_PretrainGenerator), _pretrain_generator),
            "distill": (_unchecked(_Distill), _distill),
            "pretrain-verifier": (_unchecked(_PretrainVerifier), _pretrain_verifier),
            "samples": (_Samples, _samples)}


COMMANDS = _commands()
"""``{SUB: (ArgsDataclass, handler)}`` merged into ``pixelrl genrl``'s table."""
