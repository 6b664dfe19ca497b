"""The Hugging Face Hub: push a run or a dataset folder, and read ``hf://user/name[@revision]`` back.

``pixelrl push RUN_DIR --repo user/name`` uploads what another machine needs to evaluate or fine-tune the run and to
judge it, and nothing else (:func:`run_files`): the latest checkpoint (``tensors.safetensors``, ``state.json``,
``manifest.json``, ``checkpoints/latest.json``), ``config.json``, ``summary.json``, ``curve.png``, the newest
evaluation video, and a model card ``README.md`` (:func:`model_card`) with the config, the eval table, the curve and
the video. Only safetensors, JSON, PNG, MP4 and the card leave the machine: no pickle, no replay, no TensorBoard
events. ``pixelrl push DATASET_DIR --repo user/name --repo-type dataset`` uploads a dataset folder (``data/``: HDF5 +
JSON, verified first) with a dataset card. This module needs only :mod:`pixelrl.utils` (and ``huggingface_hub``), so
the dataset readers can resolve ``hf://`` paths through it.

Everything is checked before any network call (the folder is a run / a dataset, the repo id parses, the package is
installed), the files are staged in a temporary folder, and the upload is one Hub commit
(``HfApi.create_repo`` then ``HfApi.upload_folder``): a failure leaves the repo as it was.

``hf://user/name[@revision]`` (:func:`download`) is ``snapshot_download`` of the repo into
``$PIXELRL_HUB_CACHE/<models|datasets>/<user>/<name>/<revision>`` (default ``~/.cache/pixelrl/hub``), a plain folder
that ``pixelrl eval`` and the dataset readers then open like a local one. ``HF_ENDPOINT`` and ``HF_TOKEN`` apply as
in ``huggingface_hub``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from pixelrl.errors import ConfigError, MissingExtraError, NotFoundError, PixelRLError

PREFIX = "hf://"
REPO_TYPES = ("model", "dataset")
PUSHED_SUFFIXES = (".safetensors", ".json", ".png", ".mp4")
"""The only kinds of file a push of a run uploads (plus the card, README.md)."""

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_NAME}/{_NAME}$")


class HubError(PixelRLError):
    """The Hub refused or failed a request (authentication, a missing repo or revision, the network)."""


def require():
    try:
        import huggingface_hub
    except ImportError as e:
        raise MissingExtraError("huggingface_hub", "hub", "pixelrl push and hf:// paths") from e
    return huggingface_hub


def check_repo_id(repo_id: str) -> str:
    """``user/name`` as the Hub accepts it (letters, digits, ``-``, ``_``, ``.``; no ``--`` or ``..``), else one
    ConfigError line."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id \
            or repo_id.endswith(".git"):
        raise ConfigError(f"{repo_id!r} is not a Hub repo id: give it as user/name (or org/name) with letters, digits, "
                          "'-', '_' and '.', e.g. --repo alice/drqv2-cartpole")
    return repo_id


def is_hub_spec(spec: Any) -> bool:
    return isinstance(spec, (str, os.PathLike)) and str(spec).startswith(PREFIX)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``hf://user/name[@revision]`` -> (repo id, revision or None)."""
    body = str(spec)[len(PREFIX):] if is_hub_spec(spec) else str(spec)
    repo_id, _, revision = body.partition("@")
    if _ == "@" and not revision:
        raise ConfigError(f"{spec!r}: nothing after '@'; give hf://user/name or hf://user/name@revision")
    return check_repo_id(repo_id.rstrip("/")), revision or None


def cache_root() -> Path:
    return Path(os.environ.get("PIXELRL_HUB_CACHE") or Path.home() / ".cache" / "pixelrl" / "hub")


def download(spec: str, *, repo_type: str = "model", token: str | None = None) -> Path:
    """The folder of ``hf://user/name[@revision]``, downloaded (or brought up to date) with ``snapshot_download``."""
    repo_id, revision = parse_spec(spec)
    hf = require()
    local = cache_root() / f"{repo_type}s" / repo_id / (revision or "main")
    try:
        path = hf.snapshot_download(repo_id, repo_type=repo_type, revision=revision, local_dir=local, token=token,
                                    endpoint=_endpoint())
    except hf.errors.RepositoryNotFoundError:
        where = _endpoint() or hf.constants.ENDPOINT
        raise HubError(f"{spec}: no such {repo_type} repo on {where} (or it is private: log in with `hf auth login` "
                       "or set HF_TOKEN)") from None
    except hf.errors.RevisionNotFoundError:
        raise HubError(f"{spec}: the repo has no revision {revision!r}") from None
    except (hf.errors.HfHubHTTPError, OSError) as e:
        raise HubError(f"{spec}: download failed: {_one_line(e)}") from None
    return Path(path)


