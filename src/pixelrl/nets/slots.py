"""Slot Attention (Locatello et al. 2020, "Object-Centric Learning with Slot Attention") as an encoder of objects,
its pretraining autoencoder, and the poolings that turn a set of slots into one feature vector for RL (Yoon et al.
2023, ``jsikyoon/OCRL`` ``poolings/``).

Encoder (the paper's object-discovery architecture): 4 convolutions 5x5, ``cnn_channels`` (64), ReLU, padding 2;
a soft position embedding (a linear map of the 4-channel grid ``(x, y, 1 - x, 1 - y)``) added to the feature map;
flattened to ``H*W`` tokens; LayerNorm, then an MLP (64, 64). Slot Attention: slots drawn from a learned Gaussian
``N(mu, sigma)``; ``num_iterations`` rounds of: LayerNorm of the inputs (once) and of the slots, ``k, v`` of the
inputs and ``q`` of the slots (linear, no bias), attention ``softmax`` over the SLOTS of ``k q^T / sqrt(D)``, a
weighted mean of ``v`` with weights ``attn + 1e-8`` normalised over the inputs, a GRU cell update, and a residual
MLP (hidden ``mlp_hidden``) on the LayerNorm of the slots. Decoder: each slot broadcast to an 8x8 grid plus a
position embedding, transposed convolutions (5x5, stride 2) up to the image size, then a 3x3 convolution to RGB +
one mask logit; masks are a softmax over the slots and the image is the masked sum. Loss: MSE.

Defaults: 6 slots of 64, 7 iterations (the object-centric RL benchmark's setting; Locatello et al. use 3 in
training). ``encoder_stride`` (1 in the paper) and ``cnn_channels`` / ``decoder_channels`` make a smaller
configuration for CPU runs (stride 2 in the first two convolutions gives a 16x16 token grid at 64x64).

Slot Attention is permutation-equivariant in its slots: permuting the initial slots permutes the output slots the
same way (``tests/nets/test_slots.py``). For RL the encoder is frozen and deterministic: :class:`FrozenSlotEncoder`
draws the initial-slot noise once (a fixed buffer) so that an image always maps to the same slots.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pixelrl.errors import ConfigError

__all__ = ["SlotConfig", "SlotAttention", "SlotEncoder", "SlotDecoder", "SlotAutoencoder", "FrozenSlotEncoder",
           "TransformerPooling", "RelationPooling", "MLPPooling", "make_pooling", "POOLINGS"]


@dataclass(frozen=True)
class SlotConfig:
    """Architecture of the slot autoencoder (saved with its weights)."""

    image_size: int = 64
    """Height and width of the (square) input images."""
    in_channels: int = 3
    """Image channels (RGB)."""
    num_slots: int = 6
    """Slots (the benchmark: 6)."""
    slot_dim: int = 64
    """Slot size (Slot Attention in the benchmark: 64)."""
    num_iterations: int = 7
    """Attention rounds (the benchmark: 7; Locatello et al. train with 3)."""
    mlp_hidden: int = 128
    """Hidden units of the slot-update MLP (Locatello et al.: 128)."""
    cnn_channels: int = 64
    """Channels of the 4 encoder convolutions (Locatello et al.: 64)."""
    encoder_stride: int = 1
    """Stride of the first two encoder convolutions (Locatello et al.: 1, a 64x64 token grid at 64x64). 2 gives a
    16x16 grid, 16x fewer tokens: the CPU configuration."""
    decoder_channels: int = 64
    """Channels of the decoder's transposed convolutions (Locatello et al.: 64)."""
    decoder_size: int = 0
    """Resolution the decoder reconstructs (0: ``image_size``, as Locatello et al.). Smaller values reconstruct the
    image average-pooled to that size: the CPU configuration (the decoder's cost dominates pretraining)."""

    def __post_init__(self) -> None:
        for name in ("image_size", "in_channels", "num_slots", "slot_dim", "num_iterations", "mlp_hidden",
                     "cnn_channels", "decoder_channels"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"slots: {name} must be >= 1, got {getattr(self, name)}")
        if self.encoder_stride not in (1, 2):
            raise ConfigError(f"slots: encoder_stride must be 1 or 2, got {self.encoder_stride}")
        for name in ("image_size", "recon_size"):
            v = getattr(self, name)
            if v % 8 or (v // 8) & (v // 8 - 1):
                raise ConfigError(f"slots: {name if name == 'image_size' else 'decoder_size'} must be 8 times a "
                                  f"power of two (16, 32, 64, 128), got {v}")
        if self.image_size % self.recon_size:
            raise ConfigError(f"slots: decoder_size ({self.decoder_size}) must divide image_size ({self.image_size})")

    @property
    def recon_size(self) -> int:
        return int(self.decoder_size) or int(self.image_size)

    def to_dict(self) -> dict:
        return asdict(self)


def _grid(h: int, w: int, device=None) -> torch.Tensor:
    """``[1, h, w, 4]``: ``(y, x, 1 - y, 1 - x)`` with coordinates in [0, 1] (Locatello et al.'s ``build_grid``)."""
    ys, xs = torch.linspace(0.0, 1.0, h, device=device), torch.linspace(0.0, 1.0, w, device=device)
    g = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)
    return torch.cat([g, 1.0 - g], dim=-1)[None]


