"""Circular padding in the map's own layout (gap_study.nets.padding): the values and gradients
of torch's ``F.pad(mode="circular")`` and ``nn.Conv2d(padding_mode="circular")``, without
leaving channels_last."""

import pytest
import torch
import torch.nn.functional as F

from gap_study.nets import padding
from gap_study.nets.architecture import ModelConfig
from gap_study.nets.models import build_model
from gap_study.nets.padding import CircularConv2d, CircularConvolution, circular_pad, pad2d

CHANNELS_LAST = torch.channels_last


def random_map(shape, seed=0, *, channels_last=True, dtype=torch.float32):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return x.contiguous(memory_format=CHANNELS_LAST) if channels_last else x


@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 1, 0, 1), (2, 3, 1, 0), (5, 5, 4, 4)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_circular_pad_gives_torchs_values_and_gradient_in_the_inputs_layout(pads,
                                                                            channels_last):
    x = random_map((2, 3, 4, 5), channels_last=channels_last, dtype=torch.float64)
    x.requires_grad_()
    ours, torchs = circular_pad(x, pads), F.pad(x, pads, mode="circular")
    assert torch.equal(ours, torchs)  # copies of the same values
    layout = CHANNELS_LAST if channels_last else torch.contiguous_format
    assert ours.is_contiguous(memory_format=layout)
    grad = random_map(ours.shape, seed=1, dtype=torch.float64)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    (torchs_grad,) = torch.autograd.grad(torchs, x, grad)
    torch.testing.assert_close(ours_grad, torchs_grad, rtol=0, atol=1e-12)
    assert ours_grad.is_contiguous(memory_format=layout)


def test_circular_pad_sums_each_positions_copies_in_the_padded_maps_row_major_order():
    # the order the blurmax kernel's backward follows: the map's own value, then the copy in
    # the padded column, then in the padded row, then in the corner
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    grad = torch.zeros(1, 1, 3, 3)  # the map padded by one row and column after it
    grad[0, 0, 0, 0], grad[0, 0, 0, 2], grad[0, 0, 2, 0], grad[0, 0, 2, 2] = 1, 1e-8, -1, 3e-8
    (ours,) = torch.autograd.grad(circular_pad(x, (0, 1, 0, 1)), x, grad)
    assert ours[0, 0, 0, 0] == ((torch.tensor(1.0) + 1e-8) + -1.0) + 3e-8


def test_circular_pad_refuses_to_wrap_around_more_than_once():
    with pytest.raises(ValueError, match="larger than the map 2x3: it wraps around at most"):
        circular_pad(torch.zeros(1, 1, 2, 3), (0, 0, 3, 0))


def test_a_pad_first_taken_in_inference_mode_serves_training_after():
    # the gather's index is cached per map size: one made under inference mode would be an
    # inference tensor, which autograd refuses to save
    padding._sources.cache_clear()
    x = random_map((1, 2, 9, 7))
    with torch.inference_mode():
        circular_pad(x, (1, 1, 1, 1))
    circular_pad(x.requires_grad_(), (1, 1, 1, 1)).sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect"])
def test_every_padding_mode_keeps_channels_last(padding):
    x = random_map((2, 8, 6, 6))
    assert pad2d(x, (1, 1, 1, 1), padding).is_contiguous(memory_format=CHANNELS_LAST)


@pytest.mark.parametrize("input_needs_grad", [True, False])
def test_circular_conv_is_torchs_circular_conv_with_the_same_state_dict(input_needs_grad):
    torch.manual_seed(0)
    ours = CircularConv2d(4, 6, 3, padding=1, bias=False)
    torchs = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False, padding_mode="circular")
    torchs.load_state_dict(ours.state_dict())
    x = random_map((3, 4, 7, 7)).requires_grad_(input_needs_grad)
    out, expected = ours(x), torchs(x)
    torch.testing.assert_close(out, expected)  # float32 tolerances
    assert out.is_contiguous(memory_format=CHANNELS_LAST)
    assert ("CircularConvolution" in type(out.grad_fn).__name__) == input_needs_grad
    grad = random_map(out.shape, seed=2)
    wrt = ([x] if input_needs_grad else [])
    torch.testing.assert_close(torch.autograd.grad(out, [*wrt, ours.weight], grad),
                               torch.autograd.grad(expected, [*wrt, torchs.weight], grad))


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize(("kernel", "pads"), [((3, 3), (1, 1, 1, 1)), ((5, 5), (2, 2, 2, 2)),
                                              ((2, 4), (2, 1, 0, 1)), ((1, 1), (0, 0, 0, 0))])
