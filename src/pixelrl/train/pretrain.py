"""Slot-encoder pretraining (``pixelrl pretrain slots``): a Slot Attention autoencoder
(:class:`pixelrl.nets.slots.SlotAutoencoder`) trained by reconstruction on generated images of random objects, the
data the object-centric benchmark's encoders are pretrained on (Yoon et al. 2023: 5 random objects of 4 colours, 4
shapes, 2 scales, no agent, objects may overlap; :func:`pixelrl.envs.builtin.shapes.random_scenes`).

Optimisation follows Locatello et al. 2020 (``google-research/slot_attention``): Adam, lr 4e-4, linear warm-up over
10k steps, then ``lr * 0.5 ** (step / 100k)``, batch 64, MSE. The dataset is ``images`` images generated once from
``seed`` (the authors' 1M; the issue's command uses 100k) and sampled uniformly per batch.

Output folder ``--out DIR``:

* ``slots.json``: the architecture (:class:`~pixelrl.nets.slots.SlotConfig`), the data it was trained on, steps and
  the last loss; ``encoder.safetensors``: the encoder's weights (what ``--agent.encoder slots
  --agent.slot-encoder DIR`` loads, frozen); written atomically at every checkpoint and at the end;
* ``checkpoints/``: the full state (model, optimizer, data-sampling RNG, torch RNG, step) via
  :mod:`pixelrl.utils.checkpoint`; running the same command again continues from the latest one (the dataset is
  regenerated from the seed, identical);
* ``metrics.jsonl``: step, loss, lr, images/s.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelrl.agents.ppo import load_slot_encoder
from pixelrl.errors import ConfigError
from pixelrl.nets.slots import SlotAutoencoder, SlotConfig
from pixelrl.utils.atomic import write_bytes_atomic, write_json_atomic
from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

__all__ = ["PretrainConfig", "pretrain_slots", "load_slot_encoder", "make_images"]


@dataclass(frozen=True)
class PretrainConfig:
    """Slot Attention pretraining. Defaults: Locatello et al.'s optimisation, the benchmark's encoder (6 slots x 64,
    7 iterations) and data (random objects)."""

    env: str = "builtin/shapes-object-goal"
    """A ``builtin/shapes-*`` id: the benchmark the encoder is for. Its image size is ``model.image_size``; the
    pretraining images are random objects of the benchmark's pretraining set (4 colours, 4 shapes, 2 scales) for
    every task, as in the paper."""
    images: int = 100_000
    """Images generated for the dataset (the paper: 1M). Held in memory as uint8 (12 KB each at 64x64)."""
    steps: int = 500_000
    """Gradient steps (Locatello et al.: 500k)."""
    batch_size: int = 64
    """Images per step (Locatello et al.: 64)."""
    lr: float = 4e-4
    """Peak Adam learning rate (Locatello et al.: 4e-4)."""
    warmup_steps: int = 10_000
    """Linear warm-up of the learning rate (Locatello et al.: 10k)."""
    decay_steps: int = 100_000
    """The learning rate halves every this many steps (Locatello et al.: 0.5 per 100k)."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this (0: off, as Locatello et al.)."""
    num_objects: int = 5
    """Objects per image (the paper's random-objects data: 5)."""
    seed: int = 0
    """Seed of the dataset, the initialisation and the batch order."""
    device: str = "auto"
    """``auto`` (CUDA if available, else CPU), ``cpu`` or ``cuda``."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    log_every: int = 100
    """Steps between metrics rows."""
    checkpoint_every: int = 10_000
    """Steps between checkpoints (and encoder exports)."""
    model: SlotConfig = field(default_factory=SlotConfig)
    """The autoencoder's architecture (``--model.num-slots`` ...)."""

    def __post_init__(self) -> None:
        if not self.env.startswith("builtin/shapes-"):
            raise ConfigError(f"pixelrl pretrain slots is for the builtin/shapes-* envs, got --env {self.env!r}")
        for name in ("images", "steps", "batch_size", "num_objects", "log_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0 or self.decay_steps < 1:
            raise ConfigError("--warmup-steps must be >= 0 and --decay-steps >= 1")
        if self.grad_clip < 0:
            raise ConfigError(f"--grad-clip must be >= 0 (0 = off), got {self.grad_clip}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")


def make_images(cfg: PretrainConfig) -> np.ndarray:
    """The pretraining dataset: ``uint8[images, 3, S, S]``, a function of the config's seed and data fields only."""
    from pixelrl.envs import make
    from pixelrl.envs.builtin.shapes import random_scenes

    from pixelrl.envs.builtin import BUILTIN_ENVS

    if cfg.env.split("/", 1)[1] not in BUILTIN_ENVS:
        make(cfg.env)  # raises the unknown-id error with close matches
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 17]))
    return random_scenes(int(cfg.images), rng, num_objects=cfg.num_objects, size=cfg.model.image_size)


