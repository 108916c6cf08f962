"""The mechanism factors: anti-aliased downsampling, adaptive polyphase sampling and the
padding mode, and the exact invariances that global pooling gets from them (docs/study.md, "The
mechanism of translation robustness")."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from builders import TINY_MODEL, tiny_settings
from scipy.special import comb

from gap_study.data.canvas import shift, to_float
from gap_study.measures.metrics import exact_consistency, shift_grid_predictions
from gap_study.nets.architecture import ModelConfig
from gap_study.nets.downsample import (
    ApsMaxPool2d,
    BlurMaxPool2d,
    adaptive_polyphase_sample,
    make_downsample,
    polyphase_choice,
)
from gap_study.nets.models import build_model, fold_batch_norm
from gap_study.pipeline.paths import RunId
from gap_study.pipeline.runtime import to_device
from gap_study.stages.train import train_run

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


@pytest.mark.parametrize("downsample", ["max", "blurmax", "aps"])
def test_a_circular_network_of_stride_4_is_invariant_to_shifts_by_multiples_of_4(downsample):
    model = eval_model((8, 8, 8), downsample=downsample)
    for dx, dy in [(4, 0), (0, -4), (8, 4), (-4, 12)]:
        assert largest_logit_change(model, IMAGES, dx, dy) < 1e-10, (dx, dy)
    if downsample == "aps":
        return  # invariant to every circular shift (the aps tests below)
    # ...and to no other shift: the map changes (aliasing), so the check above is not vacuous.
    for dx, dy in [(1, 0), (0, 2), (3, 1)]:
        assert largest_logit_change(model, IMAGES, dx, dy) > 1e-6, (dx, dy)


@pytest.mark.parametrize("downsample", ["max", "aps"])
@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_other_paddings_let_the_network_see_where_the_border_is(padding, downsample):
    model = eval_model((8, 8, 8), padding=padding, downsample=downsample)
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


# Adaptive polyphase sampling (Chaman & Dokmanić 2021): each image keeps the polyphase
# component of largest l2 norm; exact invariance to circular shifts with circular padding.

def components(x: np.ndarray) -> list[np.ndarray]:
    """The four polyphase components of (N, C, H, W), index 2 i + j = x[..., i::2, j::2]."""
    return [x[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]


def test_aps_keeps_each_images_component_of_largest_l2_norm():
    x = torch.randn(6, 3, 8, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    parts = components(x.numpy())
    norms = np.stack([np.sqrt((p ** 2).sum(axis=(1, 2, 3))) for p in parts], axis=1)
    chosen = norms.argmax(axis=1)
    assert len(set(chosen)) > 1  # the images choose differently: the choice is per image
    assert polyphase_choice(x).tolist() == chosen.tolist()
    expected = np.stack([parts[k][n] for n, k in enumerate(chosen)])
    assert np.array_equal(adaptive_polyphase_sample(x).numpy(), expected)


def test_aps_breaks_an_exact_tie_by_the_first_component():
    x = torch.zeros(3, 2, 4, 4)
    x[1, 0, 1, 0] = x[1, 1, 1, 1] = 2.0  # components 2 and 3 tie, above 0 and 1
    x[2, :, 0, 1] = x[2, :, 1, 0] = -1.0  # components 1 and 2 tie
    assert polyphase_choice(x).tolist() == [0, 2, 1]  # all four tie in the zero map


@pytest.mark.parametrize(("dx", "dy"), [(1, 0), (0, 1), (1, 1), (3, -2), (-5, 7)])
def test_aps_output_follows_a_circular_shift_of_its_input(dx, dy):
    # x' = roll(x, s) keeps component (i + s) mod 2 where x kept i, shifted by (s + i) // 2
    x = torch.randn(5, 4, 12, 12, generator=torch.Generator().manual_seed(2))
    rolled = torch.roll(x, (dy, dx), dims=(-2, -1))
    kept, out = polyphase_choice(x), adaptive_polyphase_sample(x)
    moved = adaptive_polyphase_sample(rolled)
    for n, (i, j) in enumerate(zip((kept // 2).tolist(), (kept % 2).tolist(), strict=True)):
        assert polyphase_choice(rolled)[n] == 2 * ((i + dy) % 2) + (j + dx) % 2
        assert torch.equal(moved[n], torch.roll(out[n], ((dy + i) // 2, (dx + j) // 2),
                                                dims=(-2, -1)))


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_aps_routes_each_gradient_to_the_kept_positions_in_the_maps_layout(layout):
    x = torch.randn(8, 3, 6, 8, generator=torch.Generator().manual_seed(3))
    for n in range(len(x)):  # image n keeps component n % 4: every component is taken
        x[n, :, n % 4 // 2::2, n % 2::2] *= 4
    x = x.contiguous(memory_format=layout).requires_grad_()
    out = adaptive_polyphase_sample(x)
    assert out.is_contiguous(memory_format=layout)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    grad.view(-1)[::5] = -0.0  # copied as they are
    grad.view(-1)[::7] = float("nan")
    (ours,) = torch.autograd.grad(out, x, grad)
    kept = polyphase_choice(x).tolist()
    assert kept == [n % 4 for n in range(len(x))]
    by_indexing = torch.stack([x[n, :, k // 2::2, k % 2::2] for n, k in enumerate(kept)])
    assert torch.equal(out, by_indexing)
    expected = torch.zeros(x.shape)
    for n, k in enumerate(kept):
        expected[n, :, k // 2::2, k % 2::2] = grad[n]
    # bit for bit, the negative zeros and NaNs too (autograd's sum of the slices' gradients
    # would turn -0.0 + 0.0 into 0.0)
    assert torch.equal(ours.view(torch.int32), expected.view(torch.int32))
    assert ours.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_aps_gives_the_same_bits_with_and_without_gradients(padding):
    x = torch.randn(4, 8, 20, 20, generator=torch.Generator().manual_seed(1)).contiguous(
        memory_format=torch.channels_last)
    layer = make_downsample("aps", 8, 3, padding)
    with torch.inference_mode():
        evaluated = layer(x)
    assert torch.equal(layer(x.requires_grad_()), evaluated)
    assert evaluated.shape == (4, 8, 10, 10) and list(layer.state_dict()) == []


def test_aps_refuses_a_map_of_odd_side_and_a_model_whose_maps_would_have_one():
    with pytest.raises(ValueError, match="even height and width, got 5x6"):
        ApsMaxPool2d()(torch.zeros(1, 1, 5, 6))
    with pytest.raises(ValueError, match="divisible by the total stride 4 of 3 blocks, got 18"):
        ModelConfig(head="gap", in_channels=1, image_size=18, num_classes=3, downsample="aps")


def every_circular_shift(images: torch.Tensor) -> torch.Tensor:
    """``(N, C, S, S) -> (S * S, N, C, S, S)``: the images rolled by every ``(dy, dx)``."""
    side = images.shape[-1]
    return torch.stack([torch.roll(images, (dy, dx), dims=(-2, -1))
                        for dy in range(side) for dx in range(side)])


def logit_spread(model, images) -> float:
    """The largest change of any logit over every circular shift of ``images``."""
    with torch.no_grad():
        shifted = every_circular_shift(images)
        logits = model(shifted.flatten(0, 1)).view(len(shifted), len(images), -1)
    return float((logits - logits[0]).abs().max())


SMALL_IMAGES = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(5),
                          dtype=torch.float64)


def aps_model(head, padding="circular"):
    torch.manual_seed(0)
    config = ModelConfig(head=head, in_channels=1, image_size=16, num_classes=5,
                         widths=(8, 8, 8), downsample="aps", padding=padding, dense_hidden=16)
    return build_model(config).double().eval()


@pytest.mark.parametrize("head", ["gap", "gmp", "gap_hidden", "nin"])
def test_an_untrained_circular_aps_network_with_global_pooling_ignores_every_circular_shift(
        head):
    assert logit_spread(aps_model(head), SMALL_IMAGES) < 1e-10


def test_a_fixed_phase_in_place_of_the_largest_norm_breaks_the_invariance(monkeypatch):
    # the check above must see the choice: with the phase fixed at 0 (a max-pool's) it fails
    model = aps_model("gap")
    monkeypatch.setattr("gap_study.nets.downsample.polyphase_choice",
                        lambda x: torch.zeros(len(x), dtype=torch.int64))
    assert logit_spread(model, SMALL_IMAGES) > 1e-6


@pytest.mark.parametrize(("head", "padding"), [("gap", "zeros"), ("gap", "reflect"),
                                               ("dense", "circular"), ("linear", "circular")])
def test_zero_padding_or_a_flatten_head_is_not_invariant_with_aps(head, padding):
    assert logit_spread(aps_model(head, padding), SMALL_IMAGES) > 1e-6


@pytest.fixture(scope="module")
def trained(small):
    """``trained(head, padding)``: ``head`` with APS and ``padding`` (widths 8, 16), trained
    for ten epochs on the small digits canvas (32 pixels, the object's 16-pixel box centred:
    room to move 8), in eval mode; each trained once."""
    models = {}

    def train(head, padding):
        if (head, padding) not in models:
            config = TINY_MODEL.model_copy(update={
                "widths": [8, 16], "downsample": "aps", "padding": padding}).to_config(head, small)
            model, _ = train_run(config, small.without_test(), RunId(1.0, 0, 0),
                                 tiny_settings(10), 0.003, device="cpu", progress=False)
            models[head, padding] = model.eval()
        return models[head, padding]
    return train


def test_a_trained_circular_aps_network_with_global_pooling_ignores_every_circular_shift(
        small, trained):
    model = copy.deepcopy(trained("gap", "circular")).double()
    images = to_float(small.x_test[:2]).double()
    assert logit_spread(model, images) < 1e-10
    assert logit_spread(model, torch.rand(2, 1, 32, 32, dtype=torch.float64)) < 1e-10


ROOM = 8  # (32 - 16) / 2


@pytest.mark.parametrize("head", ["gap", "gmp"])
def test_on_the_canvas_every_shift_that_keeps_the_object_inside_gives_the_same_prediction(
        small, trained, head):
    # the evaluation's own path: BatchNorm folded, float32, channels_last, shifts that cut
    model = fold_batch_norm(trained(head, "circular"))
    images = to_device(to_float(small.x_test), torch.device("cpu"))
    predictions = shift_grid_predictions(model, images, ROOM, batch_size=512)
    assert (predictions == predictions[:, :1]).all()
    assert exact_consistency(predictions) == 1.0
    assert len(np.unique(predictions)) > 1  # not one class for every image


@pytest.mark.parametrize(("head", "padding"), [("gap", "zeros"), ("dense", "circular")])
def test_on_the_canvas_zero_padding_or_a_flatten_head_changes_some_prediction(small, trained,
                                                                              head, padding):
    model = fold_batch_norm(trained(head, padding))
    images = to_device(to_float(small.x_test), torch.device("cpu"))
    assert exact_consistency(shift_grid_predictions(model, images, ROOM, batch_size=512)) < 1
