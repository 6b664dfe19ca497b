"""Slot Attention: permutation equivariance, shapes, the frozen encoder, poolings."""

import pytest
import torch

from pixelrl.errors import ConfigError
from pixelrl.nets.slots import (FrozenSlotEncoder, SlotAttention, SlotAutoencoder, SlotConfig, SlotEncoder,
                                make_pooling)

SMALL = SlotConfig(image_size=32, num_slots=4, slot_dim=16, num_iterations=3, mlp_hidden=32, cnn_channels=8,
                   encoder_stride=2, decoder_channels=8)


def test_slot_attention_is_permutation_equivariant():
    torch.manual_seed(0)
    sa = SlotAttention(num_iterations=7, slot_dim=64, input_dim=32, mlp_hidden=128)
    inputs = torch.randn(3, 50, 32)
    slots = torch.randn(3, 6, 64)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out, attn = sa(inputs, slots)
    out_p, attn_p = sa(inputs, slots[:, perm])
    torch.testing.assert_close(out_p, out[:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn_p, attn[..., perm], atol=1e-6, rtol=1e-5)
    # and the slots differ from each other (the check is not vacuous)
    assert (out[:, 0] - out[:, 1]).abs().max() > 1e-3


def test_encoder_equivariant_to_initial_noise_permutation():
    torch.manual_seed(0)
    enc = SlotEncoder(SMALL)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    noise = torch.randn(2, 4, 16)
    perm = torch.tensor([2, 3, 1, 0])
    a, _ = enc(x, noise)
    b, _ = enc(x, noise[:, perm])
    torch.testing.assert_close(b, a[:, perm], atol=1e-5, rtol=1e-5)


def test_autoencoder_shapes_masks_and_loss_gradient():
    torch.manual_seed(0)
    ae = SlotAutoencoder(SMALL)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    recon, masks, slots = ae(x)
    assert recon.shape == (2, 3, 32, 32) and masks.shape == (2, 4, 1, 32, 32) and slots.shape == (2, 4, 16)
    torch.testing.assert_close(masks.sum(1), torch.ones(2, 1, 32, 32))
    loss = ae.loss(x)
    loss.backward()
    assert all(p.grad is not None for p in ae.encoder.attention.parameters())


def test_frozen_encoder_is_deterministic_and_has_no_gradients():
    enc = SlotEncoder(SMALL)
    frozen = FrozenSlotEncoder(enc, noise_seed=3)
    x = torch.randint(0, 256, (2, 6, 32, 32), dtype=torch.uint8)  # two stacked RGB frames
    a, b = frozen(x), frozen(x)
    assert a.shape == (2, 8, 16)
    torch.testing.assert_close(a, b)
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.train()
    assert not frozen.encoder.training
    cached = FrozenSlotEncoder(enc, noise_seed=3, cache_size=3)  # the cache gives the same slots, also when it fills
    torch.testing.assert_close(cached(x), a)
    y = torch.cat([x, torch.randint(0, 256, (2, 6, 32, 32), dtype=torch.uint8)])
    torch.testing.assert_close(cached(y), frozen(y))
    torch.testing.assert_close(cached(x), a)


@pytest.mark.parametrize("name,invariant", [("transformer", True), ("relation", True), ("mlp", False)])
def test_poolings(name, invariant):
    torch.manual_seed(0)
    pool = make_pooling(name, slot_dim=16, num_slots=6)
    s = torch.randn(5, 6, 16)
    out = pool(s)
    assert out.shape == (5, pool.out_dim)
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    same = torch.allclose(pool(s[:, perm]), out, atol=1e-5)
    assert same == invariant


def test_bad_config_is_one_clear_error():
    with pytest.raises(ConfigError, match="image_size"):
        SlotConfig(image_size=60)
    with pytest.raises(ConfigError, match="pooling"):
        make_pooling("max", 16, 6)
