"""The embedded digits upsampled in integers: the same bytes on every CPU, and the values of
torch's bilinear interpolation rounded half to even."""

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gap_study.data.prepare import bilinear_weights, digits_objects


@pytest.mark.parametrize("size", [4, 5, 7, 8, 10, 12, 16, 28])
def test_the_integer_weights_are_torchs_bilinear_interpolation(size):
    ink = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weights = torch.from_numpy(bilinear_weights(8, size)).to(torch.float64)
    assert (weights.sum(dim=1) == 2 * size).all()
    ours = torch.einsum("oi,nij,pj->nop", weights, ink[:, 0], weights) / (2 * size) ** 2
    theirs = F.interpolate(ink, size=(size, size), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours, theirs[:, 0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [5, 10, 16])
def test_each_pixel_is_its_exact_value_rounded_half_to_even(size):
    from sklearn.datasets import load_digits

    pixels, labels = digits_objects(size)
    ink = torch.from_numpy(load_digits().images)[:, None]  # float64: off the exact by ~1e-13
    exact = F.interpolate(ink / 16, size=(size, size), mode="bilinear",
                          align_corners=False).numpy() * 255
    half = np.abs(exact - np.floor(exact) - 0.5) < 1e-9
    np.testing.assert_array_equal(pixels[~half], np.rint(exact[~half]))
    below = np.rint(exact[half] - 0.5)  # k of an exact k + 1/2: to k if even, else k + 1
    np.testing.assert_array_equal(pixels[half], below + below % 2)
    assert half.any()  # the pixels a float kernel's last bit decides
    assert pixels.dtype == np.uint8 and pixels.shape == (1797, 1, size, size)
    assert np.array_equal(labels, load_digits().target)


def test_the_default_studys_digits_are_the_same_bytes_on_every_cpu():
    # integers only: these digests hold wherever scikit-learn ships the same digits. With
    # float32 interpolation the default size's came out 31 pixels apart on AVX-512 and on
    # the generic code.
    digests = {size: hashlib.sha256(digits_objects(size)[0].tobytes()).hexdigest()[:16]
               for size in (10, 16)}
    assert digests == {10: "27c43d86515a3c4a", 16: "44e12699daba8cce"}
