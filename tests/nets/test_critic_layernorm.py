"""RLPD's LayerNorm critic: EnsembleLayerNorm (per-member affine) and Critic(layernorm=True), alone and with the
HL-Gauss head, the MoE critic and the dormant-ratio probes."""

import pytest
import torch
from torch import nn

from pixelrl.mechanisms.dormant import _probes, dormant_ratio
from pixelrl.mechanisms.hl_gauss import HLGaussConfig, make_head
from pixelrl.nets.critic import Critic
from pixelrl.nets.layers import EnsembleLayerNorm, EnsembleLinear
from pixelrl.nets.moe import MoE, MoEConfig

TINY_MOE = MoEConfig(num_experts=3, top_k=2, expert_hidden=8, gate_hidden=8)


def _randomise_affine(ln: EnsembleLayerNorm, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(ln.weight.shape, generator=g))
        ln.bias.copy_(torch.randn(ln.bias.shape, generator=g))


def test_ensemble_layernorm_is_e_separate_layernorms():
    ln = EnsembleLayerNorm(3, 5)
    assert ln.weight.shape == ln.bias.shape == (3, 1, 5)
    assert isinstance(ln, nn.LayerNorm)  # code that looks through LayerNorms (dormant probes) sees it as one
    assert torch.equal(ln.weight, torch.ones(3, 1, 5)) and torch.equal(ln.bias, torch.zeros(3, 1, 5))
    _randomise_affine(ln)
    x = torch.randn(3, 7, 5)
    y = ln(x)
    assert y.shape == (3, 7, 5)
    for e in range(3):
        ref = nn.LayerNorm(5)
        with torch.no_grad():
            ref.weight.copy_(ln.weight[e, 0])
            ref.bias.copy_(ln.bias[e, 0])
        torch.testing.assert_close(y[e], ref(x[e]))
    with pytest.raises(ValueError, match="E=3"):
        ln(torch.randn(7, 5))


def test_ensemble_layernorm_members_are_independent():
    ln = EnsembleLayerNorm(2, 4)
    _randomise_affine(ln, seed=1)
    x = torch.randn(2, 6, 4)
    ln(x)[0].sum().backward()
    assert ln.weight.grad[0].abs().sum() > 0 and ln.bias.grad[0].abs().sum() > 0
    assert torch.count_nonzero(ln.weight.grad[1]) == 0 and torch.count_nonzero(ln.bias.grad[1]) == 0
    before = ln(x)[0].detach().clone()
    with torch.no_grad():
        ln.weight[1].mul_(3.0)
        ln.bias[1].add_(1.0)
    assert torch.equal(ln(x)[0], before)  # member 1's gamma / beta do not touch member 0


def _critic(seed=0, **kw):
    torch.manual_seed(seed)
    return Critic(12, 3, feature_dim=8, hidden_dim=16, num_q=3, **kw)


def _inputs(b=5):
    g = torch.Generator().manual_seed(7)
    return torch.randn(b, 12, generator=g), torch.rand(b, 3, generator=g) * 2 - 1


def _layer_types(critic):
    return [type(m).__name__ for m in critic.q]


def test_layernorm_critic_layout_and_shapes():
    plain, ln = _critic(), _critic(layernorm=True)
    assert _layer_types(plain) == ["EnsembleLinear", "ReLU", "EnsembleLinear", "ReLU", "EnsembleLinear"]
    assert _layer_types(ln) == ["EnsembleLinear", "EnsembleLayerNorm", "ReLU", "EnsembleLinear",
                                "EnsembleLayerNorm", "ReLU", "EnsembleLinear"]
    assert (plain.middle_index, ln.middle_index) == (2, 3)
    assert all(m.ensemble_size == 3 and m.normalized_shape == (16,) for m in ln.q if isinstance(m, EnsembleLayerNorm))
    feat, action = _inputs()
    assert ln(feat, action).shape == ln.values(feat, action).shape == (3, 5, 1)


def test_flag_changes_outputs_and_off_is_drqv2():
    feat, action = _inputs()
    plain, ln, default = _critic(), _critic(layernorm=True), _critic(layernorm=False)
    # the LayerNorms draw no random numbers: the Linear weights are the same, only the normalisation differs
    def lin(c):
        return [m for m in c.q if isinstance(m, EnsembleLinear)]

    assert len(lin(ln)) == len(lin(plain)) == 3
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(lin(ln), lin(plain)))
    assert not torch.allclose(plain(feat, action), ln(feat, action))
    torch.testing.assert_close(plain(feat, action), default(feat, action), rtol=0, atol=0)
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in default.named_parameters()]


def test_each_q_head_normalises_its_own_hidden_units():
    """Q head e of the LN critic computes Linear -> LN_e -> ReLU -> Linear -> LN_e -> ReLU -> Linear with its own
    weights and its own gamma / beta, as a stand-alone MLP would."""
    critic = _critic(layernorm=True)
    for i, m in enumerate(critic.q):
        if isinstance(m, EnsembleLayerNorm):
            _randomise_affine(m, seed=i)
    feat, action = _inputs()
    out = critic(feat, action)
    x = torch.cat([critic.trunk(feat), action], -1)
    for e in range(3):
        h = x
        for m in critic.q:
            if isinstance(m, EnsembleLinear):
                h = h @ m.weight[e] + m.bias[e]
            elif isinstance(m, EnsembleLayerNorm):
                h = nn.functional.layer_norm(h, (16,)) * m.weight[e] + m.bias[e]
            else:
                h = torch.relu(h)
        torch.testing.assert_close(out[e], h)


def test_layernorm_with_hl_gauss_head():
    head = make_head(HLGaussConfig(num_bins=11, v_min=-10.0, v_max=10.0))
    critic = _critic(layernorm=True, head=head)
    feat, action = _inputs()
    assert critic(feat, action).shape == (3, 5, 11)
    assert critic.values(feat, action).shape == (3, 5, 1)
    assert sum(isinstance(m, EnsembleLayerNorm) for m in critic.q) == 2
    loss = head.loss(critic(feat, action), torch.zeros(5, 1))
    loss.backward()
    assert all(p.grad is not None for p in critic.parameters())


def test_layernorm_with_moe_only_after_linear_layers():
    critic = _critic(layernorm=True, moe=TINY_MOE)
    assert _layer_types(critic) == ["EnsembleLinear", "EnsembleLayerNorm", "ReLU", "MoE", "ReLU", "EnsembleLinear"]
    assert isinstance(critic.q[critic.middle_index], MoE) and critic.q[critic.middle_index].num_members == 3
    assert isinstance(_critic(moe=TINY_MOE).q[2], MoE)  # without LayerNorm the MoE stays at q[2]
    feat, action = _inputs()
    assert critic(feat, action).shape == (3, 5, 1)


def test_moe_critic_without_layernorm_draws_the_same_weights():
    """The flag off keeps the construction order, so a seed gives the same initial critic as before."""
    a, b = _critic(moe=TINY_MOE), _critic(moe=TINY_MOE, layernorm=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_dormant_probes_look_through_the_ensemble_layernorm():
    critic = _critic(layernorm=True)
    probes = {name: probe for name, _, probe in _probes(critic, "post")}
    assert isinstance(probes["q.0"], nn.ReLU) and probes["q.0"] is critic.q[2]
    assert isinstance(probes["q.3"], nn.ReLU) and probes["q.3"] is critic.q[5]
    feat, action = _inputs(32)
    for mode in ("drm", "post", "pre"):
        assert 0.0 <= dormant_ratio(critic, (feat, action), mode=mode) <= 1.0
