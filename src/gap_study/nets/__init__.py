"""Networks: the torch-free architecture (head names, ``ModelConfig``, the backbone's stride),
global pooling ops, classifier heads, downsampling layers, the built models and checkpoints."""
