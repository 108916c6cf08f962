"""Non-finite losses or logits are an error naming the run, never a number in a table."""

import math

import numpy as np
import pytest
import torch

from gap_study.measures.finite import NonFiniteError, require_finite


def test_finite_values_of_every_kind_pass():
    require_finite({"loss": 0.3, "logits": torch.zeros(2, 3), "grid": np.ones(4)}, run="gap/x")


@pytest.mark.parametrize("bad", [math.nan, math.inf, torch.tensor([0.0, -math.inf]),
                                 np.array([1.0, math.nan])], ids=repr)
def test_nan_or_infinity_names_the_run_and_the_value(bad):
    with pytest.raises(NonFiniteError, match=r"run gap/fraction_1-shift_0-seed_0: test_loss "
                       r"not finite"):
        require_finite({"train_loss": 0.1, "test_loss": bad}, run="gap/fraction_1-shift_0-seed_0")
