"""The backbone's downsampling between blocks, one op per class (``docs/study.md``, "The
mechanism of translation robustness"): a plain 2x2 max-pool, Zhang's (2019) anti-aliased
max-pool, or Chaman & Dokmanić's (2021) adaptive polyphase sampling after a 2x2 max at stride 1,
padded in the network's padding mode (``gap_study.nets.padding``).

Padding modes are the ``torch.nn.Conv2d`` names (``zeros``, ``circular``, ``reflect``), and every
padding of a network uses the same one, so that ``circular`` makes the whole network equivariant
to circular shifts by multiples of its total stride (with ``aps``: to every circular shift).
"""

from __future__ import annotations

import warnings
from functools import cache, lru_cache
from types import ModuleType

import torch
import torch.nn.functional as F
from kornia.filters.kernels import get_pascal_kernel_2d
from torch import Tensor, nn

from gap_study.nets.padding import PAD_MODES, memory_layout, pad2d

__all__ = ["ApsMaxPool2d", "BlurMaxPool2d", "adaptive_polyphase_sample", "blurmax_by_torch",
           "make_downsample", "max_2x2_stride_1", "polyphase_choice", "polyphase_energies",
           "take_polyphase"]


def _check_padding(padding: str) -> None:
    if padding not in PAD_MODES:
        raise ValueError(f"unknown padding {padding!r}; allowed: {', '.join(PAD_MODES)}")


def max_2x2_stride_1(x: Tensor, padding: str) -> Tensor:
    """The 2x2 max at stride 1 of the anti-aliased layers, the map padded one row and column
    after it in ``padding`` mode so that its size is kept: ``(N, C, H, W) -> (N, C, H, W)``.

    1. Every padding keeps the map's layout (``gap_study.nets.padding.pad2d``).
    2. The same function two ways: ``max_pool2d`` on a channels_last map while gradients are
       tracked (its backward routes each window's gradient to one input, the first maximum in
       row-major order), and the maximum of shifted views without them (evaluation: over
       pairs of rows, then of columns), which gives the same values several times faster on
       CPU. ``max_pool2d`` at stride 1 is
       several times slower again on a contiguous map.
    """
    x = pad2d(x, (0, 1, 0, 1), padding)
    if torch.is_grad_enabled():
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2, stride=1)
    rows = torch.maximum(x[..., :-1, :], x[..., 1:, :])  # each row's pair, then each column's
    return torch.maximum(rows[..., :-1], rows[..., 1:])


def blurmax_by_torch(x: Tensor, kernel: Tensor, padding: str) -> Tensor:
    """``BlurMaxPool2d`` in torch's ops, on every device: ``max_2x2_stride_1``, then the filter
    ``kernel`` ``(C, 1, k, k)`` as a depthwise convolution at stride 2, its zero padding
    inside the convolution, without a padded copy."""
    x = max_2x2_stride_1(x, padding)
    radius = kernel.shape[-1] // 2
    if padding == "zeros":
        return F.conv2d(x, kernel, stride=2, padding=radius, groups=len(kernel))
    x = pad2d(x, (radius, radius, radius, radius), padding)
    return F.conv2d(x, kernel, stride=2, groups=len(kernel))


@cache
def _cpu_kernel() -> ModuleType | None:
    """``gap_study.nets.blurmax_autograd``, the CPU kernel's autograd functions, imported (and
    the kernel and numba with them) on first use.

    1. Without numba, ``None`` and a warning: torch's ops instead, which round the filter's
       sums in another order (run records say which: ``numba`` is ``None`` in
       ``gap_study.pipeline.provenance.run_environment``).
    2. With numba, a kernel that fails to load (e.g. numba finds no writable folder for its
       cache) is an error, not a quiet switch to other numbers.
    """
    try:
        import numba  # noqa: F401
    except ImportError as error:
        warnings.warn(f"BlurMaxPool2d and ApsMaxPool2d run on torch's ops, without their "
                      f"CPU kernel: {error}", RuntimeWarning, stacklevel=3)
        return None
    try:
        from gap_study.nets import blurmax_autograd
    except Exception as error:
        raise RuntimeError(
            f"The CPU kernels of BlurMaxPool2d and ApsMaxPool2d (gap_study.nets.blurmax_kernel, "
            f"aps_kernel) did not load: {error}. "
            "If numba cannot write its cache, set NUMBA_CACHE_DIR to a writable folder; to run "
            "on torch's ops instead, uninstall numba (the numbers then differ in float "
            "rounding).") from error
    return blurmax_autograd


