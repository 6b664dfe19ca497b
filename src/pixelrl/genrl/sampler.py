"""The denoising MDP: sampling trajectories with per-step log-probabilities, and recomputing those log-probabilities
under the current weights, through one code path so that both are computed exactly alike.

State ``(c, t, x_t)``, action ``x_{t-1}``; the policy of one step is a Gaussian ``N(mu, sigma^2 I)``:

* **DDIM with eta > 0** (DDPO, ``kvablack/ddpo-pytorch`` ``ddim_with_logprob.py``): ``mu = sqrt(a_prev) x0_hat +
  sqrt(1 - a_prev - sigma^2) eps_hat``, ``sigma^2 = eta^2 (1 - a_prev) / (1 - a_t) (1 - a_t / a_prev)`` with
  ``prev = t - T / steps`` clamped to >= 0. DDPM folders are sampled with DDIM steps of their own noise schedule
  (``eta = 1`` is the DDPM posterior).
* **LCM** (RLCM, ``Owen-Oertell/rlcm`` ``lcm_scheduler.py``): ``mu = sqrt(a') f_theta(x_tau, tau, c)`` with the
  consistency function ``f_theta = c_skip x_tau + c_out x0_hat`` and ``sigma^2 = 1 - a'``, ``a'`` at the next
  timestep of the schedule; on the last step ``a' = a_tau`` (so sigma > 0) and the image is ``f_theta`` of that
  step, not the sampled latent.

``log pi = -(x_{t-1} - mu)^2 / (2 sigma^2) - log sigma - log sqrt(2 pi)``, averaged over all latent elements (as
the authors), against the stored sample.

**The sigma = 0 trap.** With a scheduler built from defaults (``steps_offset = 0``, ``leading`` spacing) DDIM's
last timestep is 0, so ``a_prev = a_t`` and sigma = 0: the log-probability is 0/0 and training silently collapses.
ddpo-pytorch escapes it only because Stable Diffusion's scheduler has ``steps_offset = 1``. :func:`make_schedule`
sets ``steps_offset = 1`` when the last timestep would be 0 (and says so in its notes), clamps ``prev`` to 0, and
checks sigma > 0 at every step (a :class:`~pixelrl.errors.ConfigError` otherwise, e.g. ``eta = 0``).

Trajectories are kept on the CPU (:class:`Trajectory`); the trainer moves one minibatch at a time to the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from pixelrl.errors import ConfigError
from pixelrl.genrl.model import Generator

__all__ = ["Schedule", "Trajectory", "make_schedule", "sample", "step_log_prob", "gaussian_log_prob",
           "guidance_embedding"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class Schedule:
    """The per-step constants of a sampling schedule (all ``float64`` tensors of length ``steps`` on the CPU)."""

    kind: str  # "ddim" or "lcm"
    timesteps: torch.Tensor  # long
    alpha_t: torch.Tensor
    alpha_prev: torch.Tensor
    std: torch.Tensor
    c_skip: torch.Tensor  # LCM only (zeros for DDIM)
    c_out: torch.Tensor
    prediction_type: str
    clip_sample: Optional[float]  # clip x0_hat to [-v, v], or None
    eta: float
    notes: tuple[str, ...] = ()

    @property
    def steps(self) -> int:
        return int(self.timesteps.numel())


def make_schedule(gen: Generator, steps: int, eta: float = 1.0) -> Schedule:
    """The schedule of ``steps`` sampling steps for ``gen`` (DDIM with ``eta`` for a DDPM/DDIM generator, LCM's
    multistep schedule for an LCM one), with the sigma = 0 trap handled (module docstring)."""
    from diffusers import DDIMScheduler, LCMScheduler

    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    cfg = dict(gen.scheduler.config)
    if cfg.get("thresholding"):
        raise ConfigError(f"{gen.folder}: the scheduler uses dynamic thresholding, which has no Gaussian step "
                          "log-probability; set thresholding to false in scheduler/scheduler_config.json")
    pred = cfg.get("prediction_type", "epsilon")
    if pred not in ("epsilon", "sample", "v_prediction"):
        raise ConfigError(f"{gen.folder}: prediction_type {pred!r} is not supported (epsilon, sample, v_prediction)")
    clip = float(cfg.get("clip_sample_range", 1.0)) if cfg.get("clip_sample") else None
    notes: list[str] = []
    if gen.kind == "lcm":
        sched = LCMScheduler.from_config(cfg)
        if steps > sched.config.original_inference_steps:
            raise ConfigError(f"--steps {steps} exceeds the LCM schedule's original_inference_steps "
                              f"({sched.config.original_inference_steps})")
        sched.set_timesteps(steps)
        ts = sched.timesteps.long().cpu()
        ac = sched.alphas_cumprod.double()
        prev = torch.cat([ts[1:], ts[-1:]])  # RLCM: the last step uses its own timestep, so sigma > 0
        a_t, a_prev = ac[ts], ac[prev]
        std = (1 - a_prev).sqrt()
        scal = [sched.get_scalings_for_boundary_condition_discrete(int(t)) for t in ts]
        c_skip = torch.tensor([s[0] for s in scal], dtype=torch.float64)
        c_out = torch.tensor([s[1] for s in scal], dtype=torch.float64)
        kind = "lcm"
    else:
        if not eta > 0:
            raise ConfigError(f"--eta must be > 0 for a stochastic policy (eta = 0 is deterministic DDIM, which has "
                              f"no log-probability), got {eta}")
        sched = DDIMScheduler.from_config(cfg)
        sched.set_timesteps(steps)
        if int(sched.timesteps[-1]) == 0:
            sched = DDIMScheduler.from_config(cfg, steps_offset=1)
            sched.set_timesteps(steps)
            notes.append("the scheduler's last timestep was 0 (sigma = 0 on the last step: log-prob 0/0); sampling "
                         "with steps_offset = 1 as Stable Diffusion's scheduler does")
        ts = sched.timesteps.long().cpu()
        ac = sched.alphas_cumprod.double()
        prev = (ts - sched.config.num_train_timesteps // steps).clamp(0, sched.config.num_train_timesteps - 1)
        a_t, a_prev = ac[ts], ac[prev]
        std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()
        c_skip = c_out = torch.zeros_like(a_t)
        kind = "ddim"
    bad = [int(t) for t, s in zip(ts, std) if not s > 0]
    if bad:
        raise ConfigError(f"the policy's sigma is 0 at timesteps {bad} of the {steps}-step schedule (the step has no "
                          "log-probability); use more steps or a scheduler with steps_offset = 1")
    return Schedule(kind=kind, timesteps=ts, alpha_t=a_t, alpha_prev=a_prev, std=std, c_skip=c_skip, c_out=c_out,
                    prediction_type=pred, clip_sample=clip, eta=float(eta), notes=tuple(notes))


def guidance_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
    """LCM's guidance-scale embedding (the LCM pipeline's ``get_guidance_scale_embedding``: sinusoidal of
    ``1000 w``), for unets with ``time_cond_proj_dim``."""
    w = w.float() * 1000.0
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    emb = w[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-sample log-density of ``x`` under ``N(mean, std^2)``, averaged over every non-batch element."""
    lp = -((x.detach() - mean) ** 2) / (2 * std**2) - torch.log(std) - _LOG_SQRT_2PI
    return lp.mean(dim=tuple(range(1, lp.ndim)))


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def _model_output(gen: Generator, unet: Any, sched: Schedule, x: torch.Tensor, idx: torch.Tensor,
                  cond: torch.Tensor, uncond: Optional[torch.Tensor], guidance: float) -> torch.Tensor:
    """The unet's (guided) prediction at ``x`` for the per-sample step indices ``idx``. DDIM: classifier-free
    guidance (one batched pass over ``[uncond, cond]``) when ``guidance > 1``; LCM: the guidance embedding when the
    unet has one (LCM has no CFG pass)."""
    t = sched.timesteps[idx.cpu()].to(x.device)
    if sched.kind == "lcm":
        dim = unet.config.time_cond_proj_dim
        w = guidance_embedding(torch.full((len(x),), guidance - 1.0), dim).to(x) if dim else None
        return unet(x, t, encoder_hidden_states=cond, timestep_cond=w).sample
    if guidance > 1 and uncond is not None:
        u = uncond.expand(len(x), *uncond.shape[-2:])
        out = unet(torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=torch.cat([u, cond])).sample
        out_u, out_c = out.chunk(2)
        return out_u + guidance * (out_c - out_u)
    return unet(x, t, encoder_hidden_states=cond).sample


