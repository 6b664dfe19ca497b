"""Success classifier (SERL / HIL-SERL): an ensemble of small CNNs that says whether a frame shows the task solved,
fitted from labelled frames, used as a sparse reward (``--reward classifier:DIR``) and, optionally, as the end of a
training episode (``--reward.end-on-success``).

What the authors do (rail-berkeley/serl ``serl_launcher/networks/reward_classifier.py`` and
``examples/*/train_reward_classifier.py``; hil-serl ``train_reward_classifier.py``):

* per camera a frozen ImageNet ResNet-10 with learned spatial-embedding pooling, then the head
  ``Dense 256 -> Dropout 0.1 -> LayerNorm -> ReLU -> Dense 1``; images only;
* sigmoid binary cross-entropy, Adam 1e-4, balanced batches (128 positives + 128 negatives), random crop (pad 4),
  100 steps (SERL) / 150 (HIL-SERL);
* positives are the ``next_observations`` of success transitions, negatives the other frames;
* reward ``1[sigmoid(logit) >= 0.5]`` (SERL; HIL-SERL uses stricter per-task thresholds 0.7-0.85), and the episode
  ends on success.

Here (each deviation is named in the :class:`ClassifierConfig` field it concerns): the frozen pretrained ResNet-10
is replaced by a small DrQ-style CNN trained from scratch (no weights can be downloaded here), so the defaults train
longer and with a larger learning rate; there are ``ensemble`` members (default 3; SERL has one) whose mean
probability is thresholded; each member draws its own balanced batches and its own shifts.

A fitted classifier is a folder: ``model.safetensors`` (weights) and ``classifier.json`` (architecture, threshold,
the frame shape it was fitted on, the fit's metrics, a sha256 of the weights). No pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelrl.errors import ConfigError, CorruptFileError
from pixelrl.rewards.base import image_layout

__all__ = ["ClassifierConfig", "SuccessClassifier", "ClassifierReward", "end_on_success", "load_image_folder",
           "frames_from_dataset", "image_layout", "newest_frames", "FORMAT_NAME"]

FORMAT_NAME = "pixelrl.success_classifier"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "classifier.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm")


# ------------------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture and fit of a success classifier (``pixelrl reward fit-classifier``)."""

    ensemble: int = 3
    """Members of the ensemble; the success probability is their mean. Deviation: SERL / HIL-SERL train one
    classifier; a few members make the probability less overconfident on frames unlike the labelled ones."""
    channels: tuple[int, ...] = (32, 32, 32, 32)
    """Filters of each 3x3 conv layer of a member's CNN (DrQ-v2's encoder widths). Deviation: the authors use a
    frozen ImageNet ResNet-10 with spatial-embedding pooling, whose weights cannot be downloaded here."""
    strides: tuple[int, ...] = (2, 2, 2, 1)
    """Strides of the conv layers (84x84 frames -> 32x7x7 features)."""
    hidden: int = 256
    """Width of the head ``Dense -> Dropout -> LayerNorm -> ReLU -> Dense 1`` (SERL: 256)."""
    dropout: float = 0.1
    """Dropout of the head (SERL: 0.1)."""
    lr: float = 3e-4
    """Adam learning rate. Deviation: SERL uses 1e-4 on a frozen pretrained encoder; the CNN here learns from
    scratch."""
    steps: int = 500
    """Gradient steps. Deviation: SERL 100, HIL-SERL 150 (the flag is named ``num_epochs``) with a frozen pretrained
    encoder; a CNN trained from scratch needs more."""
    batch_size: int = 256
    """Frames per step and member, half positives and half negatives (SERL: 128 + 128)."""
    pad: int = 4
    """Random-shift augmentation in pixels (SERL's random crop, pad 4); 0 turns it off."""
    threshold: float = 0.5
    """Success when the ensemble's mean probability is >= this (SERL 0.5; HIL-SERL 0.7 - 0.85 per task). Saved with
    the classifier; ``--reward.threshold`` overrides it when it is used."""
    val_fraction: float = 0.1
    """Share of each class held out to report accuracy on frames not trained on (0: none)."""
    seed: int = 0
    """Seed of the initialisation, the batches, the shifts and the held-out split."""

    def __post_init__(self) -> None:
        for name, lo in (("ensemble", 1), ("hidden", 1), ("steps", 0), ("batch_size", 2), ("pad", 0), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")
        chans, strides = tuple(self.channels), tuple(self.strides)
        if not chans or len(chans) != len(strides) or any(
                isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in chans + strides):
            raise ConfigError(f"--channels {chans} and --strides {strides} must be positive integers, as many of each")
        object.__setattr__(self, "channels", chans)
        object.__setattr__(self, "strides", strides)
        for name, lo, hi, lo_open in (("dropout", 0.0, 1.0, False), ("lr", 0.0, math.inf, True),
                                      ("threshold", 0.0, 1.0, False), ("val_fraction", 0.0, 0.9, False)):
            v = getattr(self, name)
            bad = isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v > hi or (
                v <= lo if lo_open else v < lo)
            if bad:
                raise ConfigError(f"--{name.replace('_', '-')} must be a number in {'(' if lo_open else '['}{lo:g}, "
                                  f"{hi:g}], got {v!r}")


def check_config(cfg: Any) -> dict:
    """One ConfigError line for a bad ``classifier:`` reward configuration (checked before anything loads)."""
    path = Path(cfg.argument.strip())
    if not (path / META_FILE).is_file():
        raise ConfigError(f"--reward {cfg.spec!r}: {path} is not a success classifier folder (no {META_FILE}); fit one "
                          "with: pixelrl reward fit-classifier --positives DIR --negatives DIR --out DIR")
    t = cfg.threshold
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0):
        raise ConfigError(f"--reward.threshold must be a probability in [0, 1], got {t!r}")
    return {}


