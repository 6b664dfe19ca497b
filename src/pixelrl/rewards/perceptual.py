"""Rewards from demonstrations' frames, through a frozen image encoder: optimal-transport matching to a preferred
demonstration (RAPL) and the unsupervised perceptual reward of Sermanet et al. (2016).

**Sinkhorn** (:func:`sinkhorn`): entropic optimal transport between two uniform marginals, in the log domain, batched
over leading dimensions. With cost ``C [.., n, m]``, regularisation ``eps`` and ``log K = -C / eps``, alternate

    u = log(1/n) - logsumexp_j(log K_ij + v_j)        v = log(1/m) - logsumexp_i(log K_ij + u_i)

and return ``P = exp(log K + u_i + v_j)``: its columns sum to ``1/m`` exactly after the last update, its rows to
``1/n`` up to the convergence of the iterations.

**RAPL** (Tian et al., "Maximizing Alignment with Minimal Feedback", 2024): ``C_tt'`` is the cosine distance between
the embedding of the agent's frame ``t`` and of the preferred demonstration's frame ``t'``, ``mu*`` the Sinkhorn
plan; the step reward is ``r_t = -sum_t' C_tt' mu*_tt'`` and the video's reward ``-<C, mu*>`` (their sum). The
reward of a step depends on the whole episode, so :class:`OTReward` is scored one whole episode at a time (its
``batch_size`` is unbounded: the online wrapper scores each episode at its end, dataset relabelling episode by
episode). RAPL first fine-tunes the encoder on a person's rankings of video triplets (backpropagating through
Sinkhorn); that alignment step is not here -- pass an aligned encoder (any ``torch.nn.Module``).

**Unsupervised perceptual rewards** (Sermanet, Xu, Levine, "Unsupervised Perceptual Rewards for Imitation
Learning", RSS 2017 / arXiv 2016): from a few demonstrations' features,

1. each demo is split into ``n`` consecutive steps placing the splits so that the summed within-segment feature
   variance is smallest (found exactly by dynamic programming here);
2. for each step ``i``, the ``k`` features with the largest gap ``|mean_in - mean_out| / (std_in + std_out)``
   between the step's frames and all other frames are kept;
3. each step's reward is a time-independent diagonal Gaussian over its features: ``d_i(s) = mean_j (s_j -
   mu_ij)^2 / sigma_ij^2``, ``p_i = exp(-d_i / 2)``; the dense reward is ``sum_i w_i p_i`` with later steps weighted
   more (``w_i = i / n``).

The details the papers leave open, marked "(verify)" in the docs (the split search, the gap formula and ``k``, the combination's weights and
normalisation, RAPL's encoder and its ``eps``) could not be checked against the papers' code here; each knob's
documentation says so.

**Encoders.** Embeddings are computed from the frame-stacked observations as the environment returns them. The
default encoder is a DrQ-v2 conv net with random weights drawn from a fixed seed (``--reward.encoder random``): no
pretrained weights can be downloaded here, and random conv features still measure pixel similarity. Two ways to
plug a trained one: ``--reward.encoder runs/<run>/`` takes the encoder of a pixelrl run's latest checkpoint (the
agent's ``encoder``: e.g. DrQ-v2 trained on the task), and from Python any module mapping ``uint8 [B, C, H, W]`` to
``[B, d]`` can be passed (``OTReward(demo, encoder=my_resnet)``; wrap a torchvision ResNet with its own
preprocessing).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from pixelrl.errors import ConfigError

__all__ = ["sinkhorn", "cosine_cost", "ot_rewards", "RandomConvEncoder", "load_encoder", "load_demos",
           "OTReward", "PerceptualReward", "segment_demo", "select_features", "fit_perceptual", "perceptual_rewards"]

ENCODER_SEED = 20240101
"""Seed of the default random encoder's weights (the same features in every process)."""


# ------------------------------------------------------------------------------------------- configuration


