"""The training run configuration. Field docstrings are the CLI help of ``pixelrl train``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import tyro

from pixelrl.errors import ConfigError
from pixelrl.rewards.base import RewardConfig
from pixelrl.rewards.interventions import InterventionConfig


def parse_seeds(spec: str) -> tuple[int, ...]:
    """``'1-5'`` -> (1, 2, 3, 4, 5); ``'1,3,7'`` -> (1, 3, 7); ranges and lists combine (``'1-3,7'``)."""
    seeds: list[int] = []
    try:
        for part in str(spec).split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if last < first:
                raise ValueError
            seeds.extend(range(first, last + 1))
    except ValueError:
        raise ConfigError(f"--seeds {spec!r}: use a range (1-5), a list (1,3,7) or both (1-3,7) of "
                          "non-negative integers") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {spec!r} names a seed twice")
    return tuple(seeds)


OBS_MODES = ("pixels", "state", "pixels+state")

TRAIN_RANGES: dict[str, int] = {
    "seed": 0, "frames": 1, "eval_every_frames": 1, "eval_episodes": 1, "checkpoint_every_frames": 0,
    "keep_checkpoints": 1, "size": 1, "action_repeat": 1, "frame_stack": 1, "threads": 0, "snapshot_horizon": 1,
    "snapshot_active_agent_steps": 0, "workers": 1, "envs_per_worker": 1, "chunk_steps": 1, "broadcast_every": 1,
    "max_staleness": 0, "learners": 1}
"""Integer fields of :class:`TrainConfig` and the least value each accepts (None is accepted where the field allows
it). Checked when the config is built, so a bad value stops the run before anything starts."""


def check_ranges(cfg: Any, lows: dict[str, int]) -> None:
    """Raise :class:`ConfigError` naming the option (``--frames``) if an integer field of ``cfg`` is below its least
    value in ``lows`` or not an integer; a None value passes (the fields that allow None say what it means)."""
    for name, lo in lows.items():
        v = getattr(cfg, name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")


@dataclass(frozen=True)
class OfflineConfig:
    """Offline training from a dataset, offline->online fine-tuning and demo mixing (see docs/offline.md)."""

    dataset: Optional[str] = None
    """Offline dataset (``pixelrl collect`` / ``pixelrl dataset convert`` output) to train on. Its observation and
    action spaces must equal the env's (same ``--obs``, ``--size``, ``--frame-stack``; collect and train with the
    same ``--action-repeat``)."""
    offline_steps: int = 1_000_000
    """Gradient updates of the offline phase (IQL's D4RL protocol: 1M, matching the IQL agent's ``lr_decay_steps``;
    D5RL pretrains for 500k: pass 500000 with ``--agent.lr-decay-steps 500000``). Ignored without ``dataset``."""
    online_frames: Optional[int] = None
    """Env frames of the online phase after the offline one (D5RL: 500k env steps = 500k x action repeat frames).
    None: 0 with a ``dataset`` (offline only), ``TrainConfig.frames`` without one (an online run with demos)."""
    offline_ratio: Optional[float] = None
    """Online phase: fraction of every batch drawn from the offline data. None (D5RL, IQL fine-tuning): new
    episodes are added to the buffer holding the offline data and batches are uniform over both. A number in
    [0, 1] (RLPD: 0.5): a separate online buffer, mixed exactly in every batch."""
    demos: Optional[str] = None
    """Demo dataset mixed into every batch (RLPD / SERL). Without ``dataset``: an online run with demos. With
    ``--intervention.*`` (HIL-SERL): the demos seed the intervention buffer, which the intervened transitions join,
    in the online trainer (docs/interventions.md)."""
    demo_ratio: float = 0.5
    """Fraction of every batch drawn from ``demos``, in both phases (RLPD / SERL: 0.5). With ``--intervention.*``: the
    share of the demo + intervention buffer, which must equal ``--intervention.demo-ratio``."""
    eval_every_steps: int = 5_000
    """Offline phase: evaluate every this many gradient updates (IQL: 5000, 10 episodes). The online phase uses
    ``TrainConfig.eval_every_frames``."""
    log_every_steps: int = 1_000
    """Offline phase: write a train row (metrics averaged over the updates since the last row) every this many
    updates (IQL: 1000), and at every evaluation and checkpoint."""
    checkpoint_every_steps: int = 0
    """Offline phase: checkpoint every this many updates; 0 = after every evaluation. The online phase uses
    ``TrainConfig.checkpoint_every_frames``."""
    online_seed_steps: Optional[int] = None
    """Online phase: agent steps of uniform random actions before the policy acts and updates start. None: 0 after
    an offline phase (the pretrained policy acts from the first step, as in IQL's and D5RL's fine-tuning), the
    agent's ``num_seed_steps`` otherwise (as the online trainer)."""
    replay_capacity: Optional[int] = None
    """Transitions kept of the online data. None: the agent's ``replay_capacity`` (agents without one keep every
    online transition). The offline data and demos are always kept whole; with ``offline_ratio=None`` the shared
    buffer holds the dataset plus this many online transitions (D5RL drops nothing)."""
    allow_env_mismatch: bool = False
    """Train even if the dataset records another env id than ``--env`` (e.g. a converted dataset with a foreign
    id). The observation and action spaces must match regardless."""

    def __post_init__(self) -> None:
        check_ranges(self, {"offline_steps": 0, "eval_every_steps": 1, "log_every_steps": 1,
                            "checkpoint_every_steps": 0, "online_frames": 0, "online_seed_steps": 0,
                            "replay_capacity": 1})
        for name in ("offline_ratio", "demo_ratio"):
            v = getattr(self, name)
            if v is None and name == "offline_ratio":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a fraction in [0, 1], got {v!r}")
        if self.dataset is None and self.offline_ratio is not None:
            raise ConfigError("offline_ratio mixes the offline dataset into online batches, but no dataset is given; "
                              "use --dataset PATH, or --demos PATH --demo-ratio R for demos")
        if self.demos is not None and self.demo_ratio + (self.offline_ratio or 0.0) > 1 + 1e-9:
            raise ConfigError(f"demo_ratio ({self.demo_ratio}) + offline_ratio ({self.offline_ratio}) exceed 1: "
                              "together they are the share of every batch taken from the files")

    @property
    def active(self) -> bool:
        """Whether this configures anything (a dataset or demos); a default OfflineConfig is a plain online run."""
        return self.dataset is not None or self.demos is not None

    def phase_budgets(self, train_frames: int) -> tuple[int, int]:
        """``(offline gradient updates, online env frames)`` of a run whose ``TrainConfig.frames`` is given."""
        offline = self.offline_steps if self.dataset is not None else 0
        online = self.online_frames if self.online_frames is not None else (
            0 if self.dataset is not None else int(train_frames))
        return offline, online


