"""gap-study: what replacing a CNN's dense classifier head with global pooling does, measured.

The protocol is ``docs/study.md``. The subpackages, by role:

- ``data``: data sets, splits, the canvas, two-object canvases (the prepare stage).
- ``nets``: architecture, global pooling, heads, downsampling, models, checkpoints.
- ``measures``: accuracy and the shift grid, class activation maps, phases.
- ``stages``: the logic of tune, train, evaluate, mechanism and speed.
- ``report``: the report stage: statistics, verdicts, figures, the report.
- ``pipeline``: params, file layout, I/O, run records, the Dask engine, the notebook runner.

``sweep`` pools the results of several experiments (``python -m gap_study.sweep``). No
package imports its modules in ``__init__``: importing one module loads only what it needs.
"""

__version__ = "0.1.0"
