"""The report stage: seeds aggregated, claims judged, figures drawn, the report written.

Modules (import them directly; this package imports none of them, so that the torch- and
matplotlib-free ones stay light for ``gap_study.sweep``):

- ``stats``: Student-t and Welch-t intervals, ``summarize`` over seeds.
- ``tables``: every head's outputs collected into typed tables; main runs, learning curve,
  ablation; the headline metrics for ``dvc metrics``.
- ``comparisons``: one comparison's paired t-test and bootstrap, equivalence, intervals.
- ``decisions``: the multiplicity adjustments and the decision rule with its adjusted
  intervals.
- ``bootstrap``: the paired two-stage bootstrap over seeds and test images; ``per_image``:
  the evaluate stage's per-image values as its tables.
- ``claims``: the write-up's claims and the rules that turn intervals into verdicts.
- ``formatting``: display units, metric names, ``mean [CI]`` cells, Markdown tables.
- ``facts``: ``ReportFacts``, everything the report states, computed; ``verdict_facts``: the
  claims' verdicts, effects and comparison tables; ``pooling_facts``: its facts on
  translation, class activation maps and sum pooling; ``mechanism`` (with
  ``mechanism_distance`` and ``mechanism_training``): the mechanism experiment's facts;
  ``scope``: what the run can say; ``tuning``: the tune stage's choices.
- ``render``: the report from ``templates/report.md.j2``, which holds all its prose, and its
  wide tables as CSV files.
- ``figures`` and ``forest``: every plot (matplotlib/seaborn) and saving them.
- ``html``: the self-contained HTML twin of the Markdown report.
- ``dvc_views``: what DVC shows: a verdict per claim (``verdicts.json``), a few numbers
  per head (``headline.json``), tidy tables for ``dvc.yaml``'s top-level plots.
"""

__all__: list[str] = []
