"""The algorithms' losses and advantages against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pixelrl.genrl import losses as L

EPS = 1e-4


def _ppo(ratio: float, adv: float, *, adv_clip: float = 5.0):
    logp = torch.tensor([math.log(ratio)], dtype=torch.float64, requires_grad=True)
    loss, info = L.ppo_clip_loss(logp, torch.zeros(1, dtype=torch.float64), torch.tensor([adv], dtype=torch.float64),
                                 clip_range=EPS, adv_clip=adv_clip)
    loss.backward()
    return float(loss.detach()), float(logp.grad[0]), info


@pytest.mark.parametrize("adv", [2.0, -2.0])
def test_ppo_clip_at_the_ratio_boundaries(adv):
    # inside [1 - eps, 1 + eps]: the unclipped surrogate, gradient -A * ratio
    loss, grad, info = _ppo(1.0 + EPS / 2, adv)
    assert loss == pytest.approx(-adv * (1 + EPS / 2), rel=1e-12) and grad == pytest.approx(-adv * (1 + EPS / 2))
    assert float(info["clipfrac"]) == 0
    # beyond the boundary on the side the advantage pushes to: clipped, no gradient
    beyond = 1.0 + 3 * EPS if adv > 0 else 1.0 - 3 * EPS
    loss, grad, info = _ppo(beyond, adv)
    bound = 1.0 + EPS if adv > 0 else 1.0 - EPS
    assert loss == pytest.approx(-adv * bound, rel=1e-12) and grad == 0.0
    assert float(info["clipfrac"]) == 1
    # beyond on the other side: max() keeps the unclipped (pessimistic) term and its gradient
    other = 1.0 - 3 * EPS if adv > 0 else 1.0 + 3 * EPS
    loss, grad, _ = _ppo(other, adv)
    assert loss == pytest.approx(-adv * other, rel=1e-12) and grad == pytest.approx(-adv * other)


def test_ppo_advantage_clip_and_approx_kl():
    loss, _, info = _ppo(1.0, 9.0, adv_clip=5.0)
    assert loss == pytest.approx(-5.0)
    logp = torch.tensor([0.1, -0.3])
    _, info = L.ppo_clip_loss(logp, torch.zeros(2), torch.ones(2), clip_range=EPS, adv_clip=5)
    assert float(info["approx_kl"]) == pytest.approx(0.5 * (0.01 + 0.09) / 2)


def test_group_advantages_sum_to_zero_per_group():
    r = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0, -1.0, 0.0, 4.0, 2.0])
    a = L.group_advantages(r, 4)
    assert torch.allclose(a.reshape(3, 4).sum(1), torch.zeros(3, dtype=a.dtype), atol=1e-12)
    g = np.array([1.0, 2.0, 3.0, 6.0])
    assert a[:4].numpy() == pytest.approx((g - g.mean()) / (g.std(ddof=1) + 1e-4))  # unbiased std, eps 1e-4
    assert torch.equal(a[4:8], torch.zeros(4, dtype=a.dtype))  # equal rewards carry no signal
    with pytest.raises(ValueError):
        L.group_advantages(r, 5)


def test_pareto_selection_on_hand_made_vectors():
    r = torch.tensor([[1.0, 5.0],   # 0: best on reward 2
                      [5.0, 1.0],   # 1: best on reward 1
                      [3.0, 3.0],   # 2: a trade-off nobody beats on both
                      [2.0, 2.0],   # 3: dominated by 2
                      [3.0, 3.0],   # 4: equal to 2: not dominated by it
                      [1.0, 4.0],   # 5: dominated by 0 (>= everywhere, > on one)
                      [5.0, 0.5]])  # 6: dominated by 1
    assert L.pareto_mask(r).tolist() == [True, True, True, False, True, False, False]
    w, mask = L.parrot_weights(r, normalize=False)
    assert torch.equal(w[~mask], torch.zeros(3, dtype=w.dtype))
    assert w[mask].numpy() == pytest.approx(r[mask].sum(1).numpy() / 4)
    three = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 2.0], [0.0, 9.0, 0.0]])
    assert L.pareto_mask(three).tolist() == [False, True, True]


def test_per_prompt_stat_tracker():
    t = L.PerPromptStatTracker(buffer_size=4, min_count=3)
    a = t.update(["a", "a", "b"], np.array([1.0, 3.0, 5.0]))
    batch = np.array([1.0, 3.0, 5.0])  # "a" has 2 < 3 rewards: the batch statistics
    assert a == pytest.approx((batch - batch.mean()) / (batch.std() + 1e-6))
    a2 = t.update(["a", "a"], np.array([2.0, 10.0]))
    buf = np.array([1.0, 3.0, 2.0, 10.0])  # "a" now has 4: its own buffer (persisting across epochs)
    assert a2 == pytest.approx((np.array([2.0, 10.0]) - buf.mean()) / (buf.std() + 1e-6))
    t.update(["a"], np.array([7.0]))
    assert list(t.stats["a"]) == [3.0, 2.0, 10.0, 7.0]  # the deque keeps the last 4
    t2 = L.PerPromptStatTracker(4, 3)
    t2.load_state_dict(t.state_dict())
    assert t2.update(["a"], np.array([0.0])) == pytest.approx(t.update(["a"], np.array([0.0])))


def test_k3_and_grpo_loss():
    logp = torch.tensor([0.0, 0.2, -0.4], requires_grad=True)
    ref = torch.tensor([0.0, 0.0, 0.0])
    kl = L.k3_kl(logp, ref)
    assert float(kl[0].detach()) == 0 and bool((kl >= 0).all())
    assert float(kl[1].detach()) == pytest.approx(math.exp(-0.2) + 0.2 - 1)
    adv = torch.tensor([1.0, -1.0, 0.5])
    loss, info = L.grpo_loss(logp, logp.detach(), ref, adv, beta=0.04, clip_range=EPS, adv_clip=5)
    # one update per batch: ratio 1, Visual-RFT's -(A - beta KL) averaged
    assert float(loss.detach()) == pytest.approx(float((-adv + 0.04 * kl).mean().detach()))
    assert float(info["kl"]) == pytest.approx(float(kl.mean().detach()))


def test_prdp_loss():
    diff = torch.tensor([0.5, -1.0])
    same = torch.zeros(2, 2)
    loss, _ = L.prdp_loss(same.clone().requires_grad_(), same, diff, beta=1.0, clip_range=0.1, steps=10)
    assert float(loss.detach()) == pytest.approx(float((diff**2).mean()))  # nothing predicted yet
    # a log-ratio beyond the clip: max of the two squared errors
    logp = torch.tensor([[0.5, 0.0]])
    loss, _ = L.prdp_loss(logp, torch.zeros(1, 2), torch.tensor([1.0]), beta=1.0, clip_range=0.1, steps=2)
    unclipped = (1.0 - 2 * 0.5) ** 2
    clipped = (1.0 - 2 * math.log(1.1)) ** 2
    assert float(loss.detach()) == pytest.approx(max(unclipped, clipped))
    # the gradient moves the predicted difference toward the reward difference
    lp = torch.zeros(1, 2, requires_grad=True)
    loss, _ = L.prdp_loss(lp, torch.zeros(1, 2), torch.tensor([1.0]), beta=1.0, clip_range=0.1, steps=2)
    loss.backward()
    assert lp.grad[0, 0] < 0 < lp.grad[0, 1]


def test_preference_loss():
    lp = torch.zeros(3, 2, requires_grad=True)
    loss, info = L.preference_loss(lp, torch.zeros(3, 2), beta=0.1, steps=5)
    assert float(loss.detach()) == pytest.approx(math.log(2))
    loss.backward()
    assert bool((lp.grad[:, 0] < 0).all()) and bool((lp.grad[:, 1] > 0).all())  # winner up, loser down
    better, _ = L.preference_loss(torch.tensor([[1.0, -1.0]]), torch.zeros(1, 2), beta=0.1, steps=5)
    assert float(better) < math.log(2)


def test_pair_up():
    assert L.pair_up(8, 4).tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ValueError):
        L.pair_up(6, 3)
