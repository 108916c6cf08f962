"""Data: reading data sets (verified downloads, IDX and CIFAR-10 files), stratified splits, the
canvas the objects move on, two-object canvases, and the prepare stage's ``dataset.npz``."""
