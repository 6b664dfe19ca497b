"""``pixelrl reward fit-classifier``: fit a success classifier (SERL) from labelled frames. Parsing only; the work is in
:mod:`pixelrl.rewards.classifier`."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Optional

import tyro

from pixelrl.errors import ConfigError
from pixelrl.rewards.classifier import ClassifierConfig

USAGE = """usage: pixelrl reward fit-classifier [options]

  fit-classifier   fit a success classifier from labelled frames, for --reward classifier:DIR
                   pixelrl reward fit-classifier --positives DIR --negatives DIR --out DIR
                   pixelrl reward fit-classifier --dataset PATH --key success --out DIR"""


@dataclass(frozen=True)
class _FitClassifier(ClassifierConfig):
    """Fit a success classifier (SERL / HIL-SERL) on labelled frames and save it as a folder (model.safetensors +
    classifier.json) for ``pixelrl train --reward classifier:DIR``. Labelled frames come from two folders of images
    (--positives / --negatives: PNG files of one size) or from a pixelrl dataset (--dataset PATH --key NAME: the frame
    after each step is a positive where the episode's per-step array NAME is > --key-threshold). See docs/rewards.md."""

    out: Optional[str] = None
    """Folder to write the classifier to (created; its two files are replaced atomically). Required."""
    positives: Optional[str] = None
    """Folder of success frames (images)."""
    negatives: Optional[str] = None
    """Folder of failure frames (images)."""
    dataset: Optional[str] = None
    """A pixelrl dataset (pixelrl collect) to take labelled frames from, instead of the two folders."""
    key: str = "success"
    """With --dataset: the per-step array giving the label (rewards, terminations, or an array stored in the episode
    groups such as success)."""
    key_threshold: float = 0.5
    """With --dataset: a step is a success where its value of --key is > this."""
    device: str = "cpu"
    """Device to fit on (cpu, cuda)."""


def _fit_classifier(args: _FitClassifier) -> int:
    import torch

    from pixelrl.rewards.classifier import SuccessClassifier, frames_from_dataset, load_image_folder
    from pixelrl.utils.dataclass_io import from_dict, to_dict

    if args.out is None:
        raise ConfigError("pixelrl reward fit-classifier needs --out DIR (the folder to write the classifier to)")
    names = {f.name for f in dataclasses.fields(ClassifierConfig)}
    cfg = from_dict(ClassifierConfig, {k: v for k, v in to_dict(args).items() if k in names}, where="classifier options")
    folders = args.positives is not None or args.negatives is not None
    if args.dataset is not None and folders:
        raise ConfigError("give either --dataset PATH or --positives DIR --negatives DIR, not both")
    if args.dataset is not None:
        pos, neg = frames_from_dataset(args.dataset, args.key, args.key_threshold)
        if len(pos) == 0 or len(neg) == 0:
            which = "success" if len(pos) == 0 else "failure"
            raise ConfigError(f"dataset {args.dataset} has no {which} frame under --key {args.key} > "
                              f"{args.key_threshold:g}; a classifier needs both classes")
    else:
        if args.positives is None or args.negatives is None:
            raise ConfigError("give --positives DIR and --negatives DIR (folders of images), or --dataset PATH --key NAME")
        pos = load_image_folder(args.positives, "positive frames")
        neg = load_image_folder(args.negatives, "negative frames")
        if pos.shape[1:] != neg.shape[1:]:
            raise ConfigError(f"the positive frames are {list(pos.shape[1:])} (C, H, W) but the negative frames "
                              f"{list(neg.shape[1:])}; both classes must have the same size and colour mode")
    device = torch.device(args.device)
    model = SuccessClassifier(pos.shape[1], pos.shape[2:], cfg).to(device)
    t0 = time.perf_counter()
    print(f"fitting a {cfg.ensemble}-member success classifier on {len(pos)} positive and {len(neg)} negative "
          f"{pos.shape[2]}x{pos.shape[3]} frames ({cfg.steps} steps)")
    metrics = model.fit(pos, neg)
    metrics["fit_s"] = time.perf_counter() - t0
    model.metrics = metrics
    out = model.save(args.out)
    print(json.dumps({"out": str(out), **{k: round(v, 4) for k, v in metrics.items()}}))
    return 0


def cmd_reward(argv: list[str]) -> int:
    import sys

    from pixelrl.cli.main import _unchecked

    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] != "fit-classifier":
        print(f"pixelrl reward: unknown command '{argv[0]}'\n\n{USAGE}", file=sys.stderr)
        return 2
    args = tyro.cli(_unchecked(_FitClassifier), args=argv[1:], prog="pixelrl reward fit-classifier")
    return _fit_classifier(args)
