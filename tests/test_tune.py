"""The tune stage and the rule behind every choice the study makes: on the validation split,
never on the test split; by mean validation loss over tuning seeds, on a grid that extends
itself past an end where a head's best rate sits (protocol version 4)."""

import dataclasses
import math
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from builders import TINY_MODEL

from gap_study.measures.finite import NonFiniteError
from gap_study.pipeline.params import TrainParams, TuneParams
from gap_study.pipeline.paths import RunId
from gap_study.stages.train import train_task
from gap_study.stages.tune import (
    RUN_COLUMNS,
    TuningRun,
    best_rates,
    choice_table,
    half_decade,
    next_rates,
    runs_table,
    search,
    tune_task,
    tuning_table,
)

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = TINY_MODEL
SETTINGS = TrainParams(seeds=[0], epochs=2, batch_size=32, schedule="cosine", drop_last=True,
                       weight_decay=0.0, validation_batch_size=512, fractions=[0.5, 1.0], shift=[0])
CLASSES = 10  # the digits' classes
TUNING = TuneParams(learning_rates=[0.001, 0.003, 0.01], lr_min=0.0001, lr_max=0.1,
                    seeds=[100, 101])


def _table(rows):
    """A runs table from ``(head, lr, seed, val_loss, val_accuracy)`` rows."""
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _curve(head, losses, accuracy=0.9):
    """Rows of one head: ``{lr: (loss of seed 100, loss of seed 101)}``."""
    return [(head, lr, 100 + i, loss, accuracy)
            for lr, pair in losses.items() for i, loss in enumerate(pair)]


def test_the_choice_goes_by_validation_loss_where_validation_accuracy_ties():
    # both rates at 100% validation accuracy (the protocol v2 case): the loss decides
    table = _table(_curve("dense", {0.003: (0.020, 0.022), 0.01: (0.030, 0.028)}, accuracy=1.0))
    assert best_rates(table) == {"dense": 0.003}


def test_validation_accuracy_plays_no_part_in_the_choice():
    table = _table([("gmp", 0.003, 100, 0.056, 0.985), ("gmp", 0.003, 101, 0.058, 0.985),
                    ("gmp", 0.01, 100, 0.055, 0.970), ("gmp", 0.01, 101, 0.057, 0.970)])
    assert best_rates(table) == {"gmp": 0.01}


def test_the_mean_over_the_seeds_decides_not_one_seed():
    # seed 100 alone would pick 0.001; the mean over both seeds picks 0.003
    table = _table(_curve("gap", {0.001: (0.10, 0.50), 0.003: (0.12, 0.14)}))
    assert best_rates(table) == {"gap": 0.003}


def test_an_exact_tie_in_mean_loss_goes_to_the_smaller_rate_whatever_the_row_order():
    # binary fractions, so that the tie is exact in floating point: (0.2 + 0.4) / 2 is
    # 0.30000000000000004, not 0.3, and would let the smaller rate win outright
    rows = _curve("gap", {0.01: (0.25, 0.75), 0.003: (0.5, 0.5), 0.001: (0.875, 0.875)})
    means = tuning_table(_table(rows)).set_index("lr")["val_loss"]
    assert means[0.003] == means[0.01] == 0.5
    assert best_rates(_table(rows)) == {"gap": 0.003}
    assert best_rates(_table(rows[::-1])) == {"gap": 0.003}


def test_a_rate_that_diverged_on_one_seed_is_never_chosen_by_its_other_seed_alone():
    # 0.003's finite seed alone would win; its diverged seed makes its mean loss infinite
    table = _table(_curve("gap", {0.001: (0.31, 0.30), 0.003: (0.20, math.nan),
                                  0.01: (0.26, 0.25)}))
    assert best_rates(table) == {"gap": 0.01}
    summary = tuning_table(table).set_index("lr")
    assert summary.loc[0.003, "val_loss"] == math.inf and not summary.loc[0.003, "chosen"]
    assert summary.loc[0.01, "chosen"]