def check_config(cfg: Any) -> dict:
    """One ConfigError line for a bad ``ot:`` / ``perceptual:`` configuration (checked before anything loads)."""
    path = Path(cfg.argument.strip())
    if not path.exists():
        raise ConfigError(f"--reward {cfg.spec!r}: {path} does not exist; give a demo dataset (pixelrl collect) or a "
                          "folder of PNG frames")
    for name, lo, kind in (("ot_iters", 1, int), ("subgoals", 1, int), ("features", 1, int)):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"--reward.{name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")
    e = cfg.ot_eps
    if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e <= 0:
        raise ConfigError(f"--reward.ot-eps must be a number > 0, got {e!r}")
    enc = cfg.encoder
    if enc is not None and enc != "random" and not (Path(enc) / "config.json").is_file():
        raise ConfigError(f"--reward.encoder {enc!r} is neither 'random' nor a pixelrl run folder (no config.json)")
    return {}


# ------------------------------------------------------------------------------------------- optimal transport


def sinkhorn(cost: torch.Tensor, eps: float = 1.0, iters: int = 100) -> torch.Tensor:
    """Entropic OT plan with uniform marginals, log domain, batched over leading dims: ``cost [.., n, m]`` ->
    plan ``[.., n, m]`` whose rows sum to ``1/n`` and columns to ``1/m`` (columns exactly, rows up to convergence)."""
    if not eps > 0:
        raise ConfigError(f"the Sinkhorn regularisation must be > 0, got {eps!r}")
    c = cost.double()
    n, m = c.shape[-2], c.shape[-1]
    log_k = -c / eps
    log_a = torch.full(c.shape[:-1], -math.log(n), dtype=c.dtype, device=c.device)
    log_b = torch.full(c.shape[:-2] + (m,), -math.log(m), dtype=c.dtype, device=c.device)
    u = torch.zeros_like(log_a)
    v = torch.zeros_like(log_b)
    for _ in range(int(iters)):
        u = log_a - torch.logsumexp(log_k + v.unsqueeze(-2), dim=-1)
        v = log_b - torch.logsumexp(log_k + u.unsqueeze(-1), dim=-2)
    return torch.exp(log_k + u.unsqueeze(-1) + v.unsqueeze(-2)).to(cost.dtype)


