"""RL fine-tuning of an image generator: ``pixelrl genrl train`` (:func:`train`).

One epoch: **sample** ``sample_batches`` batches of trajectories (no gradients, stored on the CPU); **reward** the
decoded images with every reward of the config (the first is trained on; clipped when ``reward_clip`` is set; the
held-out reward is computed on the same images and only logged; ``kl_ref``, the KL of the sampling policy to the
reference model, is estimated from ``log_kl_batches`` batches); **advantages** by the algorithm (per-prompt
statistics for DDPO / RLCM, group-relative for GRPO, pair differences for PRDP and preferences, Pareto weights for
Parrot); then ``inner_epochs`` passes of **updates**: minibatches of ``train_batch_size`` samples, each trained on
its timesteps in a random order per sample, the per-timestep losses' gradients accumulated over the timesteps and
``grad_accum`` minibatches before one optimizer step (gradient-norm clipped), as DDPO.

Parameters: LoRA adapters (peft, through diffusers' ``add_adapter``) on the unet's attention projections, or the
whole unet. The reference model is the unet with the adapters disabled (or a frozen copy of it).

The run folder is laid out like every pixelrl run (:mod:`pixelrl.train.logger`): ``config.json`` (resolved),
``metrics.jsonl`` + ``train.csv`` + TensorBoard (one ``train`` row per epoch; ``frames`` and ``agent_steps`` count
denoising steps sampled, ``images`` the images), ``checkpoints/`` (trainable weights, optimizer, stat tracker,
counters; atomic), and at the end ``generator/``: the fine-tuned generator as a diffusers folder (LoRA merged).
The noise, prompt draws and update order of epoch ``e`` come from seeds derived from ``(seed, e)``, so a run
continued from a checkpoint (the same command again) writes the same rows as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from pixelrl.errors import ConfigError, DivergenceError, NotFoundError
from pixelrl.genrl import losses as L
from pixelrl.genrl.config import GenRLConfig
from pixelrl.genrl.model import Generator, load_generator
from pixelrl.genrl.sampler import Schedule, Trajectory, make_schedule, sample, step_log_prob
from pixelrl.train.logger import Logger
from pixelrl.train.loop import resolve_device
from pixelrl.utils.atomic import RunLock, write_json_atomic
from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from pixelrl.utils.dataclass_io import to_dict
from pixelrl.utils.seeding import derive_seed, seed_everything

__all__ = ["train", "read_prompts", "LORA_TARGETS"]

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
# fields that may differ when the same run folder is continued (everything else must match config.json)
_RESUMABLE = ("epochs", "device", "threads", "progress", "checkpoint_every", "keep_checkpoints", "export",
              "time_budget_min")


def read_prompts(path: str | Path) -> list[str]:
    """The prompts of a text file, one per line, blank lines skipped."""
    p = Path(path)
    if not str(path):
        raise ConfigError("--prompts FILE is required (a text file with one prompt per line)")
    if not p.is_file():
        raise NotFoundError(f"prompt file {p} not found (a text file with one prompt per line)")
    prompts = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"prompt file {p} has no prompts (one per line)")
    return prompts


class _Policy:
    """The trainable part of the generator and its reference: LoRA adapters (reference = adapters disabled) or
    the whole unet (reference = a frozen copy)."""

    def __init__(self, gen: Generator, cfg: GenRLConfig) -> None:
        self.gen, self.lora = gen, cfg.lora
        gen.unet.requires_grad_(False)
        if cfg.lora:
            try:
                from peft import LoraConfig
            except ImportError:
                from pixelrl.errors import MissingExtraError

                raise MissingExtraError("peft", "genrl", "LoRA fine-tuning (or use --no-lora)") from None
            names = {n.rsplit(".", 1)[-1] for n, _ in gen.unet.named_modules()} | \
                {".".join(n.split(".")[-2:]) for n, _ in gen.unet.named_modules()}
            if not any(t in names for t in LORA_TARGETS):
                raise ConfigError(f"{gen.folder}: the unet has no attention projections ({', '.join(LORA_TARGETS)}) "
                                  "to put LoRA adapters on; use --no-lora to fine-tune the whole unet")
            gen.unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, init_lora_weights="gaussian",
                                            target_modules=LORA_TARGETS))
            self.ref_unet = None
        else:
            self.ref_unet = copy.deepcopy(gen.unet).requires_grad_(False).eval()
            gen.unet.requires_grad_(True)
        self.params = {n: p for n, p in gen.unet.named_parameters() if p.requires_grad}

    @contextlib.contextmanager
    def reference(self):
        """Within it, ``gen.unet`` computes the reference model."""
        if self.lora:
            self.gen.unet.disable_adapters()
            try:
                yield
            finally:
                self.gen.unet.enable_adapters()
        else:
            unet, self.gen.unet = self.gen.unet, self.ref_unet
            try:
                yield
            finally:
                self.gen.unet = unet

    def state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.params.items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.params):
            raise ConfigError("the checkpoint's trainable weights do not match this run's model (other --lora or "
                              "--lora-rank?); use another --out")
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(state[n])


def _rewards(fns: list[Any], images: torch.Tensor, prompts: list[str],
             success: Optional[list] = None) -> torch.Tensor:
    """``(N, K)`` rewards of every reward function (float64). A reward that reports per-image success in
    ``last_info["success"]`` (the shapes verifier) appends its success rate to ``success`` (None for the others)."""
    cols = []
    for fn in fns:
        r = torch.as_tensor(fn(images, prompts)).detach().double().reshape(-1).cpu()
        if r.numel() != len(prompts):
            raise ConfigError(f"reward {getattr(fn, 'name', fn)} returned {r.numel()} values for {len(prompts)} images")
        cols.append(r)
        if success is not None:
            ok = (getattr(fn, "last_info", None) or {}).get("success")
            success.append(None if ok is None else float(torch.as_tensor(ok).double().mean()))
    return torch.stack(cols, 1)


def _weights(cfg: GenRLConfig, tracker: L.PerPromptStatTracker, prompts: list[str], r: torch.Tensor,
             stats: dict[str, float]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per-sample weights (advantages) and, for pair algorithms, ``(P, 2)`` pair indices (column 0: the better
    image for preference) -- the algorithm-specific part of an epoch."""
    r0 = r[:, 0]
    if cfg.algo in ("ddpo", "rlcm"):
        adv = tracker.update(prompts, r0.numpy()) if cfg.per_prompt_stat_tracking else L.batch_advantages(r0.numpy())
        return torch.as_tensor(adv, dtype=torch.float32), None
    if cfg.algo == "grpo":
        return L.group_advantages(r0, cfg.group_size).float(), None
    if cfg.algo == "parrot":
        w, mask = L.parrot_weights(r, normalize=cfg.parrot_normalize)
        stats["pareto_frac"] = float(mask.double().mean())
        return (w * len(w)).float(), None  # mean over samples of (N w_i) logp = sum over P of w_i logp
    pairs = L.pair_up(len(r0), cfg.group_size)
    diff = r0[pairs[:, 0]] - r0[pairs[:, 1]]
    if cfg.algo == "preference":  # winner first; ties say nothing and are dropped
        pairs = torch.where((diff < 0)[:, None], pairs.flip(1), pairs)[diff != 0]
        diff = diff[diff != 0].abs()
        stats["pairs"] = float(len(pairs))
    return diff.float(), pairs


