"""The mechanism experiment's facts (gap_study.report.mechanism, mechanism_distance and
mechanism_training): the phase gaps, what each cell closes, where padding acts, the flatten
baseline, the literature's expectations, the exact cell and the shift-trained runs, on hand-made
runs and shift grids whose gaps and effects are known."""

import itertools

import pandas as pd
import pytest

from gap_study.report.mechanism import (
    cells_in_order,
    mechanism_facts,
    phase_gaps,
    published_rows,
)
from gap_study.report.mechanism_distance import radius_bands, same_radius_phase_gap

SETTINGS = {"heads": ["dense", "gap"], "downsample": ["max", "blurmax"],
            "padding": ["zeros", "circular"]}
MODEL = {"downsample": "max", "padding": "zeros", "blur_size": 3}
# (whole-cell, other shifts, exact consistency) per head and cell
CELLS = {
    ("gap", "max", "zeros"): (0.98, 0.78, 0.70),
    ("gap", "max", "circular"): (0.99, 0.80, 0.72),     # padding closes 1 - 19/20 = 5%
    ("gap", "blurmax", "zeros"): (0.96, 0.91, 0.90),    # blur closes 1 - 5/20 = 75%
    ("gap", "blurmax", "circular"): (0.99, 0.99, 0.995),  # both close 100%
    ("dense", "max", "zeros"): (0.30, 0.35, 0.20),      # loses accuracy with distance
    ("dense", "max", "circular"): (0.40, 0.36, 0.19),
    ("dense", "blurmax", "zeros"): (0.45, 0.44, 0.31),
    ("dense", "blurmax", "circular"): (0.46, 0.45, 0.35),
}


@pytest.fixture
def runs() -> pd.DataFrame:
    rows = []
    for (head, downsample, padding), (aligned, other, consistency) in CELLS.items():
        for seed, wobble in enumerate((-0.005, 0.0, 0.005)):
            rows.append({"head": head, "downsample": downsample, "padding": padding,
                         "seed": seed, "source": "trained here", "test_images": 200,
                         "test_accuracy": 0.98, "consistency_exact": consistency + wobble,
                         "flip_rate_all_pairs": 0.3 - consistency / 4,
                         "shift_accuracy_mean": other, "aligned_shift_accuracy": aligned + wobble,
                         "other_shift_accuracy": other + wobble})
    return pd.DataFrame(rows)


# the shift grid (half-width 5, total stride 4): accuracy by radius in every cell, whole-cell
# shifts (all at radius 4) 10 points above the other shifts of radius 4, and extra accuracy at
# one radius (the grid's edge, 5, unless told) per head and cell
STRIDE = 4
BY_RADIUS = {0: 0.99, 1: 0.80, 2: 0.78, 3: 0.70, 4: 0.80, 5: 0.60}
WHOLE_CELL = 0.10
EDGE = {("gap", "max", "circular"): 0.10, ("gap", "blurmax", "circular"): 0.12,
        ("dense", "blurmax", "zeros"): 0.05, ("dense", "blurmax", "circular"): 0.07}
# every run moves with its seed, the circular ones more: paired differences between the
# paddings vary by 1 point per seed, while unpaired ones would vary by far more
WOBBLE = {"zeros": 0.02, "circular": 0.03}


def _grid(edge=EDGE, where=5, seeds=(0, 1, 2), settings=SETTINGS) -> pd.DataFrame:
    rows = []
    for head, (downsample, padding), seed in itertools.product(
            ["dense", "gap"], cells_in_order(settings), seeds):
        wobble = (seed - 1) * WOBBLE[padding]
        for dx, dy in itertools.product(range(-5, 6), repeat=2):
            radius = max(abs(dx), abs(dy))
            whole = radius > 0 and dx % STRIDE == 0 and dy % STRIDE == 0
            accuracy = BY_RADIUS[radius] + WHOLE_CELL * whole + wobble
            if radius == where:
                accuracy += edge.get((head, downsample, padding), 0)
            rows.append({"dx": dx, "dy": dy, "radius": radius, "accuracy": accuracy,
                         "head": head, "downsample": downsample, "padding": padding,
                         "fraction": 1.0, "train_shift": 0, "seed": seed})
    return pd.DataFrame(rows)


