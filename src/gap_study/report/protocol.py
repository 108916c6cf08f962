"""The write-up's claims as declared tests (``docs/study.md``, "The write-up's claims" and
"Statistics and verdicts"): the pre-declared analysis, and the version that names it.

``PROTOCOL`` lists, for every claim, its primary metrics (the ones its verdict rests on) and
secondary ones (reported, labelled secondary), which way is better, the equivalence margin,
the baselines and the runs compared. ``gap_study.report.claims`` runs it. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gap_study.nets.architecture import HEADS_UNDER_TEST

__all__ = [
    "CHANGED_IN",
    "CLAIMS",
    "PROTOCOL",
    "PROTOCOL_VERSION",
    "ClaimTest",
    "changed_between",
    "heads_under_test",
    "setting_label",
]

# The version of ``docs/study.md``'s protocol that ``PROTOCOL`` and the statistics implement
# (``CHANGELOG.md`` lists what each version changed).
PROTOCOL_VERSION = 6
# The primary tests whose analysis a version changed, as (claim, metric): their verdicts are
# not compared across that version (``gap_study.replicate``).
CHANGED_IN: dict[int, frozenset[tuple[str, str]]] = {
    5: frozenset({("feature maps tied to classes", "pointing_gradcam_two_objects_recognised")}),
    # runs that miss the target are bounded; comparisons not made count in their family
    6: frozenset({("faster training", "time_to_target"), ("faster training", "seconds_per_step"),
                  ("feature maps tied to classes", "pointing_gradcam_two_objects_recognised")}),
}

# The write-up's claims, in the report's order (its words for each: ``docs/study.md``, "The
# write-up's claims")
CLAIMS = ("fewer parameters", "less overfitting", "more translation robust", "faster training",
          "feature maps tied to classes")


@dataclass(frozen=True)
class ClaimTest:
    """A declared test: ``metric`` of each tested head against each of ``baselines`` (head
    names, or ``ref:<column>`` for a reference level measured on the same images), on the
    runs ``runs`` names (``main``: whole training set, centred; ``fractions``: each training
    fraction, centred; ``speed``: the speed stage's rounds), with margin ``margin`` (a key
    of ``report.margins``, or ``exact``). ``at_least``: a column holding, for a run without
    a value of ``metric``, a lower bound of it (only for a metric where lower is better)."""

    claim: str
    metric: str
    lower_is_better: bool
    margin: str
    primary: bool
    baselines: tuple[str, ...] = ("dense",)
    runs: str = "main"
    at_least: str | None = None

    def __post_init__(self) -> None:
        if self.at_least is not None and not self.lower_is_better:
            raise ValueError(f"{self.metric}: a lower bound ({self.at_least}) flatters a side "
                             "only where lower is better; a test of a higher-is-better metric "
                             "takes none")


DENSE_BASELINES = ("dense", "dense_dropout")
PROTOCOL: tuple[ClaimTest, ...] = (
    ClaimTest("fewer parameters", "params_head", True, "exact", True),
    ClaimTest("fewer parameters", "params_total", True, "exact", False),
    ClaimTest("less overfitting", "test_accuracy", False, "accuracy", True, DENSE_BASELINES,
         "fractions"),
    ClaimTest("less overfitting", "test_loss", True, "loss", True, DENSE_BASELINES, "fractions"),
    ClaimTest("less overfitting", "overfit_gap", True, "accuracy", False, DENSE_BASELINES,
         "fractions"),
    ClaimTest("less overfitting", "loss_gap", True, "loss", False, DENSE_BASELINES, "fractions"),
    ClaimTest("more translation robust", "consistency_exact", False, "consistency", True),
    ClaimTest("more translation robust", "shift_accuracy_mean", False, "accuracy", False),
    ClaimTest("more translation robust", "other_shift_accuracy", False, "accuracy", False),
    ClaimTest("more translation robust", "flip_rate_all_pairs", True, "consistency", False),
    ClaimTest("more translation robust", "consistency", False, "consistency", False),
    ClaimTest("more translation robust", "flip_rate", True, "consistency", False),
    ClaimTest("faster training", "seconds_per_step", True, "time", True, runs="speed"),
    # a run that never reaches the target counts at a lower bound of its time, and its
    # comparisons decide nothing (protocol 6)
    ClaimTest("faster training", "time_to_target", True, "time", True,
              at_least="time_to_target_at_least"),
    # two objects of different classes per canvas: a class's map must find its own object, which
    # the class-agnostic ink map does for at most one of the two; Grad-CAM scores every head.
    # Protocol 4: only the objects the head recognises alone at their position count, so that
    # a head that cannot recognise a moved object does not lose pointing for it; gap_hidden
    # (global pooling, then a hidden layer) asks whether removing the fully connected layers,
    # as the write-up says, is what ties the maps to the classes
    ClaimTest("feature maps tied to classes", "pointing_gradcam_two_objects_recognised", False,
              "accuracy", True,
              ("dense", "gap_hidden", "ref:pointing_ink_two_objects_recognised")),
    ClaimTest("feature maps tied to classes", "pointing_gradcam_two_objects", False, "accuracy",
              False, ("dense", "ref:pointing_ink_two_objects")),
    ClaimTest("feature maps tied to classes", "pointing_two_objects", False, "accuracy", False,
              ("ref:pointing_ink_two_objects",)),
    # one object on a blank canvas: any map that finds ink points at it
    ClaimTest("feature maps tied to classes", "pointing_accuracy_shifted", False, "accuracy",
              False, ("ref:pointing_centre_prior_shifted",)),
    ClaimTest("feature maps tied to classes", "pointing_gradcam_shifted", False, "accuracy", False,
         ("dense", "ref:pointing_ink_shifted")),
)


def changed_between(first: int, second: int) -> frozenset[tuple[str, str]]:
    """The (claim, metric) tests whose analysis changed between protocol versions ``first``
    and ``second`` (either order)."""
    low, high = sorted((first, second))
    return frozenset().union(*(tests for version, tests in CHANGED_IN.items()
                               if low < version <= high))


def heads_under_test(heads: Sequence[str]) -> list[str]:
    """The heads the claims are about, in order: those whose global pooling replaces the dense
    layers (the pooled linear heads and ``nin``). The other heads are baselines and controls."""
    return [h for h in heads if h in HEADS_UNDER_TEST]


def setting_label(fraction: float, train_shift: int, train_images: int | None = None) -> str:
    """How a group of runs was trained, in words."""
    data = "all training images" if fraction == 1 else f"{fraction:.0%} of the training images"
    if train_images is not None:
        data += f" ({train_images:,})"
    moves = "centred" if train_shift == 0 else f"random shifts up to {train_shift} px"
    return f"{data}, {moves}"
