"""Compile the CPU kernels of ``gap_study.nets`` (numba) into numba's cache, then exit.

``tests/conftest.py`` starts this in the background as the suite starts. numba compiles a
kernel in every process that needs it before any has cached it: in a fresh clone the two
Dask workers of ``test_pipeline.py``'s mechanism stage and both pytest workers each spent
13-15 s of CPU on the same float32 kernels (``benchmarks/README.md``, "The test suite's
time"). Compiled once here, early, they load from the cache. Nothing depends on it: a process
that starts before the cache is written compiles for itself, as without it.
"""

import torch

from gap_study.nets.downsample import ApsMaxPool2d, BlurMaxPool2d


def compile_kernels() -> None:
    # float32 first: the stages' dtype; float64: the kernel tests'. Padding, filter size and
    # layout do not change a kernel's signature (index maps and taps are arrays).
    for dtype in (torch.float32, torch.float64):
        for layer in (BlurMaxPool2d(2, 3, "zeros").to(dtype), ApsMaxPool2d("zeros")):
            x = torch.rand(2, 2, 6, 6, dtype=dtype).to(memory_format=torch.channels_last)
            with torch.no_grad():
                layer(x)
            layer(x.requires_grad_()).sum().backward()


if __name__ == "__main__":
    compile_kernels()