@dataclass(frozen=True)
class TrainConfig:
    """Train an agent online from pixels (or states), or offline from a dataset.

    Offline / offline->online / demos (docs/offline.md): --dataset PATH (train from a dataset written by `pixelrl
    collect`; env settings default to the dataset's), --offline-steps N (gradient updates, default 1M),
    --online-frames N (then fine-tune online), --offline-ratio F (share of offline rows per online batch; default:
    one shared buffer as in D5RL), --demos PATH --demo-ratio F (mix demos into every batch of an online run, RLPD),
    --eval-every-steps, --log-every-steps, --checkpoint-every-steps, --online-seed-steps, --allow-env-mismatch.

    Reward models (docs/rewards.md): --reward SPEC (e.g. "vlm:a pole standing upright": VLM-RM) replaces or adds to the
    env's reward in what the learner stores; --reward.baseline, --reward.alpha, --reward.model, --reward.mode,
    --reward.scale, --reward.batch-size, --reward.device, --reward.autocast.

    Interventions (docs/interventions.md): --intervention.expert SPEC (policy:RUN_DIR, scripted:cartpole, keyboard,
    gamepad) takes over the agent's actions when --intervention.trigger fires; intervened steps also go to a buffer
    mixed into every batch (--intervention.demo-ratio); --intervention.reward rlif gives RLIF's reward.

    Scale-out on Ray (docs/distributed.md): --workers N runs the envs on N Ray actors (--envs-per-worker,
    --ray-address, --chunk-steps, --broadcast-every, --max-staleness, --learners, --inference); same run folder,
    same `pixelrl resume`."""

    env: str = "dmc/cartpole-swingup"
    """Environment id: ``dmc/<domain>-<task>``, ``gym/<Id>``, ``ale/<Game>``, ``metaworld/<task>-v3`` or
    ``builtin/<name>`` (see docs/envs.md)."""
    agent_name: str = "drqv2"
    """Agent to train (``--agent NAME`` on the command line): a name of ``pixelrl.agents.AGENTS`` (``pixelrl list
    agents``): drqv2, drm, taco, mentor (the DrQ-v2 core with their mechanisms), sac, drq, rlpd (SAC with their
    settings), the offline agents iql, td3bc, bc, and residual. Any mechanism can be added to the DrQ-v2 core's
    agents with ``--agent.critic``, ``--agent.aux``, ``--agent.exploration``, ``--agent.perturb``,
    ``--agent.value-blend``, ``--agent.moe``."""
    preset: str = "auto"
    """Hyper-parameter preset applied under your flags: ``paper`` (the published configuration of the agent's
    method for the task: DrQ-v2's easy/medium/hard schedules, walker n=1 and batch 512, ...; PPO's and the DQN
    family's Atari settings on ``ale/``), ``cpu-fast`` (a lean DrQ-v2 for DeepMind Control that learns on a 2-core
    CPU within 15 minutes: 48x48 frames from the fast renderer, action repeat 8, strides 2,2,1,1, batch 128, hidden
    256, lr 3e-4, a 13.5-minute time budget; see ``pixelrl.agents.presets.cpu_fast``), ``auto`` (``cpu-fast`` for
    ``dmc/`` envs on a CPU, else ``paper``), or ``none`` (plain defaults)."""
    seed: int = 1
    """Seed of Python, NumPy, torch and every environment episode. Same seed, same machine: same run on CPU."""
    seeds: Optional[str] = None
    """Train one agent per seed in one process as one batched computation: ``1-5``, ``1,3,7`` or ``1-3,7``
    (DrQ-v2 core only; see docs/training.md). The run folder then holds one single-run folder per seed,
    ``s<seed>/``, and ``pixelrl resume`` continues them together. None: one run with ``--seed``."""
    frames: int = 1_100_000
    """Training budget in env frames (simulator steps, action repeat counted)."""
    time_budget_min: Optional[float] = None
    """Wall-clock budget in minutes: stop at the first episode boundary after this much training time (counted
    from the trainer's start, across resumes), then run the final evaluation and checkpoint, as at ``frames``.
    None = no budget. The ``cpu-fast`` preset sets 13.5 so that ``make train`` ends within 15 minutes on any CPU
    (``frames`` is then an upper bound only a fast CPU reaches); the summary says which of the two ended the run."""
    eval_every_frames: int = 10_000
    """Evaluate every this many env frames (at the first episode boundary at or after each multiple)."""
    eval_episodes: int = 10
    """Episodes per evaluation (deterministic policy: the actor's mean)."""
    eval_random: bool = True
    """At frame 0, also evaluate a uniform random policy and log it as ``random_return`` (a reference line)."""
    checkpoint_every_frames: int = 0
    """Write a checkpoint (weights, optimizer and RNG state, replay) every this many env frames, at an
    episode boundary; 0 = after every evaluation. The last checkpoint is always written at the end."""
    keep_checkpoints: int = 2
    """How many checkpoint folders to keep (older ones are deleted after a new one is in place)."""
    run_dir: Optional[str] = None
    """Run folder. Default: ``runs/<env>-<agent>-s<seed>-<YYYYmmdd-HHMMSS>``."""
    device: str = "auto"
    """Training device: ``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:1``..."""
    async_env: bool = True
    """Step the training env in a subprocess so that rendering overlaps the gradient update. Results are
    identical either way."""
    size: int = 84
    """Rendered frame size in pixels (square)."""
    action_repeat: Optional[int] = None
    """Simulator frames per agent step; None = the env's default (2 for DMC as in DrQ-v2, 4 for Atari)."""
    frame_stack: Optional[int] = None
    """Frames stacked per observation; None = the env's default (3 for DMC/Gymnasium pixels, 4 for Atari)."""
    fast_render: bool = False
    """Render without shadows, reflections and anti-aliasing (several times faster on CPU; see docs/envs.md)."""
    obs: str = "pixels"
    """Observation type: ``pixels``, ``state`` or ``pixels+state``."""
    video: bool = True
    """Write an mp4 of the first episode of each evaluation under ``videos/`` (pixel observations only)."""
    tensorboard: bool = True
    """Write TensorBoard events under ``tb/``."""
    wandb: bool = False
    """Also log to Weights & Biases (``pip install 'pixelrl[wandb]'``; docs/wandb.md): every train and eval row as
    TensorBoard gets it (``train/<column>``, ``eval/<column>``, against ``frames``), the resolved config and each
    evaluation's video. The W&B run id is kept in the run folder's ``wandb.json``: ``pixelrl resume`` continues it."""
    wandb_project: str = "pixelrl"
    """W&B project of ``--wandb`` runs."""
    wandb_entity: Optional[str] = None
    """W&B entity (user or team) of ``--wandb`` runs; None: your default entity."""
    wandb_mode: str = "online"
    """W&B mode of ``--wandb`` runs: ``online`` (stream to the server), ``offline`` (write under the run folder's
    ``wandb/`` with no network, upload later with ``wandb sync``) or ``disabled``."""
    progress: bool = True
    """Show the live progress display (a plain line per evaluation when stdout is not a terminal)."""
    threads: int = 0
    """torch intra-op threads; 0 = torch's default."""
    tune_malloc: bool = True
    """On CPU (Linux/glibc), keep freed memory in the process instead of unmapping it after every update:
    ~25% faster updates, at the cost of resident memory not shrinking after a peak (see pixelrl.utils.malloc)."""
    snapshot_bank: Optional[str] = None
    """Snapshot RL (S3RL, docs/snapshot_rl.md): a bank folder written by ``SnapshotBank.save``; training episodes
    then start from teacher snapshots (a cluster uniformly, then a snapshot) for the first
    ``snapshot_active_agent_steps``, each truncated ``snapshot_horizon`` agent steps later. The training env runs
    in-process (``async_env`` is ignored) so the wrapper's state can be checkpointed. Evaluation is unaffected."""
    snapshot_horizon: int = 100
    """S3RL: agent steps before an episode started from a snapshot is truncated (paper: 100)."""
    snapshot_active_agent_steps: int = 100_000
    """S3RL: agent steps during which resets use snapshots (paper: the first 100k steps)."""
    env_options: Annotated[Optional[dict], tyro.conf.Suppress] = None
    """Family-specific options passed to ``pixelrl.envs.make`` (e.g. for ``ale/``: ``repeat_action_probability``,
    ``noop_max``, ``fire_reset``, ``max_num_frames_per_episode``); set by agent presets (the Atari protocols of
    PPO and the DQN family) and recorded in config.json. None: the family's defaults."""
    agent: Any = None
    """Agent hyper-parameters (``--agent.<field>``); filled with the chosen agent's config and preset."""
    decisions: Annotated[Optional[dict], tyro.conf.Suppress] = None
    """What the trainer chose for this machine at start, and why (written by the trainer, recorded in config.json):
    ``precision`` (what ``--agent.precision auto`` resolved to, with the capability check and timing behind it),
    ``threads``, ``cpu`` and the CPU's bf16 flags. The resolved precision is also written into ``agent``, so a
    resumed run keeps it."""
    offline: Annotated[Optional[OfflineConfig], tyro.conf.Suppress] = None
    """Offline / offline->online / demo settings (``--dataset``, ``--offline-steps``, ``--online-frames``,
    ``--offline-ratio``, ``--demos``, ``--demo-ratio``, ...; see :class:`OfflineConfig`). None: a plain online run."""
    reward: Annotated[Optional[RewardConfig], tyro.conf.Suppress] = None
    """A reward model whose rewards replace or add to the env's in what the learner stores (``--reward SPEC`` and
    ``--reward.*``; see :class:`~pixelrl.rewards.base.RewardConfig` and docs/rewards.md); the off-policy trainer
    applies it. None: the env's reward. Evaluations always report the env's return."""
    intervention: Annotated[Optional[InterventionConfig], tyro.conf.Suppress] = None
    """An expert that takes over the agent's actions (HIL-SERL, RLIF; ``--intervention.expert SPEC`` and
    ``--intervention.*``; see :class:`~pixelrl.rewards.interventions.InterventionConfig` and docs/interventions.md);
    the off-policy trainer applies it. None: the agent acts alone."""
    workers: Optional[int] = None
    """Scale out on Ray (``pip install 'pixelrl[ray]'``, docs/distributed.md): this many env workers, each a Ray actor
    holding ``envs_per_worker`` envs; the learner (agent, replay, evaluation, checkpoints) stays in this process and
    the run folder and ``pixelrl resume`` are the same. Off-policy agents (DrQ-v2 family, SAC): every worker acts with
    a copy of the policy on ``chunk_steps``-step chunks (its envs' inference batched), the learner broadcasts weights
    every ``broadcast_every`` updates and stamps each transition with the policy version that acted. PPO: synchronous
    rollouts (or bounded staleness with ``max_staleness``), inference batched in the learner over every worker's envs.
    None: one process (the default, unchanged)."""
    envs_per_worker: Optional[int] = None
    """Envs per Ray env worker (``--workers``), stepped together in the worker. None: 1 for off-policy agents; for PPO
    the agent's ``num_envs`` divided by ``workers`` (PPO needs ``workers x envs_per_worker = num_envs``)."""
    ray_address: Optional[str] = None
    """Ray cluster to join (``auto``, ``ray://host:10001``, ``host:6379``); None starts a local Ray instance for the run
    (``ray.init(include_dashboard=False)``, shut down at its end). Only with ``--workers``."""
    chunk_steps: Optional[int] = None
    """Off-policy ``--workers`` runs: agent steps each env of a worker takes per call (a Ray call costs ~1-2 ms, so a
    call ships a chunk). None: 32. Larger chunks amortise the call; smaller ones act with fresher weights."""
    broadcast_every: Optional[int] = None
    """Off-policy ``--workers`` runs: send the learner's weights to the workers every this many gradient updates (a
    worker takes them at its next chunk). None: 10. The single-process loop acts with the weights of every update;
    this is the bound on how far a worker's copy lags behind them, plus ``max_staleness``."""
    max_staleness: Optional[int] = None
    """Off-policy ``--workers`` runs: the learner never runs more than this many updates past the policy version that
    collects any chunk still in flight (it waits for that chunk first), so every transition reaches the replay at most
    this many updates after the policy that acted. Must be >= ``broadcast_every``. None: unbounded (measured and
    logged as ``staleness_mean`` / ``staleness_max`` either way). PPO ``--workers`` runs: rollouts collected while the
    learner updates (bounded-staleness PPO, ``pixelrl.distributed.onpolicy``): each update's data is at most this many
    updates old and its importance ratio is to the behaviour policy's recorded log-probs. None or 0: synchronous
    rollouts (staleness 0, the one-process run's rows)."""
    learners: Optional[int] = None
    """``--workers`` runs: learner processes sharing each update (``pixelrl.distributed.ddp``; ``nccl``, one GPU per
    learner, with ``--device cuda``; ``gloo`` on CPU, which is for testing only). PPO: each holds a shard of the rollout
    and computes its part of every minibatch, gradients all-reduced by ``torch.distributed`` DDP; the update equals the
    one-process update on the same minibatches (to float tolerance). DrQ-v2 / SAC (without weight perturbation): each
    updates on its own replay batch of ``batch_size`` (an effective batch of ``learners x batch_size``, a deviation
    from the papers' batch), gradients averaged before every optimizer step. None or 1: one learner."""
    inference: Optional[str] = None
    """Off-policy ``--workers`` runs of the DrQ-v2 family and SAC: where actions are computed. ``worker`` (None, the
    default): each worker acts with its copy of the policy (the last broadcast), one forward pass over its envs per
    step, on ``chunk_steps``-step chunks. ``learner``: the learner runs one forward pass over every worker's envs with
    its current weights (SRL's batched policy inference), workers only step their envs, one Ray call per agent step,
    and the updates run while the envs step; each worker's exploration noise comes from the generator it would use
    itself, so the actions are the workers' own (to float tolerance). PPO always infers in the learner."""

    def __post_init__(self) -> None:
        check_ranges(self, TRAIN_RANGES)
        if self.time_budget_min is not None:
            v = self.time_budget_min
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"--time-budget-min must be a number of minutes > 0 (or None: no budget), got {v!r}")
        if self.obs not in OBS_MODES:
            raise ConfigError(f"--obs must be one of {', '.join(OBS_MODES)}, got {self.obs!r}")
        if self.reward is not None:
            _check_reward_fits(self)
        if self.intervention is not None:
            _check_intervention_fits(self)
        if any(getattr(self, f) is not None for f in DISTRIBUTED_FIELDS):
            _check_distributed_fits(self)
        from pixelrl.train.wandb_logger import check_wandb_config

        check_wandb_config(self)

    def env_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"size": self.size, "fast_render": self.fast_render, "obs": self.obs}
        if self.action_repeat is not None:
            kw["action_repeat"] = self.action_repeat
        if self.frame_stack is not None:
            kw["frame_stack"] = self.frame_stack
        if self.env_options:
            kw.update(self.env_options)
        return kw


