"""Rewards for RL fine-tuning of image generators.

Every reward is a callable object ``reward(images, prompts) -> Tensor[B]`` (float32, CPU) for images float
``[B, 3, H, W]`` in [0, 1], with a ``name`` and ``metadata(prompts)`` (a dict per prompt; ``{}`` when the reward
reads no prompt). :func:`make_reward` builds one from a spec string:

* ``jpeg-compressibility`` / ``jpeg-incompressibility`` -- DDPO's (Black et al. 2024, ``kvablack/ddpo-pytorch``
  ``ddpo_pytorch/rewards.py``): the image rounded to uint8, saved by PIL as JPEG quality 95; the reward is minus
  (compressibility) or plus (incompressibility) its size in kB (bytes / 1000).
* ``shapes-verifier:DIR`` -- a verifiable reward in the manner of Visual-RFT's: a small CNN detector
  (:class:`CountDetector`, trained here on generated shapes by :func:`train_verifier`) predicts how many shapes of
  every colour are in the image; the reward is the fraction of the prompt's requested (count, colour, shape) groups
  whose count it finds exactly, and ``last_info["success"]`` flags images whose predicted counts equal the request
  exactly (every requested group and nothing else).
* ``shapes-verifier-partial:DIR`` -- the same detector with partial credit for near-miss counts, as Flow-GRPO's
  GenEval training score (see :class:`ShapesVerifierReward`).
* ``aesthetic:DIR`` -- the LAION aesthetic predictor's architecture (DDPO's ``aesthetic_scorer.py``): an MLP
  (D -> 1024 -> 128 -> 64 -> 16 -> 1, dropout 0.2/0.2/0.1 unused at inference) on the L2-normalised CLIP image
  embedding; DIR holds ``aesthetic_mlp.safetensors`` and a transformers CLIP folder ``clip/`` (see
  :func:`write_aesthetic_folder`; the LAION weights convert with :func:`convert_laion_aesthetic`).
* ``model:SPEC`` -- any :mod:`pixelrl.rewards` reward model (``model:vlm:a red circle``, ``model:prefs:DIR`` ...),
  each image scored as a one-frame observation; options of that model (e.g. the CLIP folder ``model``) through
  ``make_reward(spec, options={...})``.

Reward clipping, KL guards and held-out rewards are the fine-tuning loop's (``pixelrl.genrl``), not here.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelrl.errors import ConfigError, CorruptFileError, NotFoundError
from pixelrl.genrl.shapes_data import ShapesVocabulary, counts_array, parse_prompt, resolve_task, sample_batch

__all__ = ["AestheticMLP", "AestheticReward", "CountDetector", "JpegReward", "ModelReward", "REWARD_SPECS",
           "ShapesVerifierReward", "VerifierConfig", "augment_images", "convert_laion_aesthetic", "load_detector",
           "make_reward", "partial_count_score", "train_verifier", "write_aesthetic_folder"]

REWARD_SPECS = ("jpeg-compressibility", "jpeg-incompressibility", "shapes-verifier:DIR", "shapes-verifier-partial:DIR",
                "aesthetic:DIR", "model:SPEC")


def _check_images(images: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = list(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ConfigError(f"the {what} reward scores float images [B, 3, H, W] in [0, 1], got {shape}")
    return images.detach().float().cpu()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``(images * 255).round().clamp(0, 255)`` as uint8 (DDPO's conversion)."""
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


# ------------------------------------------------------------------------------------------------ JPEG


