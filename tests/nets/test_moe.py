"""MENTOR's mixture-of-experts layer: routing, auxiliary loss, dense reference, and the actor/critic option."""

import pytest
import torch
from torch import nn

from pixelrl.errors import ConfigError
from pixelrl.nets import Actor, Critic, EnsembleLinear, MoE, MoEConfig, mlp, weight_init
from pixelrl.nets.moe import moe_aux_terms

TINY = MoEConfig(num_experts=5, top_k=2, expert_hidden=6, gate_hidden=7, gate_dropout=0.0)


def test_routes_each_sample_to_exactly_k_experts_with_renormalised_weights():
    torch.manual_seed(0)
    moe = MoE(8, 4, TINY)
    x = torch.randn(32, 8)
    probs, idx, w = moe.route(x)
    assert probs.shape == (1, 32, 5) and idx.shape == (1, 32, 2) and w.shape == (1, 32, 2)
    # k distinct experts per sample, and they are the k most probable ones
    assert all(len(set(row.tolist())) == 2 for row in idx[0])
    kth_best = probs.sort(dim=-1, descending=True).values[..., 1]
    assert (probs.gather(-1, idx) >= kth_best.unsqueeze(-1)).all()
    # weights: the selected probabilities renormalised to sum to 1
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 32))
    sel = probs.gather(-1, idx)
    torch.testing.assert_close(w, sel / sel.sum(-1, keepdim=True))
    assert (w > 0).all()
    # the forward pass records the same routing
    moe(x)
    assert torch.equal(moe.last_topk_idx, idx)
    # more than one expert is used across the batch (the gate is input dependent)
    assert idx.unique().numel() > 2


def test_aux_loss_larger_for_unbalanced_gate():
    base = torch.tensor([0.7, 0.1, 0.1, 0.1])
    # balanced: sample i prefers expert i; unbalanced: every sample prefers expert 0. Same per-sample entropy.
    balanced = torch.stack([base.roll(i) for i in range(4)]).unsqueeze(0)
    unbalanced = base.expand(4, 4).unsqueeze(0)
    lv_b, ent_b = moe_aux_terms(balanced, balanced.topk(1, dim=-1).indices)
    lv_u, ent_u = moe_aux_terms(unbalanced, unbalanced.topk(1, dim=-1).indices)
    torch.testing.assert_close(ent_b, ent_u)
    assert lv_b.item() == pytest.approx(0.0)
    # loads (1, 0, 0, 0): unbiased variance over 4 experts = 0.25
    assert lv_u.item() == pytest.approx(0.25)
    assert (lv_u + ent_u) > (lv_b + ent_b)
    # entropy term: -sum p log p, averaged over samples
    expected_entropy = -(base * torch.log(base + 1e-9)).sum()
    torch.testing.assert_close(ent_u, expected_entropy)


def test_layer_aux_loss_matches_its_routing_and_trains_the_gate_only_through_entropy():
    torch.manual_seed(1)
    moe = MoE(8, 4, TINY)
    x = torch.randn(16, 8)
    moe(x)
    probs, idx, _ = moe.route(x)
    load = torch.bincount(idx.flatten(), minlength=5).float() / 16
    entropy = -(probs * torch.log(probs + 1e-9)).sum(-1).mean()
    torch.testing.assert_close(moe.aux_loss, load.var() + entropy)
    assert moe.aux_loss.requires_grad
    moe.aux_loss.backward()
    assert moe.gate[0].weight.grad.abs().sum() > 0  # entropy reaches the gate
    assert moe.experts[0].weight.grad is None  # the aux loss does not touch the experts


def _reference_moe(moe: MoE, x3: torch.Tensor) -> torch.Tensor:
    """Per-sample loop over the selected experts with explicit weights (no batching tricks)."""
    cfg = moe.cfg
    q_count, batch, _ = x3.shape
    out = torch.zeros(q_count, batch, moe.out_dim)
    for q in range(q_count):
        for b in range(batch):
            xb = x3[q, b]
            if moe.num_members is None:
                g = torch.relu(moe.gate[0](xb))
                logits = moe.gate[3](g)
            else:
                g = torch.relu(xb @ moe.gate[0].weight[q] + moe.gate[0].bias[q, 0])
                logits = g @ moe.gate[3].weight[q] + moe.gate[3].bias[q, 0]
            p = torch.softmax(logits, dim=-1)
            top_p, top_i = p.topk(cfg.top_k)
            for weight, e in zip(top_p / top_p.sum(), top_i.tolist()):
                j = q * cfg.num_experts + e
                h = torch.relu(xb @ moe.experts[0].weight[j] + moe.experts[0].bias[j, 0])
                out[q, b] += weight * (h @ moe.experts[2].weight[j] + moe.experts[2].bias[j, 0])
    return out


def test_moe_output_equals_dense_reference():
    torch.manual_seed(2)
    moe = MoE(3, 2, TINY)
    with torch.no_grad():  # non-zero biases so they are checked too
        for p in moe.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(6, 3)
    torch.testing.assert_close(moe(x), _reference_moe(moe, x.unsqueeze(0))[0], atol=1e-5, rtol=1e-5)