def _lr(cfg: PretrainConfig, step: int) -> float:
    warm = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    return cfg.lr * warm * 0.5 ** (step / cfg.decay_steps)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda but CUDA is not available; use --device cpu")
    return torch.device(name)


def _export(out: Path, model: SlotAutoencoder, cfg: PretrainConfig, step: int, loss: float) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()}
    write_bytes_atomic(out / "encoder.safetensors", save(tensors))
    write_json_atomic(out / "slots.json", {
        "kind": "slot-attention", "model": cfg.model.to_dict(), "steps": step, "loss": loss,
        "data": {"env": cfg.env, "images": cfg.images, "num_objects": cfg.num_objects, "seed": cfg.seed,
                 "distribution": "random objects: colours blue/green/yellow/red, shapes square/triangle/star_4/"
                                 "circle, scales 0.15/0.22, no agent, min centre distance 0.15"},
        "pretrain": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "model"}})


def pretrain_slots(cfg: PretrainConfig, out: str | Path, *, log=print) -> dict[str, Any]:
    """Train (or continue training) the slot autoencoder into ``out``; returns a summary: steps, the last logged
    loss, the first logged loss of the run, wall time, device, and the loss on a fixed batch of 64 dataset images
    before and after this call (``held_loss_before`` / ``held_loss_after``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = _device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    cfg_path = out / "pretrain.json"
    saved = dataclasses.asdict(cfg)
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        diff = [k for k in ("env", "images", "num_objects", "seed", "batch_size", "model") if old.get(k) != saved[k]]
        if diff:
            raise ConfigError(f"{out} holds a pretraining run with other {', '.join(diff)}; use another --out")
    write_json_atomic(cfg_path, saved)
    torch.manual_seed(cfg.seed)
    model = SlotAutoencoder(cfg.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 23]))
    step, first_loss = 0, None
    ckpt = latest_checkpoint(out / "checkpoints")
    if ckpt is not None:
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sampler.bit_generator.state = state["sampler"]
        torch.set_rng_state(state["torch_rng"].cpu() if hasattr(state["torch_rng"], "cpu") else state["torch_rng"])
        step, first_loss = int(state["step"]), state.get("first_loss")
        log(f"pretrain: continuing from {ckpt.name} (step {step})")
    t0 = time.time()
    data = torch.from_numpy(make_images(cfg))
    log(f"pretrain: {len(data)} images of {cfg.num_objects} random objects generated in {time.time() - t0:.1f}s")
    if device.type == "cuda":
        data = data.to(device)
    held = data[:min(len(data), 64)].to(device)  # a fixed batch: the loss before and after this call

    def held_loss() -> float:
        with torch.no_grad():
            return float(model.loss(held))

    initial_loss = held_loss()
    metrics = open(out / "metrics.jsonl", "a")
    t_start, t_log, loss_sum, n = time.time(), time.time(), 0.0, 0
    loss_v = float("nan")
    try:
        while step < cfg.steps:
            idx = torch.from_numpy(sampler.integers(len(data), size=cfg.batch_size))
            batch = data[idx.to(data.device)].to(device)
            lr = _lr(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = model.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            loss_sum += loss.item()
            n += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                loss_v = loss_sum / n
                first_loss = loss_v if first_loss is None else first_loss
                ips = n * cfg.batch_size / max(time.time() - t_log, 1e-9)
                metrics.write(json.dumps({"step": step, "loss": loss_v, "lr": lr, "images_per_s": ips}) + "\n")
                metrics.flush()
                log(f"pretrain: step {step}/{cfg.steps} loss {loss_v:.5f} lr {lr:.2e} ({ips:.0f} images/s)")
                t_log, loss_sum, n = time.time(), 0.0, 0
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_checkpoint(out / "checkpoints", f"step_{step:09d}", {
                    "model": model.state_dict(), "opt": opt.state_dict(), "sampler": sampler.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "step": step, "first_loss": first_loss}, keep=1)
                _export(out, model, cfg, step, loss_v)
    finally:
        metrics.close()
    wall = time.time() - t_start
    return {"out": str(out), "steps": step, "loss": loss_v, "first_loss": first_loss, "wall_s": wall,
            "device": str(device), "held_loss_before": initial_loss, "held_loss_after": held_loss()}
