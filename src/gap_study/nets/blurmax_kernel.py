"""``BlurMaxPool2d``'s two steps as one CPU kernel (numba): the 2x2 max at stride 1 and the
binomial filter at stride 2, each padded in the layer's mode, forward and backward, on a
channels_last map; and the max alone, which ``ApsMaxPool2d`` takes before its sampling.
They work on NumPy arrays; ``gap_study.nets.blurmax_autograd`` wraps them as autograd
functions of torch tensors, which ``gap_study.nets.downsample`` calls on CPU (torch's ops
elsewhere).

Every map is handled as ``(N, rows, columns * C)``: a channels_last map with its rows
flattened. No padded copy is made: each step reads its padding through two index maps
(``source_rows``), whose entry ``t`` is the row (or column) of the padded map that padded row
``t`` copies (``t`` itself inside the map), ``-1`` where the mode pads zeros. The max reads its
windows' last row and column through them; the filter, its input rows, and the border columns
of each row of column sums.

1. The inner loops index 1-D views by their own loop variable: with an offset that numba
   cannot prove non-negative, its wrap-around of negative indices keeps LLVM from
   vectorising the loop. The helpers are inlined (``inline="always"``): views passed to a
   call that is not cost reference counts.
2. Serial and in a fixed order, so deterministic; images are independent. One thread,
   whatever ``torch.get_num_threads()`` says (the study runs one per run).
"""

from __future__ import annotations

import numpy as np
from numba import njit

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
def _max4(a, b, c, d, out, size):  # pragma: no cover (numba)
    """``out[j]``: the largest of ``a[j]``, ``b[j]``, ``c[j]``, ``d[j]`` (NaN wins, as in
    ``max_pool2d``) for ``j < size``."""
    for j in range(size):
        best = a[j]
        v = b[j]
        if (v > best) | (v != v):
            best = v
        v = c[j]
        if (v > best) | (v != v):
            best = v
        v = d[j]
        if (v > best) | (v != v):
            best = v
        out[j] = best


@njit(cache=True, nogil=True, inline="always")
def _max_choice4(a, b, c, d, out, choice, size):  # pragma: no cover (numba)
    """``_max4``, and in ``choice[j]`` which of the four it took (0 to 3): the first
    maximum, ``max_pool2d``'s rule for its window in row-major order."""
    for j in range(size):
        best, k = a[j], 0
        v = b[j]
        if (v > best) | (v != v):
            best, k = v, 1
        v = c[j]
        if (v > best) | (v != v):
            best, k = v, 2
        v = d[j]
        if (v > best) | (v != v):
            best, k = v, 3
        out[j] = best
        choice[j] = k


@njit(cache=True, nogil=True, inline="always")
def _window_row(image, channels, rows, columns, zeros, y, out, choice):  # pragma: no cover
    """Row ``y`` of the 2x2 windows of ``image`` ``(H, W * C)``, padded one row and column
    after by the maps ``rows``, ``columns``: their max into ``out`` ``(W * C)`` and, unless
    ``choice`` is empty, which entry it is into ``choice`` (``_max_choice4``). The windows of
    the last column reach into the padded column: that one apart."""
    inner = image.shape[1] - channels
    last, below = columns[columns.shape[0] - 1], rows[y + 1]
    a = image[y]
    c = image[below] if below >= 0 else zeros
    right = a[last * channels:] if last >= 0 else zeros
    below_right = c[last * channels:] if last >= 0 else zeros
    if choice.shape[0]:
        _max_choice4(a, a[channels:], c, c[channels:], out, choice, inner)
        _max_choice4(a[inner:], right, c[inner:], below_right, out[inner:], choice[inner:],
                     channels)
    else:
        _max4(a, a[channels:], c, c[channels:], out, inner)
        _max4(a[inner:], right, c[inner:], below_right, out[inner:], channels)