def cosine_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine distance ``1 - cos(x_i, y_j)`` of embeddings ``x [.., n, d]`` and ``y [.., m, d]`` -> ``[.., n, m]``."""
    xn = torch.nn.functional.normalize(x.double(), dim=-1)
    yn = torch.nn.functional.normalize(y.double(), dim=-1)
    return (1.0 - xn @ yn.transpose(-1, -2)).to(x.dtype)


def ot_rewards(agent_emb: torch.Tensor, demo_emb: torch.Tensor, *, eps: float = 1.0,
               iters: int = 100) -> torch.Tensor:
    """RAPL's step rewards ``r_t = -sum_t' C_tt' mu*_tt'`` of the agent's embeddings ``[.., T, d]`` against a
    demonstration's ``[.., T', d]`` (batched over leading dims) -> ``[.., T]``; their sum is ``-<C, mu*>``."""
    c = cosine_cost(agent_emb, demo_emb)
    plan = sinkhorn(c, eps=eps, iters=iters)
    return -(c * plan).sum(-1)


# ------------------------------------------------------------------------------------------- encoders


class RandomConvEncoder(nn.Module):
    """DrQ-v2's conv encoder (four 3x3 convs, 32 filters) with random weights from a fixed seed: ``uint8 [B, C, H,
    W]`` -> ``float32 [B, 32 * h * w]``. Each layer strides 2 while the feature map stays at least 7 wide, to keep the
    features few (84x84: strides 2, 2, 2, 1 -> 32x7x7)."""

    def __init__(self, in_channels: int, size: Sequence[int], seed: int = ENCODER_SEED) -> None:
        super().__init__()
        from pixelrl.nets.encoders import ConvEncoder

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            strides, side = [], min(int(size[0]), int(size[1]))
            for _ in range(4):
                strides.append(2 if (side - 3) // 2 + 1 >= 7 else 1)
                side = (side - 3) // strides[-1] + 1
            self.net = ConvEncoder(int(in_channels), (int(size[0]), int(size[1])), (32, 32, 32, 32), tuple(strides))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _RunEncoder(nn.Module):
    """The ``encoder`` of a pixelrl agent (it takes the observation as the agent does)."""

    def __init__(self, agent: Any) -> None:
        super().__init__()
        self.encoder = agent.encoder
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).float().flatten(1)


def load_encoder(spec: Optional[str], in_channels: int, size: Sequence[int], device: Any = "cpu") -> nn.Module:
    """``None`` / ``random``: :class:`RandomConvEncoder`; a run folder: the encoder of that run's agent (latest
    checkpoint). One ConfigError line otherwise."""
    if spec is None or spec == "random":
        return RandomConvEncoder(in_channels, size).to(device).eval()
    from pixelrl.rewards.interventions import load_run_agent

    agent, _ = load_run_agent(spec, device=device, what="--reward.encoder")
    if not hasattr(agent, "encoder"):
        raise ConfigError(f"--reward.encoder {spec}: the run's agent has no image encoder")
    return _RunEncoder(agent).to(device).eval()


@torch.no_grad()
def embed(encoder: nn.Module, frames: np.ndarray | torch.Tensor, *, batch_size: int = 256,
          device: Any = None) -> torch.Tensor:
    """Embeddings ``float32 [N, d]`` (on the CPU) of observations ``[N, C, H, W]``, in chunks."""
    dev = device if device is not None else next(iter(encoder.parameters()), torch.empty(0)).device
    out = []
    for s in range(0, len(frames), batch_size):
        x = torch.as_tensor(np.asarray(frames[s:s + batch_size]) if not isinstance(frames, torch.Tensor)
                            else frames[s:s + batch_size]).to(dev)
        out.append(encoder(x).float().flatten(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


# ------------------------------------------------------------------------------------------- demos


def load_demos(path: str | Path, frame_stack: int, *, best_only: bool = False) -> list[np.ndarray]:
    """Demonstrations as lists of stacked observations ``uint8 [T, S*C, H, W]``:

    * a pixelrl dataset: each episode's observations (``best_only``: only the episode with the highest return, the
      preferred demonstration);
    * a folder of images: one demonstration, frames in name order (stacked as the env stacks them: the first
      frame repeated at the start);
    * a folder of folders of images: one demonstration each.
    """
    from pixelrl.data.dataset import stack_frames
    from pixelrl.rewards.classifier import load_image_folder

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"demonstrations {p} do not exist; give a dataset (pixelrl collect) or a folder of PNG frames")
    if (p / "data" / "main_data.hdf5").exists():
        from pixelrl.data.dataset import load_dataset

        ds = load_dataset(p)
        if not ds.pixel_keys:
            raise ConfigError(f"dataset {p} holds no image observations; a perceptual reward needs frames")
        if int(ds.frame_stack) != int(frame_stack):
            raise ConfigError(f"dataset {p} stacks {ds.frame_stack} frames, the env {frame_stack}; pass "
                              f"--frame-stack {ds.frame_stack}")
        key = ds.pixel_keys[0]
        order = [int(np.argmax(ds.episode_returns()))] if best_only else None
        out = []
        for ep in ds.iter_episodes(stacked=True, episodes=order):
            obs = ep["observations"]
            out.append(np.asarray(obs[key] if isinstance(obs, dict) else obs))
        return out
    if not p.is_dir():
        raise ConfigError(f"demonstrations {p} are neither a dataset nor a folder of PNG frames")
    subdirs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    folders = subdirs if subdirs else [p]
    if best_only and len(folders) > 1:
        raise ConfigError(f"{p} holds {len(folders)} demonstrations; the OT reward compares with one preferred "
                          "demonstration: give its folder")
    return [stack_frames(load_image_folder(f, "demonstration frames"), int(frame_stack)) for f in folders]


def _check_demo_shape(demo: np.ndarray, layout: tuple[int, int, int], path: str) -> None:
    if tuple(demo.shape[1:]) != layout:
        raise ConfigError(f"the demonstration {path} has observations {list(demo.shape[1:])}, the env gives "
                          f"{list(layout)}; record the demo with the env's --size and --frame-stack")


# ------------------------------------------------------------------------------------------- RAPL's OT reward


class OTReward:
    """``ot:DEMO`` -- RAPL's optimal-transport reward of each episode's frames against a preferred demonstration's
    (see the module docstring). ``needs`` next_obs; scored one whole episode per call."""

    needs = frozenset({"next_obs"})

    def __init__(self, demo: Optional[np.ndarray] = None, *, encoder: Optional[nn.Module] = None, eps: float = 1.0,
                 iters: int = 100, mode: str = "replace", scale: float = 1.0, device: Any = "cpu",
                 source: str = "demo", encoder_spec: Optional[str] = None) -> None:
        self.eps, self.iters = float(eps), int(iters)
        self.mode, self.scale = mode, float(scale)
        self.batch_size = 10 ** 9  # whole episodes: a step's reward depends on every frame of its episode
        self.device = torch.device(device)
        self.source = source
        self._encoder_spec = encoder_spec
        self.encoder = encoder
        self.demo: Optional[np.ndarray] = None
        self._key: Optional[str] = None
        if demo is not None:
            self._set_demo(np.asarray(demo))

    def _set_demo(self, demo: np.ndarray) -> None:
        if demo.ndim != 4 or len(demo) < 1:
            raise ConfigError(f"the demonstration must be observations [T, C, H, W], got {list(demo.shape)}")
        self.demo = demo
        if self.encoder is None:
            self.encoder = load_encoder(self._encoder_spec, demo.shape[1], demo.shape[2:], self.device)
        self.encoder = self.encoder.to(self.device).eval()
        self.demo_emb = embed(self.encoder, self.demo, device=self.device)

    @classmethod
    def from_config(cls, cfg: Any, device: Any = "cpu") -> "OTReward":
        """The demonstration is read when the reward is bound to an observation space (which gives the frame
        stack of its frames)."""
        return cls(None, eps=cfg.ot_eps, iters=cfg.ot_iters, mode=cfg.mode, scale=cfg.scale, device=device,
                   source=cfg.argument.strip(), encoder_spec=cfg.encoder)

    def bind(self, observation_space: Any, frame_stack: int) -> None:
        from pixelrl.rewards.base import image_layout

        key, c, h, w = image_layout(observation_space, frame_stack, "the OT reward")
        if self.demo is None:
            self._set_demo(load_demos(self.source, frame_stack, best_only=True)[0])
        _check_demo_shape(self.demo, (c * max(int(frame_stack), 1), h, w), self.source)
        self._key = key

    def __call__(self, obs: Any, *, actions: Any = None, next_obs: Any = None) -> np.ndarray:
        if next_obs is None:
            raise ConfigError("the OT reward scores next_obs (the frames of the episode); none was given")
        x = next_obs[self._key] if self._key is not None else next_obs
        emb = embed(self.encoder, np.asarray(x), device=self.device)
        return ot_rewards(emb, self.demo_emb, eps=self.eps, iters=self.iters).numpy().astype(np.float32)

    def state_dict(self) -> dict:
        return {"kind": "ot", "fingerprint": _fingerprint(self.demo_emb)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("fingerprint") != _fingerprint(self.demo_emb):
            raise ConfigError("the OT reward's demonstration embeddings differ from those the run was checkpointed "
                              "with; resume with the same demonstration and --reward.encoder")


def _fingerprint(t: torch.Tensor) -> str:
    return hashlib.sha256(np.round(t.numpy().astype(np.float64), 5).tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------- Sermanet et al.


def segment_demo(features: np.ndarray, n: int, min_len: int = 1) -> list[int]:
    """Split ``features [T, d]`` into ``n`` consecutive segments minimising the summed within-segment variance (the
    sum over segments of the squared distances of its frames to its mean); returns the ``n + 1`` boundaries
    ``[0, b_1, ..., T]``. Exact, by dynamic programming over prefix sums (O(n T^2))."""
    x = np.asarray(features, dtype=np.float64)
    t = len(x)
    if n < 1 or t < n * min_len:
        raise ConfigError(f"cannot split a demonstration of {t} frames into {n} steps of at least {min_len} frames; "
                          "use fewer --reward.subgoals or longer demonstrations")
    cs = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    cs2 = np.concatenate([[0.0], np.cumsum((x ** 2).sum(1))])

    def sse(a: np.ndarray, b: int) -> np.ndarray:  # cost of the segments [a, b) for many a
        s = cs[b] - cs[a]
        return cs2[b] - cs2[a] - (s ** 2).sum(1) / (b - a)

    best = np.full((n + 1, t + 1), np.inf)
    arg = np.zeros((n + 1, t + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for k in range(1, n + 1):
        for b in range(k * min_len, t - (n - k) * min_len + 1):
            a = np.arange((k - 1) * min_len, b - min_len + 1)
            cand = best[k - 1, a] + sse(a, b)
            j = int(np.argmin(cand))
            best[k, b], arg[k, b] = cand[j], a[j]
    bounds = [t]
    for k in range(n, 0, -1):
        bounds.append(int(arg[k, bounds[-1]]))
    return bounds[::-1]


def select_features(features: np.ndarray, labels: np.ndarray, n: int, k: int, eps: float = 1e-6
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each step ``i < n``: the ``k`` features with the largest ``|mu_in - mu_out| / (sigma_in + sigma_out)``
    between the frames labelled ``i`` and all others; returns ``(index [n, k], mean [n, k], std [n, k])`` of the
    in-step frames on those features."""
    x = np.asarray(features, dtype=np.float64)
    k = min(int(k), x.shape[1])
    idx, mu, sd = [], [], []
    for i in range(n):
        inside = labels == i
        if not inside.any():
            raise ConfigError(f"step {i} of the perceptual reward has no frame")
        xi, xo = x[inside], x[~inside] if (~inside).any() else x
        m_in, m_out = xi.mean(0), xo.mean(0)
        s_in, s_out = xi.std(0), xo.std(0)
        gap = np.abs(m_in - m_out) / (s_in + s_out + eps)
        top = np.argsort(-gap, kind="stable")[:k]
        idx.append(top)
        mu.append(m_in[top])
        sd.append(s_in[top])
    return np.stack(idx), np.stack(mu), np.stack(sd)