def _facts(runs, grid=None):
    grid = _grid() if grid is None else grid
    return mechanism_facts(runs, grid, STRIDE, SETTINGS, MODEL, ["dense", "gap"], ["gap"], 0.95)


def test_the_reference_cell_is_the_first_of_each_list():
    assert cells_in_order(SETTINGS) == [("max", "zeros"), ("max", "circular"),
                                        ("blurmax", "zeros"), ("blurmax", "circular")]


def test_phase_gaps_are_whole_cell_minus_other_shift_accuracy(runs):
    gaps = phase_gaps(runs)
    assert gaps.loc[("gap", "max", "zeros")].phase_gap == pytest.approx(0.20)
    assert gaps.loc[("gap", "blurmax", "zeros")].phase_gap == pytest.approx(0.05)


def test_each_cell_closes_its_share_of_the_reference_cells_phase_gap(runs):
    (closure,) = _facts(runs).closures
    assert (closure.head, closure.gap) == ("gap", pytest.approx(0.20))
    shares = dict(closure.closed)
    assert shares == pytest.approx({("max", "circular"): 0.05, ("blurmax", "zeros"): 0.75,
                                    ("blurmax", "circular"): 1.0})


def test_the_factor_verdict_says_which_closes_more_and_whether_they_interact(runs):
    (verdict,) = _facts(runs).verdicts["gap"]
    assert (verdict.downsample, verdict.padding) == ("blurmax", "circular")
    assert (verdict.blur, verdict.pad, verdict.both) == pytest.approx((0.75, 0.05, 1.0))
    assert verdict.little == ["padding"]  # 5% < 25%: little, by the declared threshold
    assert verdict.extra == pytest.approx(0.25) and verdict.interaction == "more"


def test_the_flatten_head_gets_its_best_cell_and_negative_phase_gap(runs):
    (dense,) = _facts(runs).flatten
    assert dense.best == pytest.approx(0.35)
    assert dense.best_cell == ("blurmax", "circular")
    assert dense.negative_gap == pytest.approx((0.30, 0.35))  # loses accuracy with distance
    assert "dense" not in _facts(runs).verdicts


def test_the_literature_is_checked_against_the_pooling_heads(runs):
    (expectation,) = _facts(runs).expectations
    assert expectation.gain == pytest.approx(0.20) and expectation.size == "larger than"
    assert _facts(runs).zhang == pytest.approx((0.0167, 0.0314), abs=1e-4)
    assert expectation.best == pytest.approx(0.995) and expectation.near_invariant


def test_a_blurred_network_short_of_invariance_is_not_near_invariant(runs):
    runs.loc[(runs["head"] == "gap") & (runs.downsample == "blurmax")
             & (runs.padding == "circular"), "consistency_exact"] = 0.95
    (expectation,) = _facts(runs).expectations
    assert expectation.best == pytest.approx(0.95)
    assert not expectation.near_invariant and not expectation.spans_threshold


def test_published_rows_set_zhangs_gains_and_azulays_flip_rates_beside_ours(runs):
    values = {row["source"]: row["value"] for row in published_rows(_facts(runs), runs, 3)}
    assert values["Zhang 2019, ImageNet ResNet-50: consistency without / with a Bin-5 blur"] \
        == "89.20% -> 91.31% (+2.1 pts)"
    assert values["this study: gap, max -> blurmax (binomial filter of size 3, zeros "
                  "padding)"] == "70.00% -> 90.00% (+20.0 pts)"
    assert values["this study: gap, max, zeros"] == "0.12"


