"""gap_study.report.figures: the shared per-head bar helper; report.forest: the equivalence
margins the forest plot draws."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from gap_study.report.figures import head_bars
from gap_study.report.forest import plot_forest
from gap_study.report.stats import t_interval

VALUES = {"dense": [1.0, 2.0, 3.0], "gap": [4.0, 5.0, 6.0], "gsp": [7.0, 8.0, 10.0]}


def _per_seed() -> pd.DataFrame:
    return pd.DataFrame([{"head": head, "seed": seed, "value": value}
                         for head, values in VALUES.items()
                         for seed, value in enumerate(values)])


def test_head_bars_draw_one_bar_per_head_in_order_with_the_t_interval():
    heads = ["gsp", "dense", "gap"]
    fig, ax = plt.subplots()
    head_bars(ax, _per_seed(), "value", heads, 0.95)
    bars = sorted(ax.patches, key=lambda bar: bar.get_x())
    assert [t.get_text() for t in ax.get_xticklabels()] == heads
    assert [bar.get_height() for bar in bars] == pytest.approx([np.mean(VALUES[h])
                                                                for h in heads])
    assert len({bar.get_facecolor() for bar in bars}) == 3  # a colour per head
    assert ax.get_legend() is None
    # one error bar (with caps) per head, spanning the Student-t interval of the tables
    assert len(ax.lines) == 3
    for x, head in enumerate(heads):
        line = next(line for line in ax.lines if np.nanmean(line.get_xdata()) == x)
        assert (np.nanmin(line.get_ydata()), np.nanmax(line.get_ydata())) == \
            pytest.approx(t_interval(VALUES[head], 0.95))
    plt.close(fig)


def test_head_bars_with_hue_draw_a_bar_per_hue_value_beside_each_other():
    data = pd.concat([_per_seed().assign(split="train"),
                      _per_seed().assign(split="test", value=lambda f: f.value / 2)])
    fig, ax = plt.subplots()
    head_bars(ax, data, "value", ["dense", "gap", "gsp"], 0.95, hue="split")
    assert [len(container) for container in ax.containers] == [3, 3]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "test"]
    plt.close(fig)


def test_head_bars_draw_no_interval_for_a_single_value():
    one = _per_seed().drop_duplicates("head")
    fig, ax = plt.subplots()
    head_bars(ax, one, "value", ["dense", "gap", "gsp"], 0.95)
    assert all(np.isnan(line.get_ydata()).all() for line in ax.lines)
    plt.close(fig)


def _comparison(metric: str, margin: float) -> dict:
    return {"claim": "c", "metric": metric, "role": "primary", "setting": "s", "head": "gap",
            "baseline": "dense", "margin": margin, "improvement": 0.02, "ci_low": -0.01,
            "ci_high": 0.05, "adjusted_low": -0.02, "adjusted_high": 0.06,
            "difference_low": -0.03, "difference_high": 0.07, "exact": False,
            "verdict": "inconclusive"}


def test_the_forest_plot_draws_a_time_margin_where_its_ratio_test_ends():
    # a time is equivalent within a ratio of [1/1.1, 1.1]: improvements -9.1% to +10%
    rows = pd.DataFrame([_comparison("seconds_per_step", 0.10),
                         _comparison("test_accuracy", 0.01)])
    fig = plot_forest(rows, {})
    dotted = [sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":")
              for ax in fig.axes]
    assert dotted[0] == pytest.approx([100 * (1 / 1.1 - 1), 10.0])
    assert dotted[1] == pytest.approx([-1.0, 1.0])
    plt.close(fig)