def fit_perceptual(demo_features: Sequence[np.ndarray], n: int, k: int, *, min_len: int = 1) -> dict[str, np.ndarray]:
    """Segment every demo (:func:`segment_demo`), pool the frames by step and select the features
    (:func:`select_features`); returns ``index``, ``mean``, ``std`` (each ``[n, k]``) and the demos' boundaries."""
    feats, labels, bounds = [], [], []
    for f in demo_features:
        b = segment_demo(f, n, min_len)
        bounds.append(np.asarray(b))
        lab = np.zeros(len(f), dtype=np.int64)
        for i in range(n):
            lab[b[i]:b[i + 1]] = i
        feats.append(np.asarray(f, dtype=np.float64))
        labels.append(lab)
    idx, mu, sd = select_features(np.concatenate(feats), np.concatenate(labels), n, k)
    return {"index": idx, "mean": mu, "std": sd, "bounds": np.stack(bounds) if bounds else np.zeros((0, n + 1))}


def perceptual_rewards(features: np.ndarray, model: dict[str, np.ndarray], *, min_std: float = 1e-3
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(dense reward [B], per-step probabilities p [B, n])``: ``p_i = exp(-mean_j (s_j - mu_ij)^2 / sigma_ij^2 / 2)``
    and the dense reward ``sum_i (i / n) p_i`` (steps 1..n)."""
    x = np.asarray(features, dtype=np.float64)
    idx, mu, sd = model["index"], model["mean"], np.maximum(model["std"], min_std)
    n = len(idx)
    sel = x[:, idx]  # [B, n, k]
    d = (((sel - mu[None]) / sd[None]) ** 2).mean(-1)
    p = np.exp(-0.5 * d)
    w = np.arange(1, n + 1, dtype=np.float64) / n
    return (p * w).sum(-1).astype(np.float32), p.astype(np.float32)


class PerceptualReward:
    """``perceptual:DEMOS`` -- Sermanet et al.'s unsupervised perceptual reward fitted on the demos' features (see
    the module docstring); a per-frame reward of ``next_obs``, so it can be scored in any chunks."""

    needs = frozenset({"next_obs"})

    def __init__(self, demos: Optional[Sequence[np.ndarray]] = None, *, encoder: Optional[nn.Module] = None,
                 subgoals: int = 2, features: int = 32, mode: str = "replace", scale: float = 1.0,
                 batch_size: int = 64, device: Any = "cpu", source: str = "demos",
                 encoder_spec: Optional[str] = None) -> None:
        self.mode, self.scale, self.batch_size = mode, float(scale), int(batch_size)
        self.device = torch.device(device)
        self.source = source
        self.subgoals, self.features = int(subgoals), int(features)
        self._encoder_spec = encoder_spec
        self.encoder = encoder
        self.demos: Optional[list[np.ndarray]] = None
        self._key: Optional[str] = None
        if demos is not None:
            self._set_demos([np.asarray(d) for d in demos])

    def _set_demos(self, demos: list[np.ndarray]) -> None:
        if not demos:
            raise ConfigError("the perceptual reward needs at least one demonstration")
        first = demos[0]
        for d in demos[1:]:
            if d.shape[1:] != first.shape[1:]:
                raise ConfigError(f"demonstrations in {self.source} have different frame shapes "
                                  f"({list(first.shape[1:])} and {list(d.shape[1:])})")
        self.demos = demos
        if self.encoder is None:
            self.encoder = load_encoder(self._encoder_spec, first.shape[1], first.shape[2:], self.device)
        self.encoder = self.encoder.to(self.device).eval()
        feats = [embed(self.encoder, d, device=self.device).numpy() for d in demos]
        self.model = fit_perceptual(feats, self.subgoals, self.features)

    @classmethod
    def from_config(cls, cfg: Any, device: Any = "cpu") -> "PerceptualReward":
        """The demonstrations are read when the reward is bound (which gives the frame stack)."""
        return cls(None, subgoals=cfg.subgoals, features=cfg.features, mode=cfg.mode, scale=cfg.scale,
                   batch_size=cfg.batch_size, device=device, source=cfg.argument.strip(), encoder_spec=cfg.encoder)

    def bind(self, observation_space: Any, frame_stack: int) -> None:
        from pixelrl.rewards.base import image_layout

        key, c, h, w = image_layout(observation_space, frame_stack, "the perceptual reward")
        if self.demos is None:
            self._set_demos(load_demos(self.source, frame_stack))
        _check_demo_shape(self.demos[0], (c * max(int(frame_stack), 1), h, w), self.source)
        self._key = key

    def step_probabilities(self, obs: Any) -> np.ndarray:
        x = obs[self._key] if self._key is not None else obs
        return perceptual_rewards(embed(self.encoder, np.asarray(x), device=self.device).numpy(), self.model)[1]

    def __call__(self, obs: Any, *, actions: Any = None, next_obs: Any = None) -> np.ndarray:
        if next_obs is None:
            raise ConfigError("the perceptual reward scores next_obs; none was given")
        x = next_obs[self._key] if self._key is not None else next_obs
        return perceptual_rewards(embed(self.encoder, np.asarray(x), device=self.device).numpy(), self.model)[0]

    def state_dict(self) -> dict:
        return {"kind": "perceptual", "fingerprint": self._fingerprint()}

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for k in ("index", "mean", "std"):
            h.update(np.round(np.asarray(self.model[k], dtype=np.float64), 5).tobytes())
        return h.hexdigest()

    def load_state_dict(self, state: dict) -> None:
        if state.get("fingerprint") != self._fingerprint():
            raise ConfigError("the perceptual reward fitted now differs from the one the run was checkpointed with; "
                              "resume with the same demonstrations and --reward.encoder")
