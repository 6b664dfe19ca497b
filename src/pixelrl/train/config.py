"""The training run configuration. Field docstrings are the CLI help of ``pixelrl train``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class TrainConfig:
    """Train an agent online from pixels (or states)."""

    env: str = "dmc/cartpole-swingup"
    """Environment id: ``dmc/<domain>-<task>``, ``gym/<Id>`` or ``ale/<Game>`` (see docs/envs.md)."""
    agent_name: str = "drqv2"
    """Agent to train (``--agent NAME`` on the command line): drqv2, drm, taco, mentor, sac (``pixelrl.agents.AGENTS``).
    drm / taco / mentor are DrQ-v2 with their mechanisms switched on; any mechanism can be added to any of them with
    ``--agent.critic``, ``--agent.aux``, ``--agent.exploration``, ``--agent.perturb``, ``--agent.value-blend``,
    ``--agent.moe``."""
    preset: str = "auto"
    """Hyper-parameter preset applied under your flags: ``paper`` (the published DrQ-v2 configuration for the
    task: easy/medium/hard schedules, walker n=1 and batch 512, ...), ``cpu-fast`` (a lean DrQ-v2 that learns on a
    2-core CPU in ~15 min: 110k frames at 64x64 with the fast renderer, action repeat 8, strides 2,2,1,1, batch
    128, hidden 256, lr 3e-4, bf16), ``auto``
    (``paper`` when a CUDA device is used, else ``cpu-fast``), or ``none`` (plain defaults)."""
    seed: int = 1
    """Seed of Python, NumPy, torch and every environment episode. Same seed, same machine: same run on CPU."""
    frames: int = 1_100_000
    """Training budget in env frames (simulator steps, action repeat counted)."""
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
    """Write an mp4 of the first episode of each evaluation under ``videos/``."""
    tensorboard: bool = True
    """Write TensorBoard events under ``tb/``."""
    progress: bool = True
    """Show the live progress display (a plain line per evaluation when stdout is not a terminal)."""
    threads: int = 0
    """torch intra-op threads; 0 = torch's default."""
    tune_malloc: bool = True
    """On CPU (Linux/glibc), keep freed memory in the process instead of unmapping it after every update:
    ~25% faster updates, at the cost of resident memory not shrinking after a peak (see pixelrl.utils.malloc)."""
    agent: Any = None
    """Agent hyper-parameters (``--agent.<field>``); filled with the chosen agent's config and preset."""

    def env_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"size": self.size, "fast_render": self.fast_render, "obs": self.obs}
        if self.action_repeat is not None:
            kw["action_repeat"] = self.action_repeat
        if self.frame_stack is not None:
            kw["frame_stack"] = self.frame_stack
        return kw