class JpegReward:
    """DDPO's JPEG (in)compressibility: PIL JPEG quality 95 of the uint8 image, size in kB (bytes / 1000);
    ``-kB`` for compressibility, ``+kB`` for incompressibility. Prompts are ignored."""

    def __init__(self, incompressibility: bool = False, quality: int = 95) -> None:
        self.incompressibility = bool(incompressibility)
        self.quality = int(quality)
        self.name = "jpeg-incompressibility" if incompressibility else "jpeg-compressibility"

    def kilobytes(self, images: torch.Tensor) -> np.ndarray:
        from PIL import Image

        arr = to_uint8(_check_images(images, self.name)).numpy().transpose(0, 2, 3, 1)
        sizes = []
        for img in arr:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=self.quality)
            sizes.append(buf.tell() / 1000)
        return np.asarray(sizes, np.float64)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        kb = self.kilobytes(images)
        return torch.as_tensor(kb if self.incompressibility else -kb, dtype=torch.float32)

    def metadata(self, prompts: Sequence[str]) -> list[dict]:
        return [{} for _ in prompts]


# ---------------------------------------------------------------------------------------- shapes verifier


class CountDetector(nn.Module):
    """A small fully convolutional counter: for every (colour, shape) pair of a vocabulary it predicts a non-negative
    density map whose sum over the image is the number of such shapes (counting by density, as crowd counters do;
    every sprite of one shape has the same area, so a local colour-and-shape detector that spreads a mass of 1 over
    each sprite counts exactly). Input: float images [B, 3, S, S] in [0, 1], resized to ``image_size``."""

    def __init__(self, num_pairs: int, max_count: int, *, image_size: int = 32, width: int = 32) -> None:
        super().__init__()
        self.num_pairs, self.max_count, self.image_size = int(num_pairs), int(max_count), int(image_size)
        w = int(width)
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, self.num_pairs, 1), nn.Softplus(),
        )
        self.unit = float(self.image_size) ** 2 / 64.0  # density per pixel is about count / sprite area
        nn.init.constant_(self.net[-2].bias, -4.0)  # start near zero density (softplus(-4) = 0.018 per pixel)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Estimated counts ``[B, num_pairs]`` (real-valued)."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return self.net(images * 2 - 1).sum((2, 3)) / self.unit

    @torch.no_grad()
    def counts(self, images: torch.Tensor, batch_size: int = 256, threshold: float = 0.5) -> torch.Tensor:
        """Predicted counts ``int64[B, num_pairs]``: the estimates rounded and clipped to [0, max_count]; an
        estimate counts ``k`` once it reaches ``k - 1 + threshold`` (0.5: nearest integer)."""
        out = [(self(images[i:i + batch_size]) + 1 - threshold).floor().clamp(0, self.max_count).long()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.num_pairs, dtype=torch.long)