# ------------------------------------------------------------------------------------------- frames


def newest_frames(obs: Any, key: Optional[str], channels: int) -> np.ndarray:
    """The newest frame (last ``channels`` channels) of each stacked observation of a batch: uint8 ``[B, C, H, W]``."""
    x = obs[key] if key is not None else obs
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    return np.ascontiguousarray(x[:, -channels:])


def load_image_folder(folder: str | Path, what: str = "frames") -> np.ndarray:
    """Every image file of ``folder`` (sorted by name; hidden files and sub-folders skipped) as uint8
    ``[N, C, H, W]``: RGB (C = 3), or grayscale (C = 1) when every image is grayscale. One line for a missing or
    empty folder, a file that is not an image, and images of different sizes."""
    from PIL import Image, UnidentifiedImageError

    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"{what} folder {path} does not exist (or is not a folder); give a folder of PNG images")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"{what} folder {path} is empty; put the labelled frames there as PNG images")
    images, modes = [], set()
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                mode = "L" if im.mode in ("L", "1", "I;16", "I", "F") else "RGB"
                images.append((p, im.convert(mode)))
                modes.add(mode)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise ConfigError(f"{what}: {p} is not an image ({type(e).__name__}); the folder may hold only image "
                              f"files ({', '.join(IMAGE_SUFFIXES)})") from None
    mode = "L" if modes == {"L"} else "RGB"
    first_path, first = images[0]
    arrays = []
    for p, im in images:
        if im.size != first.size:
            raise ConfigError(f"{what}: {p} is {im.size[0]}x{im.size[1]} but {first_path} is {first.size[0]}x"
                              f"{first.size[1]}; every frame must have the same size (resize them, or render the env "
                              "at one --size)")
        a = np.asarray(im.convert(mode), dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(arrays))


