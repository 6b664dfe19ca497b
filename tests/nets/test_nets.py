import pytest
import torch

from pixelrl.nets import Actor, ConvEncoder, Critic, EnsembleLinear, ObsEncoder, ScalarQHead, conv_output_size
from pixelrl.nets.actor import clamp_straight_through, sample_action


@pytest.mark.parametrize(
    "size,strides,expected",
    [(84, (2, 1, 1, 1), 35), (64, (2, 2, 1, 1), 11), (32, (2, 1, 1, 1), 9), (32, (2, 2, 1, 1), 3)],
)
def test_encoder_output_size(size, strides, expected):
    assert conv_output_size(size, strides) == expected
    enc = ConvEncoder(9, (size, size), (32, 16, 16, 8), strides)
    assert enc.repr_dim == 8 * expected * expected
    out = enc(torch.randint(0, 256, (2, 9, size, size), dtype=torch.uint8))
    assert out.shape == (2, enc.repr_dim)


def test_published_encoder_size():
    assert ConvEncoder(9, (84, 84)).repr_dim == 32 * 35 * 35 == 39200


def test_encoder_folded_normalisation_matches_reference_math():
    torch.manual_seed(0)
    enc = ConvEncoder(3, (16, 16), (8, 8), (2, 1))
    x = torch.randint(0, 256, (2, 3, 16, 16)).float()
    ref = enc.convnet(x / 255.0 - 0.5)
    ref = ref.permute(0, 2, 3, 1).reshape(2, -1)
    torch.testing.assert_close(enc(x), ref, atol=1e-5, rtol=1e-5)
    enc.to(memory_format=torch.channels_last)
    torch.testing.assert_close(enc(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-5, rtol=1e-5)


def test_obs_encoder_kinds():
    s = ObsEncoder("state", state_dim=5)
    assert s.repr_dim == 5 and not list(s.parameters())
    x = torch.randn(3, 5)
    assert torch.equal(s(x), x)
    d = ObsEncoder("dict", pixel_shape=(3, 32, 32), state_dim=4, channels=(8, 8), strides=(2, 1))
    assert d.repr_dim == 8 * 13 * 13 + 4
    out = d({"pixels": torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "state": torch.ones(2, 4)})
    assert out.shape == (2, d.repr_dim) and torch.equal(out[:, -4:], torch.ones(2, 4))


def test_ensemble_linear_equals_separate_linears():
    torch.manual_seed(0)
    layer = EnsembleLinear(3, 7, 5)
    x = torch.randn(4, 7)
    out = layer(x)
    assert out.shape == (3, 4, 5)
    for e in range(3):
        torch.testing.assert_close(out[e], x @ layer.weight[e] + layer.bias[e])
    x3 = torch.randn(3, 4, 7)
    torch.testing.assert_close(layer(x3)[1], x3[1] @ layer.weight[1] + layer.bias[1])
    # each member orthogonal: W^T W = I on the smaller side
    w = layer.weight[0]
    torch.testing.assert_close(w.t() @ w, torch.eye(5), atol=1e-5, rtol=0)


def test_actor_and_critic_shapes():
    actor = Actor(20, 3, feature_dim=8, hidden_dim=16)
    critic = Critic(20, 3, feature_dim=8, hidden_dim=16)
    f = torch.randn(5, 20)
    mu = actor(f)
    assert mu.shape == (5, 3) and mu.abs().max() < 1
    raw = critic(f, mu)
    assert raw.shape == (2, 5, 1)
    assert critic.values(f, mu).shape == (2, 5, 1)
    assert isinstance(critic.head, ScalarQHead)
    target = torch.randn(5, 1)
    expected = ((raw[0] - target) ** 2).mean() + ((raw[1] - target) ** 2).mean()
    torch.testing.assert_close(critic.head.loss(raw, target), expected)


def test_sample_action_clip_and_straight_through():
    mu = torch.zeros(1000, 2, requires_grad=True)
    a = sample_action(mu, 1.0, clip=0.3)
    assert a.abs().max() <= 0.3 + 1e-6
    a = sample_action(mu, 10.0, clip=None)
    assert a.abs().max() <= 1.0 and (a.abs() > 0.99).float().mean() > 0.5
    a.sum().backward()
    assert torch.equal(mu.grad, torch.ones_like(mu))  # identity gradient through the clamp
    x = torch.tensor([2.0, -3.0, 0.5], requires_grad=True)
    y = clamp_straight_through(x)
    assert y.tolist() == pytest.approx([1 - 1e-6, -1 + 1e-6, 0.5])


def test_nature_cnn_shapes_scale_and_orthogonal_init():
    import pytest
    import torch

    from pixelrl.nets import NatureCNN, orthogonal_init

    net = NatureCNN(4)
    assert net.conv_dim == 3136 and net.repr_dim == 512
    x = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    # uint8 and the same pixels as float give the same features (the /255 happens inside)
    assert torch.equal(net(x), net(x.float()))
    assert NatureCNN(4, out_dim=0).repr_dim == 3136
    with pytest.raises(ValueError, match="too small"):
        NatureCNN(4, (32, 32))
    orthogonal_init(net, gain=2 ** 0.5, bias=0.0)
    w = net.fc[0].weight  # [512, 3136]: orthogonal rows scaled by the gain
    assert torch.allclose(w @ w.T, 2.0 * torch.eye(512), atol=1e-4)
    assert torch.count_nonzero(net.fc[0].bias) == 0
