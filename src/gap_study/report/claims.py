"""The write-up's claims and their verdicts, computed from the numbers, never typed in
(``docs/study.md``, "The write-up's claims" and "Statistics and verdicts").

A claim is judged per pooling head against ``dense`` (or, where ``dense`` cannot be measured,
against a reference level) from the Welch-t interval of the improvement; each head's verdicts
are then combined into one verdict per claim. Rules: ``head_verdict`` (one comparison) and
``overall_verdict`` (one claim over all its comparisons).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from gap_study.report.stats import welch_interval

__all__ = [
    "CLAIMS",
    "SETTING_METRICS",
    "Claim",
    "claim_table",
    "head_verdict",
    "overall_verdict",
    "overall_verdicts",
    "setting_label",
    "study_claims",
]


@dataclass(frozen=True)
class Claim:
    """A claim of the write-up, tested on one metric: a pooling head against ``dense``, or,
    where ``dense`` cannot be measured (CAM), against the reference level in column
    ``reference`` (named ``reference_name`` in the report)."""

    name: str
    metric: str
    lower_is_better: bool
    unit: str
    quote: str
    reference: str | None = None
    reference_name: str = "chance"


CLAIMS: tuple[Claim, ...] = (
    Claim("fewer parameters", "params_head", True, "trainable head parameters",
          "helps removing a large number of trainable parameters from the model"),
    Claim("less overfitting", "overfit_gap", True, "train minus test accuracy",
          "Global average (max) pooling is used to minimize the overfitting"),
    Claim("more translation robust", "shift_accuracy_mean", False,
          "test accuracy averaged over the shift grid",
          "this makes the model more robust to spatial translations in the data"),
    Claim("more translation robust", "consistency", False,
          "probability two random shifts give the same class",
          "this makes the model more robust to spatial translations in the data"),
    Claim("more translation robust", "flip_rate", True,
          "probability a 1-pixel move changes the class",
          "this makes the model more robust to spatial translations in the data"),
    # Timed by the speed stage, every head in turns in one process (rounds as replicates):
    # per-run epoch times of runs trained side by side on parallel workers are not comparable.
    Claim("faster training", "seconds_per_step", True,
          "seconds per training step, heads timed in turns",
          "Removing them helps training faster"),
    # On centred images every object box holds the canvas centre, so a map that always peaks
    # there would score 100%: only moved objects show whether the maps follow the object.
    Claim("feature maps tied to classes", "pointing_accuracy_shifted", False,
          "share of randomly shifted test images whose class activation map peaks on the object",
          "removing the fully conneected layers forces the feature maps to be more closely "
          "related to the classification categories", reference="pointing_centre_prior_shifted",
          reference_name="centre prior"),
)

# Claims that depend on how a model was trained, tested again on the learning curve's smaller
# training sets and on the models trained with shifts (parameter counts and the time per epoch
# of the main runs say all there is to say about the others).
SETTING_METRICS = ("overfit_gap", "shift_accuracy_mean", "consistency", "flip_rate",
                   "pointing_accuracy_shifted")


def head_verdict(low: float, high: float) -> str:
    """One comparison's verdict from the interval of the improvement (positive = better)."""
    if math.isnan(low):
        return "untested (one seed)"
    if low > 0:
        return "supported"
    if high < 0:
        return "contradicted"
    return "no clear difference"


def _is_tested(claim: Claim, per_seed: pd.DataFrame, base: pd.DataFrame,
               metrics: Sequence[str] | None) -> bool:
    """Whether ``claim`` can be tested on ``per_seed``: its metric is measured, it has something
    to compare with, and it is among ``metrics`` (when given)."""
    return (claim.metric in per_seed and not (claim.reference is None and base.empty)
            and (metrics is None or claim.metric in metrics))


def _claim_row(claim: Claim, head: str, ours: pd.Series, theirs: pd.Series, baseline: str,
               confidence: float) -> dict[str, object]:
    """One head's comparison: the improvement (how much better the pooling head is, in the
    metric's units), its Welch-t interval and the verdict."""
    a, b = (theirs, ours) if claim.lower_is_better else (ours, theirs)
    diff, low, high = welch_interval(a, b, confidence)
    return {"claim": claim.name, "head": head, "metric": claim.metric,
            "baseline": claim.reference_name if claim.reference else baseline,
            "head_mean": ours.mean(), "baseline_mean": theirs.mean(),
            "improvement": diff, "ci_low": low, "ci_high": high,
            "verdict": head_verdict(low, high)}