def _endpoint() -> str | None:
    """``HF_ENDPOINT`` as it is now (``huggingface_hub`` reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT") or None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def run_files(run_dir: str | os.PathLike) -> dict[str, Path]:
    """What a push of run folder ``run_dir`` uploads: path in the repo -> file here (see the module docstring).
    A folder that is not a finished run (no ``config.json``, no checkpoint) is one ConfigError line."""
    from pixelrl.utils.checkpoint import resolve_checkpoint

    run = Path(run_dir)
    if not run.is_dir():
        raise NotFoundError(f"{run} does not exist or is not a folder; give a run folder made by `pixelrl train`")
    what = "a run folder (config.json and checkpoints/ from `pixelrl train`)"
    if not (run / "config.json").is_file():
        raise ConfigError(f"{run} is not {what}: it has no config.json. For a dataset add --repo-type dataset")
    try:
        ckpt = resolve_checkpoint(run)
    except PixelRLError as e:
        raise ConfigError(f"{run} is not {what}: {_one_line(e)}") from None
    files = {"config.json": run / "config.json", "checkpoints/latest.json": run / "checkpoints" / "latest.json"}
    for f in sorted(ckpt.iterdir()):
        if f.is_file() and f.suffix in PUSHED_SUFFIXES:
            files[f"checkpoints/{ckpt.name}/{f.name}"] = f
    for name in ("summary.json", "curve.png"):
        if (run / name).is_file():
            files[name] = run / name
    videos = sorted((run / "videos").glob("*.mp4")) if (run / "videos").is_dir() else []
    if videos:
        files[f"videos/{videos[-1].name}"] = videos[-1]
    return files


def stage(files: dict[str, Path], card: str, out: Path) -> None:
    """Copy ``files`` (repo path -> file) and the card into the empty folder ``out``."""
    for rel, src in files.items():
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    (out / "README.md").write_text(card, encoding="utf-8")


def upload(folder: Path, repo_id: str, *, repo_type: str = "model", private: bool | None = None,
           revision: str | None = None, message: str = "pixelrl push", token: str | None = None) -> str:
    """Create the repo if needed and upload ``folder`` as one commit; returns the commit URL."""
    hf = require()
    api = hf.HfApi(token=token, endpoint=_endpoint())
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, repo_type=repo_type, branch=revision, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, revision=revision,
                                 commit_message=message)
    except (hf.errors.HfHubHTTPError, OSError) as e:
        raise HubError(f"pushing to {repo_id} failed: {_one_line(e)} (log in with `hf auth login` or set HF_TOKEN; "
                       "nothing was committed)") from None
    return str(getattr(info, "commit_url", info))


def push(path: str | os.PathLike, repo_id: str, *, repo_type: str = "model", card: str | None = None,
         files: dict[str, Path] | None = None, **upload_kwargs: Any) -> str:
    """Stage ``files`` (default: :func:`run_files` of ``path``; a dataset's are given by the caller, who verified it)
    with ``card`` and upload them (:func:`upload`). Returns the commit URL."""
    check_repo_id(repo_id)
    if repo_type not in REPO_TYPES:
        raise ConfigError(f"--repo-type must be one of {', '.join(REPO_TYPES)}, got {repo_type!r}")
    require()
    if files is None:
        if repo_type != "model":
            raise ConfigError("push of a dataset needs its files (pixelrl push DATASET_DIR --repo-type dataset)")
        files = run_files(path)
    with tempfile.TemporaryDirectory(prefix="pixelrl-push-") as tmp:
        stage(files, card or "", Path(tmp))
        return upload(Path(tmp), repo_id, repo_type=repo_type, **upload_kwargs)


def front_matter(meta: dict[str, Any]) -> str:
    """A card's YAML header; JSON values are valid YAML, so no YAML writer is needed."""
    lines = ["---"] + [f"{k}: {json.dumps(v)}" for k, v in meta.items()] + ["---", ""]
    return "\n".join(lines)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return "" if v is None else str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(out)


EVAL_COLUMNS = ("frames", "agent_steps", "eval_return", "eval_return_std", "eval_length", "success_rate")
MAX_TABLE_ROWS = 20


def _spread(rows: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """At most ``n`` rows evenly spread over ``rows``, the first and the last always among them."""
    if len(rows) <= n:
        return list(rows)
    idx = sorted({round(i * (len(rows) - 1) / (n - 1)) for i in range(n)})
    return [rows[i] for i in idx]


def run_card(repo_id: str, config: dict[str, Any], evals: Sequence[dict[str, Any]], summary: dict[str, Any] | None,
             files: dict[str, Any]) -> str:
    """The model card (README.md) of a pushed run: Hub metadata (library, tags, a model-index with the last
    evaluation's mean return and success rate), how to evaluate it, the eval table, the curve, the video, the files
    and the full config."""
    env, agent = str(config.get("env")), str(config.get("agent_name"))
    last = evals[-1] if evals else {}
    metrics = []
    if "eval_return" in last:
        metrics.append({"type": "mean_reward", "name": "mean_reward",
                        "value": f"{last['eval_return']:.2f} +/- {last.get('eval_return_std', 0.0):.2f}"})
    if "success_rate" in last:
        metrics.append({"type": "success_rate", "name": "success_rate", "value": float(last["success_rate"])})
    meta: dict[str, Any] = {"library_name": "pixelrl",
                            "tags": ["reinforcement-learning", "deep-reinforcement-learning", "pixelrl", agent, env]}
    if metrics:
        meta["model-index"] = [{"name": f"{agent}-{env}", "results": [{
            "task": {"type": "reinforcement-learning", "name": "reinforcement-learning"},
            "dataset": {"type": env, "name": env}, "metrics": metrics}]}]
    frames = (summary or {}).get("frames", last.get("frames"))
    out = [front_matter(meta), f"# {agent} on `{env}`", "",
           f"A [pixelrl](https://pypi.org/project/pixelrl/) agent: `--agent {agent}` (preset `{config.get('preset')}`, "
           f"seed {config.get('seed')}), trained from {config.get('obs', 'pixels')} for "
           f"{frames:,} env frames." if isinstance(frames, int) else f"A pixelrl agent: `--agent {agent}`.", "",
           "## Use it", "", "```bash", "pip install pixelrl",
           f"pixelrl eval hf://{repo_id} --episodes 10 --video", "```", "",
           "The files are the run folder's latest checkpoint (safetensors weights + JSON state), its resolved "
           "`config.json` and `summary.json`: `pixelrl eval` opens the downloaded folder as it opens a local run.", ""]
    if evals:
        cols = [c for c in EVAL_COLUMNS if any(c in r for r in evals)]
        note = f" ({MAX_TABLE_ROWS} of {len(evals)} evaluations)" if len(evals) > MAX_TABLE_ROWS else ""
        out += [f"## Evaluation{note}", "",
                f"Deterministic policy, {config.get('eval_episodes')} episodes per evaluation; `frames` counts env "
                "frames (action repeat included).", "", markdown_table(_spread(evals, MAX_TABLE_ROWS), cols), ""]
    if "curve.png" in files:
        out += ["## Learning curve", "", "![learning curve](curve.png)", ""]
    video = next((k for k in files if k.startswith("videos/")), None)
    if video is not None:
        out += ["## Video", "", f'<video controls src="{video}"></video>', "", f"[{video}]({video})", ""]
    out += ["## Files", ""] + [f"- `{k}`" for k in sorted([*files, "README.md"])] + [""]
    out += ["## Config", "", "```json", json.dumps(config, indent=1, sort_keys=False), "```", ""]
    return "\n".join(out)


def dataset_card(repo_id: str, info: dict[str, Any], files: dict[str, Any]) -> str:
    """The dataset card (README.md) of a pushed pixelrl dataset: what it holds and how to train from it."""
    meta = {"tags": ["reinforcement-learning", "pixelrl", "offline-reinforcement-learning", str(info.get("env_id"))]}
    out = [front_matter(meta), f"# {info.get('dataset_id', repo_id)}", "",
           f"A pixelrl dataset of `{info.get('env_id')}`: {info.get('episodes')} episodes, "
           f"{info.get('transitions', 0):,} transitions, frame stack {info.get('frame_stack')}. It is in Minari's "
           "layout (`data/main_data.hdf5` + `data/metadata.json`, checksums included; no pickle).", "",
           "## Use it", "", "```bash", "pip install pixelrl",
           f"pixelrl dataset stats hf://{repo_id}",
           f"pixelrl train --agent iql --dataset hf://{repo_id}", "```", "",
           "## Files", ""] + [f"- `{k}`" for k in sorted([*files, "README.md"])] + [""]
    return "\n".join(out)