def _mean_std(sched: Schedule, idx: torch.Tensor, x: torch.Tensor, out: torch.Tensor):
    """``(mu, sigma, denoised)`` of the step policy at ``x`` given the unet's output (module docstring)."""
    i = idx.cpu()
    a_t, a_prev, std = (_bcast(v[i], x) for v in (sched.alpha_t, sched.alpha_prev, sched.std))
    b_t = 1 - a_t
    if sched.prediction_type == "epsilon":
        x0, eps = (x - b_t.sqrt() * out) / a_t.sqrt(), out
    elif sched.prediction_type == "sample":
        x0 = out
        eps = (x - a_t.sqrt() * x0) / b_t.sqrt()
    else:  # v_prediction
        x0, eps = a_t.sqrt() * x - b_t.sqrt() * out, a_t.sqrt() * out + b_t.sqrt() * x
    if sched.clip_sample is not None:
        x0 = x0.clamp(-sched.clip_sample, sched.clip_sample)
    if sched.kind == "lcm":
        denoised = _bcast(sched.c_out[i], x) * x0 + _bcast(sched.c_skip[i], x) * x
        return a_prev.sqrt() * denoised, std, denoised
    mean = a_prev.sqrt() * x0 + (1 - a_prev - std**2).clamp(min=0).sqrt() * eps
    return mean, std, x0


