"""Circular and reflect padding in the map's own layout (gap_study.nets.padding): the values and
gradients of torch's ``F.pad`` and ``nn.Conv2d(padding_mode=...)``, without leaving
channels_last."""

import pytest
import torch
import torch.nn.functional as F

from gap_study.nets import padding
from gap_study.nets.architecture import ModelConfig
from gap_study.nets.models import build_model
from gap_study.nets.padding import CircularConvolution, PaddedConv2d, gather_pad, pad2d

CHANNELS_LAST = torch.channels_last


def random_map(shape, seed=0, *, channels_last=True, dtype=torch.float32):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return x.contiguous(memory_format=CHANNELS_LAST) if channels_last else x


@pytest.mark.parametrize("mode", ["circular", "reflect"])
@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 1, 0, 1), (2, 3, 1, 0), (4, 4, 3, 3)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_gather_pad_gives_torchs_values_and_gradient_in_the_inputs_layout(pads, mode,
                                                                          channels_last):
    x = random_map((2, 3, 4, 5), channels_last=channels_last)
    x.requires_grad_()
    ours, torchs = gather_pad(x, pads, mode), F.pad(x, pads, mode=mode)
    assert torch.equal(ours, torchs)  # copies of the same values
    layout = CHANNELS_LAST if channels_last else torch.contiguous_format
    assert ours.is_contiguous(memory_format=layout)
    grad = random_map(ours.shape, seed=1)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    (torchs_grad,) = torch.autograd.grad(torchs, x, grad)
    # each position sums its copies' gradients in the padded map's row-major order, as
    # torch's reflect backward does; circular's sums are compared at float32 tolerances
    if mode == "reflect":
        assert torch.equal(ours_grad, torchs_grad)
    torch.testing.assert_close(ours_grad, torchs_grad)
    assert ours_grad.is_contiguous(memory_format=layout)


def test_a_one_channel_map_is_padded_in_both_layouts_alike():
    x = random_map((3, 1, 6, 6))
    assert torch.equal(gather_pad(x, (1, 1, 1, 1), "reflect"),
                       gather_pad(x.contiguous(), (1, 1, 1, 1), "reflect"))


@pytest.mark.parametrize(("mode", "pads", "limit"), [("circular", (0, 0, 3, 0), "at most 2"),
                                                    ("reflect", (2, 0, 0, 0), "at most 1")])
def test_padding_larger_than_the_mode_allows_is_refused_with_the_limit(mode, pads, limit):
    with pytest.raises(ValueError, match=f"{mode} padding of .* too large .*{limit}"):
        gather_pad(torch.zeros(1, 1, 2, 2), pads, mode)


@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect"])
def test_every_padding_mode_keeps_channels_last(padding):
    x = random_map((2, 8, 6, 6))
    assert pad2d(x, (1, 1, 1, 1), padding).is_contiguous(memory_format=CHANNELS_LAST)


@pytest.mark.parametrize("mode", ["circular", "reflect"])
@pytest.mark.parametrize("input_needs_grad", [True, False])
def test_a_padded_conv_is_torchs_conv_with_the_same_state_dict(mode, input_needs_grad):
    torch.manual_seed(0)
    ours = PaddedConv2d(4, 6, 3, padding=1, padding_mode=mode, bias=False)
    torchs = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False, padding_mode=mode)
    torchs.load_state_dict(ours.state_dict())
    x = random_map((3, 4, 7, 7)).requires_grad_(input_needs_grad)
    out, expected = ours(x), torchs(x)
    torch.testing.assert_close(out, expected)  # float32 tolerances
    assert out.is_contiguous(memory_format=CHANNELS_LAST)
    grad = random_map(out.shape, seed=2)
    wrt = [x, ours.weight] if input_needs_grad else [ours.weight]
    torch.testing.assert_close(
        torch.autograd.grad(out, wrt, grad),
        torch.autograd.grad(expected, [x, torchs.weight] if input_needs_grad else
                            [torchs.weight], grad))


def test_a_padded_conv_refuses_zero_padding():
    with pytest.raises(ValueError, match="circular or reflect, not 'zeros'"):
        PaddedConv2d(1, 1, 3, padding=1, padding_mode="zeros")


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
    ours = PaddedConv2d(4, 6, 3, padding=1, padding_mode="circular", bias=True)
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
    assert sum(isinstance(layer, PaddedConv2d) for layer in model.features) == (
        0 if padding == "zeros" else 3)


def test_a_pad_first_taken_in_inference_mode_serves_training_after():
    # the gather's index is cached per map size: one made under inference mode would be an
    # inference tensor, which autograd refuses to save
    padding._sources.cache_clear()
    x = random_map((1, 2, 9, 7))
    with torch.inference_mode():
        gather_pad(x, (1, 1, 1, 1), "circular")
    gather_pad(x.requires_grad_(), (1, 1, 1, 1), "circular").sum().backward()
    assert x.grad is not None