def test_a_head_whose_every_rate_diverged_is_refused_by_name_with_the_fix():
    table = _table(_curve("gem", {0.01: (math.nan, 0.2), 0.1: (math.inf, math.nan)})
                   + _curve("gap", {0.01: (0.2, 0.2)}))
    with pytest.raises(ValueError, match=r"gem diverged.*tune\.learning_rates"):
        best_rates(table)


def test_a_training_run_that_diverged_fails_in_its_task_naming_the_run(small, monkeypatch):
    def diverged(*args, **kwargs):
        return None, pd.DataFrame([{"epoch": 1, "train_loss": math.nan, "val_loss": math.nan}])
    monkeypatch.setattr("gap_study.stages.train.train_run", diverged)
    with pytest.raises(NonFiniteError, match=r"gmp fraction_0\.5-shift_0-seed_0: train_loss, "
                                         r"val_loss not finite"):
        train_task(("gmp", RunId(0.5, 0, 0)), data=small, architecture=ARCHITECTURE,
                   settings=SETTINGS, learning_rates={"gmp": 0.01}, device="cpu")


def test_the_tables_do_not_depend_on_the_order_the_runs_finished_in():
    runs = [TuningRun(head, lr, seed, lr / (seed - 90) + 0.1, 0.9, pd.DataFrame(), {})
            for head in ("dense", "gap") for lr in (0.001, 0.003, 0.01) for seed in (100, 101, 102)]
    shuffled = [runs[i] for i in np.random.default_rng(0).permutation(len(runs))]
    shuffled.sort(key=lambda run: run.head != "dense")  # heads keep their order (dense first)
    assert shuffled != runs
    pd.testing.assert_frame_equal(runs_table(shuffled), runs_table(runs))
    pd.testing.assert_frame_equal(tuning_table(runs_table(shuffled)),
                                  tuning_table(runs_table(runs)))


def test_half_decade_steps_are_taken_from_the_grid_end_and_print_as_written():
    up, down = [0.01], [0.001]
    for _ in range(3):
        up.append(half_decade(up[-1], 0.01, 1))
        down.append(half_decade(down[-1], 0.001, -1))
    assert [repr(rate) for rate in up[1:]] == ["0.0316", "0.1", "0.316"]
    assert [repr(rate) for rate in down[1:]] == ["0.000316", "0.0001", "3.16e-05"]


def test_a_head_whose_best_rate_is_an_end_of_its_grid_gets_the_next_half_decade_beyond_it():
    table = _table(_curve("gap", {0.001: (0.5, 0.5), 0.003: (0.1, 0.1), 0.01: (0.02, 0.03)})
                   + _curve("dense", {0.001: (0.03, 0.04), 0.003: (0.05, 0.05),
                                      0.01: (0.1, 0.2)})
                   + _curve("linear", {0.001: (0.05, 0.05), 0.003: (0.03, 0.03),
                                       0.01: (0.07, 0.07)}))
    assert next_rates(table, TUNING) == {"gap": [0.0316], "dense": [0.000316]}


def test_a_grid_of_one_rate_extends_both_ways():
    tuning = TuneParams(learning_rates=[0.003], lr_min=0.0009, lr_max=0.01, seeds=[100, 101])
    assert next_rates(_table(_curve("gap", {0.003: (0.1, 0.1)})), tuning) == \
        {"gap": [0.000949, 0.00949]}


def test_the_extension_stops_at_the_bounds():
    at_top = _table(_curve("gap", {0.01: (0.05, 0.05), 0.0316: (0.03, 0.03), 0.1: (0.01, 0.01)}))
    assert next_rates(at_top, TUNING) == {}
    narrow = TuneParams(learning_rates=[0.001, 0.003, 0.01], lr_min=0.0005, lr_max=0.03,
                        seeds=[100, 101])
    ends = _table(_curve("gap", {0.001: (0.5, 0.5), 0.003: (0.1, 0.1), 0.01: (0.02, 0.03)})
                  + _curve("dense", {0.001: (0.03, 0.04), 0.003: (0.05, 0.05), 0.01: (0.1, 0.2)}))
    assert next_rates(ends, narrow) == {}  # 0.0316 > 0.03, 0.000316 < 0.0005
    choices = choice_table(ends, narrow, CLASSES).set_index("head")
    assert choices["at_bound"].to_dict() == {"gap": True, "dense": True}


