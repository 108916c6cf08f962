"""BlurMaxPool2d's CPU kernel (gap_study.nets.blurmax_kernel, called through
gap_study.nets.blurmax_autograd) against the same layer in torch's ops (blurmax_by_torch):
the same values and gradients at float32 tolerance, the same gradient
rule for ties, the input's layout kept; torch's ops on other devices and without numba."""

import sys
import warnings

import numpy as np
import pytest
import torch
from kornia.filters.kernels import get_pascal_kernel_1d

import gap_study.nets
from gap_study.nets import downsample
from gap_study.nets.downsample import BlurMaxPool2d, blurmax_by_torch

pytest.importorskip("numba", reason="the kernel needs numba (pyproject.toml)")

# torch.testing's float32 tolerances (rtol 1.3e-6, atol 1e-5): the filter's nine or 25
# products are summed in another order than torch's convolution, nothing else differs
SHAPES = [(8, 16, 20, 20), (8, 32, 10, 10), (3, 5, 7, 9), (2, 3, 5, 5)]


def random_map(shape, seed, *, channels_last=True, integers=False):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randint(0, 3, shape, generator=generator).float() if integers
         else torch.randn(shape, generator=generator))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def kernel_and_torch(layer, x, grad):
    """The layer's output and input gradient, then the same by torch's ops."""
    x = x.detach().requires_grad_()
    out = layer(x)
    assert out.grad_fn is not None and "BlurMax" in type(out.grad_fn).__name__
    expected = blurmax_by_torch(x, layer.kernel, layer.padding)
    return (out, *torch.autograd.grad(out, x, grad), expected,
            *torch.autograd.grad(expected, x, grad))


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect"])
@pytest.mark.parametrize("blur_size", [3, 5])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_kernel_gives_torchs_values_and_gradients_in_the_inputs_layout(
        shape, blur_size, padding, channels_last):
    layer = BlurMaxPool2d(shape[1], blur_size, padding)
    x = random_map(shape, blur_size, channels_last=channels_last)
    out_shape = (*shape[:2], (shape[2] + 1) // 2, (shape[3] + 1) // 2)
    grad = random_map(out_shape, 1, channels_last=channels_last)
    out, out_grad, expected, expected_grad = kernel_and_torch(layer, x, grad)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out_grad, expected_grad)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=layout)
    assert out_grad.is_contiguous(memory_format=layout)
    # deterministic: the same bits again
    again = kernel_and_torch(layer, x, grad)
    assert torch.equal(again[0], out) and torch.equal(again[1], out_grad)


@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect"])
def test_ties_route_each_windows_gradient_to_the_same_input_as_max_pool2d(padding):
    # values in {0, 1, 2}: most windows hold a tie, and a different rule would move a whole
    # gradient (not a rounding) to another input; zero padding ties with the map's zeros
    x = random_map((4, 8, 12, 12), 2, integers=True)
    grad = random_map((4, 8, 6, 6), 3)
    out, out_grad, expected, expected_grad = kernel_and_torch(BlurMaxPool2d(8, 3, padding), x,
                                                              grad)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out_grad, expected_grad)


def test_float64_is_as_close_as_its_rounding():
    x = random_map((2, 4, 12, 10), 4).double()
    grad = random_map((2, 4, 6, 5), 5).double()
    for padding in ("zeros", "circular", "reflect"):
        out, out_grad, expected, expected_grad = kernel_and_torch(
            BlurMaxPool2d(4, 5, padding).double(), x, grad)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-14)
        torch.testing.assert_close(out_grad, expected_grad, rtol=0, atol=1e-14)


def test_a_nan_input_gives_nan_where_torchs_ops_do():
    x = random_map((2, 4, 8, 8), 5)
    x[0, 1, 3, 4] = x[1, 2, 7, 7] = float("nan")
    layer = BlurMaxPool2d(4, 3, "circular")
    assert torch.equal(layer(x).isnan(), blurmax_by_torch(x, layer.kernel, "circular").isnan())


def test_other_dtypes_and_devices_and_small_maps_take_torchs_ops():
    layer = BlurMaxPool2d(4, 5, "reflect")
    for x in (torch.rand(2, 4, 8, 8, dtype=torch.bfloat16),
              torch.rand(2, 4, 8, 8, device="meta")):
        assert downsample._cpu_kernel_for(x, 5) is None
        assert layer.to(x.dtype)(x).shape == (2, 4, 4, 4)
    with pytest.raises(RuntimeError, match=r"[Pp]adding size should be less than"):
        layer.float()(torch.rand(1, 4, 2, 2))  # torch's ops refuse it, not the kernel


def test_without_numba_the_layer_warns_once_and_takes_torchs_ops(monkeypatch):
    downsample._cpu_kernel.cache_clear()
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    for module in ("blurmax_kernel", "blurmax_autograd"):
        monkeypatch.delitem(sys.modules, f"gap_study.nets.{module}", raising=False)
        monkeypatch.delattr(gap_study.nets, module, raising=False)
    try:
        layer = BlurMaxPool2d(4, 3, "circular")
        x = random_map((2, 4, 8, 8), 6).requires_grad_()
        with pytest.warns(RuntimeWarning, match="without their CPU kernel"):
            out = layer(x)
        assert "BlurMax" not in type(out.grad_fn).__name__
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            layer(x)
    finally:
        downsample._cpu_kernel.cache_clear()


