"""BC tests. The helpers shared with the other offline-agent tests (spaces, random batches, a 1-step bandit dataset,
the config docstring check, the checkpoint round trip) are in ``tests/helpers.py``."""

import math

import numpy as np
import pytest
import torch

import pixelrl.agents.bc as bc_mod
from pixelrl.agents.bc import BCAgent, BCConfig, GaussianPolicy, ObsNormalizer, gaussian_log_prob
from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError

from helpers import (
    dict_space,
    fields_documented,
    params,
    pixel_space,
    random_batch,
    same,
    state_space,
    through_checkpoint,
    tiny_agent,
)

# ---------------------------------------------------------------------------------------------------------- helpers


def make(space=None, seed=0, action_dim=2, **kw) -> BCAgent:
    return tiny_agent(BCAgent, BCConfig, space, seed, action_dim, **kw)


class LinearExpert:
    """Dataset of a linear expert ``a = clip(W s, -1, 1)`` on states s ~ N(3, 2) (far from normalised)."""

    W = torch.tensor([[0.3, -0.2, 0.1], [-0.1, 0.25, 0.2]])

    def __init__(self, n=4000, noise=0.0, seed=0):
        self.g = torch.Generator().manual_seed(seed)
        self.obs = 3 + 2 * torch.randn(n, 3, generator=self.g)
        self.clean = self.expert((self.obs - 3) / 2)
        self.action = (self.clean + noise * torch.randn(n, 2, generator=self.g)).clamp(-1, 1)

    def expert(self, z):
        return (z @ self.W.T).clamp(-1, 1)

    def sample(self, b=128):
        i = torch.randint(0, self.obs.shape[0], (b,), generator=self.g)
        return Batch(self.obs[i], self.action[i], torch.zeros(b, 1), torch.zeros(b, 1), self.obs[i])

    def eval_mse(self, agent, n=200):
        obs = 3 + 2 * torch.randn(n, 3, generator=self.g)
        acts = np.stack([agent.act(o.numpy(), step=0, eval_mode=True) for o in obs])
        return float(((torch.from_numpy(acts) - self.expert((obs - 3) / 2)) ** 2).mean())


# ---------------------------------------------------------------------------------------------------------- config


def test_every_config_field_documented():
    fields_documented(bc_mod, "BCConfig")
    fields_documented(bc_mod, "OfflineAgentConfig")


def test_published_defaults():
    c = BCConfig()
    assert (c.lr, c.batch_size, c.hidden_dim, c.policy, c.obs_norm, c.state_trunk) == (
        3e-4, 256, 256, "deterministic", True, False)
    assert (c.num_seed_steps, c.nstep) == (0, 1)


@pytest.mark.parametrize("kw", [dict(policy="flow"), dict(dropout=0.1), dict(policy="gaussian", dropout=1.0),
                                dict(policy="gaussian", log_std_min=1.0, log_std_max=0.0), dict(critic="hl-gauss"),
                                dict(aux=("taco",)), dict(exploration="dormant"), dict(log_dormant=True)])
def test_bad_config_raises(kw):
    with pytest.raises(ConfigError):
        BCConfig(**kw)


# ---------------------------------------------------------------------------------------------------------- shared


def test_gaussian_policy_log_prob_matches_torch_normal():
    torch.manual_seed(0)
    pol = GaussianPolicy(4, 2, hidden_dim=16, trunk=False, log_std_min=-5.0, log_std_max=2.0)
    with torch.no_grad():
        pol.log_std.copy_(torch.tensor([-7.0, 0.3]))  # the first is clipped to -5
    feat, a = torch.randn(6, 4), torch.rand(6, 2) * 2 - 1
    mean, log_std = pol.dist_params(feat)
    assert torch.allclose(log_std, torch.tensor([-5.0, 0.3]).expand(6, 2))
    assert torch.allclose(mean, torch.tanh(pol.policy(feat))) and torch.equal(pol(feat), mean)
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(a).sum(-1, keepdim=True)
    assert torch.allclose(pol.log_prob(feat, a), ref, atol=1e-5)
    assert torch.allclose(gaussian_log_prob(a, mean, log_std), ref, atol=1e-5)


def test_obs_normalizer_validates_and_adds_eps():
    n = ObsNormalizer(3)
    x = torch.randn(4, 3)
    assert torch.equal(n(x), x)  # identity until set
    n.set([1.0, 2.0, 3.0], [1.0, 0.0, 4.0])
    assert torch.allclose(n(x), (x - torch.tensor([1.0, 2.0, 3.0])) / torch.tensor([1.001, 0.001, 4.001]))
    for mean, std in (([0.0, 0.0], [1.0, 1.0]), ([0.0, np.nan, 0.0], [1.0] * 3), ([0.0] * 3, [1.0, -1.0, 1.0])):
        with pytest.raises(ConfigError):
            n.set(mean, std)


def test_set_obs_normalizer_on_pixels_only_raises():
    agent = make(pixel_space())
    with pytest.raises(ConfigError, match="pixels"):
        agent.set_obs_normalizer(np.zeros(3), np.ones(3))
    make(dict_space()).set_obs_normalizer(np.zeros(3), np.ones(3))  # the dict's 'state' part is normalised


# ---------------------------------------------------------------------------------------------------------- learning


