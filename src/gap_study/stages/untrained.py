"""When a head counts as untrained, and what a user changes then: one definition for the tune
stage (``choices.csv``'s ``at_chance`` and its warning), the report, the sweep and the publish
refusal (``docs/study.md``, "Training"). Torch-free, so that the light modules can import it.

1. Chance is ``ln K`` for ``K`` classes: the cross-entropy of giving every class the same
   probability. A model that learned nothing ends near it, a little either side (its
   initial logits, the validation split's class balance, the loss's rounding), and one that
   learned less than nothing above it.
2. The flag's threshold lies ``CHANCE_MARGIN * ln K`` below ``ln K``, not at it: at ``ln K``
   the very runs the flag exists for would land on either side of the threshold, some by
   their last bits. 1% is 0.023 for 10 classes, far beyond the rounding of such a loss, and a
   head within 1% of chance learned nothing a verdict could compare.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

__all__ = ["CHANCE_MARGIN", "RATE_KEYS", "TRAINING_KEYS", "at_chance", "chance_loss",
           "listed", "untrained_fix", "untrained_heads", "untrained_threshold"]

CHANCE_MARGIN = 0.01  # the share of ln K below chance that still counts as chance
RATE_KEYS = ("tune.learning_rates", "tune.lr_min", "tune.lr_max")  # other rates to try
TRAINING_KEYS = ("train.epochs", "data.max_train")  # more training for every rate


def chance_loss(num_classes: int) -> float:
    """``ln num_classes``: the mean cross-entropy of giving every class the same probability."""
    return math.log(num_classes)


def untrained_threshold(num_classes: int) -> float:
    """The mean validation loss from which a head counts as untrained: ``CHANCE_MARGIN *
    chance_loss`` below ``chance_loss`` (2.2796 for 10 classes)."""
    return (1.0 - CHANCE_MARGIN) * chance_loss(num_classes)


def at_chance(val_loss: float, num_classes: int) -> bool:
    """Whether a chosen rate's mean validation loss ``val_loss`` is at chance or worse: at
    least ``untrained_threshold``."""
    return bool(val_loss >= untrained_threshold(num_classes))


def listed(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else "".join(names)


def untrained_fix() -> str:
    """What to change in ``params.yaml`` for an untrained head, as a clause."""
    return (f"change {listed(RATE_KEYS)}, or give training more ({listed(TRAINING_KEYS)}) in "
            "params.yaml")


def untrained_heads(choices: pd.DataFrame, heads: Iterable[str]) -> list[str] | None:
    """The heads of ``heads`` that the tune stage's ``choices.csv`` (``choices``) marks
    ``at_chance``, in its order; ``None`` for a file written before the column existed."""
    if "at_chance" not in choices:
        return None
    marked = choices["head"].isin(list(heads)) & choices["at_chance"].astype(bool)
    return [str(head) for head in choices.loc[marked, "head"]]