DISTRIBUTED_FIELDS = ("workers", "envs_per_worker", "ray_address", "chunk_steps", "broadcast_every", "max_staleness",
                      "learners", "inference")
"""The fields of a Ray run (``--workers``); all None in a single-process run."""


def _on_policy(cfg: TrainConfig) -> bool:
    """Whether the run's agent uses the on-policy trainer (PPO)."""
    from pixelrl.agents import AGENTS

    spec = AGENTS.get(cfg.agent_name) if cfg.agent_name else None
    return spec is not None and spec.trainer == "on-policy"


def _check_distributed_fits(cfg: TrainConfig) -> None:
    """``--workers`` runs: the Ray fields come with ``--workers`` (their ranges are in ``TRAIN_RANGES``), and the run is
    one the distributed trainers run (one seed, online, without a reward model, interventions or snapshot resets)."""
    if cfg.workers is None:
        given = [f"--{f.replace('_', '-')}" for f in DISTRIBUTED_FIELDS if getattr(cfg, f) is not None]
        raise ConfigError(f"{', '.join(given)} configure a Ray run; add --workers N (or drop them for one process)")
    if cfg.max_staleness is not None and not _on_policy(cfg) and cfg.max_staleness < (cfg.broadcast_every or 10):
        raise ConfigError(f"--max-staleness ({cfg.max_staleness}) must be >= --broadcast-every "
                          f"({cfg.broadcast_every or 10}): workers only get new weights that often")
    if cfg.inference is not None:
        if cfg.inference not in ("worker", "learner"):
            raise ConfigError(f"--inference must be 'worker' or 'learner', got {cfg.inference!r}")
        if _on_policy(cfg) and cfg.inference != "learner":
            raise ConfigError("PPO's policy inference runs in the learner (batched over every worker's envs); drop "
                              "--inference or use --inference learner")
        if cfg.inference == "learner" and not _on_policy(cfg) and (cfg.broadcast_every is not None
                                                                    or cfg.max_staleness is not None):
            raise ConfigError("--inference learner acts with the learner's current weights: --broadcast-every and "
                              "--max-staleness apply to workers acting with a copy (--inference worker); drop them")
    for name, flag in (("seeds", "--seeds"), ("reward", "--reward"), ("intervention", "--intervention.*"),
                       ("snapshot_bank", "--snapshot-bank")):
        if getattr(cfg, name) is not None:
            raise ConfigError(f"{flag} is not supported with --workers yet; run it in one process (drop --workers)")
    if cfg.offline is not None and cfg.offline.active:
        raise ConfigError("--dataset / --demos runs are not supported with --workers yet; run them in one process")


