"""The report stage: seeds aggregated, claims judged, figures drawn, the report written.

Modules (import them directly; this package imports none of them, so that the torch- and
matplotlib-free ones stay light for ``gap_study.sweep``):

- ``stats``: Student-t and Welch-t intervals, ``summarize`` over seeds.
- ``tables``: every head's outputs collected into typed tables; main runs, learning curve,
  ablation; the headline metrics for ``dvc metrics``.
- ``claims``: the write-up's claims and the rules that turn intervals into verdicts.
- ``formatting``: display units, ``mean ± std [CI]`` cells and Markdown tables.
- ``figures``: every plot (matplotlib/seaborn) and saving them.
- ``text``: the report's sections and ``compose_report``; ``pooling_text``: its sections on
  translation robustness, class activation maps and sum pooling.
- ``html``: the self-contained HTML twin of the Markdown report.
"""

__all__: list[str] = []
