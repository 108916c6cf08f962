"""When a head counts as untrained (``gap_study.stages.untrained``): its chosen rate ends at
chance or worse, a mean validation loss at most 1% below ln K; the tune stage's choice table
marks it and its warning names it with the keys to change."""

import math
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from gap_study.pipeline.params import TuneParams
from gap_study.stages.tune import RUN_COLUMNS, choice_table, warn_at_chance
from gap_study.stages.untrained import untrained_fix, untrained_heads, untrained_threshold

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10  # the digits' classes: chance is a mean validation loss of ln 10 = 2.3026
TUNING = TuneParams(learning_rates=[0.001, 0.003, 0.01], lr_min=0.0001, lr_max=0.1,
                    seeds=[100, 101])


def _flags(gap: dict[float, float], num_classes: int = CLASSES) -> pd.DataFrame:
    """``choice_table`` of tuning runs in which ``gap`` ends each rate with the loss given (on
    both tuning seeds) and ``dense`` trains."""
    rows = [("gap", lr, seed, loss, 0.1) for lr, loss in gap.items() for seed in TUNING.seeds]
    rows += [("dense", 0.003, seed, 0.06, 0.98) for seed in TUNING.seeds]
    return choice_table(pd.DataFrame(rows, columns=RUN_COLUMNS), TUNING, num_classes)


def test_a_head_whose_best_rate_ends_at_chance_is_flagged_and_named_in_a_warning_with_the_fix():
    choices = _flags({1e5: 2.315, 1e6: 2.425})
    assert choices.set_index("head")["at_chance"].to_dict() == {"gap": True, "dense": False}
    with pytest.warns(RuntimeWarning, match=r"trains gap: the best one ends at chance or worse, "
                                            r"with a mean validation loss of at least 2\.28, 1% "
                                            r"below ln 10 = 2\.303.*\(gap at 100000: 2\.315\).*"
                                            r"tune\.learning_rates, tune\.lr_min and tune\.lr_max, "
                                            r"or give training more \(train\.epochs and "
                                            r"data\.max_train\)"):
        warn_at_chance(choices, CLASSES)


def test_a_loss_at_chance_is_flagged_whichever_way_its_last_bits_fall():
    # a head that learned nothing ends near ln K, a little either side: the flag must not
    # depend on which side of ln K its last bits put it
    chance = math.log(CLASSES)
    for loss in (math.nextafter(chance, 0.0), chance, math.nextafter(chance, 3.0), 2.3008):
        assert _flags({0.003: loss}).set_index("head")["at_chance"].to_dict() == {
            "gap": True, "dense": False}, loss


def test_the_threshold_is_one_percent_below_chance_and_a_loss_below_it_is_not_flagged(recwarn):
    threshold = untrained_threshold(CLASSES)
    assert threshold == pytest.approx(0.99 * math.log(10)) == pytest.approx(2.2796, abs=1e-4)
    assert [bool(_flags({0.003: loss})["at_chance"].iloc[0])
            for loss in (math.nextafter(threshold, 0.0), threshold)] == [False, True]
    choices = _flags({0.003: 0.985 * math.log(10)})  # 2.268
    assert not choices["at_chance"].any()
    warn_at_chance(choices, CLASSES)
    assert not recwarn.list
    # the same losses on 9 classes: above ln 9 = 2.197
    assert _flags({0.003: 0.985 * math.log(10)}, 9).set_index("head")["at_chance"].to_dict() \
        == {"gap": True, "dense": False}


def test_the_fix_and_the_untrained_heads_read_from_the_tune_stages_choices():
    assert untrained_fix() == ("change tune.learning_rates, tune.lr_min and tune.lr_max, or give "
                               "training more (train.epochs and data.max_train) in params.yaml")
    choices = pd.DataFrame({"head": ["dense", "gap", "gmp"], "at_chance": [False, True, True]})
    assert untrained_heads(choices, ["gmp", "gap"]) == ["gap", "gmp"]  # in the file's order
    assert untrained_heads(choices, ["dense"]) == []
    assert untrained_heads(choices.drop(columns="at_chance"), ["gap"]) is None


def test_the_tune_stage_warns_of_a_choice_at_chance_before_it_writes_anything():
    code = "\n".join(c.source for c in nbformat.read(ROOT / "notebooks" / "tune.ipynb",
                                                      as_version=4).cells
                     if c.cell_type == "code")
    warning = code.find("warn_at_chance(choices, dataset.num_classes)")
    assert -1 < code.find("choices = choice_table(table, tuning, dataset.num_classes)") \
        < warning < code.find("write_csv(")
