"""Loading a generator: any diffusers-style folder (``model_index.json`` plus one subfolder per component) as a
:class:`Generator`, the one object the sampler and the trainer use.

The folder holds ``unet/`` (a ``UNet2DConditionModel``), ``scheduler/`` (DDIM, DDPM or LCM), ``text_encoder/`` (a
``CLIPTextModel``), ``tokenizer/`` (a ``CLIPTokenizer``) and, for latent models such as Stable Diffusion, ``vae/``
(an ``AutoencoderKL``). Without ``vae/`` the generator works in pixel space: its samples are images in [-1, 1]
with ``unet.config.in_channels == 3`` channels. ``pixelrl_generator.json`` (written by pixelrl's own generators)
may name the kind (``ddpm`` or ``lcm``) and a recommended guidance scale; otherwise the kind follows the
scheduler class (``LCMScheduler`` -> ``lcm``).

Nothing is downloaded: every component is read from the folder with ``from_pretrained(folder, subfolder=...)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from pixelrl.errors import ConfigError, MissingExtraError, NotFoundError

__all__ = ["Generator", "load_generator", "require_diffusers"]

_REQUIRED = ("unet", "scheduler", "text_encoder", "tokenizer")
_SCHEDULERS = ("DDIMScheduler", "DDPMScheduler", "LCMScheduler")


def require_diffusers(purpose: str = "RL fine-tuning of image generators"):
    """The ``diffusers`` module, or :class:`MissingExtraError` naming the ``genrl`` extra."""
    try:
        import diffusers
    except ImportError:
        raise MissingExtraError("diffusers", "genrl", purpose) from None
    return diffusers


@dataclass
class Generator:
    """A text-to-image diffusion model's components, on one device.

    ``kind`` is ``"ddpm"`` (DDPM/DDIM: sampled with stochastic DDIM steps) or ``"lcm"`` (a latent consistency
    model: sampled with LCM's multistep consistency sampling). ``vae`` is None for pixel-space generators."""

    folder: Path
    unet: Any
    scheduler: Any
    text_encoder: Any
    tokenizer: Any
    vae: Optional[Any]
    kind: str
    device: torch.device
    info: dict = field(default_factory=dict)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of the unet's sample space."""
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return int(self.unet.config.in_channels), int(h), int(w)

    @property
    def recommended_guidance(self) -> Optional[float]:
        """The guidance scale written in ``pixelrl_generator.json`` (``guidance_scale``), if any."""
        g = self.info.get("guidance_scale")
        return float(g) if isinstance(g, (int, float)) else None

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Text-encoder hidden states ``(B, L, D)`` of ``prompts`` (padded to the tokenizer's max length), on
        the generator's device. The text encoder is frozen (as in DDPO and RLCM)."""
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt")
        return self.text_encoder(tok.input_ids.to(self.device))[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images ``float[B, 3, H, W]`` in [0, 1] from samples of the unet's space (through the VAE when there
        is one, scaled by its ``scaling_factor``)."""
        x = latents
        if self.vae is not None:
            x = self.vae.decode(x.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return (x.float() / 2 + 0.5).clamp(0, 1)


def _component(diffusers, transformers, spec: Any, name: str, folder: Path):
    if not (isinstance(spec, list) and len(spec) == 2 and all(isinstance(s, str) for s in spec)):
        raise ConfigError(f"{folder}/model_index.json: '{name}' must be [library, class], got {spec!r}")
    library, cls_name = spec
    module = {"diffusers": diffusers, "transformers": transformers}.get(library)
    cls = getattr(module, cls_name, None) if module is not None else None
    if cls is None:
        raise ConfigError(f"{folder}/model_index.json: unknown component class {library}.{cls_name} for '{name}'")
    if not (folder / name).is_dir():
        raise NotFoundError(f"{folder}/{name}/ is missing (model_index.json lists the component '{name}')")
    return cls, cls_name


def load_generator(folder: str | Path, *, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> Generator:
    """Read a diffusers-style generator folder (pixel space, or latent with ``vae/``) onto ``device``.

    A missing folder or component raises :class:`NotFoundError`; a malformed ``model_index.json`` or a scheduler
    other than DDIM / DDPM / LCM raises :class:`ConfigError`; a missing ``diffusers`` raises
    :class:`MissingExtraError` naming the ``genrl`` extra."""
    diffusers = require_diffusers()
    import transformers

    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not folder.is_dir():
        raise NotFoundError(f"generator folder {folder} not found (a diffusers folder with model_index.json)")
    if not index_path.is_file():
        raise NotFoundError(f"{folder} has no model_index.json: it is not a diffusers pipeline folder")
    try:
        index = json.loads(index_path.read_text())
    except ValueError as e:
        raise ConfigError(f"{index_path} is not valid JSON ({e})") from None
    missing = [c for c in _REQUIRED if c not in index]
    if missing:
        raise ConfigError(f"{index_path} lists no {', '.join(missing)}: a text-to-image generator needs "
                          f"{', '.join(_REQUIRED)} (and vae for a latent model)")
    classes = {name: _component(diffusers, transformers, index[name], name, folder)
               for name in (*_REQUIRED, *(["vae"] if index.get("vae") and index["vae"][0] else []))}
    sched_cls, sched_name = classes["scheduler"]
    if sched_name not in _SCHEDULERS:
        raise ConfigError(f"{folder}: scheduler {sched_name} is not supported; the denoising MDP is defined for "
                          f"{', '.join(_SCHEDULERS)} (change scheduler/scheduler_config.json's _class_name)")
    info: dict = {}
    if (folder / "pixelrl_generator.json").is_file():
        info = json.loads((folder / "pixelrl_generator.json").read_text())
    kind = info.get("kind") or ("lcm" if sched_name == "LCMScheduler" else "ddpm")
    if kind not in ("ddpm", "lcm"):
        raise ConfigError(f"{folder}/pixelrl_generator.json: kind must be 'ddpm' or 'lcm', got {kind!r}")
    device = torch.device(device)

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()

    def load(name: str, **kw):
        cls, _ = classes[name]
        return cls.from_pretrained(folder, subfolder=name, **kw)

    unet = load("unet", torch_dtype=dtype).to(device)
    text_encoder = load("text_encoder", torch_dtype=dtype).to(device)
    vae = load("vae", torch_dtype=dtype).to(device) if "vae" in classes else None
    if vae is None and unet.config.in_channels != 3:
        raise ConfigError(f"{folder}: no vae/ but the unet has {unet.config.in_channels} input channels; a "
                          "pixel-space generator's unet works on RGB images (3 channels)")
    for m in (text_encoder, vae):
        if m is not None:
            m.requires_grad_(False).eval()
    return Generator(folder=folder, unet=unet, scheduler=load("scheduler"), text_encoder=text_encoder,
                     tokenizer=load("tokenizer"), vae=vae, kind=kind, device=device, info=info)