def frames_from_dataset(path: str | Path, key: str = "success", threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``(positives, negatives)`` from a pixelrl dataset: the frame after each step (the newest frame of its
    next observation) is a positive where the per-step array ``key`` of its episode is > ``threshold``, a negative
    elsewhere (SERL's labelling: positives are the next observations of success transitions). ``key`` is
    ``rewards``, ``terminations``, ``truncations`` or any other ``[T]`` array stored in the episode groups (e.g. a
    ``success`` flag written by a collection script)."""
    from pixelrl.data.dataset import load_dataset

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"dataset {p} does not exist; pass a dataset written by `pixelrl collect`")
    ds = load_dataset(p)
    if not ds.pixel_keys:
        raise ConfigError(f"dataset {p} holds no image observations (its observations are states); a success "
                          "classifier needs frames")
    pix = ds.pixel_keys[0]
    pos, neg = [], []
    h5 = None
    try:
        for ep in ds.iter_episodes(stacked=False):
            obs = ep["observations"]
            frames = np.asarray(obs[pix] if isinstance(obs, dict) else obs)[1:]
            if key in ("rewards", "terminations", "truncations"):
                labels = np.asarray(ep[key], dtype=np.float64)
            else:
                if h5 is None:
                    import h5py

                    h5 = h5py.File(ds.file, "r")
                group = h5[f"episode_{ep['id']}"]
                if key not in group:
                    raise ConfigError(f"dataset {p}: episode_{ep['id']} has no per-step array {key!r} (it has "
                                      f"{sorted(group.keys())}); use --key rewards / terminations, or one it has")
                labels = np.asarray(group[key][()], dtype=np.float64).reshape(-1)
            if labels.shape != (len(frames),):
                raise ConfigError(f"dataset {p}: {key!r} of episode_{ep['id']} has {labels.size} values for "
                                  f"{len(frames)} steps; it must hold one value per step")
            hit = labels > threshold
            pos.append(frames[hit])
            neg.append(frames[~hit])
    finally:
        if h5 is not None:
            h5.close()
    return np.concatenate(pos), np.concatenate(neg)


# ------------------------------------------------------------------------------------------- the model


class _Member(nn.Module):
    """One classifier: DrQ-style conv trunk, then SERL's head ``Dense -> Dropout -> LayerNorm -> ReLU -> Dense 1``."""

    def __init__(self, in_channels: int, size: tuple[int, int], cfg: ClassifierConfig) -> None:
        super().__init__()
        from pixelrl.nets.encoders import ConvEncoder

        self.encoder = ConvEncoder(in_channels, size, cfg.channels, cfg.strides)
        self.head = nn.Sequential(nn.Linear(self.encoder.repr_dim, cfg.hidden), nn.Dropout(cfg.dropout),
                                  nn.LayerNorm(cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)).squeeze(-1)


class SuccessClassifier(nn.Module):
    """An ensemble of binary classifiers of frames ``uint8 [B, C, H, W]``; :meth:`prob` is the mean sigmoid."""

    def __init__(self, in_channels: int, size: Sequence[int], cfg: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_channels = int(in_channels)
        self.size = (int(size[0]), int(size[1]))
        g = torch.random.fork_rng(devices=[])
        with g:
            torch.manual_seed(cfg.seed)
            self.members = nn.ModuleList(_Member(self.in_channels, self.size, cfg) for _ in range(cfg.ensemble))
        self.metrics: dict[str, float] = {}

    @property
    def threshold(self) -> float:
        return float(self.cfg.threshold)

    def logits(self, frames: torch.Tensor) -> torch.Tensor:
        """``[E, B]`` logits of every member."""
        return torch.stack([m(frames) for m in self.members])

    def _check(self, frames: np.ndarray | torch.Tensor, what: str) -> None:
        shape = tuple(frames.shape[1:])
        if len(frames.shape) != 4 or shape != (self.in_channels, *self.size):
            raise ConfigError(f"{what} are {list(frames.shape)}, but the classifier takes [N, {self.in_channels}, "
                              f"{self.size[0]}, {self.size[1]}] frames")

    @torch.no_grad()
    def prob(self, frames: np.ndarray | torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
        """Success probability (mean over members) of each frame, float32 ``[B]``."""
        self._check(frames, "frames")
        dev = next(self.parameters()).device
        was = self.training
        self.eval()
        out = []
        for s in range(0, len(frames), batch_size):
            x = torch.as_tensor(np.asarray(frames[s:s + batch_size]) if not isinstance(frames, torch.Tensor)
                                else frames[s:s + batch_size]).to(dev)
            out.append(torch.sigmoid(self.logits(x).float()).mean(0).cpu())
        self.train(was)
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)

    def fit(self, positives: np.ndarray, negatives: np.ndarray, *,
            progress: Optional[Callable[[int, float], None]] = None) -> dict[str, float]:
        """Train every member with sigmoid BCE on balanced batches of randomly shifted frames (see
        :class:`ClassifierConfig`); returns ``loss`` (the last step's, mean over members), ``train_acc`` and, when
        frames were held out, ``val_acc`` / ``val_pos_acc`` / ``val_neg_acc``, plus the frame counts."""
        from pixelrl.nets.augment import random_shift

        cfg = self.cfg
        for name, x in (("positive frames", positives), ("negative frames", negatives)):
            if len(x) == 0:
                raise ConfigError(f"no {name} to fit on; a success classifier needs examples of both classes")
            self._check(x, name)
        rng = np.random.default_rng(cfg.seed)
        pos_tr, pos_va = _split(len(positives), cfg.val_fraction, rng)
        neg_tr, neg_va = _split(len(negatives), cfg.val_fraction, rng)
        dev = next(self.parameters()).device
        pos = torch.as_tensor(np.asarray(positives)[pos_tr])
        neg = torch.as_tensor(np.asarray(negatives)[neg_tr])
        opt = torch.optim.Adam(self.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        half_p = cfg.batch_size // 2
        half_n = cfg.batch_size - half_p
        target = torch.cat([torch.ones(half_p), torch.zeros(half_n)]).to(dev)
        self.train()
        loss_value = float("nan")
        for step in range(cfg.steps):
            losses = []
            for m in self.members:
                ip = torch.randint(len(pos), (half_p,), generator=gen)
                ineg = torch.randint(len(neg), (half_n,), generator=gen)
                x = torch.cat([pos[ip], neg[ineg]]).to(dev)
                if cfg.pad > 0:
                    shifts = torch.randint(0, 2 * cfg.pad + 1, (len(x), 2), generator=gen).to(dev)
                    x = random_shift(x, cfg.pad, shifts=shifts)
                losses.append(F.binary_cross_entropy_with_logits(m(x).float(), target))
            loss = torch.stack(losses).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_value = float(loss.detach()) / len(self.members)
            if progress is not None:
                progress(step + 1, loss_value)
        thr = self.threshold
        metrics = {"loss": loss_value, "positives": float(len(positives)), "negatives": float(len(negatives)),
                   "train_acc": _accuracy(self.prob(pos), self.prob(neg), thr)}
        if len(pos_va) and len(neg_va):
            pv, nv = self.prob(np.asarray(positives)[pos_va]), self.prob(np.asarray(negatives)[neg_va])
            metrics.update(val_acc=_accuracy(pv, nv, thr), val_pos_acc=float(np.mean(pv >= thr)),
                           val_neg_acc=float(np.mean(nv < thr)), val_frames=float(len(pv) + len(nv)))
        self.metrics = metrics
        return dict(metrics)

    # ---- files ------------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``classifier.json`` into ``folder`` (each atomically)."""
        from safetensors.torch import save as save_bytes

        from pixelrl.utils.atomic import write_bytes_atomic, write_json_atomic

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        data = save_bytes(tensors)
        write_bytes_atomic(out / WEIGHTS_FILE, data)
        write_json_atomic(out / META_FILE, {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "in_channels": self.in_channels,
            "size": list(self.size), "config": asdict(self.cfg), "metrics": self.metrics,
            "weights_sha256": hashlib.sha256(data).hexdigest()})
        return out

    @classmethod
    def load(cls, folder: str | Path, device: Any = "cpu") -> "SuccessClassifier":
        """A classifier saved by :meth:`save`; one line when the folder is not one, or its files do not match."""
        from safetensors.torch import load as load_bytes

        from pixelrl.utils.dataclass_io import from_dict

        path = Path(folder)
        meta_path, weights = path / META_FILE, path / WEIGHTS_FILE
        if not meta_path.is_file() or not weights.is_file():
            raise ConfigError(f"{path} is not a success classifier (it needs {META_FILE} and {WEIGHTS_FILE}); fit one "
                              "with: pixelrl reward fit-classifier --positives DIR --negatives DIR --out DIR")
        try:
            meta = json.loads(meta_path.read_text())
        except (ValueError, OSError) as e:
            raise CorruptFileError(meta_path, f"not readable JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise ConfigError(f"{meta_path} is not a success classifier's ({FORMAT_NAME}) description")
        data = weights.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("weights_sha256"):
            raise CorruptFileError(weights, f"its sha256 does not match {META_FILE}")
        cfg = from_dict(ClassifierConfig, meta["config"], where=str(meta_path))
        model = cls(int(meta["in_channels"]), meta["size"], cfg)
        try:
            model.load_state_dict(load_bytes(data))
        except RuntimeError as e:
            raise CorruptFileError(weights, f"weights do not fit the architecture in {META_FILE} ({e})") from None
        model.metrics = dict(meta.get("metrics") or {})
        return model.to(device).eval()

    def fingerprint(self) -> str:
        """sha256 of the weights (what a checkpoint records to check a resumed run uses the same classifier)."""
        h = hashlib.sha256()
        for k, v in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    k = int(round(n * fraction)) if n >= 2 else 0
    k = min(k, n - 1)
    return np.sort(order[k:]), np.sort(order[:k])


def _accuracy(p_pos: np.ndarray, p_neg: np.ndarray, thr: float) -> float:
    """Class-balanced accuracy: the mean of the two classes' accuracies."""
    return float(0.5 * (np.mean(p_pos >= thr) + np.mean(p_neg < thr)))


# ------------------------------------------------------------------------------------------- as a reward


class ClassifierReward:
    """``classifier:DIR`` -- reward 1 where the classifier's probability of the frame after the step (the newest
    frame of ``next_obs``) is >= the threshold, else 0 (SERL). See :class:`~pixelrl.rewards.base.RewardModel`."""

    needs = frozenset({"next_obs"})

    def __init__(self, classifier: SuccessClassifier, *, threshold: Optional[float] = None, mode: str = "add",
                 scale: float = 1.0, batch_size: int = 64) -> None:
        self.classifier = classifier.eval()
        self.threshold = float(classifier.threshold if threshold is None else threshold)
        self.mode, self.scale, self.batch_size = mode, float(scale), int(batch_size)
        self._key: Optional[str] = None
        self._fingerprint = classifier.fingerprint()

    @classmethod
    def from_config(cls, cfg: Any, device: Any = "cpu") -> "ClassifierReward":
        return cls(SuccessClassifier.load(cfg.argument.strip(), device=device), threshold=cfg.threshold,
                   mode=cfg.mode, scale=cfg.scale, batch_size=cfg.batch_size)

    def bind(self, observation_space: Any, frame_stack: int) -> None:
        key, c, h, w = image_layout(observation_space, frame_stack, "the success classifier")
        want = (self.classifier.in_channels, *self.classifier.size)
        if (c, h, w) != want:
            raise ConfigError(f"the success classifier was fitted on {want[0]}-channel {want[1]}x{want[2]} frames, but "
                              f"the env gives {c}-channel {h}x{w} frames; render the env as the labelled frames were "
                              "(--size) or fit the classifier on frames of this env")
        self._key = key

    def probabilities(self, obs: Any) -> np.ndarray:
        """The success probability of the newest frame of each observation of a batch."""
        return self.classifier.prob(newest_frames(obs, self._key, self.classifier.in_channels),
                                    batch_size=self.batch_size)

    def success(self, obs: Any) -> np.ndarray:
        return self.probabilities(obs) >= self.threshold

    def __call__(self, obs: Any, *, actions: Any = None, next_obs: Any = None) -> np.ndarray:
        if next_obs is None:
            raise ConfigError("the success classifier scores next_obs (the frame after each step); none was given")
        return self.success(next_obs).astype(np.float32)

    def state_dict(self) -> dict:
        return {"kind": "classifier", "fingerprint": self._fingerprint, "threshold": self.threshold}

    def load_state_dict(self, state: dict) -> None:
        if state.get("fingerprint") != self._fingerprint:
            raise ConfigError("the success classifier's weights differ from those the run was checkpointed with; "
                              "resume with the classifier folder the run was started with")


def end_on_success(env: Any, reward: ClassifierReward) -> Any:
    """``env`` wrapped so that an episode terminates when ``reward`` (a bound :class:`ClassifierReward`) says the
    observation after a step shows success; ``info['success']`` is set on every step."""
    import gymnasium as gym

    class _EndOnSuccess(gym.Wrapper):
        def step(self, action):
            obs, r, terminated, truncated, info = self.env.step(action)
            hit = bool(reward.success(_batched(obs))[0])
            info = dict(info)
            info["success"] = hit
            return obs, r, bool(terminated or hit), bool(truncated and not hit), info

    return _EndOnSuccess(env)


def _batched(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: np.asarray(v)[None] for k, v in obs.items()}
    return np.asarray(obs)[None]
