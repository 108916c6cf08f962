"""Measures: accuracy, loss and the shift grid (``metrics``), class activation maps and
pointing (``localization``), and the shift grid's phases relative to the backbone's stride."""