@dataclass(frozen=True)
class VerifierConfig:
    """Training of the shapes detector behind ``shapes-verifier:DIR`` (``pixelrl genrl pretrain-verifier``)."""

    steps: int = 2000
    """Adam steps."""
    batch_size: int = 64
    """Images per step, drawn from the pool (each mirrored left-right with probability 1/2)."""
    pool_images: int = 20_000
    """Generated images the batches are drawn from (generated once at the start: rendering costs about as much as
    a training step, so fresh images every step would double the time)."""
    lr: float = 3e-3
    """Adam learning rate (loss: squared error of the estimated counts)."""
    image_size: int = 32
    """Side of the detector's input (generated images of another size are resized to it)."""
    width: int = 32
    """Channels of the full-resolution conv layers (the half-resolution ones have twice as many)."""
    noise: float = 0.05
    """Largest std of the Gaussian pixel noise added to training images (uniform in [0, noise] per image), so the
    detector also reads the slightly noisy images a partly trained generator makes."""
    blur: float = 0.0
    """Largest std (in pixels) of the Gaussian blur applied to training images (uniform in [0, blur] per image,
    5x5 kernel), so the detector may also count the soft blobs an imperfect generator draws; 0 (the default)
    turns it off."""
    jitter: float = 0.0
    """Colour jitter of training images: each channel of each image is scaled by a factor uniform in
    [1 - jitter, 1 + jitter] and shifted by one uniform in [-jitter/2, jitter/2]; 0 (the default) turns it off."""
    eval_images: int = 1024
    """Held-out generated images for the accuracy written to detector.json (never augmented)."""
    count_threshold: float = 0.5
    """The fraction at which an estimated count rounds up (an estimate counts ``k`` from ``k - 1 + threshold``;
    0.5, the default: the nearest integer). Written to detector.json's config, where the reward reads it, so it may
    also be set after training by editing that file (``--verifier-check`` of ``benchmarks/genrl_cpu.py`` measures
    precision and recall at several values). Below 0.5 the verifier finds shapes the detector sees faintly: on the
    one-shape generator's images its estimates for correctly drawn shapes are often 0.2-0.5 (softer and less
    saturated than the rendered training sprites), so 0.5 misses many of them."""
    seed: int = 0
    """Seed of the data and the initialisation."""
    vocabulary: ShapesVocabulary = field(default_factory=lambda: ShapesVocabulary(max_groups=2))
    """Colours, shapes, counts and groups of the training images (it must cover the prompts scored)."""
    task: Optional[str] = None
    """A named task family that sets ``vocabulary`` to its verifier vocabulary (``pixelrl.genrl.shapes_data.TASKS``:
    ``scenes``, the default vocabulary, or ``one-shape``: one or two large shapes on flat grey); use the generator's
    --task. None: ``vocabulary`` as given."""
    log_every: int = 100
    """Steps between progress lines and metrics rows."""
    device: str = "auto"
    """auto (CUDA if available, else CPU), cpu, cuda or cuda:N: where the detector trains (as ``pixelrl genrl train
    --device``). The pool is rendered and every batch drawn and augmented on the CPU from the seeded streams, then
    moved to the device, so a seed gives the same batches on any device; the weights are saved from the CPU and
    the held-out accuracy is measured on the device. detector.json records the device used (``device``)."""

    def __post_init__(self) -> None:
        from pixelrl.genrl.generator import check_device

        check_device(self.device)
        object.__setattr__(self, "vocabulary", resolve_task(self.task, self.vocabulary, ShapesVocabulary(max_groups=2),
                                                            role="verifier"))
        for name in ("steps", "batch_size", "pool_images", "image_size", "width", "eval_images", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.image_size % 4:
            raise ConfigError(f"image_size={self.image_size} must be a multiple of 4")
        if not 0 < self.count_threshold < 1:
            raise ConfigError(f"count_threshold={self.count_threshold} must be in (0, 1)")
        if not self.lr > 0 or min(self.noise, self.blur, self.jitter) < 0:
            raise ConfigError(f"lr={self.lr} must be > 0 and noise={self.noise}, blur={self.blur}, "
                              f"jitter={self.jitter} >= 0")


DETECTOR_FILE, DETECTOR_JSON = "detector.safetensors", "detector.json"


def _detector_eval(model: CountDetector, images: torch.Tensor, target: torch.Tensor,
                   threshold: float = 0.5) -> dict[str, float]:
    pred = model.counts(images, threshold=threshold)
    return {"pair_accuracy": float((pred == target).float().mean()),
            "exact_match": float((pred == target).all(-1).float().mean())}


def augment_images(x: torch.Tensor, cfg: VerifierConfig, generator: torch.Generator) -> torch.Tensor:
    """The training augmentation of :func:`train_verifier` on images ``[B, 3, S, S]`` in [0, 1]: a random
    left-right flip, then ``cfg.blur`` Gaussian blur, ``cfg.jitter`` colour jitter and ``cfg.noise`` pixel noise,
    all drawn from ``generator`` (the same generator state gives the same images)."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    B, C, H, W = x.shape
    if cfg.blur > 0:
        sigma = (torch.rand(B, generator=generator) * cfg.blur).clamp(min=1e-3)
        k = torch.exp(-0.5 * (torch.arange(-2, 3, dtype=x.dtype)[None] / sigma[:, None]) ** 2)
        k = (k / k.sum(-1, keepdim=True)).repeat_interleave(C, 0)  # [B*C, 5]
        y = F.pad(x.reshape(1, B * C, H, W), (2, 2, 2, 2), mode="replicate")
        y = F.conv2d(y, k[:, None, None, :], groups=B * C)
        x = F.conv2d(y, k[:, None, :, None], groups=B * C).reshape(B, C, H, W)
    if cfg.jitter > 0:
        scale = 1 + (torch.rand(B, C, 1, 1, generator=generator) * 2 - 1) * cfg.jitter
        shift = (torch.rand(B, C, 1, 1, generator=generator) - 0.5) * cfg.jitter
        x = (x * scale + shift).clamp(0, 1)
    if cfg.noise > 0:
        std = torch.rand(B, 1, 1, 1, generator=generator) * cfg.noise
        x = (x + std * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    return x


def train_verifier(out: str | os.PathLike, cfg: VerifierConfig = VerifierConfig(), *, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the shapes detector on freshly generated images and write ``out/detector.safetensors`` +
    ``out/detector.json`` (config, vocabulary, held-out accuracy, wall time), atomically. Returns the summary."""
    from pixelrl.genrl.generator import training_progress
    from pixelrl.train.loop import resolve_device
    from pixelrl.utils.atomic import write_bytes_atomic, write_json_atomic
    from safetensors.torch import save

    out = Path(out)
    device = resolve_device(cfg.device)  # no CUDA is one line, before anything is written
    vocab = cfg.vocabulary
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 101]))
    eval_rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 102]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = CountDetector(len(vocab.pairs), vocab.max_count, image_size=cfg.image_size, width=cfg.width)
    model.to(device)  # initialised on the CPU (seeded): the same start on any device
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    t0 = time.perf_counter()
    ev_img, _, ev_groups = sample_batch(cfg.eval_images, eval_rng, vocab, size=cfg.image_size)
    ev_x = torch.from_numpy(ev_img).float() / 255
    ev_y = torch.from_numpy(counts_array(ev_groups, vocab))
    pool_img, _, pool_groups = sample_batch(cfg.pool_images, rng, vocab, size=cfg.image_size)
    pool_x, pool_y = torch.from_numpy(pool_img), torch.from_numpy(counts_array(pool_groups, vocab))
    gen = torch.Generator().manual_seed(int(cfg.seed))
    loss_v = float("nan")
    with training_progress(cfg.steps, "verifier", enabled=progress) as bar:
        for step in range(1, cfg.steps + 1):
            idx = torch.randint(len(pool_x), (cfg.batch_size,), generator=gen)
            x, y = augment_images(pool_x[idx].float() / 255, cfg, gen), pool_y[idx]  # on the CPU (seeded)
            loss = F.mse_loss(model(x.to(device)), y.float().to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_v = float(loss.detach())
            bar.advance(step, f"loss {loss_v:.4f}")
            if step % cfg.log_every == 0 and progress and not bar.live:
                log(f"verifier: step {step}/{cfg.steps} loss {loss_v:.4f}")
    model.eval()
    acc = _detector_eval(model, ev_x.to(device), ev_y.to(device), cfg.count_threshold)
    wall = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / DETECTOR_FILE, save({k: v.detach().cpu().contiguous()
                                                  for k, v in model.state_dict().items()}))
    cfg_d = asdict(cfg)
    cfg_d["vocabulary"] = vocab.to_dict()
    summary = {"kind": "shapes-count-detector", "config": cfg_d, "device": str(device), "loss": loss_v, **acc,
               "wall_s": wall, "held_out_images": cfg.eval_images}
    write_json_atomic(out / DETECTOR_JSON, summary)
    return {"out": str(out), **summary}


