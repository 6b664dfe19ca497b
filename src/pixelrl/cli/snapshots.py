"""``pixelrl snapshots collect|info``: Snapshot RL (S3RL) banks. Parsing only; the work is in
pixelrl.train.snapshots and pixelrl.envs.snapshot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import tyro

from pixelrl.cli.subcommands import run_subcommand

SNAPSHOTS_USAGE = """usage: pixelrl snapshots {collect,info} [options]

  collect  teacher rollouts -> bank:  pixelrl snapshots collect --env dmc/walker-walk --policy runs/<run>/ --out banks/walker
  info     size, clusters, values:    pixelrl snapshots info banks/walker

Train with a bank: pixelrl train --env dmc/walker-walk --snapshot-bank banks/walker (see docs/snapshot_rl.md).
`pixelrl snapshots <command> --help` lists every option with its documentation."""


@dataclass(frozen=True)
class CollectSnapshotsArgs:
    """Run a teacher (uniform random, or a trained run's checkpoint with optional noise), save full simulator
    states along its episodes with a value, cluster them by value and write the bank `pixelrl train --snapshot-bank`
    reads (S3RL, docs/snapshot_rl.md). The last line printed is JSON."""

    out: str
    """Bank folder to create (must not exist); it appears only once complete."""
    env: Optional[str] = None
    """Environment id with a MuJoCo simulator (dmc/..., Gymnasium MuJoCo gym/...). Required with --policy random;
    default: the run's env."""
    policy: str = "random"
    """'random' (uniform actions) or a run folder made by `pixelrl train` (its checkpoint acts in eval mode)."""
    episodes: int = 10
    """Teacher episodes (S3RL: 10)."""
    clusters: int = 6
    """k of the k-means over snapshot values, the 'status classes' (S3RL: 6)."""
    every: int = 10
    """Agent steps between snapshots, the reset state included (S3RL: 10)."""
    keep_episodes: Optional[int] = None
    """Keep the snapshots of this many best episodes by return (default: all; S3RL keeps the best 10 of 10)."""
    value: str = "auto"
    """Value each snapshot is clustered by: 'q' (the teacher critic's min over Q heads of the action it takes, as in
    S3RL), 'return-to-go' (discounted Monte-Carlo return from the snapshot; teachers without a critic) or 'auto' (q
    when the teacher has a critic, else return-to-go)."""
    discount: float = 0.99
    """Per-agent-step discount of the return-to-go (DrQ-v2's 0.99)."""
    seed: int = 0
    """Seed of the episodes, random actions, noise and k-means: the same seed writes the same bank."""
    noise_std: float = 0.0
    """Std of Gaussian noise added to every teacher action, then clipped to the action bounds (more varied states)."""
    checkpoint: Optional[str] = None
    """A checkpoint of the run to use instead of its latest: a folder, or a name under <run>/checkpoints/."""
    max_steps: Optional[int] = None
    """Cut teacher episodes after this many agent steps (default: the env's own time limit)."""
    size: Optional[int] = None
    """Frame size in pixels (a run's own value; unused by the random policy's default state observations)."""
    action_repeat: Optional[int] = None
    """Simulator frames per agent step (default: the env's, or the run's)."""
    frame_stack: Optional[int] = None
    """Frames per pixel observation (default: the env's, or the run's)."""
    obs: Optional[str] = None
    """pixels, state or pixels+state (a run's own value; random policy default state: nothing is rendered, the bank
    holds simulator states whatever the student observes)."""
    fast_render: Optional[bool] = None
    """Render without shadows/reflections/anti-aliasing (a run's own value otherwise)."""
    device: str = "auto"
    """Device of the teacher's networks."""
    progress: bool = True
    """Show a progress bar (a line per episode when stdout is not a terminal)."""


@dataclass(frozen=True)
class InfoArgs:
    """Print a snapshot bank's size, env, value range and clusters; the last line is JSON."""

    path: tyro.conf.Positional[str]
    """The bank folder (snapshots.npz + snapshots.json)."""


def cmd_snapshots(argv: list[str]) -> int:
    """``pixelrl snapshots collect|info ...``"""
    return run_subcommand(argv, "snapshots", SNAPSHOTS_USAGE,
                          {"collect": (CollectSnapshotsArgs, _collect), "info": (InfoArgs, _info)})


def _collect(a: CollectSnapshotsArgs) -> int:
    from pixelrl.train.snapshots import collect_snapshot_bank

    s = collect_snapshot_bank(
        a.env, a.policy, a.episodes, a.out, clusters=a.clusters, every=a.every, keep_episodes=a.keep_episodes,
        seed=a.seed, noise_std=a.noise_std, value=a.value, discount=a.discount, max_steps=a.max_steps, size=a.size,
        action_repeat=a.action_repeat, frame_stack=a.frame_stack, obs=a.obs, fast_render=a.fast_render,
        checkpoint=a.checkpoint, device=a.device, progress=a.progress)
    v = s["values"]
    print(f"wrote {s['out']}: {s['snapshots']} snapshots of {s['env_id']} from {len(s['episodes']['kept'])} of "
          f"{s['episodes']['run']} teacher episodes, {s['k']} clusters; {s['value']} in [{v['min']:.2f}, "
          f"{v['max']:.2f}]")
    print(f"  train with: pixelrl train --env {s['env_id']} --snapshot-bank {s['out']}")
    print(json.dumps(s))
    return 0


def _info(a: InfoArgs) -> int:
    from pixelrl.envs.snapshot import SnapshotBank

    s = SnapshotBank.load(a.path).summary()
    v, ep = s["values"], s["episodes"]
    print(f"{a.path}: {s['snapshots']} snapshots of {s['env_id']} (every {s['every']} agent steps)")
    teacher = s.get("teacher") or {}
    if teacher:
        print(f"  teacher: {teacher.get('label', teacher.get('policy'))}"
              + (f" from {teacher['run_dir']} @ {teacher['checkpoint']}" if "run_dir" in teacher else ""))
    print(f"  episodes: {len(ep['kept'])} kept of {ep['run']}, kept mean return {ep['kept_mean_return']:.2f}")
    print(f"  value ({s['value']}): min {v['min']:.3f} | mean {v['mean']:.3f} | max {v['max']:.3f}")
    print(f"  clusters: {s['k']}" + (f" (requested {s['k_requested']})" if s["k_requested"] not in (None, s["k"])
                                     else ""))
    for c in s["clusters"]:
        print(f"    {c['cluster']}: {c['size']:5d} snapshots, centroid {c['centroid']:.3f}, "
              f"values [{c['min']:.3f}, {c['max']:.3f}]")
    print(json.dumps({"path": str(a.path), **s}))
    return 0