def test_circular_convolution_has_the_gradients_of_a_convolution_of_the_padded_map(
        kernel, pads, channels_last):
    # its own backward takes the input's gradient as a circular convolution of the output's:
    # the same sums in another order (float32 tolerances), weight and bias bit for bit
    generator = torch.Generator().manual_seed(3)
    x = random_map((3, 4, 6, 7), channels_last=channels_last).requires_grad_()
    weight = torch.randn(5, 4, *kernel, generator=generator).requires_grad_()
    bias = torch.randn(5, generator=generator).requires_grad_()
    layout = CHANNELS_LAST if channels_last else torch.contiguous_format
    out = CircularConvolution.apply(x, weight, bias, pads)
    padded = F.pad(x, pads, mode="circular").contiguous(memory_format=layout)
    expected = F.conv2d(padded, weight, bias)
    assert torch.equal(out, expected)
    grad = random_map(out.shape, seed=4, channels_last=channels_last)
    ours = torch.autograd.grad(out, [x, weight, bias], grad)
    torchs = torch.autograd.grad(expected, [x, weight, bias], grad)
    torch.testing.assert_close(ours[0], torchs[0])
    assert torch.equal(ours[1], torchs[1]) and torch.equal(ours[2], torchs[2])
    assert ours[0].is_contiguous(memory_format=layout)


def test_the_circular_convolutions_input_gradient_is_the_flipped_kernels_bit_for_bit():
    # at the study's shapes and layout: the circular convolution of the output's gradient,
    # padded the other way round in the input's layout, with the kernel flipped
    generator = torch.Generator().manual_seed(5)
    for channels, side in ((16, 10), (32, 5)):
        x = random_map((4, channels, side, side)).requires_grad_()
        weight = torch.randn(2 * channels, channels, 3, 3, generator=generator)
        grad = random_map((4, 2 * channels, side, side), seed=6).contiguous()  # another layout
        (ours,) = torch.autograd.grad(CircularConvolution.apply(x, weight, None, (1, 1, 1, 1)),
                                      x, grad)
        turned = F.pad(grad, (1, 1, 1, 1), mode="circular").contiguous(
            memory_format=CHANNELS_LAST)
        assert torch.equal(ours, F.conv2d(turned, weight.flip(2, 3).transpose(0, 1)))
        assert ours.is_contiguous(memory_format=CHANNELS_LAST)


def test_a_second_derivative_through_the_circular_convolution_raises_not_misleads():
    # its backward is written out, not a graph: create_graph must not give a wrong answer
    x = random_map((1, 2, 5, 5)).requires_grad_()
    weight = torch.randn(3, 2, 3, 3, requires_grad=True)
    out = CircularConvolution.apply(x, weight, None, (1, 1, 1, 1))
    (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="marked with @once_differentiable"):
        grad_x.square().sum().backward()  # a gradient penalty's second step


def test_a_circular_conv_with_a_stride_pads_and_lets_autograd_take_the_gradient():
    torch.manual_seed(0)
    ours = CircularConv2d(4, 6, 3, padding=1, bias=True)
    ours.stride = (2, 2)
    torchs = torch.nn.Conv2d(4, 6, 3, padding=1, stride=2, padding_mode="circular")
    torchs.load_state_dict(ours.state_dict())
    x = random_map((2, 4, 8, 8)).requires_grad_()
    out, expected = ours(x), torchs(x)
    assert "CircularConvolution" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(torch.autograd.grad(out.sum(), x), torch.autograd.grad(
        expected.sum(), x))


@pytest.mark.parametrize("downsample", ["max", "blurmax", "aps"])
@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect"])
def test_every_backbone_layer_keeps_a_channels_last_map_channels_last(downsample, padding):
    torch.manual_seed(0)
    model = build_model(ModelConfig(head="gap", in_channels=1, image_size=20, num_classes=10,
                                    downsample=downsample, padding=padding))
    x = random_map((2, 1, 20, 20))
    for layer in model.to(memory_format=CHANNELS_LAST).features:
        x = layer(x)
        assert x.is_contiguous(memory_format=CHANNELS_LAST), layer
    assert sum(isinstance(layer, CircularConv2d) for layer in model.features) == (
        3 if padding == "circular" else 0)