def test_a_single_cell_is_described_without_comparisons(runs):
    alone = runs[(runs.downsample == "max") & (runs.padding == "zeros")]
    settings = {**SETTINGS, "downsample": ["max"], "padding": ["zeros"]}
    grid = _grid()
    grid = grid[(grid.downsample == "max") & (grid.padding == "zeros")]
    facts = mechanism_facts(alone, grid, STRIDE, settings, MODEL, ["dense", "gap"], ["gap"],
                            0.95)
    assert facts.closures[0].gap == pytest.approx(0.20) and facts.closures[0].closed == []
    assert facts.verdicts == {} and facts.expectations == [] and facts.paddings == {"gap": []}
    assert published_rows(facts, alone, 3)[-1]["source"] == "this study: gap, max, zeros"


def test_radius_bands_split_the_radius_of_the_whole_cell_shifts():
    bands = radius_bands(_grid(), STRIDE)
    assert list(bands.columns) == ["head", "downsample", "padding", "seed", "1", "2", "3",
                                   "4 whole-cell", "4 other", "5"]
    run = bands.set_index(["head", "downsample", "padding", "seed"]).loc[("gap", "max",
                                                                         "zeros", 1)]
    assert run["4 whole-cell"] == pytest.approx(0.90)
    assert run["4 other"] == pytest.approx(0.80)
    assert run["3"] == pytest.approx(0.70)


def test_the_same_radius_phase_gap_compares_shifts_of_one_distance():
    gaps = same_radius_phase_gap(_grid(), STRIDE)
    assert gaps.to_numpy() == pytest.approx([WHOLE_CELL] * len(gaps))
    assert len(gaps) == 2 * 4 * 3  # heads x cells x seeds
    small = _grid().query("radius < 4")  # no whole-cell shift on the grid
    assert same_radius_phase_gap(small, STRIDE).empty


def test_the_tables_by_cell_and_by_distance_hold_every_head_in_every_cell(runs):
    facts = _facts(runs)
    assert len(facts.csv["mechanism_factors"]) == 8
    assert list(facts.table.columns) == ["downsample", "padding", "`dense`", "`gap`",
                                         "`gap`: closed"]
    assert len(facts.table) == 4  # a row per cell
    # the share of the reference cell's phase gap each other cell closes, blank in that cell
    assert list(facts.table["`gap`: closed"]) == ["", "5%", "75%", "100%"]
    distance = facts.csv["mechanism_by_distance"].set_index(["head", "downsample", "padding"])
    row = distance.loc[("gap", "max", "zeros")]
    assert row["4 whole-cell"] == "90.0" and row["4 other"] == "80.0"
    assert row["same-radius phase gap"] == "10.0 [10.0, 10.0]"
    assert facts.has_whole_cell_shifts


def test_padding_acts_most_at_the_border_and_the_border_cue_holds(runs):
    (where,) = _facts(runs).paddings["gap"]
    assert (where.padding, where.reference, where.peak, where.at_grid_edge) == \
        ("circular", "zeros", 5, True)
    effects = {downsample: effect for downsample, effect in where.at_peak}
    assert (effects["max"].mean, effects["max"].low, effects["max"].high) == \
        pytest.approx((0.10, 0.075, 0.125), abs=1e-3)
    assert effects["blurmax"].mean == pytest.approx(0.12)
    assert where.others == pytest.approx((0.0, 0.0))
    border = _facts(runs).expectations[0].border
    assert (border.outcome, border.edge, border.peak) == ("gain", 5, 5)


def test_padding_that_acts_away_from_the_border_does_not_support_the_border_cue(runs):
    facts = _facts(runs, _grid(where=1))
    assert facts.paddings["gap"][0].peak == 1 and not facts.paddings["gap"][0].at_grid_edge
    border = facts.expectations[0].border
    assert (border.outcome, border.peak) == ("elsewhere", 1)
    assert (border.at_edge.low, border.at_edge.high) == pytest.approx((-0.025, 0.025), abs=1e-3)


def test_a_border_effect_within_the_seeds_spread_or_below_zero_is_told_apart(runs):
    small = _facts(runs, _grid(edge={("gap", "max", "circular"): 0.01,
                                     ("gap", "blurmax", "circular"): 0.01}))
    assert small.expectations[0].border.outcome == "unclear"
    lower = _facts(runs, _grid(edge={("gap", "max", "circular"): -0.10,
                                     ("gap", "blurmax", "circular"): -0.10}))
    assert lower.expectations[0].border.outcome == "loss"


