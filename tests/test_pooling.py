import math

import pytest
import torch
import torch.nn.functional as F

from gap_study.nets.architecture import POOLED_HEAD_NAMES
from gap_study.nets.pooling import (
    AVG_POOL2D_MIN_CHANNELS,
    GLOBAL_POOLS,
    MAX_POOL2D_MIN_BYTES,
    GeMPool,
    global_avg_pool,
    global_avgmax_pool,
    global_gem_pool,
    global_lse_pool,
    global_max_pool,
    global_sum_pool,
    make_global_pool,
    sum_vs_average,
)

# each pooling head's functional op, with the module's default options
OPS = {"gap": global_avg_pool, "gmp": global_max_pool, "gsp": global_sum_pool,
       "gem": global_gem_pool, "lse": global_lse_pool, "avgmax": global_avgmax_pool}

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_channels_last_maps_without_grad_give_the_adaptive_pools_values(dtype):
    # big enough for the channels_last inference path to call torch's pooling kernels
    channels, size = AVG_POOL2D_MIN_CHANNELS * 2, 8
    batch = -(-MAX_POOL2D_MIN_BYTES // (channels * size * size * dtype.itemsize))
    x = torch.randn(batch, channels, size, size, dtype=dtype,
                    generator=torch.Generator().manual_seed(0))
    x[0, 1, 2, 3] = float("nan")  # a NaN anywhere in the map makes its maximum NaN, as amax
    expected_avg = F.adaptive_avg_pool2d(x, 1)
    expected_max = x.amax(dim=(2, 3), keepdim=True)
    view = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(global_avg_pool(view, flatten=False), expected_avg, equal_nan=True)
    torch.testing.assert_close(global_max_pool(view, flatten=False), expected_max, equal_nan=True,
                               rtol=0, atol=0)
    torch.testing.assert_close(global_max_pool(view), expected_max.flatten(1), equal_nan=True)
    assert global_avg_pool(view).shape == global_max_pool(view).shape == (batch, channels)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gmp_gradient_equals_amax_autograd_even_with_ties_in_every_layout(dtype):
    # global_max_pool has its own backward; it must give exactly amax's gradient, ties split
    x = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(0), dtype=dtype).relu()
    x[0, 0] = 0.0  # a dead ReLU channel: every position ties
    x[1, 1, 2, :3] = x[1, 1].max() + 1  # three positions tie for the maximum
    grad = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=dtype)
    leaf = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(leaf.amax(dim=(2, 3)), leaf, grad)
    for layout, view in _layouts(x).items():
        leaf = view.detach().requires_grad_()
        (actual,) = torch.autograd.grad(global_max_pool(leaf), leaf, grad)
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=layout)
    torch.testing.assert_close(expected[1, 1, 2, :3], grad[1, 1].expand(3) / 3)


def test_registry_is_keyed_by_head_name_and_each_module_computes_its_op():
    assert tuple(GLOBAL_POOLS) == POOLED_HEAD_NAMES  # the names params.yaml is checked against
    x = torch.randn(2, 3, 4, 4)
    for name, op in OPS.items():
        module = make_global_pool(name)
        assert type(module) is GLOBAL_POOLS[name]
        torch.testing.assert_close(module(x), op(x))
        trainable = [n for n, _ in module.named_parameters()]
        assert trainable == (["p"] if name == "gem" else [])


def test_unknown_pool_name_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown global pool 'gapp'; allowed: avgmax, gap, gem"):
        make_global_pool("gapp")


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (1, 2, 3, 4, 5)])
def test_pooling_rejects_tensors_that_are_not_4d(shape):
    with pytest.raises(ValueError, match=r"expects \(N, C, H, W\)"):
        global_avg_pool(torch.zeros(shape))


# ---------------------------------------------------------------- gem, lse, avgmax


def _direct_gem(x, p, eps=1e-6):
    n, c = x.shape[:2]
    out = torch.empty(n, c, dtype=x.dtype)
    for i in range(n):
        for j in range(c):
            values = [max(float(v), eps) ** p for v in x[i, j].flatten()]
            out[i, j] = (sum(values) / len(values)) ** (1 / p)
    return out


def _direct_lse(x, r):
    n, c = x.shape[:2]
    out = torch.empty(n, c, dtype=x.dtype)
    for i in range(n):
        for j in range(c):
            values = [math.exp(r * float(v)) for v in x[i, j].flatten()]
            out[i, j] = math.log(sum(values) / len(values)) / r
    return out


@pytest.mark.parametrize("p", [1.0, 2.0, 3.5])
def test_gem_matches_its_formula(p):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(global_gem_pool(x, p), _direct_gem(x, p))


@pytest.mark.parametrize("r", [0.5, 1.0, 10.0])
def test_lse_matches_its_formula(r):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(global_lse_pool(x, r), _direct_lse(x, r))


