"""Perceptual rewards: log-domain Sinkhorn (marginals, agreement with the plain iteration, batching), RAPL's OT
reward (highest for the demonstration itself, per-episode scoring through the reward spec), Sermanet et al.'s
sub-goal split, feature selection and a reward that increases along a demonstration, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from pixelrl.errors import ConfigError
from pixelrl.rewards.perceptual import (OTReward, PerceptualReward, cosine_cost, fit_perceptual, ot_rewards,
                                        perceptual_rewards, segment_demo, select_features, sinkhorn)

SIZE = 24


def test_sinkhorn_marginals_and_the_plain_iteration():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 7, 5, generator=g, dtype=torch.float64)
    plan = sinkhorn(cost, eps=0.1, iters=500)
    assert plan.shape == (3, 7, 5) and bool((plan >= 0).all())
    torch.testing.assert_close(plan.sum(-1), torch.full((3, 7), 1 / 7, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(plan.sum(-2), torch.full((3, 5), 1 / 5, dtype=torch.float64), atol=1e-12, rtol=0)
    # the textbook (non-log) Sinkhorn-Knopp iteration gives the same plan
    k = torch.exp(-cost[0] / 0.1)
    u, v = torch.ones(7, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    for _ in range(500):
        u = (1 / 7) / (k @ v)
        v = (1 / 5) / (k.T @ u)
    torch.testing.assert_close(plan[0], u[:, None] * k * v[None], atol=1e-10, rtol=1e-6)
    # batching: each item is its own problem
    torch.testing.assert_close(plan[1], sinkhorn(cost[1], eps=0.1, iters=500))
    # a tiny eps in the log domain stays finite (the plain iteration would underflow)
    sharp = sinkhorn(cost[0] * 100, eps=1e-3, iters=200)
    assert bool(torch.isfinite(sharp).all())
    torch.testing.assert_close(sharp.sum(-2), torch.full((5,), 1 / 5, dtype=torch.float64), atol=1e-9, rtol=0)
    with pytest.raises(ConfigError, match="must be > 0"):
        sinkhorn(cost, eps=0.0)


def _trajectory(t: int, phase: float = 0.0, d: int = 16, seed: int = 0) -> torch.Tensor:
    """Embeddings moving smoothly along a curve: frame i at angle phase + i / t."""
    rng = np.random.default_rng(seed)
    basis = torch.as_tensor(rng.standard_normal((4, d)))
    s = torch.linspace(0, 1, t, dtype=torch.float64)[:, None] + phase
    feats = torch.cat([torch.cos(3 * s), torch.sin(3 * s), torch.cos(5 * s), torch.sin(5 * s)], 1)
    return feats @ basis


def test_ot_reward_is_highest_for_the_demo_itself():
    demo = _trajectory(30)
    others = [_trajectory(30, phase=p) for p in (0.3, 0.7, 1.5)]
    others.append(demo.flip(0)[:15])  # half the demo, backwards
    others.append(_trajectory(30, seed=3))  # another curve
    for eps in (0.05, 1.0):
        own = float(ot_rewards(demo, demo, eps=eps, iters=300).sum())
        for o in others:
            assert own > float(ot_rewards(o, demo, eps=eps, iters=300).sum())
    r = ot_rewards(demo, demo, eps=0.05, iters=300)
    c = cosine_cost(demo, demo)
    torch.testing.assert_close(r.sum(), -(c * sinkhorn(c, 0.05, 300)).sum())  # video reward = -<C, mu*>
    assert r.shape == (30,) and bool((r <= 0).all())


def _frames(t: int, seed: int = 0) -> np.ndarray:
    """A synthetic demo video: a bright square moving left to right, RGB 24x24, frame stack 1."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 30, size=(t, 3, SIZE, SIZE), dtype=np.uint8)
    for i in range(t):
        c = int(round(i * (SIZE - 6) / max(t - 1, 1)))
        out[i, :, 9:15, c:c + 6] = 240
    return out