def _check_intervention_fits(cfg: TrainConfig) -> None:
    """Interventions are applied by the online off-policy trainer (pixelrl.train.loop): refuse the runs it is not."""
    if not isinstance(cfg.intervention, InterventionConfig):
        raise ConfigError("TrainConfig.intervention must be an InterventionConfig (--intervention.expert SPEC), got "
                          f"{type(cfg.intervention).__name__}")
    if cfg.seeds is not None:
        raise ConfigError("--intervention.* is applied by the single-seed trainer; run one seed at a time (--seed N)")
    if cfg.offline is not None and cfg.offline.active:
        _check_intervention_demos(cfg.offline, cfg.intervention)
    if cfg.reward is not None and cfg.intervention.reward == "rlif":
        raise ConfigError("--intervention.reward rlif replaces the reward with RLIF's; it does not combine with "
                          "--reward SPEC (use --intervention.reward env to keep the reward model's)")
    from pixelrl.agents import AGENTS

    spec = AGENTS.get(cfg.agent_name)
    if spec is not None and getattr(spec, "trainer", "off-policy") != "off-policy":
        raise ConfigError(f"--intervention.* is applied by the off-policy replay trainer; agent {cfg.agent_name!r} "
                          f"uses the {spec.trainer} trainer")


INTERVENTION_DEMO_FIELDS = ("demos", "demo_ratio", "allow_env_mismatch")
"""The :class:`OfflineConfig` fields a run with interventions uses: ``--demos`` seeds the intervention buffer."""


