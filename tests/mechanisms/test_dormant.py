"""Dormant ratio measurement, the perturbation factor and shrink-and-perturb (pixelrl.mechanisms.dormant)."""

from __future__ import annotations

import copy
import pytest
import torch
from torch import nn

from pixelrl.errors import ConfigError
from pixelrl.mechanisms.dormant import (
    dormant_masks,
    dormant_ratio,
    dormant_ratios,
    dormant_tracker,
    perturb_alpha,
    shrink_perturb_,
)
from pixelrl.nets.actor import Actor
from pixelrl.nets.critic import Critic
from pixelrl.nets.layers import EnsembleLinear


def known_net() -> nn.Sequential:
    """Linear(4->10) -> ReLU -> Linear(10->3) with planted dormant units.

    Hidden units 0-2: weight 0, bias -1 -> pre-activation -1 everywhere: alive before the ReLU, dead after it.
    Hidden units 3-4: weight 0, bias 0 -> exactly 0: dormant whatever the mode.
    Output unit 0: weight 0, bias 0 -> dormant.
    """
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 10), nn.ReLU(inplace=True), nn.Linear(10, 3))
    with torch.no_grad():
        net[0].bias.zero_()
        net[0].weight[0:5] = 0.0
        net[0].bias[0:3] = -1.0
        net[2].weight[0] = 0.0
        net[2].bias.zero_()
    return net


def test_planted_dormant_units_are_found_per_mode():
    x = torch.randn(256, 4)
    net = known_net()
    pre = dormant_masks(net, x, mode="pre")
    drm = dormant_masks(net, x, mode="drm")
    assert pre["0"].nonzero().flatten().tolist() == [3, 4]
    assert drm["0"].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]  # measured after the in-place ReLU
    assert pre["2"].tolist() == [True, False, False] and drm["2"].tolist() == [True, False, False]
    assert dormant_ratio(net, x, mode="pre") == pytest.approx(3 / 13)
    assert dormant_ratio(net, x, mode="drm") == pytest.approx(6 / 13)
    assert dormant_ratio(net, x, mode="post") == pytest.approx(6 / 13)
    assert dormant_ratios(net, x, mode="drm") == pytest.approx({"0": 5 / 10, "2": 1 / 3})
    # the measurement leaves no hook behind and does not change the network's output
    assert not any(m._forward_hooks for m in net.modules())


def test_pre_mode_is_not_fooled_by_the_inplace_relu():
    # the DrM code's hook keeps the Linear output tensor, which ReLU(inplace=True) then overwrites; "pre" must not
    net = known_net()
    x = torch.randn(64, 4)
    assert dormant_masks(net, x, mode="pre")["0"][:3].tolist() == [False, False, False]


def test_threshold_is_strict():
    # two units with |h| = 1 and 3 everywhere: scores 0.5 and 1.5
    net = nn.Sequential(nn.Linear(1, 2))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.copy_(torch.tensor([1.0, -3.0]))
    x = torch.randn(8, 1)
    assert dormant_ratio(net, x, threshold=0.5) == 0.0
    assert dormant_ratio(net, x, threshold=0.5001) == 0.5


def test_layernorm_trunk_pre_vs_post():
    """A tiny trunk unit is dormant on the Linear output but not after LayerNorm + tanh."""
    torch.manual_seed(0)
    actor = Actor(4, 2, feature_dim=3, hidden_dim=8)
    with torch.no_grad():
        actor.trunk[0].weight[0] *= 1e-4
    x = torch.randn(128, 4)
    assert dormant_masks(actor, x, mode="drm")["trunk.0"][0]  # drm measures the trunk before its LayerNorm
    assert dormant_masks(actor, x, mode="pre")["trunk.0"][0]
    assert not dormant_masks(actor, x, mode="post")["trunk.0"][0]


def test_ensemble_members_are_normalised_separately():
    torch.manual_seed(0)
    layer = EnsembleLinear(2, 4, 5)
    with torch.no_grad():
        layer.weight[1] *= 1e-3  # member 1 is 1000x smaller but its units are all equally alive
    x = torch.randn(32, 4)
    masks = dormant_masks(layer, x)
    assert masks[""].shape == (2, 5)
    assert not masks[""].any()


def test_critic_counts_every_linear_layer():
    torch.manual_seed(0)
    critic = Critic(6, 2, feature_dim=4, hidden_dim=8, num_q=2)
    masks = dormant_masks(critic, (torch.randn(16, 6), torch.randn(16, 2)))
    assert {k: tuple(v.shape) for k, v in masks.items()} == {
        "trunk.0": (4,), "q.0": (2, 8), "q.2": (2, 8), "q.4": (2, 1)}


def test_all_zero_layer_is_all_dormant():
    net = nn.Sequential(nn.Linear(3, 4))
    nn.init.zeros_(net[0].weight)
    nn.init.zeros_(net[0].bias)
    assert dormant_ratio(net, torch.randn(5, 3)) == 1.0


def test_bad_mode_or_threshold_raise():
    net = known_net()
    with pytest.raises(ConfigError, match="mode"):
        dormant_ratio(net, torch.randn(2, 4), mode="after")
    with pytest.raises(ConfigError, match="threshold"):
        dormant_ratio(net, torch.randn(2, 4), threshold=-1.0)
    with pytest.raises(ConfigError, match="no nn.Linear"):
        dormant_ratio(nn.ReLU(), torch.randn(2, 4))


@pytest.mark.parametrize(
    "beta, alpha_max, expected",
    [(0.0, 1.0, 1.0), (0.0, 0.6, 0.6), (0.1, 1.0, 0.8), (0.1, 0.6, 0.6), (0.3, 1.0, 0.4), (0.4, 1.0, 0.2),
     (0.5, 1.0, 0.2), (1.0, 0.9, 0.2)],
)
def test_perturb_alpha(beta, alpha_max, expected):
    assert perturb_alpha(beta, alpha_max) == pytest.approx(expected)


