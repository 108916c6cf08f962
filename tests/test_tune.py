"""The tune stage and the rule behind every choice the study makes: on the validation split,
never on the test split."""

import dataclasses
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from builders import TINY_MODEL

from gap_study.pipeline.params import TrainParams
from gap_study.pipeline.paths import RunId
from gap_study.stages.train import train_task
from gap_study.stages.tune import TuningRun, choose_learning_rates, tune_task, tuning_table

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = TINY_MODEL
SETTINGS = TrainParams(seeds=[0], epochs=2, batch_size=32, schedule="cosine", drop_last=True,
                       weight_decay=0.0, fractions=[0.5, 1.0], shift=[0])


def _run(head, lr, accuracy, loss=0.5):
    return TuningRun(head, lr, accuracy, loss, pd.DataFrame(), {})


def test_each_head_keeps_the_rate_with_the_best_validation_accuracy():
    runs = [_run("gap", 0.001, 0.90), _run("gap", 0.003, 0.95), _run("gap", 0.01, 0.93),
            _run("dense", 0.001, 0.97), _run("dense", 0.003, 0.96)]
    assert choose_learning_rates(runs) == {"gap": 0.003, "dense": 0.001}
    table = tuning_table(runs)
    assert table[table.chosen][["head", "lr"]].values.tolist() == [["gap", 0.003],
                                                                   ["dense", 0.001]]


def test_a_tie_goes_to_the_lower_loss_then_to_the_smaller_rate():
    assert choose_learning_rates([_run("gap", 0.01, 0.9, 0.3), _run("gap", 0.001, 0.9, 0.4)]) \
        == {"gap": 0.01}
    assert choose_learning_rates([_run("gap", 0.01, 0.9), _run("gap", 0.001, 0.9)]) \
        == {"gap": 0.001}


def test_a_tuning_trial_trains_the_main_run_with_its_rate_and_tune_seed(small):
    trial = tune_task(("gap", 0.01), data=small.without_test(), architecture=ARCHITECTURE,
                      settings=SETTINGS, seed=100, device="cpu")
    assert (trial.head, trial.lr) == ("gap", 0.01)
    history = trial.history
    assert (history[["fraction", "train_shift", "seed"]].drop_duplicates().values.tolist()
            == [[1.0, 0, 100]])
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
            trial = tune_task(("gmp", 0.01), data=data, architecture=ARCHITECTURE,
                              settings=SETTINGS, seed=100, device="cpu")
            outcomes.append((trial.val_accuracy, trial.history.drop(
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