def test_ensemble_moe_equals_reference_per_member_and_members_are_independent():
    torch.manual_seed(3)
    moe = MoE(3, 2, TINY, num_members=2)
    with torch.no_grad():
        for p in moe.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 6, 3)
    out = moe(x)
    assert out.shape == (2, 6, 2)
    torch.testing.assert_close(out, _reference_moe(moe, x), atol=1e-5, rtol=1e-5)
    assert moe.last_topk_idx.shape == (2, 6, 2)
    # changing member 1's experts leaves member 0's output unchanged
    with torch.no_grad():
        moe.experts[0].weight[TINY.num_experts:].add_(1.0)
    out2 = moe(x)
    torch.testing.assert_close(out2[0], out[0])
    assert not torch.allclose(out2[1], out[1])


def test_unselected_experts_get_no_gradient():
    torch.manual_seed(4)
    moe = MoE(3, 2, TINY)
    x = torch.randn(1, 3)
    moe(x).sum().backward()
    chosen = set(moe.last_topk_idx.flatten().tolist())
    for e in range(TINY.num_experts):
        has_grad = moe.experts[2].weight.grad[e].abs().sum() > 0
        assert bool(has_grad) == (e in chosen)


def test_gate_dropout_only_in_train_mode():
    torch.manual_seed(5)
    moe = MoE(8, 4, MoEConfig(num_experts=4, top_k=2, expert_hidden=6, gate_hidden=64, gate_dropout=0.5))
    x = torch.randn(64, 8)
    moe.eval()
    torch.testing.assert_close(moe(x), moe(x))
    moe.train()
    assert not torch.allclose(moe(x), moe(x))


def test_bf16_autocast_forward():
    torch.manual_seed(6)
    moe = MoE(8, 4, TINY)
    x = torch.randn(5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = moe(x)
    torch.testing.assert_close(y.float(), moe(x), atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize(
    "kw", [dict(top_k=5, num_experts=4), dict(top_k=0), dict(gate_dropout=1.0), dict(num_experts=0),
           dict(aux_weight=-1.0)]
)
def test_config_errors(kw):
    with pytest.raises(ConfigError):
        MoEConfig(**kw)


# ---------------------------------------------------------------- actor / critic option


class _PlainActor(nn.Module):
    """The actor as it was built before the ``moe`` option (DrQ-v2's structure)."""

    def __init__(self, repr_dim, action_dim, feature_dim, hidden_dim):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.policy = mlp(feature_dim, hidden_dim, action_dim, depth=2)
        self.apply(weight_init)

    def forward(self, f):
        return torch.tanh(self.policy(self.trunk(f)))


class _PlainCritic(nn.Module):
    def __init__(self, repr_dim, action_dim, feature_dim, hidden_dim, num_q):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.q = nn.Sequential(
            EnsembleLinear(num_q, feature_dim + action_dim, hidden_dim), nn.ReLU(inplace=True),
            EnsembleLinear(num_q, hidden_dim, hidden_dim), nn.ReLU(inplace=True),
            EnsembleLinear(num_q, hidden_dim, 1),
        )
        self.apply(weight_init)

    def forward(self, f, a):
        return self.q(torch.cat([self.trunk(f), a], dim=-1))


def _assert_same_module(ours, ref):
    s1, s2 = ours.state_dict(), ref.state_dict()
    assert list(s1) == list(s2)
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k


def test_actor_and_critic_without_moe_are_unchanged():
    f, a = torch.randn(4, 20), torch.rand(4, 3) * 2 - 1
    torch.manual_seed(7)
    actor = Actor(20, 3, feature_dim=8, hidden_dim=16)
    torch.manual_seed(7)
    ref_actor = _PlainActor(20, 3, 8, 16)
    _assert_same_module(actor, ref_actor)
    assert torch.equal(actor(f), ref_actor(f))

    torch.manual_seed(8)
    critic = Critic(20, 3, feature_dim=8, hidden_dim=16, num_q=2)
    torch.manual_seed(8)
    ref_critic = _PlainCritic(20, 3, 8, 16, 2)
    _assert_same_module(critic, ref_critic)
    assert torch.equal(critic(f, a), ref_critic(f, a))


def test_actor_with_moe_replaces_only_the_middle_layer():
    torch.manual_seed(9)
    plain = Actor(20, 3, feature_dim=8, hidden_dim=16)
    actor = Actor(20, 3, feature_dim=8, hidden_dim=16, moe=TINY)
    assert isinstance(actor.policy[2], MoE)
    names, plain_names = set(actor.state_dict()), set(plain.state_dict())
    assert plain_names - names == {"policy.2.weight", "policy.2.bias"}
    assert all(n.startswith("policy.2.") for n in names - plain_names)
    f = torch.randn(5, 20)
    mu = actor(f)
    assert mu.shape == (5, 3) and mu.abs().max() < 1
    assert actor.policy[2].aux_loss.requires_grad
    mu.sum().backward()
    assert actor.policy[2].experts[0].weight.grad is not None


def test_critic_with_moe_is_an_ensemble_moe():
    torch.manual_seed(10)
    critic = Critic(20, 3, feature_dim=8, hidden_dim=16, num_q=3, moe=TINY)
    moe = critic.q[2]
    assert isinstance(moe, MoE) and moe.num_members == 3
    raw = critic(torch.randn(5, 20), torch.rand(5, 3))
    assert raw.shape == (3, 5, 1)
    assert moe.last_topk_idx.shape == (3, 5, TINY.top_k)