def _check_intervention_demos(o: OfflineConfig, iv: InterventionConfig) -> None:
    """``--demos`` with ``--intervention.*`` (HIL-SERL): the demos seed the intervention buffer, one buffer whose share
    of every batch is one number. Refuse the offline options the online trainer does not apply."""
    if o.dataset is not None:
        raise ConfigError("--intervention.* runs in the online trainer; it does not combine with --dataset (offline "
                          "or offline->online training). Prior demonstrations go in with --demos PATH (HIL-SERL)")
    import dataclasses

    default = OfflineConfig()
    ignored = [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(OfflineConfig)
               if f.name not in INTERVENTION_DEMO_FIELDS and getattr(o, f.name) != getattr(default, f.name)]
    if ignored:
        raise ConfigError(f"{', '.join(ignored)} configure the offline trainer; a run with --intervention.* and --demos "
                          "is an online run (--frames, the agent's replay capacity and warm-up): drop them")
    if iv.demo_ratio == 0:
        raise ConfigError("--demos seeds the intervention buffer, but --intervention.demo-ratio 0 keeps none; drop "
                          "--demos or give both --demo-ratio and --intervention.demo-ratio the same share > 0")
    if abs(o.demo_ratio - iv.demo_ratio) > 1e-12:
        raise ConfigError(f"with --intervention.*, the demos and the intervened steps share one buffer (HIL-SERL's demo "
                          f"buffer), whose share of every batch is one number: --demo-ratio {o.demo_ratio:g} and "
                          f"--intervention.demo-ratio {iv.demo_ratio:g} differ; give both the same value")


