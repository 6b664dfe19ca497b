"""``pixelrl label QUEUE``: serve the labelling page for a label queue; with ``--dataset`` first fill a new queue
with pairs drawn from a dataset, with ``--fit`` fit a preference reward model on the queue's labels instead of
serving. Parsing only; the work is in pixelrl.web.label_server, pixelrl.rewards.queue and pixelrl.rewards.preference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

from pixelrl.errors import ConfigError


@dataclass(frozen=True)
class LabelArgs:
    """Label pairs of clips in a local web page: two clips side by side, keys left arrow / right arrow (that clip is
    closer to the goal), down arrow (equal), space (skip). Every answer is written to QUEUE/labels.jsonl as it is
    given; a restart goes on where labelling stopped. A training run with --reward prefs:person --reward.queue QUEUE
    adds pairs as it goes; offline, --dataset fills a new queue, and --fit turns the labels into a model for
    --reward prefs:DIR (docs/labelling.md)."""

    queue: tyro.conf.Positional[str]
    """The label queue folder."""
    port: int = 8765
    """Port of the page (0: any free port)."""
    host: str = "127.0.0.1"
    """Address to listen on (127.0.0.1: this machine only; 0.0.0.0 to label from another machine of the network)."""
    dataset: Optional[str] = None
    """Create QUEUE (which must not exist) from this dataset folder: --pairs pairs of steps drawn uniformly, each shown
    as its next observation's frame (a clip of --segment steps)."""
    pairs: int = 200
    """With --dataset: pairs to draw."""
    segment: int = 1
    """With --dataset: steps per clip (RL-VLM-F compares single frames: 1)."""
    goal: Optional[str] = None
    """With --dataset: the goal sentence shown above the clips."""
    seed: int = 0
    """With --dataset: seed of the pair draw; with --fit: seed of the model's initialisation and shuffles."""
    fit: Optional[str] = None
    """Fit a preference reward model (RL-VLM-F's ensemble and fit) on the queue's labels, write it to this folder and
    exit without serving; use it with --reward prefs:FOLDER."""
    epochs: int = 50
    """With --fit: most passes over the labels (RL-VLM-F's cartpole reward_update: 50)."""
    ensemble: int = 3
    """With --fit: reward nets in the ensemble (RL-VLM-F: 3)."""


def create_from_dataset(a: LabelArgs) -> dict:
    import numpy as np

    from pixelrl.data.dataset import load_dataset
    from pixelrl.rewards.preference import dataset_steps, input_spec, sample_segment_starts, segment_rows
    from pixelrl.rewards.queue import LabelQueue

    if a.pairs < 1 or a.segment < 1:
        raise ConfigError(f"--pairs and --segment must be >= 1, got {a.pairs} and {a.segment}")
    if Path(a.queue).exists():
        raise ConfigError(f"{a.queue} exists already; --dataset creates a new queue (drop --dataset to serve it)")
    ds = load_dataset(a.dataset)
    spec = input_spec(ds.observation_space, ds.frame_stack)
    if not spec.pixel:
        raise ConfigError(f"dataset {a.dataset} holds states, not frames: a person needs images to compare")
    inputs, _, first, ep_start = dataset_steps(ds, spec)
    rng = np.random.default_rng(np.random.SeedSequence([a.seed, 5]))
    sa = sample_segment_starts(first, ep_start, a.pairs, a.segment, rng)
    sb = sample_segment_starts(first, ep_start, a.pairs, a.segment, rng)
    if sa.size == 0:
        raise ConfigError(f"dataset {a.dataset} has no {a.segment} consecutive steps of one episode")
    q = LabelQueue.create(a.queue, spec=spec.to_json(), segment=a.segment, goal=a.goal,
                          source={"dataset": str(ds.path.resolve()), "dataset_id": ds.dataset_id, "seed": a.seed})
    ids = q.add_batch(inputs[segment_rows(sa, a.segment)], inputs[segment_rows(sb, a.segment)], batch=0)
    return {"queue": str(q.path), "pairs": len(ids)}


def fit_from_queue(a: LabelArgs) -> dict:
    import numpy as np

    from pixelrl.rewards.preference import InputSpec, PreferenceRewardModel
    from pixelrl.rewards.queue import LabelQueue

    q = LabelQueue(a.queue)
    if q.meta.get("spec") is None:
        raise ConfigError(f"{a.queue} records no model input (it was filled by an older tool); nothing to fit")
    labels = q.labels()
    if not any(v in (0, 1) for v in labels.values()):
        raise ConfigError(f"{a.queue} has no left/right answers yet ({len(labels)} answers); label some pairs first")
    first, second, ids = q.pairs(sorted(labels))
    model = PreferenceRewardModel(InputSpec.from_json(q.meta["spec"]), ensemble=a.ensemble, epochs=a.epochs,
                                  segment=int(q.meta.get("segment", 1)), seed=a.seed)
    kept = model.add_labels(first, second, np.array([labels[i] for i in ids]))
    fit = model.fit()
    model.save(a.fit, extra={"queue": str(q.path.resolve())})
    return {"model": str(Path(a.fit)), "labels": kept, "answers": len(labels), **{k: fit[k] for k in ("epochs", "acc")}}


def cmd_label(argv: list[str]) -> int:
    a = tyro.cli(LabelArgs, args=list(argv), prog="pixelrl label")
    if a.dataset is not None:
        print(json.dumps(create_from_dataset(a)), flush=True)
    if a.fit is not None:
        print(json.dumps(fit_from_queue(a)), flush=True)
        return 0
    from pixelrl.web.label_server import serve

    serve(a.queue, host=a.host, port=a.port)
    return 0