def test_perturb_alpha_bounds_and_rate():
    assert perturb_alpha(0.1, 1.0, alpha_min=0.2, k=4.0) == pytest.approx(0.6)
    assert perturb_alpha(0.9, 0.1, alpha_min=0.2) == 0.1  # crossed bounds: alpha_max wins, as the DrM code


def _params(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def test_shrink_perturb_alpha_one_is_identity():
    torch.manual_seed(0)
    actor = Actor(6, 2, feature_dim=4, hidden_dim=8)
    before = _params(actor)
    shrink_perturb_(actor, 1.0)
    for k, v in actor.named_parameters():
        assert torch.equal(v, before[k]), k


def test_shrink_perturb_alpha_zero_is_a_fresh_init_independent_of_the_weights():
    torch.manual_seed(0)
    a = Actor(6, 2, feature_dim=4, hidden_dim=8)
    torch.manual_seed(1)
    b = Actor(6, 2, feature_dim=4, hidden_dim=8)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(1.0)  # different weights, non-zero biases, LayerNorm moved away from (1, 0)
    ln_before = _params(b.trunk[1])
    torch.manual_seed(7)
    shrink_perturb_(a, 0.0)
    torch.manual_seed(7)
    shrink_perturb_(b, 0.0)
    for (k, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if k.startswith("trunk.1"):
            continue
        assert torch.equal(pa, pb), k
    # fresh = DrQ-v2 init: orthogonal weights (here out 8 > in 4: orthonormal columns), zero biases
    w = b.policy[0].weight
    assert torch.allclose(w.t() @ w, torch.eye(w.shape[1]), atol=1e-5)
    assert torch.count_nonzero(b.policy[0].bias) == 0
    # LayerNorm is not perturbed
    for k, v in b.trunk[1].named_parameters():
        assert torch.equal(v, ln_before[k])


def test_shrink_perturb_mixes_by_alpha_and_keeps_parameter_identity():
    torch.manual_seed(0)
    critic = Critic(6, 2, feature_dim=4, hidden_dim=8, num_q=2)
    zero = copy.deepcopy(critic)
    before = _params(critic)
    ids = [id(p) for p in critic.parameters()]
    torch.manual_seed(3)
    shrink_perturb_(zero, 0.0)
    torch.manual_seed(3)
    shrink_perturb_(critic, 0.3)
    fresh = dict(zero.named_parameters())
    for k, v in critic.named_parameters():
        if k.startswith("trunk.1"):
            assert torch.equal(v, before[k])
        else:
            assert torch.allclose(v, 0.3 * before[k] + 0.7 * fresh[k], atol=1e-6), k
    assert [id(p) for p in critic.parameters()] == ids
    assert not torch.equal(critic.q[0].weight, before["q.0.weight"])  # EnsembleLinear layers are perturbed


def test_shrink_perturb_is_deterministic_given_the_seed_and_rejects_bad_alpha():
    torch.manual_seed(0)
    a = Actor(6, 2, feature_dim=4, hidden_dim=8)
    b = copy.deepcopy(a)
    torch.manual_seed(5)
    shrink_perturb_(a, 0.5)
    torch.manual_seed(5)
    shrink_perturb_(b, 0.5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ConfigError, match="alpha"):
        shrink_perturb_(a, 1.5)


class FakeAgent:
    """The two hooks a tracker uses: ``update_hooks`` and ``register_state``; plus ``actor`` and ``last_feat``."""

    def __init__(self, actor: nn.Module) -> None:
        self.actor = actor
        self.last_feat = None
        self.update_hooks = []
        self.states = {}

    def register_state(self, name, state_fn, load_fn):
        self.states[name] = (state_fn, load_fn)


def test_tracker_is_shared_measures_last_feat_and_round_trips():
    net = known_net()
    agent = FakeAgent(net)
    t1 = dormant_tracker(agent)
    assert dormant_tracker(agent) is t1 and len(agent.update_hooks) == 1
    assert t1.beta == 1.0
    assert agent.update_hooks[0](agent, 0) is None  # nothing to measure before the first update
    agent.last_feat = torch.randn(64, 4)
    assert agent.update_hooks[0](agent, 2) == {"dormant_ratio": pytest.approx(6 / 13)}
    t2 = dormant_tracker(agent, mode="pre")
    assert t2 is not t1 and t2.metric == "dormant_ratio_pre_0.025" and len(agent.update_hooks) == 2
    state_fn, _ = agent.states["dormant"]
    saved = state_fn()
    t1.beta = 0.0
    agent.states["dormant"][1](saved)
    assert t1.beta == pytest.approx(6 / 13)


def test_tracker_measures_in_the_update_sync_and_matches_a_direct_measurement():
    """The tracker queues the ratio as a tensor metric (one host sync with the update's metrics) and sets beta from
    it after the sync; the value is the ratio of the updated actor on the update's features."""
    from helpers import drqv2_state_agent, drqv2_state_batch
    from pixelrl.mechanisms.dormant import dormant_ratio, dormant_tracker

    agent = drqv2_state_agent(log_dormant=True)
    tracker = dormant_tracker(agent)
    assert tracker.measure_tensor in agent.metric_hooks
    out = agent.update(drqv2_state_batch(), step=1)
    direct = dormant_ratio(agent.actor, agent.last_feat)
    assert out["dormant_ratio"] == pytest.approx(direct, abs=1e-6)
    assert tracker.beta == pytest.approx(direct, abs=1e-6)
    assert tracker._pending is None  # consumed by the update hook