def _synthetic_train(minimum: float, width: float):
    """A ``search`` trainer whose final validation loss is convex in log10(rate), lowest at
    ``log10(rate) = minimum``; each seed scales and shifts the curve (its minimum stays)."""
    def train(tasks):
        return [TuningRun(head, lr, seed,
                          (1 + (seed - 100) / 10) * ((math.log10(lr) - minimum) / width) ** 2
                          + (seed - 100) / 100, 0.9, pd.DataFrame(), {})
                for head, lr, seed in tasks]
    return train


def _position(choice: pd.Series, tried: list[float], tuning: TuneParams) -> str:
    """Where a chosen rate sits, computed apart from ``choice_table``: ``interior``, ``bound``
    (an end whose half-decade step leaves the bounds) or ``unextended`` (an end that the
    bounds would let the grid extend past)."""
    lr = float(choice["lr"])
    if min(tried) < lr < max(tried):
        return "interior"
    past = []
    if lr == min(tried):
        past.append(lr / math.sqrt(10))
    if lr == max(tried):
        past.append(lr * math.sqrt(10))
    beyond_bounds = all(r < tuning.lr_min * 0.99 or r > tuning.lr_max * 1.01 for r in past)
    return "bound" if beyond_bounds else "unextended"


# minima below the lower bound, at it, inside the starting grid, between it and the upper
# bound, at the upper bound and beyond it; narrow and wide curves
@pytest.mark.parametrize("minimum", [-6.0, -4.0, -3.7, -3.2, -2.5, -2.1, -1.6, -1.0, -0.4, 1.0])
@pytest.mark.parametrize("width", [0.3, 2.0])
def test_after_the_search_every_chosen_rate_is_interior_or_at_a_bound(minimum, width):
    runs = search(["gap", "dense"], TUNING, _synthetic_train(minimum, width))
    table = runs_table(runs)
    choices = choice_table(table, TUNING, CLASSES)
    for _, choice in choices.iterrows():
        tried = sorted(table.loc[table["head"] == choice["head"], "lr"].unique())
        position = _position(choice, tried, TUNING)
        assert position in ("interior", "bound"), (choice["head"], choice["lr"], tried)
        assert choice["at_bound"] == (position == "bound")
    # and it is the best rate of the whole half-decade lattice within the bounds
    lattice = [0.0001, 0.000316, 0.001, 0.003, 0.01, 0.0316, 0.1]
    losses = {lr: _synthetic_train(minimum, width)([("gap", lr, 100)])[0].val_loss
              for lr in lattice}
    assert best_rates(table)["gap"] == min(lattice, key=lambda lr: (losses[lr], lr))


def test_the_starting_grid_alone_can_leave_a_choice_at_an_unextended_end():
    # what the search prevents: one round, as protocol v2 tuned, keeps the grid's top
    first_round = _synthetic_train(-1.6, 0.3)([("gap", lr, seed) for lr in TUNING.learning_rates
                                               for seed in TUNING.seeds])
    table = runs_table(first_round)
    choice = choice_table(table, TUNING, CLASSES).iloc[0]
    assert _position(choice, TUNING.learning_rates, TUNING) == "unextended"
    assert not choice["at_bound"] and next_rates(table, TUNING) == {"gap": [0.0316]}


# losses in binary fractions, so that "exactly the spread" is exact
NEIGHBOURS = pytest.mark.parametrize("neighbour, fragile", [
    ((0.5, 0.75), True),      # mean 0.625: 0.125 above the best, whose seeds span 0.25
    ((0.625, 0.875), True),   # mean 0.75: exactly the spread above
    ((0.75, 1.0), False),     # mean 0.875: beyond the spread
])


