"""Rollout storage and GAE(lambda): a hand-computed example with terminations and truncations."""

import numpy as np
import pytest
import torch

from pixelrl.data.rollout import RolloutBuffer, compute_gae


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32).T.contiguous()  # given per env: [N, T] -> [T, N]


def test_gae_by_hand_with_termination_and_truncation():
    # gamma = lambda = 0.5. Env 0: terminated at t=1, truncated at t=2 (final obs worth 10), goes on at t=3 (next 5).
    # Env 1: no episode end, reward 2 at the last step, next value 4.
    rewards = _t([[1, 1, 1, 1], [0, 0, 0, 2]])
    values = _t([[1, 2, 3, 4], [0, 0, 0, 0]])
    term = _t([[0, 1, 0, 0], [0, 0, 0, 0]])
    trunc = _t([[0, 0, 1, 0], [0, 0, 0, 0]])
    boot = _t([[0, 0, 10, 0], [0, 0, 0, 0]])
    adv, ret = compute_gae(rewards, values, term, trunc, boot, torch.tensor([5.0, 4.0]), gamma=0.5, gae_lambda=0.5)
    # env 0: t3: 1 + .5*5 - 4 = -0.5; t2 (truncated): 1 + .5*10 - 3 = 3, nothing from t3;
    # t1 (terminated): 1 - 2 = -1; t0: 1 + .5*2 - 1 = 1, plus .25 * (-1) = 0.75
    # env 1: t3: 2 + .5*4 = 4; t2: .25*4 = 1; t1: .25; t0: .0625
    expected = _t([[0.75, -1.0, 3.0, -0.5], [0.0625, 0.25, 1.0, 4.0]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)


def test_truncation_bootstraps_where_termination_does_not():
    r, v = torch.ones(1, 1), torch.zeros(1, 1)
    boot = torch.full((1, 1), 8.0)
    last = torch.tensor([100.0])  # the next episode's first value: never used after an episode end
    trunc, _ = compute_gae(r, v, torch.zeros(1, 1), torch.ones(1, 1), boot, last, gamma=0.5, gae_lambda=1.0)
    term, _ = compute_gae(r, v, torch.ones(1, 1), torch.zeros(1, 1), boot, last, gamma=0.5, gae_lambda=1.0)
    both, _ = compute_gae(r, v, torch.ones(1, 1), torch.ones(1, 1), boot, last, gamma=0.5, gae_lambda=1.0)
    assert trunc.item() == 1 + 0.5 * 8 and term.item() == 1.0 and both.item() == 1.0


def test_lambda_one_gives_discounted_returns_and_zero_gives_td():
    T = 5
    rewards = torch.arange(1, T + 1, dtype=torch.float32)[:, None]
    values = torch.full((T, 1), 0.5)
    z = torch.zeros(T, 1)
    last = torch.tensor([2.0])
    _, ret1 = compute_gae(rewards, values, z, z, z, last, gamma=0.9, gae_lambda=1.0)
    g, mc = 2.0, []
    for r in reversed(rewards[:, 0].tolist()):
        g = r + 0.9 * g
        mc.append(g)
    torch.testing.assert_close(ret1[:, 0], torch.tensor(mc[::-1]))
    adv0, _ = compute_gae(rewards, values, z, z, z, last, gamma=0.9, gae_lambda=0.0)
    nxt = torch.cat([values[1:, 0], last])
    torch.testing.assert_close(adv0[:, 0], rewards[:, 0] + 0.9 * nxt - values[:, 0])


def test_buffer_fills_bootstraps_and_splits_into_minibatches():
    T, N = 4, 2
    buf = RolloutBuffer(T, N, (3, 8, 8), torch.uint8, (), torch.int64)
    for t in range(T):
        buf.add(torch.full((N, 3, 8, 8), t, dtype=torch.uint8), torch.tensor([t, t + 1]), torch.zeros(N),
                torch.zeros(N), np.ones(N), np.array([False, t == 1]), np.array([t == 2, False]))
        if t == 2:
            buf.set_bootstrap([0], torch.tensor([3.0]))
    with pytest.raises(IndexError):
        buf.add(torch.zeros(N, 3, 8, 8, dtype=torch.uint8), torch.zeros(N), torch.zeros(N), torch.zeros(N),
                np.ones(N), np.zeros(N), np.zeros(N))
    assert buf.obs.dtype == torch.uint8 and buf.bootstrap_values[2, 0] == 3.0
    buf.compute_returns(torch.zeros(N), gamma=1.0, gae_lambda=1.0)
    # env 0: truncated at t=2 with a bootstrap of 3: 1 + 3 = 4 at t=2, then 5 and 6 before it; 1 at t=3
    torch.testing.assert_close(buf.returns[:, 0], torch.tensor([6.0, 5.0, 4.0, 1.0]))
    torch.testing.assert_close(buf.returns[:, 1], torch.tensor([2.0, 1.0, 2.0, 1.0]))
    seen = []
    g = torch.Generator().manual_seed(0)
    for mb in buf.minibatches(4, generator=g):
        assert mb["obs"].shape == (2, 3, 8, 8) and mb["actions"].shape == (2,)
        seen += [(int(o[0, 0, 0]), int(a)) for o, a in zip(mb["obs"], mb["actions"])]
    assert sorted(seen) == sorted((t, t + e) for t in range(T) for e in range(N))  # every row once, fields aligned
    with pytest.raises(ValueError, match="equal minibatches"):
        next(buf.minibatches(3))
