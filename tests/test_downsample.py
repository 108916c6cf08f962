"""The mechanism factors: anti-aliased downsampling and the padding mode, and the exact
invariances that global pooling gets from them (docs/study.md, "The mechanism of translation
robustness")."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import comb

from gap_study.data.canvas import shift
from gap_study.nets.architecture import ModelConfig
from gap_study.nets.downsample import BlurMaxPool2d, make_downsample
from gap_study.nets.models import build_model

NUMPY_PAD = {"zeros": "constant", "circular": "wrap", "reflect": "reflect"}


def blurmax_by_formula(x: np.ndarray, blur_size: int, padding: str) -> np.ndarray:
    """Max over 2x2 windows at stride 1, then the binomial filter (coefficients C(k-1, i) /
    2**(k-1), outer product) at stride 2; NumPy's padding of the same mode."""
    mode = NUMPY_PAD[padding]
    h, w = x.shape[-2:]
    padded = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1)), mode=mode)
    maxed = np.maximum.reduce([padded[..., i:i + h, j:j + w] for i in (0, 1) for j in (0, 1)])
    taps = comb(blur_size - 1, np.arange(blur_size)) / 2 ** (blur_size - 1)
    r = blur_size // 2
    padded = np.pad(maxed, ((0, 0), (0, 0), (r, r), (r, r)), mode=mode)
    out = np.zeros((*x.shape[:2], h // 2, w // 2))
    for i in range(blur_size):
        for j in range(blur_size):
            out += taps[i] * taps[j] * padded[..., i:i + h:2, j:j + w:2]
    return out


@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect"])
@pytest.mark.parametrize("blur_size", [3, 5])
def test_blurmax_equals_the_binomial_formula(blur_size, padding):
    x = torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(blur_size),
                    dtype=torch.float64)
    layer = BlurMaxPool2d(3, blur_size, padding).double()
    expected = blurmax_by_formula(x.numpy(), blur_size, padding)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=0, atol=1e-12)
    with torch.no_grad():  # evaluation takes the other path to the 2x2 max
        np.testing.assert_allclose(layer(x).numpy(), expected, rtol=0, atol=1e-12)


def blurmax_with_torchs_padding(layer: BlurMaxPool2d, x: torch.Tensor) -> torch.Tensor:
    """The layer as it was first written: ``F.pad`` in the layer's mode before each step (its
    circular mode leaves channels_last), ``max_pool2d`` at stride 1, the filter's convolution."""
    mode = {"zeros": "constant", "circular": "circular", "reflect": "reflect"}[layer.padding]
    x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode=mode), 2, stride=1)
    r = layer.blur_size // 2
    return F.conv2d(F.pad(x, (r, r, r, r), mode=mode), layer.kernel, stride=2,
                    groups=layer.channels)


@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect"])
@pytest.mark.parametrize("blur_size", [3, 5])
def test_blurmax_in_channels_last_changes_values_and_gradients_only_in_rounding(blur_size,
                                                                                padding):
    layer = BlurMaxPool2d(16, blur_size, padding)
    x = torch.randn(8, 16, 20, 20, generator=torch.Generator().manual_seed(blur_size)).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    out, before = layer(x), blurmax_with_torchs_padding(layer, x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, before)  # float32 tolerances: rtol 1.3e-6, atol 1e-5
    torch.testing.assert_close(torch.autograd.grad(out, x, grad)[0],
                               torch.autograd.grad(before, x, grad)[0])


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_blurmax_gives_the_same_bits_with_and_without_gradients(padding):
    x = torch.randn(4, 8, 20, 20, generator=torch.Generator().manual_seed(1)).contiguous(
        memory_format=torch.channels_last)
    layer = BlurMaxPool2d(8, 3, padding)
    with torch.inference_mode():
        evaluated = layer(x)
    assert torch.equal(layer(x.requires_grad_()), evaluated)