@NEIGHBOURS
def test_a_choice_is_fragile_when_a_neighbouring_rate_is_within_the_seeds_spread(neighbour,
                                                                               fragile):
    table = _table(_curve("gap", {0.001: (2.0, 2.5), 0.003: (0.375, 0.625), 0.01: neighbour}))
    choice = choice_table(table, TUNING, CLASSES).iloc[0]
    assert (choice["lr"], choice["val_loss"], choice["spread"]) == (0.003, 0.5, 0.25)
    assert choice["neighbour_gap"] == np.mean(neighbour) - 0.5
    assert choice["fragile"] == fragile


@NEIGHBOURS
def test_a_neighbouring_rate_below_the_choice_makes_it_fragile_as_one_above_does(neighbour,
                                                                                 fragile):
    # the mirror image: the close neighbour is the smaller rate, the larger one is far off
    table = _table(_curve("gap", {0.001: neighbour, 0.003: (0.375, 0.625), 0.01: (2.0, 2.5)}))
    choice = choice_table(table, TUNING, CLASSES).iloc[0]
    assert (choice["lr"], choice["val_loss"], choice["spread"]) == (0.003, 0.5, 0.25)
    assert choice["neighbour_gap"] == np.mean(neighbour) - 0.5
    assert choice["fragile"] == fragile


def test_only_a_neighbouring_rate_makes_a_choice_fragile():
    # 0.0316 is within the spread of 0.003, but 0.01 lies between them
    table = _table(_curve("gap", {0.001: (2.0, 2.5), 0.003: (0.375, 0.625), 0.01: (1.0, 1.0),
                                  0.0316: (0.625, 0.625)}))
    choice = choice_table(table, TUNING, CLASSES).iloc[0]
    assert (choice["lr"], choice["fragile"]) == (0.003, False)


def test_a_head_tried_at_one_rate_has_no_neighbour_and_is_not_fragile():
    only = TuneParams(learning_rates=[0.003], lr_min=0.003, lr_max=0.003, seeds=[100, 101])
    choice = choice_table(_table(_curve("gap", {0.003: (0.1, 0.3)})), only, CLASSES).iloc[0]
    assert math.isnan(choice["neighbour_gap"]) and not choice["fragile"]
    assert choice["at_bound"]


def test_the_choice_table_holds_each_heads_mean_loss_at_every_rate_it_tried():
    table = _table(_curve("gap", {0.003: (0.2, 0.4), 0.01: (0.1, 0.1), 0.0316: (0.2, 0.2)})
                   + _curve("dense", {0.001: (0.1, 0.1), 0.003: (0.05, 0.07), 0.01: (0.2, 0.2)}))
    choices = choice_table(table, TUNING, CLASSES).set_index("head")
    assert choices.index.tolist() == ["gap", "dense"]
    assert choices.loc["gap", "val_loss_lr_0.003"] == pytest.approx(0.3)
    assert math.isnan(choices.loc["gap", "val_loss_lr_0.001"])
    assert math.isnan(choices.loc["dense", "val_loss_lr_0.0316"])
    assert choices["lr"].to_dict() == {"gap": 0.01, "dense": 0.003}
    assert choices["rates"].to_dict() == {"gap": 3, "dense": 3}


def test_the_tuning_table_keeps_one_row_per_head_and_rate_with_the_columns_the_report_reads():
    # the seeds disagree on accuracy (binary fractions, so that the means are exact)
    table = _table([("gap", 0.001, 100, 0.5, 0.875), ("gap", 0.001, 101, 0.7, 0.625),
                    ("gap", 0.003, 100, 0.1, 1.0), ("gap", 0.003, 101, 0.2, 0.75)])
    summary = tuning_table(table)
    assert {"head", "lr", "val_accuracy", "val_loss", "chosen"} <= set(summary.columns)
    assert summary[["head", "lr"]].values.tolist() == [["gap", 0.001], ["gap", 0.003]]
    assert summary["val_loss"].tolist() == pytest.approx([0.6, 0.15])
    assert summary["val_accuracy"].tolist() == [0.75, 0.875]  # the means, not one seed's
    assert summary[["val_loss_min", "val_loss_max"]].values.tolist() == [[0.5, 0.7], [0.1, 0.2]]
    assert summary["chosen"].tolist() == [False, True]
    assert summary["seeds"].tolist() == [2, 2]


