"""Pipeline plumbing: validated ``params.yaml``, the file layout, atomic writes, run records,
device and seeding, the Dask engine that runs a stage's tasks, and the notebook runner."""