def test_lse_gives_the_same_values_with_and_without_autograd():
    # without a gradient to compute, global_lse_pool takes a faster path than logsumexp
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64) * 30
    x[0, 0, 0, 0], x[1, 1] = math.inf, -math.inf  # an infinite maximum; a map of -inf
    for r in (0.5, 10.0, 500.0):
        with torch.no_grad():
            fast = global_lse_pool(x, r)
        slow = global_lse_pool(x.clone().requires_grad_(), r).detach()
        torch.testing.assert_close(fast, slow)
        assert fast[0, 0] == math.inf and fast[1, 1] == -math.inf


def test_gem_with_p_1_is_gap_and_large_p_approaches_gmp():
    x = torch.rand(3, 4, 5, 6, dtype=torch.float64) + 0.1  # positive: the clamp does nothing
    torch.testing.assert_close(global_gem_pool(x, 1.0), global_avg_pool(x))
    torch.testing.assert_close(global_gem_pool(x, 200.0), global_max_pool(x), atol=0.02, rtol=0)
    assert (global_gem_pool(x, 200.0) <= global_max_pool(x) + 1e-12).all()


def test_lse_with_large_r_approaches_gmp_and_small_r_approaches_gap():
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(global_lse_pool(x, 500.0), global_max_pool(x), atol=0.01, rtol=0)
    torch.testing.assert_close(global_lse_pool(x, 1e-4), global_avg_pool(x), atol=1e-3, rtol=0)
    # huge r * x must not overflow
    assert torch.isfinite(global_lse_pool(x * 1000, 500.0)).all()


def test_avgmax_concatenates_gap_then_gmp():
    x = torch.randn(2, 3, 4, 4)
    out = global_avgmax_pool(x)
    assert out.shape == (2, 6)
    torch.testing.assert_close(out[:, :3], global_avg_pool(x))
    torch.testing.assert_close(out[:, 3:], global_max_pool(x))
    assert global_avgmax_pool(x, flatten=False).shape == (2, 6, 1, 1)


@pytest.mark.parametrize("name", sorted(GLOBAL_POOLS))
def test_each_module_reports_the_features_it_gives_per_channel(name):
    module = make_global_pool(name)
    out = module(torch.randn(2, 3, 4, 4))
    assert out.shape == (2, 3 * module.feat_mult())
    assert module.feat_mult() == (2 if name == "avgmax" else 1)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_op_keeps_dtype_and_shape_in_every_layout(name, dtype):
    x = torch.randn(2, 3, 5, 4, dtype=dtype)
    width = 3 * make_global_pool(name).feat_mult()
    expected = OPS[name](x.contiguous())
    for layout, view in _layouts(x).items():
        out = OPS[name](view)
        assert out.shape == (2, width) and out.dtype == dtype, layout
        torch.testing.assert_close(out, expected, msg=layout)
        assert OPS[name](view, flatten=False).shape == (2, width, 1, 1)


@pytest.mark.parametrize("name", ["gap", "gsp", "gem", "lse", "avgmax"])
def test_every_smooth_op_passes_gradcheck_in_float64(name):
    x = (torch.rand(2, 3, 3, 4, dtype=torch.float64) + 0.1).requires_grad_()  # clamp-free
    assert torch.autograd.gradcheck(OPS[name], (x,))


def test_gmp_passes_gradcheck_where_the_maximum_is_unique():
    x = torch.randperm(2 * 3 * 12, dtype=torch.float64).reshape(2, 3, 3, 4) / 10
    assert torch.autograd.gradcheck(global_max_pool, (x.requires_grad_(),))


def test_gem_gradient_reaches_its_learnable_exponent():
    x = torch.rand(2, 3, 3, 4, dtype=torch.float64) + 0.1
    p = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, p: global_gem_pool(x, p), (x.requires_grad_(), p))


def test_make_global_pool_builds_the_module_of_each_head():
    gem = make_global_pool("gem", gem_p=4.0)
    assert isinstance(gem, GeMPool) and gem.p.item() == 4.0
    assert [n for n, _ in gem.named_parameters()] == ["p"]
    lse = make_global_pool("lse", lse_r=2.0)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(lse(x), global_lse_pool(x, 2.0))
    assert "r=2.0" in repr(lse)
    torch.testing.assert_close(make_global_pool("gmp")(x), global_max_pool(x))


def test_sum_over_average_is_h_times_w_up_to_float_rounding():
    check = sum_vs_average(side=5, channels=8)
    assert check["factor"] == 25 and check["ratio_mean"] == pytest.approx(25, rel=1e-6)
    # torch's CPU mean is the same sum divided by H * W: that division and the ratio's are
    # two float32 roundings (unit roundoff 2**-24 each), 2**-23 together, which this machine
    # reaches. A mean taken as the sum times 1 / (H * W) would add a third: 2**-22 allows it.
    assert check["max_relative_deviation"] <= 2**-22