def _train_epoch(cfg: GenRLConfig, gen: Generator, sched: Schedule, policy: _Policy, opt: torch.optim.Optimizer,
                 traj: Trajectory, weights: torch.Tensor, pairs: Optional[torch.Tensor], uncond, guidance: float,
                 rng: np.random.Generator) -> dict[str, float]:
    """The inner epochs of updates over one epoch's samples; returns the means of the logged quantities."""
    steps = sched.steps
    n_train = max(1, int(steps * cfg.timestep_fraction))  # DDPO: int(steps * timestep_fraction)
    per_pair = pairs is not None
    units = pairs if per_pair else torch.arange(len(traj)).reshape(-1, 1)  # (U, 1 or 2) sample indices
    unit_w = weights
    per_mb = max(1, cfg.train_batch_size // units.shape[1])
    sums: dict[str, float] = {}
    count, updates = 0, 0
    gen.unet.train()
    for _ in range(cfg.inner_epochs):
        perm = torch.from_numpy(rng.permutation(len(units)))
        t_order = torch.from_numpy(np.stack([rng.permutation(steps)[:n_train] for _ in range(len(units))]))
        chunks = [perm[i:i + per_mb] for i in range(0, len(perm), per_mb)]
        opt.zero_grad(set_to_none=True)
        for ci, chunk in enumerate(chunks):
            u = units[chunk]  # (M, 1|2)
            idx = u.reshape(-1)
            for k in range(n_train):
                j = t_order[chunk, k].repeat_interleave(u.shape[1])  # both images of a pair at one step
                x = traj.latents[idx, j].to(gen.device)
                x_next = traj.latents[idx, j + 1].to(gen.device)
                old = traj.log_probs[idx, j].to(gen.device)
                logp = step_log_prob(gen, sched, x, x_next, j, traj.embeds[idx].to(gen.device), uncond, guidance)
                w = unit_w[chunk].to(gen.device)
                if cfg.algo in ("ddpo", "rlcm"):
                    loss, info = L.ppo_clip_loss(logp, old, w, clip_range=cfg.clip_range, adv_clip=cfg.adv_clip)
                elif cfg.algo == "grpo":
                    ref = traj.ref_log_probs[idx, j].to(gen.device)
                    loss, info = L.grpo_loss(logp, old, ref, w, beta=cfg.kl_beta, clip_range=cfg.clip_range,
                                             adv_clip=cfg.adv_clip)
                elif cfg.algo == "parrot":
                    loss, info = L.reinforce_loss(logp, old, w)
                elif cfg.algo == "prdp":
                    loss, info = L.prdp_loss(logp.reshape(-1, 2), old.reshape(-1, 2), w, beta=cfg.prdp_beta,
                                             clip_range=cfg.clip_range, steps=steps)
                else:
                    loss, info = L.preference_loss(logp.reshape(-1, 2), old.reshape(-1, 2),
                                                   beta=cfg.preference_beta, steps=steps)
                if not torch.isfinite(loss):
                    raise DivergenceError(f"non-finite {cfg.algo} loss at timestep {int(j[0])}; lower --lr")
                (loss / (n_train * cfg.grad_accum)).backward()
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                for key, v in info.items():
                    sums[key] = sums.get(key, 0.0) + float(v)
                count += 1
            if (ci + 1) % cfg.grad_accum == 0 or ci == len(chunks) - 1:
                params = list(policy.params.values())
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
                opt.step()
                opt.zero_grad(set_to_none=True)
                updates += 1
    gen.unet.eval()
    out = {k: v / max(count, 1) for k, v in sums.items() if k != "grad_norm"}
    out["grad_norm"] = sums.get("grad_norm", 0.0) / max(updates, 1)
    out["updates"] = updates
    return out


def _check_same_run(out: Path, cfg: GenRLConfig) -> None:
    path = out / "config.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    new = to_dict(cfg)
    diff = [k for k in new if k not in _RESUMABLE and old.get(k) != new[k]]
    if diff:
        raise ConfigError(f"{out} holds a genrl run with other {', '.join(diff)}; use another --out (or the same "
                          "options to continue it)")


def _export(out: Path, gen: Generator, policy: _Policy) -> Path:
    """The fine-tuned generator as a diffusers folder ``out/generator`` (LoRA merged), written atomically."""
    target, tmp = out / "generator", out / ".tmp-generator"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(gen.folder, tmp, ignore=shutil.ignore_patterns("unet"))
    unet = copy.deepcopy(gen.unet)
    if policy.lora:
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in unet.modules():
            if isinstance(module, BaseTunerLayer):
                module.merge()
        unet = _strip_lora(unet)
    unet.save_pretrained(tmp / "unet")
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target


def _strip_lora(unet):
    """Replace every (merged) LoRA layer by its base layer, so the folder loads without peft."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(unet.named_modules()):
        for cname, child in list(module.named_children()):
            if isinstance(child, BaseTunerLayer):
                setattr(module, cname, child.get_base_layer())
    unet._hf_peft_config_loaded = False
    if hasattr(unet, "peft_config"):
        del unet.peft_config
    return unet


class _Progress:
    """A rich progress bar over epochs on a terminal (plain log lines otherwise)."""

    def __init__(self, total: int, start: int, *, enabled: bool, title: str, log: Callable[[str], None]) -> None:
        import sys

        self.log, self.enabled, self.total = log, enabled, total
        self.bar = None
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("epochs | {task.fields[msg]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                TimeRemainingColumn(), refresh_per_second=2)
            self.task = self.bar.add_task(title, total=total, completed=start, msg="")
            self.bar.start()

    def update(self, epoch: int, msg: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=epoch, msg=msg)
        elif self.enabled:
            self.log(f"genrl: epoch {epoch}/{self.total}: {msg}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def train(cfg: GenRLConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) RL fine-tuning as configured; returns a summary (the last row, the run folder, the
    exported generator)."""
    from pixelrl.genrl.rewards import make_reward

    if not cfg.model:
        raise ConfigError("--model PATH is required (a diffusers generator folder)")
    prompts = read_prompts(cfg.prompts)
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    gen = load_generator(cfg.model, device=device)
    cfg = cfg.resolve(gen.kind, gen.recommended_guidance)
    reward_fns = [make_reward(s) for s in cfg.reward]
    heldout = make_reward(cfg.heldout_reward) if cfg.heldout_reward else None
    sched = make_schedule(gen, cfg.steps, cfg.eta)
    out = Path(cfg.out)
    _check_same_run(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):  # another process writing to this folder gets one line naming it
        return _run(cfg, gen, sched, prompts, reward_fns, heldout, out, device, log)


def _filter_prompts(cfg: GenRLConfig, gen: Generator, sched: Schedule, prompts: list[str], reward_fn: Any,
                    out: Path, log: Callable[[str], None]) -> list[str]:
    """``cfg.prompt_filter``: the prompts whose success rate under the initial model is in the band, measured once
    and kept in OUT/prompt_filter.json (a continued run reads it back instead of measuring again)."""
    from pixelrl.genrl.curriculum import filter_prompts, prompt_success, summary

    path = out / "prompt_filter.json"
    band = [float(x) for x in cfg.prompt_filter]
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("band") == band and saved.get("samples") == cfg.prompt_filter_samples and \
                [x["prompt"] for x in saved.get("rates", [])] == prompts:
            log(f"genrl: prompt filter: {len(saved['kept'])} of {len(prompts)} prompts, as measured before in {path}")
            return list(saved["kept"])
    t0 = time.perf_counter()
    stats = prompt_success(gen, sched, reward_fn, prompts, per_prompt=cfg.prompt_filter_samples,
                           guidance=cfg.guidance_scale, seed=derive_seed(cfg.seed, 2**31 - 1, 2),
                           batch_size=max(cfg.sample_batch_size, 1))
    kept = filter_prompts(stats, *band)
    write_json_atomic(path, {"band": band, "samples": cfg.prompt_filter_samples, "kept": kept, "rates": stats,
                             "summary": summary(stats), "wall_s": time.perf_counter() - t0})
    log(f"genrl: prompt filter [{band[0]:g}, {band[1]:g}] kept {len(kept)} of {len(prompts)} prompts (mean success "
        f"{summary(stats)['success']:.3f} over {cfg.prompt_filter_samples} images each); {path}")
    return kept


def _run(cfg: GenRLConfig, gen: Generator, sched: Schedule, prompts: list[str], reward_fns: list[Any],
         heldout: Any, out: Path, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    write_json_atomic(out / "config.json", {**to_dict(cfg), "decisions": {
        "device": str(device), "torch_threads": torch.get_num_threads(), "generator_kind": gen.kind,
        "timesteps": [int(t) for t in sched.timesteps], "schedule_notes": list(sched.notes)}})
    log(f"genrl {cfg.algo}: {cfg.model} ({gen.kind}, {sched.steps} steps, guidance {cfg.guidance_scale:g}, "
        f"{'LoRA rank ' + str(cfg.lora_rank) if cfg.lora else 'full fine-tuning'}) on {device}; rewards "
        f"{', '.join(cfg.reward)}; run folder {out}")
    for note in sched.notes:
        log(f"genrl: {note}")
    if cfg.prompt_filter is not None:
        prompts = _filter_prompts(cfg, gen, sched, prompts, reward_fns[0], out, log)
    seed_everything(cfg.seed)
    policy = _Policy(gen, cfg)
    opt = torch.optim.AdamW(list(policy.params.values()), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                            weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
    tracker = L.PerPromptStatTracker(cfg.stat_buffer_size, cfg.stat_min_count)
    counters = {"epoch": 0, "images": 0, "updates": 0, "wall_s": 0.0}
    offset, copy_bytes = None, None
    ckpt = latest_checkpoint(out / "checkpoints")
    if ckpt is not None:
        state = load_checkpoint(ckpt)
        policy.load(state["trainable"])
        opt.load_state_dict(state["opt"])
        tracker.load_state_dict(state["tracker"])
        counters = dict(state["counters"])
        offset = int(state["jsonl_offset"])
        copy_bytes = np.asarray(state["metrics_jsonl"], dtype=np.uint8).tobytes()
        log(f"genrl: continuing {out} from {ckpt.name} (epoch {counters['epoch']})")
    logger = Logger(out, tensorboard=True, jsonl_offset=offset, jsonl_copy=copy_bytes,
                    purge_step=counters["images"] * sched.steps if ckpt is not None else None)
    uncond = gen.encode_prompts([""]) if sched.kind == "ddim" and cfg.guidance_scale > 1 else None
    per_batch = cfg.sample_batch_size
    grouped = cfg.algo in ("grpo", "prdp", "preference")
    progress = _Progress(cfg.epochs, counters["epoch"], enabled=cfg.progress, title=f"genrl {cfg.algo}", log=log)
    last: dict[str, Any] = {}
    done_here = 0

    def checkpoint() -> None:
        save_checkpoint(out / "checkpoints", f"epoch_{counters['epoch']:06d}", {
            "trainable": policy.state(), "opt": opt.state_dict(), "tracker": tracker.state_dict(),
            "counters": dict(counters), "jsonl_offset": logger.offset(),
            "metrics_jsonl": np.frombuffer(logger.read_bytes(), dtype=np.uint8)}, keep=cfg.keep_checkpoints)

    try:
        budget_s = None if cfg.time_budget_min is None else 60.0 * cfg.time_budget_min
        while counters["epoch"] < cfg.epochs and \
                (budget_s is None or counters["wall_s"] < budget_s):
            epoch = counters["epoch"]
            t0 = time.perf_counter()
            noise = torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, 0))
            rng = np.random.default_rng(derive_seed(cfg.seed, epoch, 1))
            parts, kl_parts = [], []
            for b in range(cfg.sample_batches):
                if grouped:
                    chosen = rng.choice(len(prompts), size=per_batch // cfg.group_size)
                    batch_prompts = [prompts[i] for i in chosen for _ in range(cfg.group_size)]
                else:
                    batch_prompts = [prompts[i] for i in rng.choice(len(prompts), size=per_batch)]
                want_ref = cfg.algo == "grpo" or b < cfg.log_kl_batches
                part = sample(gen, sched, batch_prompts, guidance=cfg.guidance_scale, generator=noise, uncond=uncond,
                              reference=policy.reference if want_ref else None)
                if part.ref_log_probs is not None:
                    kl_parts.append(L.k3_kl(part.log_probs, part.ref_log_probs).mean())
                parts.append(part)
            traj = Trajectory.cat(parts)
            t1 = time.perf_counter()
            success: list = []
            r = _rewards(reward_fns, traj.images, traj.prompts, success)
            raw_mean = float(r[:, 0].mean())
            if cfg.reward_clip is not None:
                r[:, 0] = r[:, 0].clamp(*cfg.reward_clip)
            held_success: list = []
            held = _rewards([heldout], traj.images, traj.prompts, held_success)[:, 0] if heldout else None
            t2 = time.perf_counter()
            stats: dict[str, float] = {}
            weights, pairs = _weights(cfg, tracker, traj.prompts, r, stats)
            upd = _train_epoch(cfg, gen, sched, policy, opt, traj, weights, pairs, uncond, cfg.guidance_scale, rng)
            t3 = time.perf_counter()
            counters["epoch"] = epoch + 1
            counters["images"] += len(traj)
            counters["updates"] += upd.pop("updates")
            counters["wall_s"] += t3 - t0
            row: dict[str, Any] = {
                "frames": counters["images"] * sched.steps, "agent_steps": counters["images"] * sched.steps,
                "epoch": counters["epoch"], "images": counters["images"], "updates": counters["updates"],
                "reward_mean": raw_mean, "reward_std": float(r[:, 0].std(unbiased=False))}
            if cfg.reward_clip is not None:
                row["reward_clipped_mean"] = float(r[:, 0].mean())
            for k, fn in enumerate(reward_fns[1:], 1):
                row[f"reward{k}_mean"] = float(r[:, k].mean())
            if success[0] is not None:
                row["success"] = success[0]
            if held is not None:
                row["heldout_reward"] = float(held.mean())
                if held_success[0] is not None:
                    row["heldout_success"] = held_success[0]
            if kl_parts:
                row["kl_ref"] = float(torch.stack(kl_parts).mean())
            row.update(stats)
            row.update(upd)
            row.update({"wall_s": counters["wall_s"], "act_s": t1 - t0, "env_s": t2 - t1, "update_s": t3 - t2})
            logger.log("train", row)
            last = row
            done_here += 1
            progress.update(counters["epoch"], f"reward {raw_mean:.4f}"
                           + (f" held-out {row['heldout_reward']:.4f}" if held is not None else "")
                           + (f" kl_ref {row['kl_ref']:.2e}" if "kl_ref" in row else ""))
            if counters["epoch"] % cfg.checkpoint_every == 0 or counters["epoch"] == cfg.epochs:
                checkpoint()
        if done_here and counters["epoch"] % cfg.checkpoint_every:
            checkpoint()
    finally:
        progress.close()
        logger.close()
    exported = str(_export(out, gen, policy)) if cfg.export else None
    return {"out": str(out), "epochs": counters["epoch"], "images": counters["images"],
            "updates": counters["updates"], "wall_s": counters["wall_s"], "last": last, "generator": exported,
            "config": dataclasses.asdict(cfg)}