@njit(cache=True, nogil=True, inline="always")
def _max_2x2_backward(choice, grad, channels, rows, columns, zeros, out, border,
                      ):  # pragma: no cover (numba)
    """Each window's gradient ``grad`` ``(H, W * C)`` given to the entry ``choice`` names
    (``_max_choice4``), into ``out`` ``(H, W * C)``; ``border`` ``(H + 2, W * C)``: scratch
    for the padded row's and column's gradients.

    1. Each input sums its windows' gradients in ``max_pool2d``'s order: the window above
       and left of it first, its own last.
    2. The padded row's and column's gradients are summed apart and then added onto the row
       and column they copy, the column first (``circular_pad``'s order); zeros dropped.
    """
    zero = zeros[0]
    height, width = choice.shape
    inner = width - channels
    for y in range(height + 1):  # the rows of the padded map; the last is the padded row
        target = out[y] if y < height else border[height]
        for j in range(width):
            target[j] = zero
        if y >= 1:
            _route(grad[y - 1], choice[y - 1], 3, target[channels:], inner, zero)
            _route(grad[y - 1], choice[y - 1], 2, target, width, zero)
        if y < height:
            _route(grad[y], choice[y], 1, target[channels:], inner, zero)
            _route(grad[y], choice[y], 0, target, width, zero)
        column = border[y] if y < height else border[height + 1]  # corner: the last
        for j in range(channels):
            column[j] = zero
        if y >= 1:
            _route(grad[y - 1, inner:], choice[y - 1, inner:], 3, column, channels, zero)
        if y < height:
            _route(grad[y, inner:], choice[y, inner:], 1, column, channels, zero)
    last, below = columns[columns.shape[0] - 1], rows[height]
    if last >= 0:
        for y in range(height):
            _route(border[y], choice[0], -1, out[y, last * channels:], channels, zero)
    if below >= 0:
        _route(border[height], choice[0], -1, out[below], width, zero)
        if last >= 0:
            _route(border[height + 1], choice[0], -1, out[below, last * channels:], channels,
                   zero)


@njit(cache=True, nogil=True, inline="always")
def _route(source, chosen, k, target, size, zero):  # pragma: no cover (numba)
    """``target[j] += source[j]`` where ``chosen[j] == k`` (or everywhere, with ``k < 0``),
    for ``j < size``."""
    if k < 0:
        for j in range(size):
            target[j] += source[j]
        return
    for j in range(size):
        target[j] += source[j] if chosen[j] == k else zero