def test_a_flatten_head_is_checked_at_the_largest_shifts_in_every_cell(runs):
    (dense,) = _facts(runs).flatten
    assert (dense.edge, dense.edge_accuracy, dense.centred_accuracy) == \
        (5, pytest.approx(0.60), pytest.approx(0.99))
    assert {cell: effect.mean for cell, effect in dense.edge_effects} == pytest.approx(
        {("max", "circular"): 0.0, ("blurmax", "zeros"): 0.05, ("blurmax", "circular"): 0.07})
    assert dense.outcome == "gain" and dense.gain_cell == ("blurmax", "circular")
    assert dense.gain_accuracy == pytest.approx(0.67)
    (flat,) = _facts(runs, _grid(edge={("gap", "max", "circular"): 0.10})).flatten
    assert flat.outcome == "consistent" and flat.gain_cell is None


def test_one_seed_gives_means_without_intervals_and_no_verdict(runs):
    facts = _facts(runs[runs.seed == 0], _grid(seeds=(0,)))
    assert facts.flatten[0].outcome == "one seed"
    distance = facts.csv["mechanism_by_distance"].set_index(["head", "downsample", "padding"])
    assert distance.loc[("gap", "max", "zeros"), "same-radius phase gap"] == "10.0"


def test_a_grid_without_whole_cell_shifts_has_no_same_radius_gap(runs):
    facts = _facts(runs, _grid().query("radius <= 3"))
    assert not facts.has_whole_cell_shifts
    assert "same-radius phase gap" not in facts.csv["mechanism_by_distance"]


# A third downsampling level, aps, and the model section's backbone (max, zeros) trained with
# shifts up to 5 pixels: (whole-cell, other shifts, exact consistency) per head and cell; the
# exact cell's gap is invariant in every run, its dense not
WIDE = {**SETTINGS, "downsample": ["max", "blurmax", "aps"], "train_shift": 5}
APS = {("gap", "aps", "zeros"): (0.97, 0.93, 0.92),     # closes 1 - 4/20 = 80%
       ("gap", "aps", "circular"): (0.99, 0.99, 1.0),
       ("dense", "aps", "zeros"): (0.40, 0.40, 0.30),
       ("dense", "aps", "circular"): (0.45, 0.45, 0.33)}
SHIFT_TRAINED = {"gap": (0.96, 0.95, 0.94), "dense": (0.90, 0.89, 0.86)}


def _wide_runs(runs: pd.DataFrame, exact: float = 1.0) -> pd.DataFrame:
    """``runs`` and the aps cells' runs (centred), and the shift-trained runs; the exact
    cell's gap at consistency ``exact`` in seed 2 and exactly 1 in the others."""
    rows = []
    for (head, downsample, padding, shift), (aligned, other, consistency) in [
            *(((*key, 0), value) for key, value in APS.items()),
            *(((head, "max", "zeros", 5), value) for head, value in SHIFT_TRAINED.items())]:
        for seed in (0, 1, 2):
            exact_cell = (head, downsample, padding) == ("gap", "aps", "circular")
            wobble = 0.0 if exact_cell else (seed - 1) * 0.01
            rows.append({"head": head, "downsample": downsample, "padding": padding,
                         "train_shift": shift, "seed": seed, "source": "trained here",
                         "test_images": 200, "test_accuracy": 0.97,
                         "consistency_exact": exact if exact_cell and seed == 2
                         else consistency + wobble,
                         "flip_rate_all_pairs": 0.3 - consistency / 4,
                         "shift_accuracy_mean": other + wobble,
                         "aligned_shift_accuracy": aligned + wobble,
                         "other_shift_accuracy": other + wobble})
    return pd.concat([runs.assign(train_shift=0), pd.DataFrame(rows)], ignore_index=True)


