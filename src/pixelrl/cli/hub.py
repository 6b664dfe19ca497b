"""``pixelrl push``: a run folder (or a dataset folder) to the Hugging Face Hub; and ``hf://`` run folders for
``pixelrl eval``. Parsing and the card's inputs only; the work is in :mod:`pixelrl.hub`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

from pixelrl.errors import ConfigError


@dataclass(frozen=True)
class _Push:
    """Upload a run folder made by `pixelrl train` to the Hugging Face Hub as one commit: its latest checkpoint
    (safetensors + JSON), config.json, summary.json, curve.png, the newest evaluation video and a model card
    (README.md: config, eval table, curve, video). Nothing else leaves the machine (no pickle, no replay). With
    --repo-type dataset, upload a dataset folder (pixelrl collect) with a dataset card. Log in first (`hf auth login`
    or HF_TOKEN). Read it back with `pixelrl eval hf://user/name`. See docs/hub.md."""

    path: tyro.conf.Positional[str]
    """The run folder (or, with --repo-type dataset, the dataset folder) to upload."""
    repo: Optional[str] = None
    """Hub repo id, ``user/name`` or ``org/name`` (created if it does not exist). Required."""
    repo_type: str = "model"
    """``model`` (a run folder) or ``dataset`` (a dataset folder)."""
    revision: Optional[str] = None
    """Branch to commit to (created from main if it does not exist); None: main."""
    private: bool = False
    """Create the repo private (an existing repo keeps its visibility)."""
    message: Optional[str] = None
    """Commit message; default ``pixelrl push <folder name>``."""


def cmd_push(argv: list[str]) -> int:
    from pixelrl import hub

    args = tyro.cli(_Push, args=list(argv), prog="pixelrl push")
    if args.repo is None:
        raise ConfigError("pixelrl push needs --repo user/name (the Hub repo to upload to)")
    hub.check_repo_id(args.repo)
    if args.repo_type not in hub.REPO_TYPES:
        raise ConfigError(f"--repo-type must be one of {', '.join(hub.REPO_TYPES)}, got {args.repo_type!r}")
    hub.require()  # the package, before anything is read or staged
    folder = Path(args.path)
    if args.repo_type == "model":
        files = hub.run_files(folder)
        card = hub.run_card(args.repo, *_run_card_inputs(folder), files)
    else:
        files, info = _dataset_files(folder)
        card = hub.dataset_card(args.repo, info, files)
    url = hub.push(folder, args.repo, repo_type=args.repo_type, card=card, files=files, private=args.private or None,
                   revision=args.revision, message=args.message or f"pixelrl push {folder.resolve().name}")
    print(f"pushed {folder} to {args.repo} ({len(files) + 1} files): {url}")
    print(json.dumps({"path": str(folder), "repo": args.repo, "repo_type": args.repo_type, "commit_url": url,
                      "files": sorted([*files, "README.md"])}))
    return 0


def _run_card_inputs(run: Path) -> tuple[dict, list[dict], dict | None]:
    from pixelrl.train.logger import read_rows

    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else None
    return config, read_rows(run, "eval"), summary


def _dataset_files(path: Path) -> tuple[dict[str, Path], dict]:
    """A dataset folder's ``data/`` files, after the dataset is verified (a corrupt or half-written one is refused
    before anything is sent), and what its card says about it."""
    from pixelrl.data.dataset import load_dataset

    ds = load_dataset(path)
    root = Path(ds.path)
    files = {f"data/{f.name}": f for f in sorted((root / "data").iterdir()) if f.is_file()}
    info = {"dataset_id": ds.dataset_id, "env_id": ds.env_id, "episodes": ds.num_episodes,
            "transitions": ds.num_transitions, "frame_stack": ds.frame_stack}
    return files, info


def run_folder(spec: str) -> Path:
    """A run folder given as a path or as ``hf://user/name[@revision]`` (downloaded first)."""
    from pixelrl import hub

    return hub.download(spec) if hub.is_hub_spec(spec) else Path(spec)
