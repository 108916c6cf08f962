"""The tune stage's choices in the report (``docs/study.md``, "Training"): each head's chosen
rate with its mean validation loss, and the choices its tuning seeds could move."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from gap_study.stages.untrained import (
    CHANCE_MARGIN,
    RATE_KEYS,
    TRAINING_KEYS,
    chance_loss,
    untrained_threshold,
)

__all__ = ["TuneFlags", "chosen_rates", "tune_flags"]


def chosen_rates(tuning: pd.DataFrame, heads: Sequence[str]) -> list[tuple[str, float, float]]:
    """``(head, chosen rate, its final validation loss, mean over the tuning seeds)`` in the
    order of ``heads``, from the tune stage's ``tuning.csv`` (every rate tried is there)."""
    chosen = tuning[tuning["chosen"].astype(bool)].set_index("head")
    return [(head, float(chosen.loc[head, "lr"]), float(chosen.loc[head, "val_loss"]))
            for head in heads if head in chosen.index]


@dataclass(frozen=True)
class TuneFlags:
    """The heads whose choice the tuning seeds could move (``fragile``: a neighbouring rate's
    mean loss within the chosen rate's spread over seeds), those whose rate sits at a bound
    of ``tune`` (``at_bound``: the grid could not extend past it), and those that no rate
    tried trained (``at_chance``: ``(head, rate, mean validation loss)``, the loss at least
    ``threshold``, ``margin`` below ``chance``: ``ln K`` for ``K`` classes, the loss of giving
    every class the same probability; ``gap_study.stages.untrained``), with the keys that
    change the rates tried (``rate_keys``) and the training (``training_keys``)."""

    fragile: list[str]
    at_bound: list[tuple[str, float]]
    at_chance: list[tuple[str, float, float]]
    chance: float
    threshold: float
    margin: float = CHANCE_MARGIN
    rate_keys: tuple[str, ...] = RATE_KEYS
    training_keys: tuple[str, ...] = TRAINING_KEYS


def tune_flags(choices: pd.DataFrame, heads: Sequence[str], num_classes: int) -> TuneFlags:
    """``TuneFlags`` of ``heads`` from the tune stage's ``choices.csv`` (its ``at_chance`` is
    the stage's, as in ``gap_study.stages.tune.choice_table``), on ``num_classes`` classes."""
    rows = choices.set_index("head").reindex([h for h in heads if h in set(choices["head"])])
    return TuneFlags([str(h) for h in rows.index[rows["fragile"].astype(bool)]],
                     [(str(h), float(rows.loc[h, "lr"]))
                      for h in rows.index[rows["at_bound"].astype(bool)]],
                     [(str(h), float(rows.loc[h, "lr"]), float(rows.loc[h, "val_loss"]))
                      for h in rows.index[rows["at_chance"].astype(bool)]],
                     chance_loss(num_classes), untrained_threshold(num_classes))