def claim_table(per_seed: pd.DataFrame, baseline: str = "dense", confidence: float = 0.95,
                metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Each claim per pooling head against ``baseline`` (or the claim's reference column): the
    improvement (positive = the claim holds), its Welch-t interval, and a verdict computed
    from that interval.

    ``per_seed`` has one row per head and seed with a column per claim metric; claims whose
    metric is missing, and heads where it is undefined (``nan``, e.g. CAM of ``dense``), are
    left out, and so are claims whose metric is not in ``metrics`` (when given).
    """
    heads = [h for h in per_seed["head"].unique() if h != baseline]
    base = per_seed[per_seed["head"] == baseline]
    rows = []
    for claim in (c for c in CLAIMS if _is_tested(c, per_seed, base, metrics)):
        for head in heads:
            runs = per_seed[per_seed["head"] == head]
            if runs[claim.metric].isna().any():
                continue
            theirs = runs[claim.reference] if claim.reference else base[claim.metric]
            rows.append(_claim_row(claim, head, runs[claim.metric], theirs, baseline,
                                   confidence))
    return pd.DataFrame(rows)


def setting_label(fraction: float, train_shift: int, train_images: int | None = None) -> str:
    """How a group of runs was trained, in words."""
    data = "all training images" if fraction == 1 else f"{fraction:.0%} of the training images"
    if train_images is not None:
        data += f" ({train_images:,})"
    moves = "centred" if train_shift == 0 else f"random shifts up to {train_shift} px"
    return f"{data}, {moves}"


def _settings(results: pd.DataFrame) -> list[tuple[float, int, Sequence[str] | None]]:
    """``(fraction, train_shift, metrics)`` of each group of runs the claims are tested on:
    the main runs with every claim, then each smaller fraction and each larger training
    shift with ``SETTING_METRICS``."""
    full, base = results["fraction"].max(), results["train_shift"].min()
    groups: list[tuple[float, int, Sequence[str] | None]] = [(full, base, None)]
    groups += [(f, base, SETTING_METRICS) for f in sorted(results["fraction"].unique())
               if f != full]
    groups += [(full, s, SETTING_METRICS) for s in sorted(results["train_shift"].unique())
               if s != base]
    return groups


def study_claims(results: pd.DataFrame, step_times: pd.DataFrame, baseline: str = "dense",
                 confidence: float = 0.95) -> pd.DataFrame:
    """``claim_table`` for the main runs (every claim), then, for ``SETTING_METRICS``, for each
    smaller training fraction of the learning curve and each larger training shift of the
    ablation, and the speed claim on ``step_times`` (one row per head and round of the speed
    stage); column ``setting`` says which runs a row compares."""
    rounds = step_times["round"].nunique()
    parts = [claim_table(step_times, baseline, confidence, ["seconds_per_step"]).assign(
        setting=f"training steps timed in turns, {rounds} rounds")]
    for fraction, shift, metrics in _settings(results):
        runs = results[(results["fraction"] == fraction) & (results["train_shift"] == shift)]
        images = int(runs["train_images"].iloc[0]) if "train_images" in runs else None
        table = claim_table(runs, baseline, confidence, metrics)
        parts.append(table.assign(setting=setting_label(fraction, shift, images)))
    table = pd.concat(parts, ignore_index=True)
    order = {name: i for i, name in enumerate(dict.fromkeys(c.name for c in CLAIMS))}
    return table.sort_values("claim", key=lambda c: c.map(order), kind="stable",
                             ignore_index=True)


def overall_verdict(supported: pd.Series, contradicted: pd.Series) -> str:
    """One claim's verdict from its rows: supported (every row), mixed (some but not all),
    contradicted (none supported, some contradicted) or not supported (no row either way)."""
    if supported.all():
        return "supported"
    if supported.any():
        return "mixed"
    return "contradicted" if contradicted.any() else "not supported"


def _overall_row(name: str, group: pd.DataFrame) -> dict[str, str]:
    """The ``overall_verdicts`` row of one claim from its rows in the claims table."""
    supported = group.verdict == "supported"
    contradicted = group.verdict == "contradicted"
    by_head = supported.groupby(group["head"], sort=False).all()
    against = contradicted.groupby(group["head"], sort=False).any()
    row = {"claim": name, "verdict": overall_verdict(supported, contradicted),
           "rows": f"{supported.sum()} supported, {contradicted.sum()} contradicted, "
                   f"{len(group) - supported.sum() - contradicted.sum()} unclear",
           "heads supporting": ", ".join(by_head.index[by_head]) or "none",
           "heads contradicting": ", ".join(against.index[against]) or "none"}
    if "setting" in group:
        by_setting = supported.groupby(group["setting"], sort=False).all()
        row["settings where every head supports it"] = \
            "; ".join(by_setting.index[by_setting]) or "none"
    return row


def overall_verdicts(claims: pd.DataFrame) -> pd.DataFrame:
    """One verdict per claim over all its rows (heads x metrics x settings), by
    ``overall_verdict``. ``rows`` counts the supported, contradicted and unclear rows. A head
    supports a claim when all its rows do, contradicts it when any row does; a setting
    supports it when all its rows do."""
    return pd.DataFrame([_overall_row(name, group)
                         for name, group in claims.groupby("claim", sort=False)])
