"""The knobs of RL fine-tuning of an image generator (:class:`GenRLConfig`), with the authors' defaults.

Fields left at ``None`` take the chosen algorithm's default (:data:`ALGO_DEFAULTS`, from the authors' configs:
DDPO ``kvablack/ddpo-pytorch`` ``config/dgx.py``, RLCM ``Owen-Oertell/rlcm`` ``conf/task/compression.yaml``,
GRPO Visual-RFT / TRL) or the generator's (the number of steps: 50 DDIM steps for a DDPM generator, 8 LCM steps
for a consistency model); :meth:`GenRLConfig.resolve` fills them and the resolved config is what a run saves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from pixelrl.errors import ConfigError

__all__ = ["GenRLConfig", "ALGOS", "ALGO_DEFAULTS"]

ALGOS = ("ddpo", "rlcm", "prdp", "grpo", "parrot", "preference")

# per-algorithm defaults of the fields left at None (sources in GenRLConfig's docstrings): DDPO's, except RLCM's own
_DDPO = dict(lr=3e-4, max_grad_norm=1.0, adv_clip=5.0, lora_rank=4, lora_alpha=4, sample_batch_size=8,
             sample_batches=4, train_batch_size=4, grad_accum=2)
ALGO_DEFAULTS: dict[str, dict[str, object]] = {
    **{algo: dict(_DDPO) for algo in ("ddpo", "grpo", "prdp", "parrot", "preference")},
    "rlcm": dict(lr=1e-4, max_grad_norm=5.0, adv_clip=10.0, lora_rank=16, lora_alpha=32, sample_batch_size=4,
                 sample_batches=10, train_batch_size=2, grad_accum=2),
}
_GROUPED = ("grpo", "prdp", "preference")


@dataclass(frozen=True)
class GenRLConfig:
    """RL fine-tuning of a diffusers generator: ``pixelrl genrl train``. Every field is a command-line option."""

    model: str = ""
    """The generator: a diffusers folder (model_index.json with unet, scheduler, text_encoder, tokenizer and, for
    latent models, vae). Required."""
    prompts: str = ""
    """A text file of training prompts, one per line (blank lines skipped). Required."""
    reward: tuple[str, ...] = ("jpeg-compressibility",)
    """Reward spec(s): jpeg-compressibility, jpeg-incompressibility, shapes-verifier:PATH, aesthetic:PATH,
    model:SPEC. The first is the trained reward; parrot uses all of them (at least two)."""
    heldout_reward: Optional[str] = None
    """A reward spec computed on the same images but never trained on, logged beside the trained one
    (``heldout_reward`` column): a guard against reward hacking."""
    algo: str = "ddpo"
    """ddpo | rlcm | prdp | grpo | parrot | preference (docs/genrl.md). rlcm needs an LCM generator, ddpo a DDPM /
    DDIM one; the others work on both."""
    out: str = ""
    """The run folder (config.json, metrics.jsonl, train.csv, checkpoints/, generator/). Running the same command
    again continues from its latest checkpoint. Default: runs/genrl-ALGO-seedSEED."""
    seed: int = 0
    """Seed of the initialisation, prompt draws, sampling noise and update order."""
    device: str = "auto"
    """auto (CUDA if available, else CPU), cpu or cuda."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    epochs: int = 100
    """Epochs (sample, reward, update) to run in total (DDPO / RLCM: 100)."""
    steps: Optional[int] = None
    """Denoising steps per image (None: 50 DDIM steps for a DDPM generator as DDPO, 8 LCM steps for a consistency
    model as RLCM's compression task)."""
    eta: float = 1.0
    """DDIM's eta (DDPO: 1.0, the DDPM posterior). Must be > 0 (eta = 0 is deterministic). Unused for LCM."""
    guidance_scale: Optional[float] = None
    """Classifier-free guidance weight, used in sampling and in the training forward pass (None: the generator's
    recommended value from pixelrl_generator.json, else DDPO's 5.0 for DDPM/DDIM and RLCM's 8.0 for LCM, which an
    LCM unet receives as its guidance embedding)."""
    sample_batch_size: Optional[int] = None
    """Images sampled per batch (None: DDPO 8 per GPU; RLCM 4 per GPU; one device here runs what one of the
    authors' GPUs runs)."""
    sample_batches: Optional[int] = None
    """Sample batches per epoch (None: DDPO 4, RLCM 10). Samples per epoch = sample_batch_size x sample_batches;
    the authors' 8 GPUs sample 8 times more per epoch."""
    train_batch_size: Optional[int] = None
    """Samples per training minibatch (None: DDPO 4, RLCM 2). Pair-based algorithms (prdp, preference) need it
    even (a minibatch holds whole pairs)."""
    grad_accum: Optional[int] = None
    """Minibatches whose gradients (over all their trained timesteps) are accumulated before one optimizer step
    (None: 2 as DDPO and RLCM per GPU)."""
    inner_epochs: int = 1
    """Passes over each epoch's samples (DDPO / RLCM: 1)."""
    timestep_fraction: float = 1.0
    """Fraction of each trajectory's timesteps trained on, chosen at random per sample (DDPO: 1.0)."""
    lr: Optional[float] = None
    """Adam learning rate (None: DDPO 3e-4, RLCM 1e-4; the others DDPO's)."""
    adam_beta1: float = 0.9
    """Adam beta1 (DDPO: 0.9)."""
    adam_beta2: float = 0.999
    """Adam beta2 (DDPO: 0.999)."""
    weight_decay: float = 1e-4
    """AdamW weight decay (DDPO: 1e-4)."""
    adam_eps: float = 1e-8
    """Adam epsilon (DDPO: 1e-8)."""
    max_grad_norm: Optional[float] = None
    """Clip the gradient norm before each step (None: DDPO 1.0, RLCM 5.0)."""
    clip_range: float = 1e-4
    """PPO's ratio clip epsilon (DDPO and RLCM: 1e-4); PRDP's proximal clip uses it too."""
    adv_clip: Optional[float] = None
    """Advantages are clipped to +-this (None: DDPO 5, RLCM 10)."""
    per_prompt_stat_tracking: bool = True
    """DDPO's per-prompt advantage normalisation (a buffer of each prompt's last rewards kept across epochs);
    off: normalise over the epoch's samples. Used by ddpo and rlcm."""
    stat_buffer_size: int = 16
    """Rewards kept per prompt by the tracker (DDPO / RLCM: 16; 32 for aesthetic)."""
    stat_min_count: int = 16
    """Until a prompt has this many rewards, the epoch's batch statistics are used (DDPO / RLCM: 16)."""
    lora: bool = True
    """Train LoRA adapters on the unet's attention projections (to_q, to_k, to_v, to_out.0), as DDPO and RLCM;
    off: fine-tune every unet weight. The reference model (KL) is the unet with the adapters disabled, or a frozen
    copy when fine-tuning fully."""
    lora_rank: Optional[int] = None
    """LoRA rank (None: DDPO 4, the rank of diffusers' attention LoRA it uses; RLCM 16)."""
    lora_alpha: Optional[int] = None
    """LoRA alpha (None: equal to the rank for DDPO, scale 1; RLCM 32)."""
    reward_clip: Optional[tuple[float, float]] = None
    """Clip the trained reward to [LOW, HIGH] before advantages (a reward-hacking guard; None: no clipping, as the
    authors)."""
    prompt_filter: Optional[tuple[float, float]] = None
    """A curriculum of prompts the model is sometimes right on: before the first epoch, sample
    ``prompt_filter_samples`` images of every prompt with the initial model, score them with the trained reward
    (which must report per-image success: shapes-verifier) and train only on the prompts whose success rate is in
    [LOW, HIGH] (the rates and the kept prompts go to OUT/prompt_filter.json). Deviation (our choice, None: every
    prompt, as the authors): with a 0/1 reward a prompt the model never or always gets right gives a group of equal
    rewards and no gradient; Flow-GRPO drops such groups after sampling, DAPO's dynamic sampling resamples them."""
    prompt_filter_samples: int = 8
    """Images per prompt that measure the success rates of ``prompt_filter``."""
    group_size: int = 8
    """Images per prompt in one sample batch for grpo, prdp and preference (Visual-RFT's G = 8). The sample batch
    size must be a multiple of it."""
    kl_beta: float = 0.04
    """Weight of the k3 KL to the reference model in grpo's loss (TRL GRPOConfig's default beta, which
    Visual-RFT used). Only grpo trains on the KL; every algorithm logs it (kl_ref)."""
    prdp_beta: float = 1.0
    """PRDP's beta: the scale of the log-ratio difference that predicts the reward difference. Not verified
    against the authors (no code is published); 1.0 is our choice."""
    preference_beta: float = 0.1
    """Temperature of the preference (DPO-form) loss on the per-step log-ratios. Our choice (SePPO's value is not
    published at the level we could check)."""
    parrot_normalize: bool = True
    """Standardise each reward over the batch before Parrot's REINFORCE weights. Deviation: the paper's rewards
    are scores in [0, 1]; with raw rewards of either sign (JPEG's are negative sizes) REINFORCE without a baseline
    makes every sample less likely. Off: the raw rewards, as the paper."""
    log_kl_batches: int = 1
    """Sample batches per epoch whose log-probabilities are also computed under the reference model to log
    kl_ref (the KL to the reference) when the algorithm does not need them anyway (grpo computes them for all).
    0: no KL column for the other algorithms."""
    time_budget_min: Optional[float] = None
    """Stop (with a checkpoint) at the end of the first epoch after this many minutes of training wall time,
    counted over every continuation of the run (None: run all epochs). The same command with a larger budget
    continues it."""
    checkpoint_every: int = 1
    """Epochs between checkpoints (a checkpoint is always written at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk."""
    export: bool = True
    """Write the fine-tuned generator (LoRA merged) as a diffusers folder to OUT/generator at the end of the run
    (all epochs or the time budget; a continued run rewrites it)."""
    progress: bool = True
    """A live progress bar (on a terminal)."""

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ConfigError(f"--algo must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if not self.reward:
            raise ConfigError("--reward needs at least one reward spec (e.g. jpeg-compressibility)")
        if self.algo == "parrot" and len(self.reward) < 2:
            raise ConfigError("--algo parrot selects the Pareto set over several rewards: give two or more, e.g. "
                              "--reward jpeg-compressibility shapes-verifier:PATH")
        for name in ("epochs", "inner_epochs", "stat_buffer_size", "stat_min_count", "checkpoint_every",
                     "keep_checkpoints", "group_size", "prompt_filter_samples"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("steps", "sample_batch_size", "sample_batches", "train_batch_size", "grad_accum",
                     "lora_rank", "lora_alpha"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
        for name in ("lr", "max_grad_norm", "adv_clip", "clip_range", "eta"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {v}")
        if not 0 < self.timestep_fraction <= 1:
            raise ConfigError(f"--timestep-fraction must be in (0, 1], got {self.timestep_fraction}")
        if self.guidance_scale is not None and self.guidance_scale < 1:
            raise ConfigError(f"--guidance-scale must be >= 1 (1: no guidance), got {self.guidance_scale}")
        if self.reward_clip is not None and not self.reward_clip[0] < self.reward_clip[1]:
            raise ConfigError(f"--reward-clip LOW HIGH needs LOW < HIGH, got {self.reward_clip}")
        if self.prompt_filter is not None and not 0 <= self.prompt_filter[0] <= self.prompt_filter[1] <= 1:
            raise ConfigError(f"--prompt-filter LOW HIGH needs 0 <= LOW <= HIGH <= 1, got {self.prompt_filter}")
        if self.time_budget_min is not None and not self.time_budget_min > 0:
            raise ConfigError(f"--time-budget-min must be > 0, got {self.time_budget_min}")
        if self.kl_beta < 0 or self.log_kl_batches < 0:
            raise ConfigError("--kl-beta and --log-kl-batches must be >= 0")
        if self.algo in ("prdp", "preference") and self.group_size % 2:
            raise ConfigError(f"--algo {self.algo} compares pairs of images of one prompt: --group-size must be "
                              f"even, got {self.group_size}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")

    def resolve(self, kind: str, recommended_guidance: Optional[float] = None) -> "GenRLConfig":
        """This config with every None filled from the algorithm's and the generator's defaults (``kind``: the
        generator's, ddpm or lcm), checked against the generator."""
        if self.algo == "rlcm" and kind != "lcm":
            raise ConfigError(f"--algo rlcm fine-tunes a latent consistency model, but {self.model} is a {kind} "
                              "generator; use --algo ddpo (or give an LCM folder)")
        if self.algo == "ddpo" and kind == "lcm":
            raise ConfigError(f"{self.model} is a consistency model (LCMScheduler): use --algo rlcm")
        fill = dict(ALGO_DEFAULTS[self.algo])
        fill["steps"] = 8 if kind == "lcm" else 50
        fill["guidance_scale"] = recommended_guidance or (8.0 if kind == "lcm" else 5.0)
        fill["out"] = f"runs/genrl-{self.algo}-seed{self.seed}"
        changes = {k: v for k, v in fill.items() if getattr(self, k) in (None, "")}
        cfg = dataclasses.replace(self, **changes)
        if cfg.algo in _GROUPED and cfg.sample_batch_size % cfg.group_size:
            raise ConfigError(f"--sample-batch-size ({cfg.sample_batch_size}) must be a multiple of --group-size "
                              f"({cfg.group_size}) for --algo {cfg.algo}")
        if cfg.algo in ("prdp", "preference") and cfg.train_batch_size % 2:
            raise ConfigError(f"--train-batch-size must be even for --algo {cfg.algo} (minibatches of whole pairs)")
        return cfg
