"""``pixelrl collect`` and ``pixelrl dataset stats|convert``: parsing only; the work is in pixelrl.train.collect,
pixelrl.data.dataset and pixelrl.data.dataset_metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import tyro

from pixelrl.cli.subcommands import run_subcommand

DATASET_USAGE = """usage: pixelrl dataset {stats,convert,relabel} [options]

  stats    size, return distribution, TQ and SACo:  pixelrl dataset stats data/walker --reference data/replay
  convert  Minari dataset on disk -> pixelrl:        pixelrl dataset convert D4RL/door/human-v2 --out data/door
  relabel  a reward model's rewards, new dataset:   pixelrl dataset relabel data/cartpole --out data/cartpole-vlm
                                                    --reward "vlm:a pole standing upright" --reward.baseline "a pole"

`pixelrl dataset <command> --help` lists every option with its documentation."""


@dataclass(frozen=True)
class CollectArgs:
    """Record episodes of a policy (uniform random, or a trained run's checkpoint with optional noise) as a
    Minari-compatible dataset folder."""

    out: str
    """Dataset folder to create (must not exist). Put it at $MINARI_DATASETS_PATH/<namespace>/<name>-v0 to load it with
    minari.load_dataset('<namespace>/<name>-v0')."""
    env: Optional[str] = None
    """Environment id (dmc/..., gym/..., ale/...). Required with --policy random; default: the run's env."""
    policy: str = "random"
    """'random' (uniform actions) or a run folder made by `pixelrl train` (its latest checkpoint acts in eval mode), or
    ``hf://user/name[@revision]``: a run pushed to the Hugging Face Hub (`pixelrl push`), downloaded first."""
    episodes: int = 10
    """Number of complete episodes to record."""
    seed: int = 0
    """Seed of the episodes, random actions and noise: the same seed writes the same dataset."""
    noise_std: float = 0.0
    """Std of Gaussian noise added to every continuous action, then clipped to the action bounds (medium / noisy
    datasets)."""
    epsilon: float = 0.0
    """Probability of replacing an action with a uniform random one."""
    size: Optional[int] = None
    """Frame size in pixels (random policy default 84; a run's own value otherwise)."""
    action_repeat: Optional[int] = None
    """Simulator frames per agent step (default: the env's, or the run's)."""
    frame_stack: Optional[int] = None
    """Frames per pixel observation (default: the env's, or the run's)."""
    obs: Optional[str] = None
    """pixels, state or pixels+state (random policy default pixels). pixels+state keeps the low-dimensional state
    next to the frames, which `pixelrl dataset stats` needs for SACo."""
    fast_render: Optional[bool] = None
    """Render without shadows/reflections/anti-aliasing (random policy default False; the run's value otherwise)."""
    checkpoint: Optional[str] = None
    """A checkpoint of the run to use instead of its latest: a folder path or a name under ``<run>/checkpoints/``."""
    device: str = "auto"
    """Device of the policy network."""
    dataset_id: Optional[str] = None
    """Minari dataset id, (namespace/)name-v<N> (default: from --out)."""
    progress: bool = True
    """Show a progress bar (a line per episode when stdout is not a terminal)."""


@dataclass(frozen=True)
class StatsArgs:
    """Print a dataset's size, episode-return distribution, and TQ / SACo (Schweighofer et al. 2022); the last line
    is JSON."""

    path: tyro.conf.Positional[str]
    """The dataset folder."""
    reference: Optional[str] = None
    """Reference dataset folder (e.g. the replay of an online run): SACo is measured against it, and without
    --random-return/--expert-return a proxy TQ normalised by its lowest and highest episode return is reported
    (``tq_reference_range``; ``tq`` itself needs both returns)."""
    random_return: Optional[float] = None
    """Return of a random policy (TQ = 0)."""
    expert_return: Optional[float] = None
    """Return of an expert policy (TQ = 1)."""
    png: Optional[str] = None
    """Write a histogram of episode returns to this PNG."""
    bins: int = 100
    """Bin edges per state/action column for SACo (the paper's 100; the authors' ``np.digitize`` with
    ``np.linspace(min, max, 100)``, plus a bin below the reference's minimum and one at or above its maximum)."""


@dataclass(frozen=True)
class ConvertArgs:
    """Convert a Minari dataset already on disk (never downloaded) to a pixelrl dataset."""

    src: tyro.conf.Positional[str]
    """Minari dataset id (under $MINARI_DATASETS_PATH or ~/.minari/datasets) or a Minari dataset folder."""
    out: str
    """The new dataset folder."""
    frame_stack: Optional[int] = None
    """Frames per pixel observation (default 3 for image data, 1 otherwise)."""
    env: Optional[str] = None
    """pixelrl env id to record (default gym/<the Minari env_spec id>)."""
    dataset_id: Optional[str] = None
    """Id of the new dataset (default: from --out)."""
    rescale_actions: bool = True
    """Map Box actions with bounds other than [-1, 1] linearly to [-1, 1], as pixelrl's envs take them."""
    float32_states: bool = True
    """Store float64 state observations as float32, as pixelrl's envs return them."""


@dataclass(frozen=True)
class RelabelArgs:
    """Write a copy of a dataset whose rewards come from a reward model (docs/rewards.md). Everything but the rewards
    is copied bit for bit; the source is only read; the new dataset appears at --out only once complete. Reward
    options: --reward.mode (replace | add), --reward.scale, --reward.batch-size, --reward.device, and for vlm:
    --reward.baseline, --reward.alpha, --reward.model, --reward.autocast."""

    src: tyro.conf.Positional[str]
    """The dataset folder to relabel."""
    out: str
    """The new dataset folder (must not exist)."""
    reward: Optional[str] = None
    """The reward model (required): ``vlm:<goal prompt>`` (VLM-RM; several prompts separated by ``|``)."""
    dataset_id: Optional[str] = None
    """Id of the new dataset (default: from --out)."""
    device: str = "auto"
    """Device of the reward model when --reward.device is not given: auto (cuda if available), cpu, cuda..."""
    progress: bool = True
    """Print a line per 10% of the episodes."""


def cmd_collect(argv: list[str]) -> int:
    """``pixelrl collect ...``"""
    from pixelrl.train.collect import collect

    a = tyro.cli(CollectArgs, args=list(argv), prog="pixelrl collect")
    from pixelrl.cli.hub import run_folder

    policy = a.policy if a.policy == "random" else str(run_folder(a.policy))  # hf://user/name: downloaded first
    s = collect(a.env, policy, a.episodes, a.out, seed=a.seed, noise_std=a.noise_std, epsilon=a.epsilon,
                size=a.size, action_repeat=a.action_repeat, frame_stack=a.frame_stack, obs=a.obs,
                fast_render=a.fast_render, checkpoint=a.checkpoint, device=a.device, dataset_id=a.dataset_id,
                progress=a.progress)
    print(f"wrote {s['out']} ({s['dataset_id']}): {s['episodes']} episodes, {s['transitions']:,} transitions, "
          f"{s['frames']:,} frames of {s['env']}; return {s['mean_return']:.1f} ± {s['std_return']:.1f}")
    print(json.dumps(s))
    return 0


def cmd_dataset(argv: list[str]) -> int:
    """``pixelrl dataset stats|convert|relabel ...``"""
    argv, reward = list(argv), None
    if argv and argv[0] == "relabel":  # --reward SPEC and --reward.* are parsed on their own (not tyro fields)
        from pixelrl.rewards.base import reward_config_from_args

        rest = argv[1:]
        reward = reward_config_from_args(rest)
        argv = [argv[0], *rest]
    return run_subcommand(argv, "dataset", DATASET_USAGE,
                          {"stats": (StatsArgs, _stats), "convert": (ConvertArgs, _convert),
                           "relabel": (RelabelArgs, lambda a: _relabel(a, reward))})


def _relabel(a: RelabelArgs, reward) -> int:
    from pixelrl.data.dataset import load_dataset
    from pixelrl.errors import ConfigError
    from pixelrl.rewards.base import accepted_specs, build_reward_model, check_observations
    from pixelrl.rewards.relabel import relabel_dataset
    from pixelrl.utils.dataclass_io import to_dict

    if reward is None:
        raise ConfigError(f"pixelrl dataset relabel needs --reward SPEC; accepted: {accepted_specs()}")
    ds = load_dataset(a.src)  # verified (checksums) before the model is loaded
    from pathlib import Path

    if Path(a.out).exists():
        raise ConfigError(f"{a.out} already exists; choose a new --out folder (relabelling never overwrites a dataset)")
    check_observations(reward, ds.observation_space, ds.frame_stack)
    device = a.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_reward_model(reward, device=device)
    step = max(ds.num_episodes // 10, 1)

    def progress(done: int, total: int) -> None:
        if a.progress and (done % step == 0 or done == total):
            print(f"  relabelled {done}/{total} episodes", flush=True)

    s = relabel_dataset(ds, a.out, model, spec=to_dict(reward), dataset_id=a.dataset_id, progress=progress)
    print(f"wrote {s['out']} ({s['dataset_id']}): {s['episodes']} episodes, {s['transitions']:,} transitions relabelled "
          f"by {reward.spec!r}; mean return {s['mean_return_before']:.2f} -> {s['mean_return_after']:.2f} "
          f"in {s['seconds']:.1f} s")
    print(json.dumps(s))
    return 0


def _stats(a: StatsArgs) -> int:
    from pixelrl.data.dataset import load_dataset
    from pixelrl.data.dataset_metrics import dataset_stats, plot_return_histogram

    ds = load_dataset(a.path)
    ref = load_dataset(a.reference) if a.reference is not None else None
    out = dataset_stats(ds, reference=ref, random_return=a.random_return, expert_return=a.expert_return, bins=a.bins)
    r = out["returns"]
    print(f"{ds.path} ({ds.dataset_id}, {ds.env_id}): {out['episodes']} episodes, {out['transitions']:,} transitions")
    print(f"  return: mean {r['mean']:.2f} ± {r['std']:.2f} | min {r['min']:.2f} | q25 {r['q25']:.2f} | "
          f"median {r['q50']:.2f} | q75 {r['q75']:.2f} | max {r['max']:.2f}")
    if out.get("tq") is not None:
        n = out["tq_normalisation"]
        print(f"  TQ:   {out['tq']:.3f} (random {n['random_return']:.2f}, expert {n['expert_return']:.2f}: "
              f"{n['source']})")
    elif "tq_reference_range_returns" in out:
        print("  TQ:   needs --random-return and --expert-return (the returns of a random and an expert policy)")
        n = out["tq_reference_range_returns"]
        if out.get("tq_reference_range") is not None:
            print(f"  TQ against the reference's return range (a proxy, not the paper's TQ): "
                  f"{out['tq_reference_range']:.3f} (reference episodes return {n['min']:.2f} .. {n['max']:.2f})")
        else:
            print(f"  TQ against the reference's return range: not available: "
                  f"{out['tq_reference_range_unavailable']}")
    if ref is not None:
        if out.get("saco") is None:
            print(f"  SACo: not available: {out['saco_unavailable']}")
        else:
            print(f"  SACo: {out['saco']:.3f} (unique binned state-action pairs vs {ref.path}, {a.bins} bins)")
    if a.png is not None:
        png = plot_return_histogram(ds.episode_returns(), a.png, title=f"{ds.dataset_id} ({ds.env_id})",
                                    reference_returns=None if ref is None else ref.episode_returns())
        out["png"] = str(png)
        print(f"  histogram: {png}")
    print(json.dumps(out))
    return 0


def _convert(a: ConvertArgs) -> int:
    from pixelrl.data.dataset import convert_minari, load_dataset

    path = convert_minari(a.src, a.out, frame_stack=a.frame_stack, env_id=a.env, dataset_id=a.dataset_id,
                          rescale_actions=a.rescale_actions, float32_states=a.float32_states)
    ds = load_dataset(path)
    print(f"wrote {path} ({ds.dataset_id}, env {ds.env_id}): {ds.num_episodes} episodes, "
          f"{ds.num_transitions:,} transitions, frame_stack {ds.frame_stack}")
    print(json.dumps({"out": str(path), "dataset_id": ds.dataset_id, "env_id": ds.env_id,
                      "episodes": ds.num_episodes, "transitions": ds.num_transitions, "frame_stack": ds.frame_stack}))
    return 0
