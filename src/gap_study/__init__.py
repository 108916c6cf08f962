"""gap-study: what replacing a CNN's dense classifier head with global pooling does, measured.

The protocol is ``docs/study.md``; the modules, in the order the pipeline uses them:

- data: ``sources`` (verified downloads) and ``file_formats`` (IDX, CIFAR-10 binary) read a
  data set; ``splits`` picks stratified subsets; ``prepare`` centres it on a ``canvas``.
- model: ``architecture`` (torch-free: head names, which heads have class maps, the
  backbone's stride, ``ModelConfig``), ``pooling`` (global pooling ops), ``models``.
- a run: ``runtime`` (device, seeding), ``train`` (the loop), ``checkpoints``.
- evaluation: ``metrics`` (accuracy, shift grid, stability), ``localization`` (class
  activation maps), ``evaluate`` (which metrics each run gets).
- report: the ``report`` package (statistics, claims, figures, text); ``sweep`` pools
  experiments.
- plumbing: ``params`` (validated ``params.yaml``), ``paths`` (file layout), ``io`` (atomic
  writes), ``provenance`` (run records), ``run_notebook`` (the stage runner).
"""

__version__ = "0.1.0"