class SoftPositionEmbed(nn.Module):
    """Adds a learned linear map of the coordinate grid to a channels-last feature map."""

    def __init__(self, dim: int, h: int, w: int) -> None:
        super().__init__()
        self.proj = nn.Linear(4, dim)
        self.register_buffer("grid", _grid(h, w), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, H, W, D]
        return x + self.proj(self.grid)


class SlotAttention(nn.Module):
    """The Slot Attention module: ``forward(inputs [B, N, D_in], slots [B, K, D]) -> slots [B, K, D]`` and the
    attention of the last round ``[B, N, K]`` (softmax over slots)."""

    def __init__(self, num_iterations: int, slot_dim: int, input_dim: int, mlp_hidden: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.num_iterations, self.slot_dim, self.eps = num_iterations, slot_dim, eps
        self.norm_inputs, self.norm_slots, self.norm_mlp = (nn.LayerNorm(input_dim), nn.LayerNorm(slot_dim),
                                                            nn.LayerNorm(slot_dim))
        self.q = nn.Linear(slot_dim, slot_dim, bias=False)
        self.k = nn.Linear(input_dim, slot_dim, bias=False)
        self.v = nn.Linear(input_dim, slot_dim, bias=False)
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        self.mlp = nn.Sequential(nn.Linear(slot_dim, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, slot_dim))

    def forward(self, inputs: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, K, D = slots.shape
        inputs = self.norm_inputs(inputs)
        k = self.k(inputs) * D ** -0.5
        v = self.v(inputs)
        attn = inputs.new_zeros(B, inputs.shape[1], K)
        for _ in range(self.num_iterations):
            prev = slots
            q = self.q(self.norm_slots(slots))
            attn = torch.softmax(k @ q.transpose(1, 2), dim=-1)  # [B, N, K]: inputs compete for slots
            w = attn + self.eps
            w = w / w.sum(dim=1, keepdim=True)
            updates = w.transpose(1, 2) @ v  # [B, K, D]
            slots = self.gru(updates.reshape(-1, D), prev.reshape(-1, D)).reshape(B, K, D)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn


class SlotEncoder(nn.Module):
    """Image ``[B, C, H, W]`` (uint8 or float in [0, 255]) -> slots ``[B, K, D]`` (and the attention ``[B, N, K]``).
    ``forward(x, noise=None)``: ``noise`` ``[B or 1, K, D]`` replaces the standard-normal draw of the initial slots
    (the equivariance test and the frozen encoder pass it)."""

    def __init__(self, cfg: SlotConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, s = cfg.cnn_channels, cfg.encoder_stride
        self.cnn = nn.Sequential(
            nn.Conv2d(cfg.in_channels, c, 5, stride=s, padding=2), nn.ReLU(),
            nn.Conv2d(c, c, 5, stride=s, padding=2), nn.ReLU(),
            nn.Conv2d(c, c, 5, padding=2), nn.ReLU(),
            nn.Conv2d(c, c, 5, padding=2), nn.ReLU())
        h = cfg.image_size // (s * s)
        self.grid_size = h
        self.pos = SoftPositionEmbed(c, h, h)
        self.norm = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, c))
        self.slots_mu = nn.Parameter(torch.empty(1, 1, cfg.slot_dim))
        self.slots_log_sigma = nn.Parameter(torch.empty(1, 1, cfg.slot_dim))
        nn.init.xavier_uniform_(self.slots_mu)
        nn.init.xavier_uniform_(self.slots_log_sigma)
        self.attention = SlotAttention(cfg.num_iterations, cfg.slot_dim, c, cfg.mlp_hidden)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The tokens Slot Attention attends to: ``[B, H*W, C]``."""
        h = self.cnn(x.float() / 255.0).permute(0, 2, 3, 1)
        h = self.pos(h).flatten(1, 2)
        return self.mlp(self.norm(h))

    def initial_slots(self, batch: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            noise = torch.randn(batch, self.cfg.num_slots, self.cfg.slot_dim, device=self.slots_mu.device)
        return self.slots_mu + self.slots_log_sigma.exp() * noise.expand(batch, -1, -1)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self.features(x)
        return self.attention(inputs, self.initial_slots(x.shape[0], noise))


class SlotDecoder(nn.Module):
    """Spatial broadcast decoder: slots ``[B, K, D]`` -> per-slot RGB ``[B, K, 3, H, W]`` and mask logits
    ``[B, K, 1, H, W]``."""

    def __init__(self, cfg: SlotConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.init = 8
        c = cfg.decoder_channels
        ups = int(math.log2(cfg.recon_size // self.init))
        layers: list[nn.Module] = []
        cin = cfg.slot_dim
        for _ in range(ups):
            layers += [nn.ConvTranspose2d(cin, c, 5, stride=2, padding=2, output_padding=1), nn.ReLU()]
            cin = c
        layers += [nn.ConvTranspose2d(cin, c, 5, stride=1, padding=2), nn.ReLU(),
                   nn.ConvTranspose2d(c, cfg.in_channels + 1, 3, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)
        self.pos = SoftPositionEmbed(cfg.slot_dim, self.init, self.init)

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, K, D = slots.shape
        x = slots.reshape(B * K, 1, 1, D).expand(-1, self.init, self.init, -1)
        x = self.pos(x).permute(0, 3, 1, 2)
        out = self.net(x).reshape(B, K, self.cfg.in_channels + 1, self.cfg.recon_size, self.cfg.recon_size)
        return out[:, :, :-1], out[:, :, -1:]


class SlotAutoencoder(nn.Module):
    """Encoder + decoder for pretraining by reconstruction. ``forward(images)`` returns ``(recon [B, C, H, W] in
    [0, 1] units (unclamped), masks [B, K, 1, H, W], slots)`` at the decoder's resolution; :meth:`loss` is the MSE
    to ``images / 255`` (average-pooled to ``decoder_size`` when that is smaller)."""

    def __init__(self, cfg: SlotConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SlotEncoder(cfg)
        self.decoder = SlotDecoder(cfg)

    def forward(self, images: torch.Tensor):
        slots, _ = self.encoder(images)
        rgb, logits = self.decoder(slots)
        masks = torch.softmax(logits, dim=1)
        return (rgb * masks).sum(dim=1), masks, slots

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        recon, _, _ = self(images)
        target = images.float() / 255.0
        if self.cfg.recon_size != self.cfg.image_size:
            target = F.avg_pool2d(target, self.cfg.image_size // self.cfg.recon_size)
        return F.mse_loss(recon, target)


class FrozenSlotEncoder(nn.Module):
    """A pretrained :class:`SlotEncoder`, frozen (no gradients, eval mode) and deterministic: the initial-slot noise
    is one fixed draw (seed ``noise_seed``), so an image always gives the same slots. Input uint8 ``[B, C, H, W]``
    (a frame stack of ``s`` RGB frames is encoded frame by frame: ``[B, s*K, D]``). ``cache_size > 0`` keeps the
    slots of up to that many distinct images (a digest of their bytes as the key): the same output, computed once
    per image instead of once per PPO epoch."""

    def __init__(self, encoder: SlotEncoder, noise_seed: int = 0, cache_size: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.cache_size = int(cache_size)
        self._cache: dict[bytes, torch.Tensor] = {}
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()
        g = torch.Generator().manual_seed(int(noise_seed))
        cfg = encoder.cfg
        self.register_buffer("noise", torch.randn(1, cfg.num_slots, cfg.slot_dim, generator=g))
        self.num_slots, self.slot_dim = cfg.num_slots, cfg.slot_dim

    def train(self, mode: bool = True):  # stays in eval mode
        super().train(mode)
        self.encoder.eval()
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cache_size:
            return self._encode(x)
        # the encoder is a fixed function: remember the slots of images seen (keyed by a digest of their bytes), so
        # that PPO's epochs over a rollout encode each observation once; emptied when it holds cache_size images
        rows = x.reshape(x.shape[0], -1).cpu().numpy()
        keys = [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing and len(self._cache) + len(missing) > self.cache_size:
            self._cache.clear()
            missing = list(range(len(keys)))
        if missing:
            new = self._encode(x[missing])
            for j, i in enumerate(missing):
                self._cache[keys[i]] = new[j]
        return torch.stack([self._cache[k] for k in keys])

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        c = self.encoder.cfg.in_channels
        B, C = x.shape[:2]
        if C % c:
            raise ConfigError(f"the slot encoder takes {c}-channel frames, got {C} channels")
        frames = x.reshape(B * (C // c), c, *x.shape[2:])
        slots, _ = self.encoder(frames, self.noise.to(x.device))
        return slots.reshape(B, (C // c) * self.num_slots, self.slot_dim)


# ------------------------------------------------------------------------------------------------- poolings


class TransformerPooling(nn.Module):
    """The benchmark's transformer pooling (``poolings/common/transformer.py``): linear to ``d_model`` (128), a
    learned CLS token (zeros at init) prepended, no positional encoding, ``num_layers`` (1) post-norm encoder layers
    with ``nhead`` (8) heads and PyTorch's default feed-forward width (2048); the CLS output is the feature.
    Deviation: dropout 0 (PyTorch's default 0.1 in the authors' layer would make PPO's log-probabilities of the
    same observation differ between acting and updating)."""

    def __init__(self, slot_dim: int, d_model: int = 128, nhead: int = 8, num_layers: int = 1,
                 dim_feedforward: int = 2048) -> None:
        super().__init__()
        self.linear = nn.Linear(slot_dim, d_model)
        self.cls = nn.Parameter(torch.zeros(d_model))
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=dim_feedforward, dropout=0.0,
                                           batch_first=True)
        self.trans = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.out_dim = d_model

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        h = self.linear(slots)
        h = torch.cat([self.cls.expand(h.shape[0], 1, -1), h], dim=1)
        return self.trans(h)[:, 0]


class RelationPooling(nn.Module):
    """Relation network (Santoro et al. 2017; the benchmark's ``poolings/rn``): ``g`` (256 x 4, ReLU) on every
    ordered pair of slots ``[s_i, s_j]``, ``i != j``, summed, then ``f`` (256, 128, 64, 64, ReLU)."""

    def __init__(self, slot_dim: int, g_dims=(256, 256, 256, 256), f_dims=(256, 128, 64, 64)) -> None:
        super().__init__()
        g, f, d = [], [], 2 * slot_dim
        for h in g_dims:
            g += [nn.Linear(d, h), nn.ReLU()]
            d = h
        for h in f_dims:
            f += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.g, self.f = nn.Sequential(*g), nn.Sequential(*f)
        self.out_dim = f_dims[-1]

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        B, K, D = slots.shape
        i, j = torch.meshgrid(torch.arange(K), torch.arange(K), indexing="ij")
        keep = i != j
        pairs = torch.cat([slots[:, i[keep]], slots[:, j[keep]]], dim=-1)  # [B, K(K-1), 2D]
        return self.f(self.g(pairs).sum(dim=1))


class MLPPooling(nn.Module):
    """MLP on the concatenated slots (the benchmark's ``poolings/mlp``: 128, 128, ReLU). Not permutation-invariant:
    the slot order matters."""

    def __init__(self, slot_dim: int, num_slots: int, dims=(128, 128)) -> None:
        super().__init__()
        layers, d = [], slot_dim * num_slots
        for h in dims:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.net = nn.Sequential(*layers)
        self.out_dim = dims[-1]

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        return self.net(slots.flatten(1))


POOLINGS = ("transformer", "relation", "mlp")


def make_pooling(name: str, slot_dim: int, num_slots: int) -> nn.Module:
    """``transformer`` | ``relation`` | ``mlp`` for ``num_slots`` slots of ``slot_dim``; ``.out_dim`` is the
    feature size."""
    if name == "transformer":
        return TransformerPooling(slot_dim)
    if name == "relation":
        return RelationPooling(slot_dim)
    if name == "mlp":
        return MLPPooling(slot_dim, num_slots)
    raise ConfigError(f"unknown pooling {name!r}; choose one of {', '.join(POOLINGS)}")
