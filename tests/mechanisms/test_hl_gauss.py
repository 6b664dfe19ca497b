import ast
import dataclasses
import inspect
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError
from pixelrl.mechanisms import hl_gauss
from pixelrl.mechanisms.hl_gauss import (
    HLGaussConfig,
    HLGaussHead,
    auto_range,
    hl_gauss_target,
    make_head,
    resolve_range,
    symexp,
    symlog,
)
from pixelrl.nets.critic import Critic, QHead

V_MIN, V_MAX, BINS = -10.0, 210.0, 101


def head(**kw) -> HLGaussHead:
    base = dict(num_bins=BINS, v_min=V_MIN, v_max=V_MAX)
    base.update(kw)
    return make_head(HLGaussConfig(**base))


# ---------------------------------------------------------------------------------------------------------- config


def test_every_config_field_documented():
    tree = ast.parse(inspect.getsource(hl_gauss))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "HLGaussConfig")
    documented = {
        a.target.id
        for a, b in zip(cls.body, cls.body[1:])
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)
    }
    assert documented == {f.name for f in dataclasses.fields(HLGaussConfig)}


def test_published_defaults():
    cfg = HLGaussConfig()
    assert (cfg.num_bins, cfg.sigma_ratio, cfg.symlog, cfg.v_min, cfg.v_max) == (101, 0.75, False, None, None)


@pytest.mark.parametrize(
    "kw",
    [dict(num_bins=1), dict(sigma_ratio=0.0), dict(v_min=-1.0), dict(v_max=5.0), dict(v_min=5.0, v_max=5.0),
     dict(v_min=float("nan"), v_max=1.0)],
)
def test_bad_config_raises(kw):
    with pytest.raises(ConfigError):
        HLGaussConfig(**kw)


def test_make_head_needs_a_range():
    with pytest.raises(ConfigError, match="range"):
        make_head(HLGaussConfig())


def test_auto_range_dmc_rule():
    lo, hi = auto_range(2.0, 0.99)  # DMC at action repeat 2: [0, 2] reward per agent step
    assert lo == pytest.approx(-10.0) and hi == pytest.approx(210.0)
    lo8, hi8 = auto_range(8.0, 0.99)
    assert lo8 == pytest.approx(-40.0) and hi8 == pytest.approx(840.0)
    lo_neg, hi_neg = auto_range(1.0, 0.9, min_step_reward=-1.0)  # [-10, 10] widened by 5% of its span of 20
    assert lo_neg == pytest.approx(-11.0) and hi_neg == pytest.approx(11.0)
    with pytest.raises(ConfigError):
        auto_range(1.0, 1.0)
    cfg = resolve_range(HLGaussConfig(), 2.0, 0.99)
    assert (cfg.v_min, cfg.v_max) == pytest.approx((-10.0, 210.0))
    fixed = HLGaussConfig(v_min=-1.0, v_max=1.0)
    assert resolve_range(fixed, 2.0, 0.99) is fixed


# ---------------------------------------------------------------------------------------------------------- target


def test_target_is_a_distribution():
    h = head()
    y = torch.tensor([[-500.0], [-10.0], [0.0], [3.3], [100.0], [209.9], [1e6]])
    p = h.target_probs(y)
    assert p.shape == (7, BINS)
    assert (p >= 0).all()
    assert torch.allclose(p.sum(-1), torch.ones(7), atol=1e-5)


def test_target_mean_recovers_scalar_inside_range():
    h = head()
    torch.manual_seed(0)
    # away from the edges by 4 sigma (the truncation at the edges shifts the mean inward by design)
    margin = 4 * h.sigma
    y = torch.empty(256, 1).uniform_(V_MIN + margin, V_MAX - margin)
    mean = (h.target_probs(y) * h.centres).sum(-1, keepdim=True)
    assert (mean - y).abs().max() < 0.01 * h.bin_width
    # ... and the mass is spread over a few bins around y (sigma = 0.75 bin widths), not one-hot
    p = h.target_probs(torch.tensor([[100.0]]))[0]
    assert 0.2 < p.max() < 0.6
    assert ((p > 0.01).sum()) in range(4, 8)


