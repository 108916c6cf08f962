import pytest
import torch
import torch.nn.functional as F

from gap_study.pooling import (
    GLOBAL_POOLS,
    GlobalPool2d,
    get_global_pool,
    global_avg_pool,
    global_max_pool,
    global_sum_pool,
)

SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (4, 64, 7, 7), (3, 16, 8, 8), (2, 5, 1, 9)]


def _layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values in contiguous, channels_last and non-contiguous (transposed) memory."""
    return {
        "contiguous": x.contiguous(),
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "transposed": x.transpose(2, 3).contiguous().transpose(2, 3),
        "strided": torch.stack([x, x], dim=2).flatten(1, 2)[:, ::2],  # every other channel
    }


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gap_and_gmp_equal_torch_adaptive_pools_in_every_layout(shape, dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    expected_avg = F.adaptive_avg_pool2d(x, 1).flatten(1)
    expected_max = F.adaptive_max_pool2d(x, 1).flatten(1)
    for layout, view in _layouts(x).items():
        torch.testing.assert_close(global_avg_pool(view), expected_avg, msg=layout)
        torch.testing.assert_close(global_max_pool(view), expected_max, msg=layout)
        assert global_avg_pool(view).dtype == dtype


@pytest.mark.parametrize("op", [global_avg_pool, global_max_pool, global_sum_pool])
def test_pooling_keeps_a_1x1_map_without_flatten(op):
    x = torch.randn(2, 3, 4, 5)
    assert op(x).shape == (2, 3)
    assert op(x, flatten=False).shape == (2, 3, 1, 1)
    torch.testing.assert_close(op(x, flatten=False).flatten(1), op(x))


@pytest.mark.parametrize("dx, dy", [(1, 0), (0, 3), (-2, 5), (7, -7)])
def test_gap_and_gmp_ignore_a_circular_shift_of_the_map(dx, dy):
    x = torch.randn(3, 8, 7, 7, dtype=torch.float64)
    rolled = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    torch.testing.assert_close(global_avg_pool(rolled), global_avg_pool(x))
    torch.testing.assert_close(global_max_pool(rolled), global_max_pool(x))


@pytest.mark.parametrize("shape", SHAPES)
def test_gsp_is_gap_times_h_times_w(shape):
    x = torch.randn(shape, dtype=torch.float64)
    h, w = shape[2:]
    torch.testing.assert_close(global_sum_pool(x), global_avg_pool(x) * h * w)


def test_pooling_gradients_match_the_definitions():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    global_avg_pool(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / 20))
    x.grad = None
    global_sum_pool(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
    x.grad = None
    global_max_pool(x).sum().backward()
    # exactly one position per (n, c) gets the gradient (random values: no ties)
    assert torch.equal(x.grad.sum(dim=(2, 3)), torch.ones(2, 3, dtype=torch.float64))
    assert torch.equal(x.grad.amax(dim=(2, 3)), torch.ones(2, 3, dtype=torch.float64))


def test_registry_is_keyed_by_head_name_and_module_selects_the_op():
    assert set(GLOBAL_POOLS) == {"gap", "gmp", "gsp"}
    x = torch.randn(2, 3, 4, 4)
    for name, op in GLOBAL_POOLS.items():
        module = GlobalPool2d(name)
        torch.testing.assert_close(module(x), op(x))
        assert name in repr(module)
        assert list(module.parameters()) == []


def test_unknown_pool_name_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown global pool 'gapp'; allowed: gap, gmp, gsp"):
        get_global_pool("gapp")
    with pytest.raises(ValueError, match="allowed"):
        GlobalPool2d("mean")


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (1, 2, 3, 4, 5)])
def test_pooling_rejects_tensors_that_are_not_4d(shape):
    with pytest.raises(ValueError, match=r"expects \(N, C, H, W\)"):
        global_avg_pool(torch.zeros(shape))
