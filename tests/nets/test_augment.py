import pytest
import torch

from pixelrl.nets.augment import RandomShift, random_shift, random_shift_index


def _img(n=6, c=3, h=32, w=32):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("fn", [random_shift, random_shift_index])
def test_shape_preserved(fn):
    x = _img()
    y = fn(x, 4)
    assert y.shape == x.shape and y.dtype == torch.float32


@pytest.mark.parametrize("fn", [random_shift, random_shift_index])
def test_zero_shift_is_identity(fn):
    x = _img()
    zero = torch.full((x.shape[0], 2), 4)  # offset pad into the padded image = no shift
    torch.testing.assert_close(fn(x, 4, zero), x.float(), atol=1e-2, rtol=0)


@pytest.mark.parametrize("fn", [random_shift, random_shift_index])
def test_known_shift_matches_roll_with_replicate(fn):
    x = _img(n=1, c=1, h=16, w=16)
    shifts = torch.tensor([[6, 1]])  # dx=+2, dy=-3
    y = fn(x, 4, shifts)[0, 0]
    xf = x.float()[0, 0]
    rows = (torch.arange(16) - 3).clamp(0, 15)
    cols = (torch.arange(16) + 2).clamp(0, 15)
    torch.testing.assert_close(y, xf[rows][:, cols], atol=1e-2, rtol=0)


def test_index_matches_grid_sample_nonsquare():
    x = _img(n=8, c=9, h=24, w=40)
    s = torch.randint(0, 9, (8, 2))
    torch.testing.assert_close(random_shift_index(x, 4, s), random_shift(x.float(), 4, s), atol=1e-2, rtol=0)


@pytest.mark.parametrize("fn", [random_shift, random_shift_index])
def test_shift_bounded_by_pad(fn):
    # a single bright pixel in the middle moves by at most pad in each direction
    n, pad = 64, 3
    x = torch.zeros(n, 1, 21, 21, dtype=torch.uint8)
    x[:, :, 10, 10] = 255
    torch.manual_seed(0)
    y = fn(x, pad)
    for i in range(n):
        pos = (y[i, 0] > 127).nonzero()
        assert len(pos) == 1
        dy, dx = (pos[0] - 10).tolist()
        assert abs(dy) <= pad and abs(dx) <= pad


def test_per_sample_shifts_differ():
    x = _img(n=1).expand(32, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    y = random_shift(x, 4)
    distinct = {tuple(y[i].flatten()[:200].round().tolist()) for i in range(32)}
    assert len(distinct) > 5


def test_pad_zero_and_module():
    x = _img()
    torch.testing.assert_close(random_shift(x, 0), x.float())
    torch.testing.assert_close(random_shift_index(x, 0, channels_last=False), x.float())
    assert RandomShift(4)(x.float()).shape == x.shape


def test_channels_last_flag():
    x = _img()
    assert random_shift_index(x, 4, channels_last=True).is_contiguous(memory_format=torch.channels_last)
    assert random_shift_index(x, 4, channels_last=False).is_contiguous()


def test_index_out_buffer():
    x = _img(n=4, c=3, h=16, w=16)
    s = torch.randint(0, 9, (4, 2))
    buf = torch.empty(4, 16, 16, 3)
    y = random_shift_index(x, 4, s, out=buf)
    assert y.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(y, random_shift_index(x, 4, s))