def test_ot_reward_through_the_spec_scores_whole_episodes(tmp_path):
    from PIL import Image

    from pixelrl.rewards import RewardConfig, build_reward_model

    demo = _frames(12)
    folder = tmp_path / "demo"
    folder.mkdir()
    for i, f in enumerate(demo):
        Image.fromarray(f.transpose(1, 2, 0)).save(folder / f"{i:03d}.png")
    model = build_reward_model(RewardConfig(f"ot:{folder}", ot_eps=0.1, ot_iters=200))
    assert isinstance(model, OTReward) and model.batch_size >= 10 ** 6
    model.bind(spaces.Box(0, 255, (3, SIZE, SIZE), np.uint8), 1)
    own = model(None, next_obs=demo)
    assert own.shape == (12,) and own.dtype == np.float32
    shuffled = model(None, next_obs=demo[np.random.default_rng(0).permutation(12)])
    assert own.sum() >= shuffled.sum() - 1e-6  # the same frames in another order match as well (OT ignores order)
    still = model(None, next_obs=np.repeat(demo[:1], 12, axis=0))  # never moving
    assert own.sum() > still.sum()
    with pytest.raises(ConfigError, match=r"has observations \[3, 24, 24\], the env gives \[3, 32, 32\]"):
        model.bind(spaces.Box(0, 255, (3, 32, 32), np.uint8), 1)
    with pytest.raises(ConfigError, match="does not exist"):
        RewardConfig(f"ot:{tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match="ot-eps must be a number > 0"):
        RewardConfig(f"ot:{folder}", ot_eps=0.0)
    with pytest.raises(ConfigError, match="end-on-success needs a success classifier"):
        RewardConfig(f"ot:{folder}", end_on_success=True)


def test_segmentation_minimises_within_segment_variance():
    x = np.concatenate([np.zeros((5, 2)), np.ones((7, 2)) * 3, np.full((4, 2), -2.0)])
    x += np.random.default_rng(0).normal(0, 0.05, x.shape)
    assert segment_demo(x, 3) == [0, 5, 12, 16]
    # exact: no other split of a short sequence does better
    y = np.random.default_rng(1).normal(size=(9, 3))
    b = segment_demo(y, 3)

    def cost(bounds):
        return sum(((y[a:e] - y[a:e].mean(0)) ** 2).sum() for a, e in zip(bounds[:-1], bounds[1:]))

    best = min(cost([0, i, j, 9]) for i in range(1, 8) for j in range(i + 1, 9))
    assert cost(b) == pytest.approx(best)
    with pytest.raises(ConfigError, match="cannot split"):
        segment_demo(y, 10)


def test_feature_selection_picks_the_separating_features():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    x = rng.normal(size=(100, 10))
    x[labels == 1, 7] += 5.0  # feature 7 separates step 1 from step 0
    idx, mu, sd = select_features(x, labels, 2, 1)
    assert idx[:, 0].tolist() == [7, 7]
    assert mu[1, 0] == pytest.approx(x[labels == 1, 7].mean())


def test_perceptual_reward_increases_along_a_demo():
    demos = [_frames(20, seed=s) for s in range(3)]
    model = PerceptualReward(demos, subgoals=3, features=16)
    model.bind(spaces.Box(0, 255, (3, SIZE, SIZE), np.uint8), 1)
    test = _frames(20, seed=7)
    r = model(None, next_obs=test)
    # mean reward per third of the demo rises from the first sub-goal to the last
    thirds = [float(r[a:b].mean()) for a, b in ((0, 7), (7, 14), (14, 20))]
    assert thirds[0] < thirds[1] < thirds[2], thirds
    assert np.corrcoef(np.arange(20), r)[0, 1] > 0.8
    p = model.step_probabilities(test)
    assert p.shape == (20, 3) and int(np.argmax(p[0])) == 0 and int(np.argmax(p[-1])) == 2
    # a video that stays at the start scores less than the demo's end
    assert model(None, next_obs=np.repeat(test[:1], 5, axis=0)).mean() < r[-5:].mean()


def test_perceptual_from_features_directly():
    f = [np.concatenate([np.zeros((6, 4)), np.ones((6, 4))]) + np.random.default_rng(s).normal(0, 0.1, (12, 4))
         for s in range(2)]
    m = fit_perceptual(f, 2, 2)
    assert m["bounds"].tolist() == [[0, 6, 12], [0, 6, 12]]
    dense, p = perceptual_rewards(np.array([[0.0] * 4, [1.0] * 4]), m)
    assert dense[1] > dense[0] and p[0, 0] > p[0, 1] and p[1, 1] > p[1, 0]