def step_log_prob(gen: Generator, sched: Schedule, x: torch.Tensor, x_next: torch.Tensor, idx: torch.Tensor,
                  cond: torch.Tensor, uncond: Optional[torch.Tensor], guidance: float,
                  unet: Any = None) -> torch.Tensor:
    """``log pi(x_next | x, c)`` (per sample, with gradients) for samples at step indices ``idx`` (one index per
    sample, so a minibatch may mix timesteps), under ``unet`` (default: the generator's own)."""
    out = _model_output(gen, unet if unet is not None else gen.unet, sched, x, idx, cond, uncond, guidance)
    mean, std, _ = _mean_std(sched, idx, x, out)
    return gaussian_log_prob(x_next, mean, std)


@dataclass
class Trajectory:
    """A batch of sampled denoising trajectories, on the CPU.

    ``latents[:, j]`` is the state before step ``j`` and ``latents[:, j + 1]`` the action taken
    (``(B, steps + 1, C, H, W)``); ``log_probs[:, j]`` its log-probability when sampled; ``ref_log_probs`` the
    same under the reference model (when asked for); ``images`` the decoded images in [0, 1]."""

    prompts: list[str]
    embeds: torch.Tensor
    latents: torch.Tensor
    log_probs: torch.Tensor
    images: torch.Tensor
    ref_log_probs: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.prompts)

    @staticmethod
    def cat(parts: list["Trajectory"]) -> "Trajectory":
        refs = [p.ref_log_probs for p in parts]
        return Trajectory(prompts=[s for p in parts for s in p.prompts],
                          embeds=torch.cat([p.embeds for p in parts]), latents=torch.cat([p.latents for p in parts]),
                          log_probs=torch.cat([p.log_probs for p in parts]),
                          images=torch.cat([p.images for p in parts]),
                          ref_log_probs=None if any(r is None for r in refs) else torch.cat(refs))


@torch.no_grad()
def sample(gen: Generator, sched: Schedule, prompts: list[str], *, guidance: float, generator: torch.Generator,
           uncond: Optional[torch.Tensor] = None, reference: Optional[Callable[[], Any]] = None) -> Trajectory:
    """Sample one trajectory per prompt. Noise comes from ``generator`` (a CPU ``torch.Generator``, so a seed gives
    the same samples on any device). ``reference``, a callable returning a context manager under which
    ``gen.unet`` is the reference model (e.g. LoRA adapters disabled), adds ``ref_log_probs``."""
    cond = gen.encode_prompts(prompts)
    if uncond is None and sched.kind == "ddim" and guidance > 1:
        uncond = gen.encode_prompts([""])
    b = len(prompts)
    x = torch.randn((b, *gen.latent_shape), generator=generator).to(gen.device)
    lat, lps, refs = [x.cpu()], [], []
    denoised = x
    for j in range(sched.steps):
        idx = torch.full((b,), j, dtype=torch.long)
        out = _model_output(gen, gen.unet, sched, x, idx, cond, uncond, guidance)
        mean, std, denoised = _mean_std(sched, idx, x, out)
        noise = torch.randn(x.shape, generator=generator).to(x)
        x_next = mean + std * noise
        lps.append(gaussian_log_prob(x_next, mean, std).cpu())
        if reference is not None:
            with reference():
                refs.append(step_log_prob(gen, sched, x, x_next, idx, cond, uncond, guidance).cpu())
        x = x_next
        lat.append(x.cpu())
    final = denoised if sched.kind == "lcm" else x  # RLCM: the image is f_theta of the last step
    images = gen.decode(final).cpu()
    return Trajectory(prompts=list(prompts), embeds=cond.cpu(), latents=torch.stack(lat, 1),
                      log_probs=torch.stack(lps, 1), images=images,
                      ref_log_probs=torch.stack(refs, 1) if reference is not None else None)