def load_detector(folder: str | os.PathLike) -> tuple[CountDetector, ShapesVocabulary, dict]:
    """``(detector in eval mode, its vocabulary, detector.json)`` of a ``pretrain-verifier`` folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_p, w_p = folder / DETECTOR_JSON, folder / DETECTOR_FILE
    if not meta_p.is_file() or not w_p.is_file():
        raise NotFoundError(f"{folder} is not a shapes-verifier folder (needs {DETECTOR_JSON} and {DETECTOR_FILE}); "
                            "make one with `pixelrl genrl pretrain-verifier --out DIR`")
    try:
        meta = json.loads(meta_p.read_text())
        c = meta["config"]
        vocab = ShapesVocabulary.from_dict(c["vocabulary"])
        model = CountDetector(len(vocab.pairs), vocab.max_count, image_size=c["image_size"], width=c["width"])
        model.load_state_dict(load_file(str(w_p)))
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CorruptFileError(folder, f"cannot read the detector ({str(e).splitlines()[0]})") from None
    return model.eval(), vocab, meta


class ShapesVerifierReward:
    """Fraction of the prompt's requested (count, colour, shape) groups that the detector finds with exactly that
    count; ``last_info["success"]`` (bool ``[B]``) marks images whose predicted counts match the request exactly
    (no missing, wrong or extra shapes), ``last_info["predicted"]`` holds the predicted count table.

    ``partial=True`` (spec ``shapes-verifier-partial:DIR``) gives partial credit instead, as Flow-GRPO's GenEval
    training reward (``yifan123/reward-server``, ``reward_server/gen_eval.py``, ``evaluate_reward``, whose ``score``
    Flow-GRPO trains on): every requested group of ``n`` shapes adds the term ``1 - |n - found| / n`` for the number
    of shapes of its class (``found``: the predicted count of that shape summed over colours), then, if that count
    is right, the term ``1 - |n - found_colour| / n`` for the shapes of the requested colour, else a 0 in its place;
    the reward is the mean of the terms (negative when far more shapes than requested are found, as there). The
    mapping (GenEval's object class is our shape, its colour attribute our colour) is ours. ``success`` stays the
    strict exact match.

    ``threshold`` (None: the folder's ``count_threshold``, 0.5 when detector.json has none) is where an estimated
    count rounds up (:attr:`VerifierConfig.count_threshold`)."""

    def __init__(self, folder: str | os.PathLike, *, partial: bool = False, threshold: float | None = None) -> None:
        self.detector, self.vocab, self.meta = load_detector(folder)
        t = threshold if threshold is not None else (self.meta.get("config") or {}).get("count_threshold", 0.5)
        try:
            self.threshold = float(t)
        except (TypeError, ValueError):
            self.threshold = float("nan")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"{folder}: count_threshold {t!r} must be a number in (0, 1)")
        self.partial = bool(partial)
        self.name = f"shapes-verifier{'-partial' if partial else ''}:{folder}"
        self.last_info: dict[str, Any] = {}

    def metadata(self, prompts: Sequence[str]) -> list[dict]:
        """The requested groups of each prompt, ``{"requested": {"red circle": 2, ...}}``."""
        return [{"requested": {f"{c} {s}": n for (c, s), n in parse_prompt(p, self.vocab).items()}} for p in prompts]

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        x = _check_images(images, "shapes-verifier").clamp(0, 1)
        if len(prompts) != len(x):
            raise ConfigError(f"the shapes-verifier reward got {len(x)} images but {len(prompts)} prompts")
        want = torch.from_numpy(counts_array([parse_prompt(p, self.vocab) for p in prompts], self.vocab))
        pred = self.detector.counts(x, threshold=self.threshold)
        self.last_info = {"success": (pred == want).all(-1), "predicted": pred}
        if self.partial:
            return partial_count_score(pred, want, len(self.vocab.colors), len(self.vocab.shapes))
        asked = want > 0
        found = ((pred == want) & asked).sum(-1).float()
        reward = found / asked.sum(-1).clamp(min=1).float()
        return reward.float()


def partial_count_score(pred: torch.Tensor, want: torch.Tensor, n_colors: int, n_shapes: int) -> torch.Tensor:
    """Flow-GRPO's GenEval partial-credit score (see :class:`ShapesVerifierReward`) from count tables ``[B, P]``
    laid out colour-major as :func:`~pixelrl.genrl.shapes_data.counts_array` (``P = n_colors * n_shapes``)."""
    p = pred.reshape(len(pred), n_colors, n_shapes).double()
    w = want.reshape(len(want), n_colors, n_shapes).double()
    per_shape = p.sum(1, keepdim=True).expand_as(p)  # found objects of each class (shape), any colour
    asked = w > 0
    n = w.clamp(min=1)
    class_term = 1 - (w - per_shape).abs() / n
    class_ok = per_shape == w
    colour_term = torch.where(class_ok, 1 - (w - p).abs() / n, torch.zeros_like(p))
    total = ((class_term + colour_term) * asked).sum((1, 2))
    return (total / (2 * asked.sum((1, 2))).clamp(min=1)).float()


# ------------------------------------------------------------------------------------------- aesthetic


class AestheticMLP(nn.Module):
    """The LAION aesthetic predictor's head (``improved-aesthetic-predictor``, as DDPO's ``aesthetic_scorer.MLP``):
    Linear(D, 1024), Dropout 0.2, Linear(1024, 128), Dropout 0.2, Linear(128, 64), Dropout 0.1, Linear(64, 16),
    Linear(16, 1), no activations; keys ``layers.{0,2,4,6,7}.{weight,bias}``."""

    def __init__(self, input_dim: int = 768) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(input_dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        return self.layers(embed)


AESTHETIC_FILE = "aesthetic_mlp.safetensors"


class AestheticReward:
    """The aesthetic-style score: the MLP on the L2-normalised CLIP image embedding of the uint8 image."""

    def __init__(self, folder: str | os.PathLike, device: str = "cpu") -> None:
        from safetensors.torch import load_file

        from pixelrl.rewards.vlm import load_clip

        folder = Path(folder)
        if not (folder / AESTHETIC_FILE).is_file() or not (folder / "clip").is_dir():
            raise NotFoundError(f"{folder} is not an aesthetic reward folder (needs {AESTHETIC_FILE} and a CLIP "
                                "folder clip/); write one with pixelrl.genrl.rewards.write_aesthetic_folder")
        self.clip = load_clip(str(folder / "clip"), device)
        state = load_file(str(folder / AESTHETIC_FILE))
        w0 = state.get("layers.0.weight")
        if w0 is None:
            raise CorruptFileError(folder / AESTHETIC_FILE, "no layers.0.weight: not an aesthetic MLP")
        self.mlp = AestheticMLP(int(w0.shape[1]))
        try:
            self.mlp.load_state_dict(state)
        except RuntimeError as e:
            raise CorruptFileError(folder / AESTHETIC_FILE, str(e).splitlines()[0]) from None
        self.mlp.to(self.clip.device).eval()
        self.name = f"aesthetic:{folder}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        emb = self.clip.embed_images(to_uint8(_check_images(images, "aesthetic")))  # normalised, as DDPO
        if emb.shape[1] != self.mlp.layers[0].in_features:
            raise ConfigError(f"the aesthetic MLP takes {self.mlp.layers[0].in_features}-d embeddings but the CLIP "
                              f"model gives {emb.shape[1]}-d ones; pair the MLP with the CLIP it was trained on")
        return self.mlp(emb).squeeze(1).float().cpu()

    def metadata(self, prompts: Sequence[str]) -> list[dict]:
        return [{} for _ in prompts]


def write_aesthetic_folder(out: str | os.PathLike, clip_folder: str | os.PathLike, *,
                           mlp_state: dict[str, torch.Tensor] | None = None, seed: int = 0) -> Path:
    """Write an ``aesthetic:`` folder: a copy of the CLIP folder as ``clip/`` and the MLP weights (``mlp_state``, or a
    random MLP sized to the CLIP's projection for tests)."""
    import shutil

    from safetensors.torch import save

    from pixelrl.utils.atomic import write_bytes_atomic

    out, clip_folder = Path(out), Path(clip_folder)
    cfg = json.loads((clip_folder / "config.json").read_text())
    dim = int(cfg.get("projection_dim", 512))
    if mlp_state is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mlp_state = AestheticMLP(dim).state_dict()
    out.mkdir(parents=True, exist_ok=True)
    if (out / "clip").exists():
        shutil.rmtree(out / "clip")
    shutil.copytree(clip_folder, out / "clip")
    write_bytes_atomic(out / AESTHETIC_FILE, save({k: v.contiguous() for k, v in mlp_state.items()}))
    return out


def convert_laion_aesthetic(pth: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of the LAION predictor's ``sac+logos+ava1-l14-linearMSE.pth`` (read with ``weights_only=True``),
    to pass to :func:`write_aesthetic_folder` with the ViT-L/14 CLIP folder."""
    state = torch.load(str(pth), map_location="cpu", weights_only=True)
    AestheticMLP(int(state["layers.0.weight"].shape[1])).load_state_dict(state)  # checks the keys and shapes
    return {k: v.float() for k, v in state.items()}


# ------------------------------------------------------------------------------ any pixelrl.rewards model


class ModelReward:
    """A :mod:`pixelrl.rewards` reward model scoring each image as a one-frame uint8 observation (prompts ignored:
    the model's own configuration says what it rewards, e.g. ``vlm:<goal prompt>``)."""

    def __init__(self, spec: str, options: dict[str, Any] | None = None) -> None:
        from pixelrl.rewards.base import RewardConfig, build_reward_model
        from pixelrl.utils.dataclass_io import from_dict

        cfg = from_dict(RewardConfig, {"spec": spec, **(options or {})}, where="model: reward options")
        self.model = build_reward_model(cfg, cfg.device or "cpu")
        self._space = None
        self.name = f"model:{spec}"

    def _bind(self, h: int, w: int) -> None:
        import gymnasium as gym

        if self._space != (h, w):
            self.model.bind(gym.spaces.Box(0, 255, (3, h, w), np.uint8), 1)
            self._space = (h, w)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        x = to_uint8(_check_images(images, self.name))
        self._bind(x.shape[2], x.shape[3])
        obs = x.numpy()
        return torch.as_tensor(np.asarray(self.model(obs, next_obs=obs), np.float32))

    def metadata(self, prompts: Sequence[str]) -> list[dict]:
        return [{} for _ in prompts]


# ------------------------------------------------------------------------------------------------ specs


def make_reward(spec: str, *, options: dict[str, Any] | None = None, device: str = "cpu"):
    """The reward a spec names (see the module docstring); a bad spec is one :class:`ConfigError` line."""
    accepted = ", ".join(REWARD_SPECS)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"--reward needs a spec, got {spec!r}; accepted: {accepted}")
    s = spec.strip()
    if s in ("jpeg-compressibility", "jpeg-incompressibility"):
        if options:
            raise ConfigError(f"--reward {s} takes no options, got {', '.join(options)}")
        return JpegReward(incompressibility=s == "jpeg-incompressibility")
    kind, sep, arg = s.partition(":")
    if kind in ("shapes-verifier", "shapes-verifier-partial", "aesthetic", "model") and (not sep or not arg.strip()):
        usage = {"shapes-verifier": "shapes-verifier:DIR (a `pixelrl genrl pretrain-verifier` folder)",
                 "shapes-verifier-partial": "shapes-verifier-partial:DIR (a `pixelrl genrl pretrain-verifier` folder)",
                 "aesthetic": "aesthetic:DIR (aesthetic_mlp.safetensors + clip/)",
                 "model": "model:SPEC (a pixelrl.rewards spec, e.g. model:vlm:a red circle)"}[kind]
        raise ConfigError(f"--reward {spec!r} needs an argument: {usage}")
    if kind in ("shapes-verifier", "shapes-verifier-partial"):
        return ShapesVerifierReward(arg.strip(), partial=kind == "shapes-verifier-partial")
    if kind == "aesthetic":
        return AestheticReward(arg.strip(), device)
    if kind == "model":
        return ModelReward(arg.strip(), options)
    close = [a for a in REWARD_SPECS if a.split(":")[0].startswith(kind[:4].lower())]
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"--reward {spec!r} is not a generator reward{hint}; accepted: {accepted}")
