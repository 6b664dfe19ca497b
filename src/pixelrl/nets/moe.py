"""Mixture-of-experts layer (MENTOR, Huang et al. 2024) as a drop-in for one hidden ``Linear`` layer.

For an input ``x`` (one row per sample) the layer computes

    p      = softmax(gate(x))                       gate: Linear(in -> g) -> ReLU -> Dropout -> Linear(g -> E)
    S      = the top_k experts by p                 (exactly top_k distinct experts per sample)
    w_e    = p_e / sum_{j in S} p_j   for e in S    (renormalised: the k weights sum to 1), 0 otherwise
    y      = sum_e w_e * expert_e(x)                expert_e: Linear(in -> h) -> ReLU -> Linear(h -> out)

MENTOR puts it in place of the actor's middle 1024x1024 layer with E = 16 experts of 1024 -> 256 -> 1024, a
1024 -> 256 -> 16 gate with dropout 0.1, top-4 routing (the authors' project page reports 4, 8 and 32 experts
alike with top-4).

Auxiliary loss (the authors' ``moe_auxiliary_loss``, both terms weight 1):

    load_e  = (number of samples that route to expert e) / B       (sums to top_k over experts)
    L_aux   = Var_e(load_e) + mean_b H(p_b),  H(p) = -sum_e p_e log(p_e + 1e-9)

``Var`` is the unbiased variance over the E experts (``torch.var``'s default, as in the authors' code). The load
term is built from the hard top-k assignment, so -- exactly as in the authors' code -- it carries no gradient: it
measures the imbalance (and is logged) but only the entropy term trains the gate, towards confident routing.

Computation (trade-off): all experts run on every sample as two batched matmuls -- the first layer of all E
experts is one ``[B, in] x [in, E*h]`` GEMM (:class:`EnsembleLinear`'s shared-input path), the second one
``[E, B, h] x [E, h, out]`` batched GEMM -- and the top-k combination is one ``einsum`` with the (mostly zero)
routing weights. That spends E/top_k (4x) the FLOPs of computing only the selected experts, but it has no
data-dependent shapes, no per-expert Python loop and no host sync (a sorted/``index_add`` dispatch needs the
per-expert counts on the host), so it is the faster choice on a GPU at RL batch sizes, it compiles, and it
gives every expert's activations on every sample -- which is what the authors' dormant-ratio measurement sees
(they also run all experts densely). Unselected experts get exactly zero gradient from a sample.

Ensemble form (``num_members=Q``): the critic's Q heads are an ensemble evaluated as ``[Q, B, in]`` tensors
(:class:`EnsembleLinear`); with ``num_members`` set, each member has its own gate and its own E experts (the
experts are one ``EnsembleLinear`` of Q*E members), routes its own input, and the auxiliary loss is the sum of
the members' losses (each Q head carries its own, as each carries its own TD loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pixelrl.errors import ConfigError
from pixelrl.nets.layers import EnsembleLinear, weight_init

__all__ = ["MoEConfig", "MoE", "moe_aux_terms"]


@dataclass(frozen=True)
class MoEConfig:
    """Sizes of MENTOR's mixture-of-experts layer. Defaults are the authors' published DMC configuration."""

    num_experts: int = 16
    """Number of experts E (MENTOR: 16; its project page reports 4, 8 and 32 similar with top-4)."""
    top_k: int = 4
    """Experts each sample is routed to; their gate probabilities are renormalised to sum to 1 (MENTOR: 4)."""
    expert_hidden: int = 256
    """Hidden units of each expert MLP in -> expert_hidden -> out (MENTOR: 256)."""
    gate_hidden: int = 256
    """Hidden units of the gate MLP in -> gate_hidden -> num_experts (MENTOR: 256)."""
    gate_dropout: float = 0.1
    """Dropout after the gate's hidden ReLU, active in train mode only (MENTOR: 0.1)."""
    aux_weight: float = 1.0
    """Weight of the auxiliary loss (load variance + gate entropy) added to the loss of the network holding the
    layer. The authors' code adds it with weight 1 (their configs' ``aux_loss_scale: 0.002`` is never used)."""

    def __post_init__(self) -> None:
        for name in ("num_experts", "expert_hidden", "gate_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"moe.{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ConfigError(
                f"moe.top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}; lower top_k or raise "
                "num_experts"
            )
        if not 0.0 <= self.gate_dropout < 1.0:
            raise ConfigError(f"moe.gate_dropout must be in [0, 1), got {self.gate_dropout}")
        if self.aux_weight < 0:
            raise ConfigError(f"moe.aux_weight must be >= 0 (0 = no auxiliary loss), got {self.aux_weight}")


def moe_aux_terms(probs: torch.Tensor, topk_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(load variance, mean gate entropy)`` of one routing; ``probs`` ``[..., B, E]``, ``topk_idx`` ``[..., B, k]``.

    Leading dimensions (ensemble members) are summed over. The load term has no gradient (hard assignments)."""
    num_experts = probs.shape[-1]
    batch = probs.shape[-2]
    counts = F.one_hot(topk_idx, num_experts).to(probs.dtype).sum(dim=(-3, -2))  # [..., E]
    load_var = (counts / batch).var(dim=-1).sum()
    entropy = -(probs * torch.log(probs + 1e-9)).sum(dim=-1).mean(dim=-1).sum()
    return load_var, entropy


class MoE(nn.Module):
    """Top-k mixture of ``num_experts`` two-layer MLP experts, ``in_dim -> out_dim``.

    Input ``[B, in_dim]`` (or ``[Q, B, in_dim]`` with ``num_members=Q``); output of the same leading shape with
    ``out_dim`` features. After each forward, ``aux_loss`` holds the unweighted auxiliary loss of that forward
    (with grad when grad was enabled), ``load_var`` / ``gate_entropy`` its two terms (detached), and
    ``last_topk_idx`` / ``last_topk_weight`` the routing (``[Q, B, k]``, ``Q = 1`` without members).
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: MoEConfig | None = None, num_members: int | None = None):
        super().__init__()
        cfg = cfg if cfg is not None else MoEConfig()
        if num_members is not None and num_members < 1:
            raise ConfigError(f"num_members must be >= 1 or None, got {num_members}")
        self.cfg = cfg
        self.in_dim, self.out_dim = in_dim, out_dim
        self.num_members = num_members
        q = num_members or 1
        e = cfg.num_experts
        # All experts as one ensemble MLP (member j = q * E + e). Sequential(Linear, ReLU, Linear) like the authors'
        # experts, which also lets the dormant-ratio probes find the activation after the hidden layer.
        self.experts = nn.Sequential(EnsembleLinear(q * e, in_dim, cfg.expert_hidden), nn.ReLU(inplace=True),
                                     EnsembleLinear(q * e, cfg.expert_hidden, out_dim))
        if num_members is None:
            self.gate = nn.Sequential(nn.Linear(in_dim, cfg.gate_hidden), nn.ReLU(inplace=True),
                                      nn.Dropout(cfg.gate_dropout), nn.Linear(cfg.gate_hidden, e))
        else:
            self.gate = nn.Sequential(EnsembleLinear(q, in_dim, cfg.gate_hidden), nn.ReLU(inplace=True),
                                      nn.Dropout(cfg.gate_dropout), EnsembleLinear(q, cfg.gate_hidden, e))
        # Orthogonal weights, zero biases: what the authors' layers end up with (their MoE's own xavier init is
        # overwritten by the actor's DrQ-v2 weight_init, which visits every nn.Linear).
        self.apply(weight_init)
        self.aux_loss: torch.Tensor | None = None
        self.load_var: torch.Tensor | None = None
        self.gate_entropy: torch.Tensor | None = None
        self.last_topk_idx: torch.Tensor | None = None
        self.last_topk_weight: torch.Tensor | None = None

    def _members_view(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_members is None:
            if x.dim() != 2:
                raise ValueError(f"MoE without members takes [B, {self.in_dim}], got {tuple(x.shape)}")
            return x.unsqueeze(0)
        if x.dim() != 3 or x.shape[0] != self.num_members:
            raise ValueError(f"ensemble MoE takes [{self.num_members}, B, {self.in_dim}], got {tuple(x.shape)}")
        return x

    def gate_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax gate probabilities ``[Q, B, E]`` (``Q = 1`` without members)."""
        logits = self.gate(x)
        if self.num_members is None:
            logits = logits.unsqueeze(0)
        return torch.softmax(logits.float(), dim=-1)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(probs [Q,B,E], topk_idx [Q,B,k], topk_weight [Q,B,k])``; the k weights of a sample sum to 1."""
        probs = self.gate_probs(x)
        top_p, idx = probs.topk(self.cfg.top_k, dim=-1)
        return probs, idx, top_p / top_p.sum(dim=-1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x3 = self._members_view(x)
        q, b, _ = x3.shape
        e = self.cfg.num_experts
        probs, idx, weight = self.route(x)
        # Dense routing weights [Q, B, E]: the renormalised top-k weights, zeros elsewhere.
        dense_w = torch.zeros_like(probs).scatter_(-1, idx, weight)
        # All experts on all samples: [Q*E, B, h] -> [Q*E, B, out].
        if self.num_members is None:
            y = self.experts(x)  # shared input: the first layer is one [B, in] x [in, E*h] matmul
        else:
            y = self.experts(x3.unsqueeze(1).expand(q, e, b, self.in_dim).reshape(q * e, b, self.in_dim))
        y = y.view(q, e, b, self.out_dim)
        out = torch.einsum("qbe,qebo->qbo", dense_w.to(y.dtype), y)

        load_var, entropy = moe_aux_terms(probs, idx)
        self.aux_loss = load_var + entropy
        self.load_var, self.gate_entropy = load_var.detach(), entropy.detach()
        self.last_topk_idx, self.last_topk_weight = idx.detach(), weight.detach()
        return out[0] if self.num_members is None else out

    def extra_repr(self) -> str:
        members = f", num_members={self.num_members}" if self.num_members is not None else ""
        return (f"in_dim={self.in_dim}, out_dim={self.out_dim}, num_experts={self.cfg.num_experts}, "
                f"top_k={self.cfg.top_k}{members}")
