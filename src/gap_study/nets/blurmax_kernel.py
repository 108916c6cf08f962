"""``BlurMaxPool2d``'s two steps as one CPU kernel (numba): the 2x2 max at stride 1 and the
binomial filter at stride 2, each padded in the layer's mode, forward and backward, on a
channels_last map; and the max alone, which ``ApsMaxPool2d`` takes before its sampling.
They work on NumPy arrays; ``gap_study.nets.blurmax_autograd`` wraps them as autograd
functions of torch tensors, which ``gap_study.nets.downsample`` calls on CPU (torch's ops
elsewhere). The max's loops are in ``gap_study.nets.max_2x2_kernel``.

Every map is handled as ``(N, rows, columns * C)``: a channels_last map with its rows
flattened. No padded copy is made: each step reads its padding through two index maps
(``source_rows``), whose entry ``t`` is the row (or column) of the padded map that padded row
``t`` copies (``t`` itself inside the map), ``-1`` where the mode pads zeros. The max reads its
windows' last row and column through them; the filter, its input rows, and the border columns
of each row of column sums.

1. The inner loops index 1-D views by their own loop variable: with an offset that numba
   cannot prove non-negative, its wrap-around of negative indices keeps LLVM from
   vectorising the loop. The loops over the images run on borrowed arrays (``_borrowed``),
   so that no view counts references, passed to a call or not. The forward's helpers are
   inlined (``inline="always"``), which its speed needs; the backward's are calls, as fast
   and quicker to compile.
2. Serial and in a fixed order, so deterministic; images are independent. One thread,
   whatever ``torch.get_num_threads()`` says (the study runs one per run).
3. Each sum adds its products in turn to zero, in the map's dtype, in one fixed order
   (``_sum_terms``; the max's gradients: ``max_2x2_kernel``), kept in registers over a row
   where the loop allows. A rewrite that keeps each order keeps the bits. No fast-math, so
   no fused multiply-adds.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.core import cgutils
from numba.extending import intrinsic

from gap_study.nets.max_2x2_kernel import windows_gradient, windows_max, windows_max_values

__all__ = ["blurmax_backward", "blurmax_forward", "max_2x2_backward", "max_2x2_forward",
           "source_rows"]


def source_rows(size: int, before: int, after: int, padding: str) -> np.ndarray:
    """For each row of a map of ``size`` rows padded by ``before`` and ``after`` in
    ``padding`` mode: the row of the padded map it copies, or ``-1`` for a zero row."""
    index = np.arange(-before, size + after)
    if padding == "zeros":
        source = np.where((index >= 0) & (index < size), index, -1 - before)
    elif padding == "circular":
        source = np.mod(index, size)
    else:  # reflect: -1 is row 1, size is row size - 2
        index = np.abs(index)
        source = np.where(index >= size, 2 * (size - 1) - index, index)
    return (source + before).astype(np.int64)


@njit(cache=True, nogil=True, inline="always")
def _sum_terms(out, size, zero, count, weights, sources, picks, starts, offset,
               ):  # pragma: no cover (numba)
    """``out[j]`` for ``j < size``: ``sum(weights[k] * sources[picks[k], offset + starts[k]
    + j] for k < count)``, each product added in turn to ``zero``: the order of every sum
    in the kernel. The first two or three add in registers, in one pass; any more, or a
    single one, onto ``out``."""
    first = min(count, 3) if count >= 2 else 0
    second = 1 if first else 0  # with fewer than two terms, unused: the first again
    s0 = sources[picks[0], offset + starts[0]:]
    s1 = sources[picks[second], offset + starts[second]:]
    t0, t1 = weights[0], weights[second]
    if first == 3:
        s2 = sources[picks[2], offset + starts[2]:]
        t2 = weights[2]
        for j in range(size):
            total = zero
            total += t0 * s0[j]
            total += t1 * s1[j]
            total += t2 * s2[j]
            out[j] = total
    elif first == 2:
        for j in range(size):
            total = zero
            total += t0 * s0[j]
            total += t1 * s1[j]
            out[j] = total
    else:
        for j in range(size):
            out[j] = zero
    for k in range(first, count):
        _axpy(weights[k], sources[picks[k], offset + starts[k]:], out, size)


@njit(cache=True, nogil=True, inline="always")
def _fill_border(line, channels, columns):  # pragma: no cover (numba)
    """The padded columns of a row ``line`` ``((W + 2 r) * C)``: copies, or zeros."""
    for u in range(columns.shape[0]):
        source = columns[u]
        if source == u:
            continue
        for c in range(channels):
            line[u * channels + c] = line[source * channels + c] if source >= 0 else 0


@njit(cache=True, nogil=True, inline="always")
def _fold_border(line, channels, columns):  # pragma: no cover (numba)
    """The adjoint of ``_fill_border``: each padded column added onto the one it copies."""
    for u in range(columns.shape[0]):
        source = columns[u]
        if source == u or source < 0:
            continue
        for c in range(channels):
            line[source * channels + c] += line[u * channels + c]


@njit(cache=True, nogil=True)
def _terms(taps, rows, outputs, targets, backward):  # pragma: no cover (numba)
    """The filter's terms along one axis in summing order: per target, their count, taps
    and sources, ``(T,)``, ``(T, K)``. Forward, for output ``o``: the taps ``i`` whose padded
    position ``2 o + i`` (``rows``: ``source_rows`` with the radius) is no zero, from the
    position it copies. Backward, for position ``y``: the ``(o, i)`` in order whose padded
    position copies ``y``, from output ``o``."""
    size, radius = taps.shape[0], taps.shape[0] // 2
    most = size * outputs
    count = np.zeros(targets, np.int64)
    weights = np.zeros((targets, most), taps.dtype)
    sources = np.zeros((targets, most), np.int64)
    for o in range(outputs):
        for i in range(size):
            position = rows[2 * o + i] - radius
            if position < 0:
                continue
            target, source = (position, o) if backward else (o, position)
            k = count[target]
            weights[target, k], sources[target, k] = taps[i], source
            count[target] = k + 1
    return count, weights, sources


@njit(cache=True, nogil=True, inline="always")
def _blur(image, channels, taps, vertical, horizontal, columns, out, line, zero,
          ):  # pragma: no cover (numba)
    """The separable filter ``taps`` at stride 2 over ``image`` ``(H, W * C)`` into ``out``
    ``(Ho, Wo * C)``: each output row's column sums (``vertical``: ``_terms`` of the rows)
    into ``line`` ``(1, (W + 2 r) * C)``, its padded columns filled, then its sums at
    stride 2 (``horizontal``: each tap's offset in ``line``)."""
    count, weights, sources = vertical
    offsets, nothing = horizontal
    width, radius = image.shape[1], taps.shape[0] // 2
    middle = line[0, radius * channels:]
    for oy in range(out.shape[0]):
        _sum_terms(middle, width, zero, count[oy], weights[oy], image, sources[oy], nothing,
                   0)
        _fill_border(line[0], channels, columns)
        target = out[oy]
        for ox in range(target.shape[0] // channels):
            _sum_terms(target[ox * channels:], channels, zero, taps.shape[0], taps, line,
                       nothing, offsets, 2 * ox * channels)


@njit(cache=True, nogil=True)
def _blur_backward(grad, channels, taps, vertical, columns, out, lines, zero, nothing,
                   ):  # pragma: no cover (numba)
    """The adjoint of ``_blur``: ``grad`` ``(Ho, Wo * C)`` spread along each output row
    into ``lines`` ``(Ho, (W + 2 r) * C)``, zero before, its padded columns added onto
    those they copy, then down the rows into the image's gradient ``out`` ``(H, W * C)``
    (``vertical``: ``_terms`` of the rows; ``nothing``: zeros, their offsets)."""
    count, weights, sources = vertical
    radius = taps.shape[0] // 2
    for oy in range(grad.shape[0]):
        line = lines[oy]
        for j in range(line.shape[0]):
            line[j] = 0
        for ox in range(grad.shape[1] // channels):
            source = grad[oy, ox * channels:]
            for i in range(taps.shape[0]):
                _axpy(taps[i], source, line[(2 * ox + i) * channels:], channels)
        _fold_border(line, channels, columns)
    for y in range(out.shape[0]):
        _sum_terms(out[y], out.shape[1], zero, count[y], weights[y], lines, sources[y],
                   nothing, radius * channels)


@njit(cache=True, nogil=True, inline="always")
def _axpy(a, x, y, size):  # pragma: no cover (numba)
    """``y[j] += a * x[j]`` for ``j < size``."""
    for j in range(size):
        y[j] += a * x[j]


@intrinsic
def _borrowed(typingctx, array):  # pragma: no cover (numba)
    """``array`` without its memory's record, so that views of it count no references (numba
    counts each with an atomic increment and decrement; ``benchmarks/README.md`` has what that
    cost). Only for an array that outlives every use: the arguments of a call, which its
    caller holds."""
    def codegen(context, builder, signature, args):
        borrowed = context.make_array(array)(context, builder, value=args[0])
        borrowed.meminfo = cgutils.get_null_value(borrowed.meminfo.type)
        return borrowed._getvalue()
    return array(array), codegen


@njit(cache=True, nogil=True)
def _blurmax_images(x, channels, taps, max_rows, max_columns, blur_columns, out, choice,
                    vertical, horizontal, maxed, zeros, pairs, paired, line,
                    ):  # pragma: no cover (numba)
    """``blurmax_forward``'s loop over the images, on borrowed arrays (``_borrowed``)."""
    x, out, choice = _borrowed(x), _borrowed(out), _borrowed(choice)
    maxed, zeros, pairs, paired = _borrowed(maxed), _borrowed(zeros), _borrowed(pairs), \
        _borrowed(paired)
    line, vertical = _borrowed(line), (vertical[0], _borrowed(vertical[1]),
                                       _borrowed(vertical[2]))
    for n in range(x.shape[0]):
        if choice.shape[0]:
            windows_max(x[n], channels, max_rows, max_columns, zeros, maxed, choice[n], pairs,
                        paired)
        else:
            windows_max_values(x[n], channels, max_rows, max_columns, zeros, maxed, pairs)
        _blur(maxed, channels, taps, vertical, horizontal, blur_columns, out[n], line,
              zeros[0])


@njit(cache=True, nogil=True)
def blurmax_forward(x, channels, taps, max_rows, max_columns, blur_rows, blur_columns,
                    out, choice):  # pragma: no cover (numba)
    """``BlurMaxPool2d`` of ``x`` ``(N, H, W * C)`` into ``out`` ``(N, Ho, Wo * C)``, given
    the max's padding maps (``source_rows`` of one row and column after), the filter's
    (``r`` on every side) and its 1-D ``taps``; each window's maximum into ``choice``
    (int8, like ``x``) for the backward, unless it is empty."""
    width = x.shape[2]
    _blurmax_images(x, channels, taps, max_rows, max_columns, blur_columns, out, choice,
                    _terms(taps, blur_rows, out.shape[1], out.shape[1], False),
                    (np.arange(taps.shape[0]) * channels, np.zeros(taps.shape[0], np.int64)),
                    np.empty(x.shape[1:], x.dtype), np.zeros(width, x.dtype),
                    np.empty((2, width), x.dtype), np.empty((2, width), np.int8),
                    np.empty((1, blur_columns.shape[0] * channels), x.dtype))


@njit(cache=True, nogil=True)
def _blurmax_gradients(choice, grad, channels, taps, max_rows, max_columns, blur_columns,
                       out, vertical, grad_maxed, zeros, never, border, lines,
                       ):  # pragma: no cover (numba)
    """``blurmax_backward``'s loop over the images, on borrowed arrays (``_borrowed``)."""
    choice, grad, out = _borrowed(choice), _borrowed(grad), _borrowed(out)
    grad_maxed, zeros, never = _borrowed(grad_maxed), _borrowed(zeros), _borrowed(never)
    border, lines = _borrowed(border), _borrowed(lines)
    vertical = (vertical[0], _borrowed(vertical[1]), _borrowed(vertical[2]))
    nothing = np.zeros(vertical[1].shape[1], np.int64)
    for n in range(out.shape[0]):
        _blur_backward(grad[n], channels, taps, vertical, blur_columns, grad_maxed, lines,
                       zeros[0], nothing)
        windows_gradient(choice[n], grad_maxed, channels, max_rows, max_columns, zeros,
                         never, out[n], border)


@njit(cache=True, nogil=True)
def blurmax_backward(choice, grad, channels, taps, max_rows, max_columns, blur_rows,
                     blur_columns, out):  # pragma: no cover (numba)
    """The gradient of ``blurmax_forward`` for its ``x`` into ``out`` ``(N, H, W * C)``, given
    ``grad`` ``(N, Ho, Wo * C)`` and the forward's ``choice``."""
    height, width = out.shape[1], out.shape[2]
    _blurmax_gradients(choice, grad, channels, taps, max_rows, max_columns, blur_columns,
                       out, _terms(taps, blur_rows, grad.shape[1], height, True),
                       np.empty((height, width), out.dtype), np.zeros(width, out.dtype),
                       np.full(width, -1, np.int8), np.empty((height + 2, width), out.dtype),
                       np.empty((grad.shape[1], blur_columns.shape[0] * channels),
                                out.dtype))


@njit(cache=True, nogil=True)
def _max_images(x, channels, rows, columns, out, choice, zeros, pairs, paired,
                ):  # pragma: no cover (numba)
    """``max_2x2_forward``'s loop over the images, on borrowed arrays (``_borrowed``)."""
    x, out, choice, zeros = _borrowed(x), _borrowed(out), _borrowed(choice), _borrowed(zeros)
    pairs, paired = _borrowed(pairs), _borrowed(paired)
    for n in range(x.shape[0]):
        if choice.shape[0]:
            windows_max(x[n], channels, rows, columns, zeros, out[n], choice[n], pairs, paired)
        else:
            windows_max_values(x[n], channels, rows, columns, zeros, out[n], pairs)


@njit(cache=True, nogil=True)
def max_2x2_forward(x, channels, rows, columns, out, choice):  # pragma: no cover (numba)
    """The 2x2 max at stride 1 of ``x`` ``(N, H, W * C)``, padded one row and column after by
    the maps ``rows``, ``columns``, into ``out`` ``(N, H, W * C)``; each window's maximum into
    ``choice`` (int8, like ``x``) for the backward, unless it is empty."""
    width = x.shape[2]
    _max_images(x, channels, rows, columns, out, choice, np.zeros(width, x.dtype),
                np.empty((2, width), x.dtype), np.empty((2, width), np.int8))


@njit(cache=True, nogil=True)
def _max_gradients(choice, grad, channels, rows, columns, out, zeros, never, border,
                   ):  # pragma: no cover (numba)
    """``max_2x2_backward``'s loop over the images, on borrowed arrays (``_borrowed``)."""
    choice, grad, out, zeros = _borrowed(choice), _borrowed(grad), _borrowed(out), \
        _borrowed(zeros)
    never, border = _borrowed(never), _borrowed(border)
    for n in range(out.shape[0]):
        windows_gradient(choice[n], grad[n], channels, rows, columns, zeros, never, out[n],
                         border)


@njit(cache=True, nogil=True)
def max_2x2_backward(choice, grad, channels, rows, columns, out):  # pragma: no cover (numba)
    """The gradient of ``max_2x2_forward`` for its ``x`` into ``out`` ``(N, H, W * C)``, given
    ``grad`` ``(N, H, W * C)`` and the forward's ``choice``."""
    width = out.shape[2]
    _max_gradients(choice, grad, channels, rows, columns, out, np.zeros(width, out.dtype),
                   np.full(width, -1, np.int8),
                   np.empty((out.shape[1] + 2, width), out.dtype))
