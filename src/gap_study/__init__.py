"""gap-study: what replacing a CNN's dense classifier head with global pooling does, measured.

Modules: ``pooling`` (global pooling ops), ``models`` (backbone and heads), ``data`` (data
sets on a canvas, shifts), ``train`` (the training loop), ``evaluate`` (metrics), ``report``
(aggregation, figures, the report), ``params`` (validated ``params.yaml``).
"""

__version__ = "0.1.0"
