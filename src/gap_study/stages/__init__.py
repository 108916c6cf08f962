"""The pipeline stages' tested logic: tune, train, evaluate, mechanism and speed. Each
notebook in ``notebooks/`` is a few lines calling one of these modules."""