def test_with_numba_a_kernel_that_does_not_load_stops_with_the_fix_not_other_numbers(
        monkeypatch):
    downsample._cpu_kernel.cache_clear()
    monkeypatch.setitem(sys.modules, "gap_study.nets.blurmax_kernel", None)  # import fails
    monkeypatch.delattr(gap_study.nets, "blurmax_kernel", raising=False)
    monkeypatch.delitem(sys.modules, "gap_study.nets.blurmax_autograd", raising=False)
    monkeypatch.delattr(gap_study.nets, "blurmax_autograd", raising=False)
    try:
        with pytest.raises(RuntimeError, match=r"did not load.*NUMBA_CACHE_DIR"):
            BlurMaxPool2d(4, 3, "zeros")(random_map((2, 4, 8, 8), 7))
    finally:
        downsample._cpu_kernel.cache_clear()


APS_SHAPES = [(8, 16, 20, 20), (8, 32, 10, 10), (3, 5, 6, 8), (4, 3, 2, 2)]  # even sides


def aps_by_torch(x, padding):
    """ApsMaxPool2d in torch's ops: the max of max_2x2_stride_1, then the sampling."""
    return downsample.adaptive_polyphase_sample(downsample.max_2x2_stride_1(x, padding))


@pytest.mark.parametrize("integers", [False, True])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect"])
@pytest.mark.parametrize("shape", APS_SHAPES)
def test_aps_on_the_kernel_is_aps_by_torch_bit_for_bit(shape, padding, channels_last, integers):
    # a max is exact, and the kernel routes each kept window's gradient, then the padding's
    # copies, in the order torch's ops sum the max's gradient (an order of the algorithms,
    # not of a CPU's vector kernels, so exact on every CPU); integers make most windows ties
    layer = downsample.ApsMaxPool2d(padding)
    x = random_map(shape, 6, channels_last=channels_last, integers=integers).requires_grad_()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    grad = random_map((*shape[:2], shape[2] // 2, shape[3] // 2), 7, channels_last=False)
    grad.view(-1)[::5] = -0.0  # each gradient as it is, sign of zero too
    grad = grad.contiguous(memory_format=layout)
    out, expected = layer(x), aps_by_torch(x, padding)
    assert type(out.grad_fn).__name__ == "_AdaptiveMaxBackward"  # the kernel, not torch's ops
    assert torch.equal(out, expected)
    (out_grad,), (expected_grad,) = (torch.autograd.grad(y, x, grad) for y in (out, expected))
    assert torch.equal(out_grad.view(torch.int32), expected_grad.view(torch.int32))
    assert out.is_contiguous(memory_format=layout) and out_grad.is_contiguous(
        memory_format=layout)
    with torch.no_grad():  # evaluation: no choice kept, torch's ops take another path
        assert torch.equal(layer(x), aps_by_torch(x, padding))


@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect"])
def test_aps_on_the_kernel_in_float64_is_aps_by_torch_bit_for_bit(padding):
    x = random_map((3, 4, 6, 4), 9, channels_last=False, integers=True).double()
    x.view(-1)[::11] = float("nan")  # a NaN wins its window, as in max_pool2d
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = random_map((3, 4, 3, 2), 10).double()
    out, expected = downsample.ApsMaxPool2d(padding)(x), aps_by_torch(x, padding)
    assert type(out.grad_fn).__name__ == "_AdaptiveMaxBackward"
    assert torch.equal(out.isnan(), expected.isnan())
    assert torch.equal(out.nan_to_num(), expected.nan_to_num())
    assert torch.equal(*(torch.autograd.grad(y, x, grad)[0] for y in (out, expected)))


def test_aps_takes_the_kernel_on_cpu_and_torchs_ops_elsewhere(monkeypatch):
    from gap_study.nets import blurmax_autograd

    calls = []
    monkeypatch.setattr(blurmax_autograd, "adaptive_max",
                        lambda x, padding, sample: calls.append(padding) or
                        aps_by_torch(x, padding))
    layer = downsample.ApsMaxPool2d("circular")
    assert layer(random_map((2, 4, 8, 8), 8)).shape == (2, 4, 4, 4)
    assert calls == ["circular"]
    layer(random_map((2, 4, 8, 8), 8).to(torch.bfloat16))
    assert calls == ["circular"]  # another dtype (or a CUDA map): torch's ops


def filter_in_the_kernels_order(maxed, size, padding):
    """BlurMaxPool2d's filter over the max's output ``(N, C, H, W)`` in NumPy, summed in the
    order the kernel documents: down the rows first (the rows of zero padding left out),
    then along each row at stride 2 (every padded column counted); each sum adds its
    products in turn to zero, in the map's dtype. Elementwise NumPy arithmetic rounds each
    operation once, so this is exact on every CPU."""
    taps = get_pascal_kernel_1d(size, norm=True).to(maxed.dtype).numpy()
    maxed, radius = maxed.numpy(), size // 2
    height, width = maxed.shape[-2:]
    mode = {"circular": "wrap", "reflect": "reflect"}.get(padding)
    rows = []
    for oy in range((height + 1) // 2):
        total = np.zeros_like(maxed[..., 0, :])
        for i, tap in enumerate(taps):
            row = 2 * oy + i - radius
            if 0 <= row < height:
                total = total + tap * maxed[..., row, :]
            elif mode is not None:
                source = np.pad(np.arange(height), radius, mode=mode)[row + radius]
                total = total + tap * maxed[..., source, :]
        rows.append(total)
    middle = np.stack(rows, axis=-2)
    pads = [(0, 0)] * (middle.ndim - 1) + [(radius, radius)]
    middle = np.pad(middle, pads, mode=mode or "constant")
    out = np.zeros_like(middle[..., : (width + 1) // 2])
    for i, tap in enumerate(taps):
        out = out + tap * middle[..., i : i + 2 * out.shape[-1] : 2]
    return torch.from_numpy(out)


def filter_gradient_in_the_kernels_order(grad, height, width, size, padding):
    """The filter's adjoint of ``grad`` ``(N, C, Ho, Wo)`` in NumPy, summed in the order the
    kernel documents: along each output row first (each output's products with the taps, in
    turn, onto the padded row, zero before; then each padded column, in turn, onto the
    column it copies), then down the rows (each row of the map sums, in turn onto zero, the
    (output row, tap) pairs whose padded row copies it, in that order)."""
    taps = get_pascal_kernel_1d(size, norm=True).to(grad.dtype).numpy()
    grad, radius = grad.numpy(), size // 2
    mode = {"circular": "wrap", "reflect": "reflect"}.get(padding)
    copied_column = np.pad(np.arange(width), radius, mode=mode or "constant")
    copied_row = np.pad(np.arange(height), radius, mode=mode or "constant")
    lines = []
    for oy in range(grad.shape[-2]):
        line = np.zeros((*grad.shape[:-2], width + 2 * radius), grad.dtype)
        for ox in range(grad.shape[-1]):
            for i, tap in enumerate(taps):
                line[..., 2 * ox + i] = line[..., 2 * ox + i] + tap * grad[..., oy, ox]
        for u in range(line.shape[-1]):
            if mode is not None and not radius <= u < radius + width:
                target = copied_column[u] + radius
                line[..., target] = line[..., target] + line[..., u]
        lines.append(line[..., radius:radius + width])
    rows = []
    for y in range(height):
        total = np.zeros_like(lines[0])
        for oy, line in enumerate(lines):
            for i, tap in enumerate(taps):
                padded = 2 * oy + i
                inside = radius <= padded < radius + height
                if (inside or mode is not None) and copied_row[padded] == y:
                    total = total + tap * line
        rows.append(total)
    return torch.from_numpy(np.stack(rows, axis=-2))


def every_order_case(test):
    """The cases of the summing-order tests: every shape, filter size (1: a single term; 5
    and 7: terms past the three summed in registers), padding and dtype."""
    for mark in (pytest.mark.parametrize("dtype", [torch.float32, torch.float64]),
                 pytest.mark.parametrize("padding", ["zeros", "circular", "reflect"]),
                 pytest.mark.parametrize("blur_size", [1, 3, 5, 7]),
                 pytest.mark.parametrize("shape", SHAPES)):
        test = mark(test)
    return test


@every_order_case
def test_the_kernel_sums_the_filter_in_its_documented_order_bit_for_bit(shape, blur_size,
                                                                        padding, dtype):
    # the order fixes the kernel's float rounding, and with it every blurmax model's weights:
    # a rewrite of the kernel that keeps it keeps the study's numbers
    x = random_map(shape, 11).to(dtype)
    with torch.no_grad():
        out = BlurMaxPool2d(shape[1], blur_size, padding).to(dtype)(x)
        expected = filter_in_the_kernels_order(downsample.max_2x2_stride_1(x, padding),
                                               blur_size, padding)
    assert torch.equal(out, expected)


@every_order_case
def test_the_kernels_gradient_sums_in_its_documented_order_bit_for_bit(shape, blur_size,
                                                                       padding, dtype):
    # the filter's adjoint in NumPy, then the max's gradient by torch's ops, which the
    # kernel's routing matches bit for bit (above)
    x = random_map(shape, 12).to(dtype).requires_grad_()
    out = BlurMaxPool2d(shape[1], blur_size, padding).to(dtype)(x)
    grad = random_map(tuple(out.shape), 13).to(dtype)
    (kernel_grad,) = torch.autograd.grad(out, x, grad)
    grad_maxed = filter_gradient_in_the_kernels_order(grad, *shape[2:], blur_size, padding)
    (expected,) = torch.autograd.grad(downsample.max_2x2_stride_1(x, padding), x,
                                      grad_maxed.contiguous(memory_format=torch.channels_last))
    assert torch.equal(kernel_grad, expected)