def _wide_facts(runs, settings=WIDE):
    centred = _grid(settings=settings)
    shifted = centred[(centred.downsample == "max") & (centred.padding == "zeros")].assign(
        train_shift=5, accuracy=0.0)  # would show in any table that let them in
    return mechanism_facts(runs, pd.concat([centred, shifted], ignore_index=True), STRIDE,
                           settings, MODEL, ["dense", "gap"], ["gap"], 0.95)


def test_each_downsampling_after_the_reference_gets_its_own_factor_verdict(runs):
    verdicts = _wide_facts(_wide_runs(runs)).verdicts["gap"]
    assert [(v.downsample, v.padding) for v in verdicts] == [("blurmax", "circular"),
                                                             ("aps", "circular")]
    assert (verdicts[1].blur, verdicts[1].pad, verdicts[1].both) == pytest.approx(
        (0.80, 0.05, 1.0))


def test_the_shift_trained_runs_stay_out_of_every_cells_numbers(runs):
    wide, plain = _wide_facts(_wide_runs(runs)), _facts(runs)
    assert len(wide.table) == 6  # a row per cell: none for the shift-trained runs
    for name in ("mechanism_factors", "mechanism_by_distance"):
        rows = wide.csv[name][wide.csv[name].downsample != "aps"].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, plain.csv[name])
    assert wide.closures[0].gap == plain.closures[0].gap
    values = {row["source"]: row["value"] for row in published_rows(wide, _wide_runs(runs), 3)}
    assert values["this study: gap, max -> blurmax (binomial filter of size 3, zeros "
                  "padding)"] == "70.00% -> 90.00% (+20.0 pts)"


def test_the_literature_expectations_are_about_blurmax_wherever_it_is_listed(runs):
    settings = {**WIDE, "downsample": ["max", "aps", "blurmax"]}
    (expectation,) = _wide_facts(_wide_runs(runs), settings).expectations
    assert (expectation.downsample, expectation.gain) == ("blurmax", pytest.approx(0.20))
    without = {**WIDE, "downsample": ["max", "aps"]}
    facts = _wide_facts(_wide_runs(runs[runs.downsample != "blurmax"]), without)
    assert facts.expectations == [] and len(facts.verdicts["gap"]) == 1


def test_the_exact_cell_counts_the_runs_in_which_every_prediction_held(runs):
    gap, dense = sorted(_wide_facts(_wide_runs(runs)).exact, key=lambda e: e.head != "gap")
    assert (gap.head, gap.pooled, gap.runs, gap.exact_runs, gap.exact) == ("gap", True, 3, 3,
                                                                           True)
    assert (dense.exact_runs, dense.exact, dense.consistency) == (0, False,
                                                                  pytest.approx(0.33))
    # one run a last bit short of every prediction agreeing is not exact
    (broken,) = [e for e in _wide_facts(_wide_runs(runs, exact=1 - 2**-52)).exact
                 if e.head == "gap"]
    assert (broken.exact_runs, broken.exact) == (2, False)
    assert _facts(runs).exact == []  # no aps, circular cell


def test_shift_trained_runs_are_paired_by_seed_with_the_centred_runs_of_their_backbone(runs):
    facts = _wide_facts(_wide_runs(runs))
    assert facts.train_shift == 5
    gap = next(t for t in facts.shift_trained if t.head == "gap")
    assert gap.shift == 5
    assert gap.centred["consistency_exact"] == pytest.approx(0.70)
    assert gap.trained["consistency_exact"] == pytest.approx(0.94)
    # the centred runs move by half a point per seed, the shift-trained by one: the pairs'
    # differences by half a point
    effect = gap.consistency_effect
    assert effect.mean == pytest.approx(0.24) and effect.low < 0.24 < effect.high
    table = facts.csv["mechanism_shift_training"]
    assert list(table["trained on"]) == ["centred", "shifts up to 5", "centred"] * 2
    assert list(table.downsample) == ["max", "max", "aps"] * 2
    assert _facts(runs).shift_trained == [] and _facts(runs).train_shift is None
    assert _facts(runs).csv.get("mechanism_shift_training") is None