def test_reduces_its_loss_and_reproduces_a_linear_expert():
    data = LinearExpert()
    agent = make(hidden_dim=64, batch_size=128)
    agent.set_obs_normalizer(data.obs.mean(0).numpy(), data.obs.std(0, unbiased=False).numpy())
    first = agent.update(data.sample(), step=0)["bc_loss"]
    before = data.eval_mse(agent)
    for k in range(1, 400):
        last = agent.update(data.sample(), step=k)["bc_loss"]
    assert last < 0.1 * first
    after = data.eval_mse(agent)
    assert after < 0.005 and after < 0.05 * before, (before, after)


def test_gaussian_bc_learns_the_mean_and_the_noise_level():
    data = LinearExpert(noise=0.1)
    agent = make(hidden_dim=64, batch_size=128, policy="gaussian", lr=5e-3)
    agent.set_obs_normalizer(data.obs.mean(0).numpy(), data.obs.std(0, unbiased=False).numpy())
    first = agent.update(data.sample(), step=0)["bc_loss"]
    for k in range(1, 1000):
        m = agent.update(data.sample(), step=k)
    assert m["bc_loss"] < first - 1.5
    assert data.eval_mse(agent) < 0.01
    assert abs(agent.actor.log_std.detach().exp().mean().item() - 0.1) < 0.04  # std of the dataset's action noise
    samples = np.stack([agent.act(np.full(3, 3.0, np.float32), step=0, eval_mode=False) for _ in range(300)])
    assert 0.05 < samples.std(0).mean() < 0.15


@pytest.mark.parametrize("space_fn", [pixel_space, dict_space])
def test_pixel_update_with_augmentation_trains_the_encoder(space_fn):
    space = space_fn()
    batch = random_batch(space)

    def run(seed, pad):
        agent = make(space, augment_pad=pad)
        enc = params(agent.encoder)
        torch.manual_seed(seed)
        loss = agent.update(batch, step=0)["bc_loss"]
        assert not same(enc, agent.encoder)  # no critic: the BC loss trains the encoder
        return loss

    assert run(1, 0) == run(2, 0)
    assert run(1, 4) != run(2, 4)


def test_pixel_bc_learns_an_image_dependent_action():
    # bright left half -> action (0.5, -0.5); bright right half -> (-0.5, 0.5); shifted by up to 4 px when training
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 2, (64,), generator=g)
    img = torch.zeros(64, *pixel_space().shape, dtype=torch.uint8)
    img[label == 1, :, :, :8] = 200
    img[label == 0, :, :, 8:] = 200
    action = torch.stack([label * 1.0 - 0.5, 0.5 - label * 1.0], dim=1)
    agent = make(pixel_space(), batch_size=32)
    losses = []
    for k in range(150):
        i = torch.randint(0, 64, (32,), generator=g)
        batch = Batch(img[i], action[i], torch.zeros(32, 1), torch.zeros(32, 1), img[i])
        losses.append(agent.update(batch, step=k)["bc_loss"])
    assert np.mean(losses[-10:]) < 0.2 * np.mean(losses[:10])
    for c in (0, 1):
        x = img[label == c][0].numpy()
        assert np.allclose(agent.act(x, step=0, eval_mode=True), action[label == c][0].numpy(), atol=0.15)


@pytest.mark.parametrize("policy", ["deterministic", "gaussian"])
def test_state_dict_round_trip_gives_identical_updates(policy):
    a = make(policy=policy)
    a.set_obs_normalizer(np.full(3, 0.5), np.full(3, 2.0))
    batch = random_batch(state_space())
    for i in range(3):
        a.update(batch, step=i)
    state = through_checkpoint(a.state_dict())
    b = make(seed=5, policy=policy)
    b.load_state_dict(state)
    assert b.num_updates == 3 and torch.equal(b.obs_normalizer.std, a.obs_normalizer.std)
    assert a.update(batch, step=3) == b.update(batch, step=3)
    assert all(torch.equal(x, y) for x, y in zip(a.actor.parameters(), b.actor.parameters()))
    with pytest.raises(ConfigError, match="BC"):
        b.load_state_dict({"actor": state["actor"]})


def test_pixel_round_trip_and_act():
    a = make(pixel_space())
    batch = random_batch(pixel_space())
    a.update(batch, step=0)
    b = make(pixel_space(), seed=3)
    b.load_state_dict(through_checkpoint(a.state_dict()))
    torch.manual_seed(0)
    ma = a.update(batch, step=1)
    torch.manual_seed(0)
    assert ma == b.update(batch, step=1)
    obs = np.random.default_rng(0).integers(0, 256, (6, 16, 16), dtype=np.uint8)
    act = a.act(obs, step=0, eval_mode=True)
    assert act.shape == (2,) and act.dtype == np.float32 and np.array_equal(act, b.act(obs, step=0, eval_mode=True))
    # deterministic BC does not explore; num_seed_steps gives uniform actions when asked for
    assert np.array_equal(a.act(obs, step=0, eval_mode=False), act)
    seeded = make(num_seed_steps=4)
    uniform = np.stack([seeded.act(np.zeros(3, np.float32), step=1, eval_mode=False) for _ in range(100)])
    assert uniform.min() < -0.8 and uniform.max() > 0.8 and math.isfinite(float(uniform.sum()))