def _check_reward_fits(cfg: TrainConfig) -> None:
    """``--reward`` is applied by the online off-policy trainer (pixelrl.train.loop): refuse the runs it is not."""
    if not isinstance(cfg.reward, RewardConfig):
        raise ConfigError(f"TrainConfig.reward must be a RewardConfig (--reward SPEC), got {type(cfg.reward).__name__}")
    if cfg.obs == "state" and cfg.reward.kind == "vlm":
        raise ConfigError("--reward vlm:... scores rendered frames, but --obs state gives no frames; use --obs pixels "
                          "or --obs pixels+state")
    if cfg.seeds is not None:
        raise ConfigError("--reward is applied by the single-seed trainer; run one seed at a time (--seed N) instead "
                          "of --seeds")
    if cfg.offline is not None and cfg.offline.active:
        raise ConfigError("--reward is applied online; to train on a dataset with a model's rewards, relabel it "
                          "first: pixelrl dataset relabel SRC --reward SPEC --out DST, then --dataset DST")
    from pixelrl.agents import AGENTS

    spec = AGENTS.get(cfg.agent_name)
    if spec is not None and getattr(spec, "trainer", "off-policy") != "off-policy":
        raise ConfigError(f"--reward is applied by the off-policy replay trainer; agent {cfg.agent_name!r} uses the "
                          f"{spec.trainer} trainer, which does not apply it yet")