def test_sigma_is_ratio_times_bin_width():
    h = head(sigma_ratio=0.5)
    assert h.bin_width == pytest.approx((V_MAX - V_MIN) / BINS)
    assert h.sigma == pytest.approx(0.5 * h.bin_width)
    edges = torch.linspace(0, 1, 5)
    p = hl_gauss_target(torch.tensor([0.5]), edges, sigma=1e-3)  # tiny sigma: all mass on the bins sharing edge 0.5
    assert p[0, 1] + p[0, 2] == pytest.approx(1.0, abs=1e-5) and p[0, 1] == pytest.approx(0.5, abs=1e-4)


def test_targets_outside_the_range_are_clipped():
    h = head()
    assert torch.allclose(h.target_probs(torch.tensor([[1e4]])), h.target_probs(torch.tensor([[V_MAX]])))
    assert torch.allclose(h.target_probs(torch.tensor([[-1e4]])), h.target_probs(torch.tensor([[V_MIN]])))
    p_hi = h.target_probs(torch.tensor([[1e4]]))[0]
    assert p_hi[-3:].sum() > 0.9 and torch.isfinite(p_hi).all()
    # the value a head can express stays inside the support
    logits = torch.log(h.target_probs(torch.tensor([[1e4], [-1e4]])).clamp_min(1e-30)).unsqueeze(0)
    v = h.value(logits)
    assert (v >= V_MIN).all() and (v <= V_MAX).all()


# ---------------------------------------------------------------------------------------------------------- loss


def test_loss_is_stationary_at_log_target_and_larger_elsewhere():
    h = head()
    y = torch.tensor([[0.0], [37.2], [150.0]])
    p = h.target_probs(y)
    logits = torch.log(p.clamp_min(1e-30)).unsqueeze(0).repeat(2, 1, 1).requires_grad_(True)  # [num_q=2, B, m]
    loss = h.loss(logits, y)
    (g,) = torch.autograd.grad(loss, logits)
    assert g.abs().max() < 1e-6
    # any other logits give a larger loss (cross-entropy >= entropy of p), and a non-zero gradient
    torch.manual_seed(0)
    other = (logits.detach() + 0.5 * torch.randn_like(logits)).requires_grad_(True)
    other_loss = h.loss(other, y)
    (g2,) = torch.autograd.grad(other_loss, other)
    assert other_loss > loss + 1e-3
    assert g2.abs().max() > 1e-3


def test_loss_reduction_matches_scalar_head():
    """Sum over Q heads, mean over the batch: two identical heads give twice one head's loss, batch size does not
    scale it."""
    h = head()
    torch.manual_seed(0)
    raw1 = torch.randn(1, 4, BINS)
    y = torch.rand(4, 1) * 100
    one = h.loss(raw1, y)
    assert h.loss(raw1.repeat(2, 1, 1), y) == pytest.approx(2 * one.item(), rel=1e-5)
    assert h.loss(raw1.repeat(1, 3, 1), y.repeat(3, 1)) == pytest.approx(one.item(), rel=1e-5)


def test_training_free_logits_fits_the_value():
    h = make_head(HLGaussConfig(num_bins=21, v_min=-10.0, v_max=10.0))
    y = torch.tensor([[3.3], [-2.0]])
    logits = torch.zeros(2, 2, 21, requires_grad=True)  # uniform start: value 0
    opt = torch.optim.Adam([logits], lr=0.3)
    for _ in range(300):
        opt.zero_grad()
        h.loss(logits, y).backward()
        opt.step()
    assert torch.allclose(h.value(logits.detach()), y.expand(2, 2, 1), atol=0.02 * h.bin_width)


# ---------------------------------------------------------------------------------------------------------- symlog