@njit(cache=True, nogil=True, inline="always")
def _blur(image, channels, taps, rows, columns, out, row):  # pragma: no cover (numba)
    """The separable filter ``taps`` at stride 2 over ``image`` ``(H, W * C)`` padded by the
    filter's maps ``rows``, ``columns`` (``r`` on every side) into ``out`` ``(Ho, Wo * C)``:
    each output row's column sums into ``row`` ``((W + 2 r) * C)``, its border filled, then
    its sums at stride 2."""
    size, width = taps.shape[0], image.shape[1]
    middle = row[(size // 2) * channels:]
    for oy in range(out.shape[0]):
        for j in range(width):
            middle[j] = 0
        for i in range(size):
            source = rows[2 * oy + i] - size // 2
            if source >= 0:
                _axpy(taps[i], image[source], middle, width)
        for u in range(columns.shape[0]):
            source = columns[u]
            if source == u:
                continue
            for c in range(channels):
                row[u * channels + c] = row[source * channels + c] if source >= 0 else 0
        for ox in range(out.shape[1] // channels):
            target = out[oy, ox * channels:]
            for c in range(channels):
                target[c] = 0
            for i in range(size):
                _axpy(taps[i], row[(2 * ox + i) * channels:], target, channels)


@njit(cache=True, nogil=True, inline="always")
def _blur_backward(grad, channels, taps, rows, columns, out, row):  # pragma: no cover
    """The adjoint of ``_blur``: ``grad`` ``(Ho, Wo * C)`` spread over the image's gradient
    ``out`` ``(H, W * C)``, zero before: along each output row into ``row``, its border
    added onto the columns it copies, then down the rows."""
    size, width = taps.shape[0], out.shape[1]
    middle = row[(size // 2) * channels:]
    for y in range(out.shape[0]):
        for j in range(width):
            out[y, j] = 0
    for oy in range(grad.shape[0]):
        for j in range(row.shape[0]):
            row[j] = 0
        for ox in range(grad.shape[1] // channels):
            source = grad[oy, ox * channels:]
            for i in range(size):
                _axpy(taps[i], source, row[(2 * ox + i) * channels:], channels)
        for u in range(columns.shape[0]):
            source = columns[u]
            if source == u or source < 0:
                continue
            for c in range(channels):
                row[source * channels + c] += row[u * channels + c]
        for i in range(size):
            target = rows[2 * oy + i] - size // 2
            if target >= 0:
                _axpy(taps[i], middle, out[target], width)


@njit(cache=True, nogil=True, inline="always")
def _axpy(a, x, y, size):  # pragma: no cover (numba)
    """``y[j] += a * x[j]`` for ``j < size``."""
    for j in range(size):
        y[j] += a * x[j]


@njit(cache=True, nogil=True)
def blurmax_forward(x, channels, taps, max_rows, max_columns, blur_rows, blur_columns,
                    out, choice):  # pragma: no cover (numba)
    """``BlurMaxPool2d`` of ``x`` ``(N, H, W * C)`` into ``out`` ``(N, Ho, Wo * C)``, given
    the max's padding maps (``source_rows`` of one row and column after), the filter's
    (``r`` on every side) and its 1-D ``taps``; each window's maximum into ``choice``
    (int8, like ``x``) for the backward, unless it is empty."""
    maxed = np.empty(x.shape[1:], x.dtype)
    zeros = np.zeros(x.shape[2], x.dtype)
    row = np.empty(blur_columns.shape[0] * channels, x.dtype)
    keep = choice.shape[0] > 0
    for n in range(x.shape[0]):
        for y in range(x.shape[1]):
            _window_row(x[n], channels, max_rows, max_columns, zeros, y, maxed[y],
                        choice[n, y] if keep else choice[0:0, 0, 0])
        _blur(maxed, channels, taps, blur_rows, blur_columns, out[n], row)


@njit(cache=True, nogil=True)
def blurmax_backward(choice, grad, channels, taps, max_rows, max_columns, blur_rows,
                     blur_columns, out):  # pragma: no cover (numba)
    """The gradient of ``blurmax_forward`` for its ``x`` into ``out`` ``(N, H, W * C)``, given
    ``grad`` ``(N, Ho, Wo * C)`` and the forward's ``choice``."""
    grad_maxed = np.empty(out.shape[1:], out.dtype)
    zeros = np.zeros(out.shape[2], out.dtype)
    border = np.empty((out.shape[1] + 2, out.shape[2]), out.dtype)
    row = np.empty(blur_columns.shape[0] * channels, out.dtype)
    for n in range(out.shape[0]):
        _blur_backward(grad[n], channels, taps, blur_rows, blur_columns, grad_maxed, row)
        _max_2x2_backward(choice[n], grad_maxed, channels, max_rows, max_columns, zeros,
                          out[n], border)


@njit(cache=True, nogil=True)
def max_2x2_forward(x, channels, rows, columns, out, choice):  # pragma: no cover (numba)
    """The 2x2 max at stride 1 of ``x`` ``(N, H, W * C)``, padded one row and column after by
    the maps ``rows``, ``columns``, into ``out`` ``(N, H, W * C)``; each window's maximum into
    ``choice`` (int8, like ``x``) for the backward, unless it is empty."""
    zeros = np.zeros(x.shape[2], x.dtype)
    keep = choice.shape[0] > 0
    for n in range(x.shape[0]):
        for y in range(x.shape[1]):
            _window_row(x[n], channels, rows, columns, zeros, y, out[n, y],
                        choice[n, y] if keep else choice[0:0, 0, 0])


@njit(cache=True, nogil=True)
def max_2x2_backward(choice, grad, channels, rows, columns, out):  # pragma: no cover (numba)
    """The gradient of ``max_2x2_forward`` for its ``x`` into ``out`` ``(N, H, W * C)``, given
    ``grad`` ``(N, H, W * C)`` and the forward's ``choice``."""
    zeros = np.zeros(out.shape[2], out.dtype)
    border = np.empty((out.shape[1] + 2, out.shape[2]), out.dtype)
    for n in range(out.shape[0]):
        _max_2x2_backward(choice[n], grad[n], channels, rows, columns, zeros, out[n], border)