def test_blurmax_halves_the_map_and_keeps_its_filter_out_of_the_state_dict():
    layer = make_downsample("blurmax", 16, 5, "zeros")
    assert layer(torch.rand(1, 16, 20, 20)).shape == (1, 16, 10, 10)
    assert list(layer.state_dict()) == []
    assert isinstance(make_downsample("max", 16, 5, "zeros"), torch.nn.MaxPool2d)
    with pytest.raises(ValueError, match="blur_size must be odd"):
        BlurMaxPool2d(4, 4)


@pytest.mark.parametrize(("field", "value"), [("downsample", "avg"), ("padding", "same"),
                                              ("blur_size", 4)])
def test_model_config_names_the_bad_factor_and_the_allowed_values(field, value):
    with pytest.raises(ValueError, match=f"unknown {field} .*allowed"):
        ModelConfig(head="gap", in_channels=1, image_size=16, num_classes=3, **{field: value})


def eval_model(widths, *, downsample="max", padding="circular", head="gap", seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(head=head, in_channels=1, image_size=32, num_classes=5,
                         widths=widths, downsample=downsample, padding=padding)
    model = build_model(config).double().eval()
    # BatchNorm statistics other than 0 and 1, as after training, and means small enough that
    # every ReLU clips: were the last block linear, GAP after a binomial blur would also be
    # invariant to shifts by half the stride (the filter's even and odd taps have equal sums)
    with torch.no_grad():
        for layer in model.features:
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.1, 0.1)
                layer.running_var.uniform_(0.5, 2.0)
    return model


def largest_logit_change(model, images, dx, dy) -> float:
    with torch.no_grad():
        return float((model(torch.roll(images, (dy, dx), dims=(-2, -1))) - model(images))
                     .abs().max())


IMAGES = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_a_stride_free_circular_network_with_gap_is_invariant_to_every_circular_shift():
    model = eval_model((8,))
    for dx in range(-3, 4):
        for dy in range(-3, 4):
            assert largest_logit_change(model, IMAGES, dx, dy) < 1e-10, (dx, dy)


@pytest.mark.parametrize("downsample", ["max", "blurmax"])
def test_a_circular_network_of_stride_4_is_invariant_to_shifts_by_multiples_of_4(downsample):
    model = eval_model((8, 8, 8), downsample=downsample)
    for dx, dy in [(4, 0), (0, -4), (8, 4), (-4, 12)]:
        assert largest_logit_change(model, IMAGES, dx, dy) < 1e-10, (dx, dy)
    # ...and to no other shift: the map changes (aliasing), so the check above is not vacuous.
    for dx, dy in [(1, 0), (0, 2), (3, 1)]:
        assert largest_logit_change(model, IMAGES, dx, dy) > 1e-6, (dx, dy)


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_other_paddings_let_the_network_see_where_the_border_is(padding):
    model = eval_model((8, 8, 8), padding=padding)
    assert largest_logit_change(model, IMAGES, 4, 0) > 1e-6


def test_a_shift_that_keeps_the_object_inside_the_canvas_is_a_circular_shift():
    canvas = torch.zeros(2, 1, 20, 20)
    canvas[:, :, 6:14, 5:13] = torch.rand(2, 1, 8, 8)
    for dx, dy in [(7, -6), (-5, 6), (3, 3), (0, -6)]:
        assert torch.equal(shift(canvas, dx, dy), torch.roll(canvas, (dy, dx), dims=(-2, -1)))
    # one more pixel and the object wraps around in the roll but is cut in the shift
    assert not torch.equal(shift(canvas, 8, 0), torch.roll(canvas, (0, 8), dims=(-2, -1)))


def test_the_default_factors_build_the_backbone_the_study_always_had():
    torch.manual_seed(0)
    model = build_model(ModelConfig(head="gap", in_channels=1, image_size=20, num_classes=10))
    kinds = [type(layer).__name__ for layer in model.features]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 2 + [
        "Conv2d", "BatchNorm2d", "ReLU"]
    assert all(layer.padding_mode == "zeros" for layer in model.features
               if isinstance(layer, torch.nn.Conv2d))
