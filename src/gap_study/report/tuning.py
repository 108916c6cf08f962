"""The tune stage's choices in the report (``docs/study.md``, "Training"): each head's mean
validation loss at every rate it tried, and the choices its tuning seeds could move."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

__all__ = ["TuneFlags", "learning_rate_table", "tune_flags"]


def learning_rate_table(tuning: pd.DataFrame, heads: Sequence[str]) -> pd.DataFrame:
    """Per head (rows) and rate tried (columns): the final validation loss, mean over the
    tuning seeds, the chosen rate marked; empty where a head did not try a rate."""
    table = (tuning.assign(val=tuning["val_loss"].map(lambda v: f"{v:.4f}")
                           + tuning["chosen"].map(lambda c: " (chosen)" if c else ""))
             .pivot(index="head", columns="lr", values="val").reindex(list(heads))
             .fillna(""))
    table.columns = [f"lr {c:g}" for c in table.columns]
    return table.reset_index()


@dataclass(frozen=True)
class TuneFlags:
    """The heads whose choice the tuning seeds could move (``fragile``: a neighbouring rate's
    mean loss within the chosen rate's spread over seeds) and those whose rate sits at a bound
    of ``tune`` (``at_bound``: the grid could not extend past it)."""

    fragile: list[str]
    at_bound: list[tuple[str, float]]


def tune_flags(choices: pd.DataFrame, heads: Sequence[str]) -> TuneFlags:
    """``TuneFlags`` of ``heads`` from the tune stage's ``choices.csv``."""
    rows = choices.set_index("head").reindex([h for h in heads if h in set(choices["head"])])
    return TuneFlags([str(h) for h in rows.index[rows["fragile"].astype(bool)]],
                     [(str(h), float(rows.loc[h, "lr"]))
                      for h in rows.index[rows["at_bound"].astype(bool)]])
