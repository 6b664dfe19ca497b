"""Weights & Biases for ``pixelrl train --wandb``: the rows, config and videos of a run, as TensorBoard gets them.

:class:`~pixelrl.train.logger.Logger` -- the one place every trainer's rows go through -- opens a :class:`WandbSink`
when the run's ``config.json`` says ``"wandb": true`` and hands it each row it writes:

* every ``train`` and ``eval`` row, each number as ``train/<column>`` / ``eval/<column>`` (the TensorBoard tags),
  plotted against ``frames`` (env frames: W&B's x axis is set to it with ``define_metric``);
* the resolved config (``config.json``) as the W&B run's config;
* each evaluation's video (the mp4 the trainer wrote under ``videos/`` for that evaluation) as ``eval/video``.

The W&B run id is kept in ``wandb.json`` in the run folder, so ``pixelrl resume`` continues the same W&B run. W&B's
files go to ``<run folder>/wandb/`` unless ``WANDB_DIR`` says otherwise. ``--wandb-mode offline`` needs no network
and no account; ``wandb sync <run folder>/wandb/offline-run-*`` uploads such a run later.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import string
import sys
from pathlib import Path
from typing import Any

from pixelrl.errors import ConfigError, MissingExtraError, PixelRLError
from pixelrl.utils.atomic import write_json_atomic

MODES = ("online", "offline", "disabled")
"""``--wandb-mode`` values: W&B's own (online: stream to the server; offline: write locally, ``wandb sync`` later;
disabled: no W&B at all, every call a no-op)."""

ID_FILE = "wandb.json"


def check_wandb_config(cfg: Any) -> None:
    """Refuse bad W&B settings of a :class:`~pixelrl.train.config.TrainConfig` in one line, before a run folder
    exists: an unknown mode or project, ``--wandb`` with ``--seeds`` (one process, several W&B runs: wandb 0.31
    drops the records of the second), ``--wandb`` without the package, and an online run without W&B credentials
    where nobody can type them (stdin not a terminal; at a terminal W&B asks for them as usual)."""
    if cfg.wandb_mode not in MODES:
        raise ConfigError(f"--wandb-mode must be one of {', '.join(MODES)}, got {cfg.wandb_mode!r}")
    if not isinstance(cfg.wandb_project, str) or not cfg.wandb_project.strip():
        raise ConfigError(f"--wandb-project must name a W&B project, got {cfg.wandb_project!r}")
    if not cfg.wandb:
        return
    if cfg.seeds is not None:
        raise ConfigError("--wandb logs one run per process, and --seeds trains its seeds in one process (wandb 0.31 "
                          "drops the records of a second run there); train the seeds as separate runs (--seed N) "
                          "for W&B")
    try:
        import wandb
    except ImportError:
        raise MissingExtraError("wandb", "wandb", "--wandb") from None
    if cfg.wandb_mode == "online" and not sys.stdin.isatty():
        try:
            wandb.login(verify=False)  # finds WANDB_API_KEY or the key `wandb login` saved; no network
        except wandb.errors.UsageError:
            raise ConfigError("--wandb: no W&B API key (run `wandb login` or set WANDB_API_KEY), or log without an "
                              "account with --wandb-mode offline and `wandb sync` later") from None


class WandbSink:
    """One W&B run fed with a pixelrl run's rows (see the module docstring). The run folder's ``wandb.json`` names
    the W&B run to continue (``pixelrl resume``); without one, a new W&B run is started and its id written there."""

    def __init__(self, run_dir: str | os.PathLike, config: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError as e:
            raise MissingExtraError("wandb", "wandb", "--wandb") from e
        self._wandb = wandb
        self.run_dir = Path(run_dir)
        id_file = self.run_dir / ID_FILE
        run_id = None
        if id_file.exists():
            try:
                run_id = json.loads(id_file.read_text())["id"]
            except (ValueError, KeyError, TypeError):
                run_id = None  # unreadable: a new W&B run rather than no logging
        if run_id is None:
            alphabet = string.ascii_lowercase + string.digits  # W&B's own id alphabet
            run_id = "".join(secrets.choice(alphabet) for _ in range(8))
            write_json_atomic(id_file, {"id": run_id, "project": config.get("wandb_project"),
                                        "entity": config.get("wandb_entity")})
        where = os.environ.get("WANDB_DIR") or str(self.run_dir)  # read here: wandb caches its settings per process
        try:
            self.run = wandb.init(project=config.get("wandb_project") or "pixelrl", entity=config.get("wandb_entity"),
                                  mode=config.get("wandb_mode", "online"), config=config, id=run_id, resume="allow",
                                  name=self.run_dir.name, dir=where, reinit="create_new")
        except Exception as e:  # W&B's own error (credentials, server), as one line
            raise PixelRLError(f"--wandb: W&B did not start: {' '.join(str(e).split())} (--wandb-mode offline logs "
                               "without a network)") from None
        self.run.define_metric("frames")
        self.run.define_metric("*", step_metric="frames")
        videos = self.run_dir / "videos"
        self._seen = set(videos.glob("*.mp4")) if videos.is_dir() else set()  # logged by the run before a resume

    def log(self, kind: str, row: dict[str, Any]) -> None:
        """One row of ``kind`` ('train' / 'eval'): its finite numbers under ``<kind>/``, plus, for an eval row, the
        videos written since the last one."""
        data: dict[str, Any] = {"frames": int(row["frames"])}
        for k, v in row.items():
            if k not in ("kind", "frames") and isinstance(v, (int, float)) and not isinstance(v, bool) \
                    and math.isfinite(v):
                data[f"{kind}/{k}"] = v
        if kind == "eval":
            videos = self.run_dir / "videos"
            new = sorted(set(videos.glob("*.mp4")) - self._seen) if videos.is_dir() else []
            if new:
                data["eval/video"] = self._wandb.Video(str(new[-1]), format="mp4")
            self._seen.update(new)
        self.run.log(data)

    def close(self) -> None:
        self.run.finish()


def open_wandb(run_dir: str | os.PathLike) -> WandbSink | None:
    """The :class:`WandbSink` a run folder's ``config.json`` asks for (``"wandb": true``), else None (no config,
    or W&B not asked for)."""
    path = Path(run_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not config.get("wandb"):
        return None
    return WandbSink(run_dir, config)