def _cpu_kernel_for(x: Tensor, blur_size: int) -> ModuleType | None:
    """``_cpu_kernel()`` where a layer takes it for ``x`` (``blur_size``: the filter's, 1 for
    the max alone), else ``None``.

    1. A CPU map of float32 or float64: torch's ops on other devices (CUDA) and dtypes.
    2. Sides above the filter's radius and at least 2: smaller maps go to torch's ops, which
       refuse the reflect and circular padding that would wrap around more than once.
    """
    fits = (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and x.dim() == 4 and min(x.shape[-2:]) > max(blur_size // 2, 1))
    return _cpu_kernel() if fits else None


class BlurMaxPool2d(nn.Module):
    """2x2 max at stride 1, then a binomial low-pass filter at stride 2: ``(N, C, H, W) ->
    (N, C, H/2, W/2)`` for even ``H``, ``W``.

    The filter is kornia's normalised Pascal kernel. Unlike kornia's ``MaxBlurPool2D`` (zero
    padding) and antialiased-cnns' ``BlurPool`` (reflect padding by default), both steps pad in
    ``padding`` mode: the max one row and column after the map (``max_2x2_stride_1``), the
    filter ``blur_size // 2`` on every side. (kornia's ``max_blur_pool2d`` does not pad the max,
    so its last row and column of output differ from this layer's in every mode; only its
    kernel is used.) On CPU both steps and their backward run as one kernel
    (``gap_study.nets.blurmax_kernel``, numba), in the map's layout, without padded copies:
    the max's values and gradient rule are ``max_pool2d``'s, the filter's sums are rounded
    in another order. Elsewhere (CUDA), or without numba, ``blurmax_by_torch``.
    """

    def __init__(self, channels: int, blur_size: int = 3, padding: str = "zeros") -> None:
        super().__init__()
        if blur_size % 2 != 1:
            raise ValueError(f"blur_size must be odd, got {blur_size}")
        _check_padding(padding)
        self.channels, self.blur_size, self.padding = channels, blur_size, padding
        kernel = get_pascal_kernel_2d(blur_size, norm=True)
        # a buffer outside the state dict: fixed, so checkpoints hold only learned weights
        self.register_buffer("kernel", kernel.expand(channels, 1, blur_size, blur_size).clone(),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        kernel = _cpu_kernel_for(x, self.blur_size)
        if kernel is not None:
            return kernel.blurmax(x, self.blur_size, self.padding)
        return blurmax_by_torch(x, self.kernel, self.padding)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, blur_size={self.blur_size}, padding={self.padding!r}"


def _even_sides(x: Tensor) -> tuple[int, int]:
    height, width = x.shape[-2:]
    if height % 2 or width % 2:
        raise ValueError(f"adaptive polyphase sampling needs a map of even height and width, "
                         f"got {height}x{width}")
    return height, width


def polyphase_energies(x: Tensor) -> Tensor:
    """The squared l2 norm of each image's four polyphase components, over all its channels:
    ``(N, C, H, W) -> float64 (N, 4)``, component ``2 i + j`` being ``x[n, :, i::2, j::2]``.

    1. Squared, not the norm: the square root is monotone, so the largest is the same
       component, and rounding a root could make two different energies equal.
    2. Each position's sum over channels is rounded in ``x``'s dtype, the same wherever in
       the map the position lies; the sum over positions accumulates in float64. A circular
       shift of the map permutes the components and moves positions within each, which
       changes the order of that sum and so its rounding: at most about ``n`` unit roundoffs
       of the energy for ``n`` terms, with the study's first APS (10 x 10 positions) 1e-5 of
       it in float32 and 1e-14 in float64 (both typically far less). Only components whose
       energies differ by less can be chosen differently after a shift: in float64, in
       practice only exact ties. Summing the channels first also avoids a float64 copy of
       the map (``benchmarks/README.md``, "Adaptive polyphase sampling").
    """
    height, width = _even_sides(x)
    with torch.no_grad():
        per_position = x.square().sum(dim=1)  # (N, H, W), every position's channels alike
        return per_position.unflatten(2, (width // 2, 2)).unflatten(1, (height // 2, 2)).sum(
            dim=(1, 3), dtype=torch.float64).flatten(1)


def polyphase_choice(x: Tensor) -> Tensor:
    """Each image's component of largest energy (``polyphase_energies``), ``int64 (N,)``;
    between components of exactly equal energy, the first (``torch.argmax``'s documented
    rule). Deterministic: the same map gives the same choice on every run. The tie rule is
    not shift invariant (a shift reorders the components), and no rule by index can be: a
    tie keeps the invariance only where the tied components are circular shifts of each
    other (``docs/study.md``, "The mechanism of translation robustness")."""
    return polyphase_energies(x).argmax(dim=1)


@lru_cache(maxsize=64)
def _phase_positions(height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Where the polyphase components of a ``height x width`` map lie, as flat positions
    (``row * width + column``): component 0's in row-major order ``(1, height/2 * width/2)``,
    and the offset of component ``2 i + j`` from it (``i * width + j``), ``(4,)``.

    Made outside inference mode, so that the cached tensors serve training too. Real tensors
    only: traced under a ``FakeTensorMode`` (``torch.compile``, which the study does not use),
    the cache would keep fake ones (``gap_study.nets.padding``'s cache alike)."""
    with torch.inference_mode(False):
        grid = torch.arange(0, height, 2)[:, None] * width + torch.arange(0, width, 2)
        offsets = torch.tensor([0, 1, width, width + 1])
        return grid.reshape(1, -1).to(device), offsets.to(device)


def _channel_rows(x: Tensor) -> Tensor:
    """``(N, C, H, W)`` as one row of ``C`` channels per position, ``(N * H * W, C)``: a view
    of a channels_last map, a copy of another."""
    n, channels, height, width = x.shape
    return x.permute(0, 2, 3, 1).reshape(n * height * width, channels)


class _TakePolyphase(torch.autograd.Function):
    """Image ``n``'s polyphase component ``index[n]``: ``(N, C, H, W) -> (N, C, H/2, W/2)``,
    in ``x``'s layout, from the flat positions of ``_phase_positions``.

    1. channels_last: one ``index_select`` of the kept positions' rows of channels (each
       position's channels lie together). Contiguous: one ``gather`` of each channel's kept
       positions. Indexing a six-dimensional view of the four components took 1.5-2.7 times
       as long in either layout, forward alone or with backward (``benchmarks/README.md``,
       "Adaptive polyphase sampling").
    2. Backward copies each image's gradient into the positions it came from, zero
       elsewhere, in ``x``'s layout (``index_copy_`` or ``scatter_``, both deterministic on
       CPU and CUDA under torch's deterministic mode): autograd's backward of an indexing
       returns a contiguous gradient, which in a channels_last network turns every op before
       it into a layout conversion (``gap_study.nets.padding`` has the same story for
       circular padding). Only copies, forward and backward: the values and gradients are
       the indexing's, bit for bit.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor,  # type: ignore[override]
                index: Tensor) -> Tensor:
        height, width = _even_sides(x)
        n, channels = x.shape[:2]
        grid, offsets = _phase_positions(height, width, x.device)
        kept = grid + offsets[index][:, None]  # (N, H/2 * W/2): each image's kept positions
        layout = memory_layout(x)
        if layout == torch.channels_last:
            kept = (kept + torch.arange(0, n * height * width, height * width,
                                        device=x.device)[:, None]).reshape(-1)
            out = _channel_rows(x).index_select(0, kept).view(
                n, height // 2, width // 2, channels).permute(0, 3, 1, 2)
        else:
            kept = kept[:, None, :].expand(n, channels, -1)
            out = x.reshape(n, channels, height * width).gather(2, kept).view(
                n, channels, height // 2, width // 2)
        ctx.save_for_backward(kept)
        ctx.shape, ctx.layout = x.shape, layout  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: Tensor) -> tuple[Tensor, None]:
        (kept,) = ctx.saved_tensors  # type: ignore[attr-defined]
        (n, channels, height, width), layout = ctx.shape, ctx.layout  # type: ignore[attr-defined]
        # one kept entry per position: copies, no sums
        if layout == torch.channels_last:
            out = grad.new_zeros((n * height * width, channels))
            out.index_copy_(0, kept, _channel_rows(grad))
            return out.view(n, height, width, channels).permute(0, 3, 1, 2), None
        out = grad.new_zeros((n, channels, height * width))
        out.scatter_(2, kept, grad.reshape(n, channels, -1))
        return out.view(n, channels, height, width), None


def take_polyphase(x: Tensor, index: Tensor) -> Tensor:
    """Image ``n``'s polyphase component ``index[n]`` (``2 i + j``: ``x[n, :, i::2, j::2]``)."""
    return _TakePolyphase.apply(x, index)


def adaptive_polyphase_sample(x: Tensor) -> Tensor:
    """Adaptive polyphase sampling at stride 2 (APS, Chaman & Dokmanić 2021): each image keeps
    its polyphase component of largest l2 norm (``polyphase_choice``), ``(N, C, H, W) ->
    (N, C, H/2, W/2)`` for even ``H``, ``W``. A circular shift of an image permutes its
    components and shifts each circularly, so, barring ties, the kept component is the one
    kept before, shifted: the layer is equivariant to every circular shift, where a fixed
    phase is so only to even ones."""
    return _sample(x)[0]


def _sample(x: Tensor) -> tuple[Tensor, Tensor]:
    """``adaptive_polyphase_sample`` of ``x``, and each image's component index ``(N,)``."""
    index = polyphase_choice(x)
    return take_polyphase(x, index), index


class ApsMaxPool2d(nn.Module):
    """2x2 max at stride 1 (``max_2x2_stride_1``, padded in ``padding`` mode), then adaptive
    polyphase sampling (``adaptive_polyphase_sample``) in place of the fixed phase of a 2x2
    max-pool or the blur of ``BlurMaxPool2d``: ``(N, C, H, W) -> (N, C, H/2, W/2)`` for even
    ``H``, ``W``; as the paper replaces a max-pool of stride 2. No parameters. On CPU the max
    is ``BlurMaxPool2d``'s kernel's, and the backward a kernel of its own that routes the kept
    windows' gradients alone (``gap_study.nets.blurmax_autograd.adaptive_max``): the same
    values and gradients as ``max_2x2_stride_1`` and the sampling, which run elsewhere."""

    def __init__(self, padding: str = "zeros") -> None:
        super().__init__()
        _check_padding(padding)
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        kernel = _cpu_kernel_for(x, 1)
        if kernel is not None:  # on CPU: blurmax's kernel's max, a backward of its own
            # (gap_study.nets.aps_kernel); the same numbers
            return kernel.adaptive_max(x, self.padding, _sample)
        return adaptive_polyphase_sample(max_2x2_stride_1(x, self.padding))

    def extra_repr(self) -> str:
        return f"padding={self.padding!r}"


def make_downsample(kind: str, channels: int, blur_size: int, padding: str) -> nn.Module:
    """The layer that halves the map between two blocks: ``max``, ``blurmax`` or ``aps``."""
    if kind == "max":
        return nn.MaxPool2d(2)
    if kind == "blurmax":
        return BlurMaxPool2d(channels, blur_size, padding)
    if kind == "aps":
        return ApsMaxPool2d(padding)
    raise ValueError(f"unknown downsample {kind!r}; allowed: max, blurmax, aps")