def test_symlog_round_trip():
    x = torch.tensor([-1e3, -37.5, -1.0, -1e-3, 0.0, 1e-3, 0.5, 10.0, 1e3], dtype=torch.float64)
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-12, atol=1e-12)
    assert torch.allclose(symlog(torch.tensor([math.e - 1])), torch.tensor([1.0]))


def test_symlog_head_bins_and_values():
    h = head(symlog=True)
    assert h.edges[0].item() == pytest.approx(-math.log1p(10.0), rel=1e-6)
    assert h.edges[-1].item() == pytest.approx(math.log1p(210.0), rel=1e-6)
    y = torch.tensor([[-5.0], [0.5], [7.0], [150.0]])
    logits = torch.log(h.target_probs(y).clamp_min(1e-30)).unsqueeze(0)
    v = h.value(logits)  # symexp of the symlog-space mean
    assert torch.allclose(v[0], y, rtol=1e-3, atol=1e-3)
    # bins are finer near 0 than far away (in return units)
    ret_edges = symexp(h.edges)
    widths = ret_edges[1:] - ret_edges[:-1]
    assert widths.max() > 10 * widths.min()


# ---------------------------------------------------------------------------------------------------------- critic


def test_head_plugs_into_critic():
    h = head(num_bins=51)
    assert isinstance(h, QHead) and h.out_dim == 51
    torch.manual_seed(0)
    critic = Critic(repr_dim=12, action_dim=3, feature_dim=8, hidden_dim=16, num_q=2, head=h)
    feat, act = torch.randn(5, 12), torch.rand(5, 3) * 2 - 1
    raw = critic(feat, act)
    assert raw.shape == (2, 5, 51)
    q = critic.values(feat, act)
    assert q.shape == (2, 5, 1)
    assert ((q >= V_MIN) & (q <= V_MAX)).all()
    # the bins are not parameters and not in the critic's checkpoint
    assert not any(k.startswith("head.") for k in critic.state_dict())
    assert sum(p.numel() for p in h.parameters()) == 0


def _state_batch(n=8, obs_dim=5, act_dim=2, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(n, obs_dim, generator=g),
        action=torch.rand(n, act_dim, generator=g) * 2 - 1,
        reward=torch.rand(n, 1, generator=g),
        discount=torch.full((n, 1), 0.99),
        next_obs=torch.randn(n, obs_dim, generator=g),
    )


def _spaces(obs_dim=5, act_dim=2):
    return (gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
            gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32))


TINY = dict(batch_size=8, feature_dim=8, hidden_dim=16, num_seed_steps=0, stddev_schedule="0.2", lr=1e-3)


def test_drqv2_update_with_hl_gauss_head_constructor_argument():
    torch.manual_seed(0)
    obs_space, act_space = _spaces()
    agent = DrQv2Agent(obs_space, act_space, DrQv2Config(**TINY), critic_head=head(num_bins=21))
    assert isinstance(agent.critic.head, HLGaussHead) and agent.target_critic.head is agent.critic.head
    before = [p.detach().clone() for p in agent.critic.parameters()]
    batch = _state_batch()
    losses = [agent.update(batch, step=i)["critic_loss"] for i in range(20)]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]  # cross-entropy to a fixed batch's targets goes down
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.critic.parameters()))


def test_drqv2_config_selects_hl_gauss():
    torch.manual_seed(0)
    obs_space, act_space = _spaces()
    cfg = DrQv2Config(**TINY, critic="hl-gauss", hl_gauss=HLGaussConfig(num_bins=31, v_min=-1.0, v_max=100.0))
    agent = DrQv2Agent(obs_space, act_space, cfg)
    assert isinstance(agent.critic.head, HLGaussHead) and agent.critic.head.out_dim == 31
    m = agent.update(_state_batch(), step=0)
    assert math.isfinite(m["critic_loss"]) and -1.0 <= m["critic_q1"] <= 100.0
    with pytest.raises(ConfigError, match="range"):
        DrQv2Agent(obs_space, act_space, DrQv2Config(**TINY, critic="hl-gauss"))  # auto range never filled
