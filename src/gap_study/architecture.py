"""The names of the study's classifier heads (STUDY.md, "Heads").

They live apart from ``gap_study.pooling`` and ``gap_study.models``, which implement them, so
that validating ``params.yaml`` (``gap_study.params``, run before every stage's kernel starts)
does not have to import torch.
"""

from __future__ import annotations

__all__ = ["HEAD_NAMES", "POOLED_HEAD_NAMES"]

# heads that pool the feature map globally and then apply Linear(C, K): the keys of
# gap_study.pooling.GLOBAL_POOLS, in this order
POOLED_HEAD_NAMES: tuple[str, ...] = ("gap", "gmp", "gsp", "gem", "lse", "avgmax")
HEAD_NAMES: tuple[str, ...] = ("dense", *POOLED_HEAD_NAMES, "nin")