def test_a_tuning_run_trains_the_main_run_with_its_rate_and_seed(small):
    trial = tune_task(("gap", 0.01, 101), data=small.without_test(), architecture=ARCHITECTURE,
                      settings=SETTINGS, device="cpu")
    assert (trial.head, trial.lr, trial.seed) == ("gap", 0.01, 101)
    history = trial.history
    assert (history[["fraction", "train_shift", "seed"]].drop_duplicates().values.tolist()
            == [[1.0, 0, 101]])
    assert trial.val_loss == history.val_loss.iloc[-1]
    assert trial.val_accuracy == history.val_accuracy.iloc[-1]
    assert not any(column.startswith("test") for column in history)


def _scrambled_test_split(data):
    """``data`` with its test images and labels, and its two-object canvases (made of test
    objects), replaced by noise."""
    rng = np.random.default_rng(1)
    return dataclasses.replace(
        data, x_test=rng.integers(0, 256, data.x_test.shape, dtype=np.uint8),
        y_test=rng.permutation(data.y_test),
        x_pair=rng.integers(0, 256, data.x_pair.shape, dtype=np.uint8),
        y_pair=rng.permutation(data.y_pair))


@pytest.mark.parametrize("stage", ["tune", "train"])
def test_nothing_trained_or_chosen_depends_on_the_test_split(small, stage):
    outcomes = []
    for data in (small, _scrambled_test_split(small)):
        if stage == "tune":
            trial = tune_task(("gmp", 0.01, 100), data=data, architecture=ARCHITECTURE,
                              settings=SETTINGS, device="cpu")
            outcomes.append((trial.val_loss, trial.history.drop(
                columns=["epoch_seconds", "images_per_second"])))
        else:
            trained = train_task(("gmp", RunId(0.5, 0, 0)), data=data, architecture=ARCHITECTURE,
                                 settings=SETTINGS, learning_rates={"gmp": 0.01}, device="cpu")
            outcomes.append(trained.checkpoint["state_dict"])
    if stage == "tune":
        assert outcomes[0][0] == outcomes[1][0] and outcomes[0][1].equals(outcomes[1][1])
    else:
        assert all(torch.equal(outcomes[0][k], outcomes[1][k]) for k in outcomes[0])


@pytest.mark.parametrize("notebook", ["tune", "train", "speed"])
def test_the_stages_that_choose_or_train_hand_their_tasks_no_test_split(notebook):
    code = "\n".join(c.source for c in nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb",
                                                      as_version=4).cells
                     if c.cell_type == "code")
    assert "load_prepared(layout.prepared).without_test()" in code
    assert "test" not in code.replace("without_test", "")  # no other use of the test split


def test_the_tune_stage_refuses_a_fraction_without_a_full_batch_before_it_trains():
    # the train stage would refuse it only after every tuning run (dvc.yaml lists
    # train.fractions for tune, so mending it reruns tune too)
    code = "\n".join(c.source for c in nbformat.read(ROOT / "notebooks" / "tune.ipynb",
                                                      as_version=4).cells
                     if c.cell_type == "code")
    assert -1 < code.find("settings.check_batches(len(dataset.y_train))") < code.find("search(")


def test_without_test_empties_the_test_split_and_its_two_object_canvases_and_keeps_the_rest(
        small):
    kept = small.without_test()
    assert len(kept.x_test) == len(kept.y_test) == len(kept.box_test) == 0
    assert len(small.y_pair) > 0  # made of test objects: they go with the test split
    assert len(kept.x_pair) == len(kept.y_pair) == len(kept.box_pair) == 0
    assert kept.x_test.shape[1:] == small.x_test.shape[1:]
    assert kept.x_pair.shape[1:] == small.x_pair.shape[1:]
    assert kept.summary()["two_object_canvases"] == 0
    np.testing.assert_array_equal(kept.x_val, small.x_val)
    np.testing.assert_array_equal(kept.x_train, small.x_train)
