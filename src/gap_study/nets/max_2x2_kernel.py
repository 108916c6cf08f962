"""The 2x2 max at stride 1 of the blurmax kernels (``gap_study.nets.blurmax_kernel``), one
image at a time, in their ``(rows, columns * C)`` layout and with their padding maps: each
window's max and which of its four entries that is, and the windows' gradients routed back
to those entries. numba functions that the kernels call from their loops over the images
(the forward's inlined); the rules for ties, NaN and the summing order are ``max_pool2d``'s.
"""

from __future__ import annotations

from numba import njit

__all__ = ["windows_gradient", "windows_max", "windows_max_values"]


@njit(cache=True, nogil=True, inline="always")
def _first_max(a, b, out, choice, size):  # pragma: no cover (numba)
    """``out[j]``: the larger of ``a[j]`` and ``b[j]`` (``b`` only if strictly larger, or
    NaN: ``max_pool2d``'s rule), and in ``choice[j]`` which (0 or 1), for ``j < size``."""
    for j in range(size):
        best, k = a[j], 0
        v = b[j]
        if (v > best) | (v != v):
            best, k = v, 1
        out[j] = best
        choice[j] = k


@njit(cache=True, nogil=True, inline="always")
def _larger(a, b, out, size):  # pragma: no cover (numba)
    """``_first_max`` without the choice."""
    for j in range(size):
        best = a[j]
        v = b[j]
        if (v > best) | (v != v):
            best = v
        out[j] = best


@njit(cache=True, nogil=True, inline="always")
def _pairs(line, channels, last, zeros, out, choice):  # pragma: no cover (numba)
    """Each entry of a row ``line`` ``(W * C)`` against the one a column to its right
    (``_first_max``), the last column's against the padded column ``last`` (or zeros)."""
    inner = line.shape[0] - channels
    right = line[last * channels:] if last >= 0 else zeros
    _first_max(line, line[channels:], out, choice, inner)
    _first_max(line[inner:], right, out[inner:], choice[inner:], channels)


@njit(cache=True, nogil=True, inline="always")
def _pair_max(line, channels, last, zeros, out):  # pragma: no cover (numba)
    """``_pairs`` without the choice."""
    inner = line.shape[0] - channels
    right = line[last * channels:] if last >= 0 else zeros
    _larger(line, line[channels:], out, inner)
    _larger(line[inner:], right, out[inner:], channels)


@njit(cache=True, nogil=True, inline="always")
def windows_max(image, channels, rows, columns, zeros, out, choice, pairs, paired,
                ):  # pragma: no cover (numba)
    """The 2x2 windows' max of ``image`` ``(H, W * C)``, padded one row and column after by
    the maps ``rows``, ``columns``, into ``out`` ``(H, W * C)``, and which entry it is (0
    to 3, row-major) into ``choice``; ``pairs``, ``paired`` ``(2, W * C)``: scratch.

    1. Each row's pairs along the row once (``_pairs``), then each window the better of its
       two rows' pairs, the lower only if strictly larger or NaN. That is ``max_pool2d``'s
       rule over the four in row-major order (the first maximum; the last NaN), with two
       comparisons an entry instead of three.
    """
    last = columns[columns.shape[0] - 1]
    _pairs(image[0], channels, last, zeros, pairs[0], paired[0])
    for y in range(image.shape[0]):
        top, bottom = y % 2, 1 - y % 2
        below = rows[y + 1]
        if below >= 0:
            _pairs(image[below], channels, last, zeros, pairs[bottom], paired[bottom])
        else:
            pairs[bottom] = 0
            paired[bottom] = 0
        upper, lower, target = pairs[top], pairs[bottom], out[y]
        upper_choice, lower_choice, chosen = paired[top], paired[bottom], choice[y]
        for j in range(image.shape[1]):
            best, k = upper[j], upper_choice[j]
            v = lower[j]
            if (v > best) | (v != v):
                best, k = v, lower_choice[j] + 2
            target[j] = best
            chosen[j] = k


@njit(cache=True, nogil=True, inline="always")
def windows_max_values(image, channels, rows, columns, zeros, out, pairs,
                       ):  # pragma: no cover (numba)
    """``windows_max`` without the choice: the same values."""
    last = columns[columns.shape[0] - 1]
    _pair_max(image[0], channels, last, zeros, pairs[0])
    for y in range(image.shape[0]):
        top, bottom = y % 2, 1 - y % 2
        below = rows[y + 1]
        if below >= 0:
            _pair_max(image[below], channels, last, zeros, pairs[bottom])
        else:
            pairs[bottom] = 0
        _larger(pairs[top], pairs[bottom], out[y], image.shape[1])


@njit(cache=True, nogil=True, inline="always")
def _take(grad, chosen, k, zero):  # pragma: no cover (numba)
    return grad if chosen == k else zero  # a window's gradient, if it chose entry k


@njit(cache=True, nogil=True)
def _window_grads(up, up_choice, own, own_choice, channels, zero, target, column,
                  ):  # pragma: no cover (numba)
    """One row of the padded map's gradient into ``target`` ``(W * C)``, and its padded
    column's into ``column`` ``(C)``: from the windows of the row above (``up``, the
    gradient, and ``up_choice``) and of its own row (``own``, ``own_choice``). Each entry
    sums them in ``max_pool2d``'s order, the window above and left of it first, its own
    last; a window that did not choose it adds zero."""
    inner = target.shape[0] - channels
    for j in range(channels):  # the first column: no window to its left
        total = zero
        total += _take(up[j], up_choice[j], 2, zero)
        total += _take(own[j], own_choice[j], 0, zero)
        target[j] = total
    up_next, up_next_choice = up[channels:], up_choice[channels:]
    own_next, own_next_choice = own[channels:], own_choice[channels:]
    rest = target[channels:]
    for j in range(inner):
        total = zero
        total += _take(up[j], up_choice[j], 3, zero)
        total += _take(up_next[j], up_next_choice[j], 2, zero)
        total += _take(own[j], own_choice[j], 1, zero)
        total += _take(own_next[j], own_next_choice[j], 0, zero)
        rest[j] = total
    up_last, up_last_choice = up[inner:], up_choice[inner:]
    own_last, own_last_choice = own[inner:], own_choice[inner:]
    for j in range(channels):
        total = zero
        total += _take(up_last[j], up_last_choice[j], 3, zero)
        total += _take(own_last[j], own_last_choice[j], 1, zero)
        column[j] = total


@njit(cache=True, nogil=True)
def windows_gradient(choice, grad, channels, rows, columns, zeros, never, out, border,
                     ):  # pragma: no cover (numba)
    """Each window's gradient ``grad`` ``(H, W * C)`` given to the entry ``choice`` names
    (``windows_max``), into ``out`` ``(H, W * C)``; ``border`` ``(H + 2, W * C)``: scratch
    for the padded row's and column's gradients; ``never``: a choice no window makes, for
    the missing windows above the first row and below the padded one.

    1. Each input sums its windows' gradients in ``max_pool2d``'s order (``_window_grads``).
    2. The padded row's and column's gradients are summed apart and then added onto the row
       and column they copy, the column first (``circular_pad``'s order); zeros dropped.
    """
    zero = zeros[0]
    height, width = choice.shape
    _window_grads(zeros, never, grad[0], choice[0], channels, zero, out[0], border[0])
    for y in range(1, height):
        _window_grads(grad[y - 1], choice[y - 1], grad[y], choice[y], channels, zero, out[y],
                      border[y])
    # the padded row, and its padded column (the corner) last
    _window_grads(grad[height - 1], choice[height - 1], zeros, never, channels, zero,
                  border[height], border[height + 1])
    last, below = columns[columns.shape[0] - 1], rows[height]
    if last >= 0:
        for y in range(height):
            _add(border[y], out[y, last * channels:], channels)
    if below >= 0:
        _add(border[height], out[below], width)
        if last >= 0:
            _add(border[height + 1], out[below, last * channels:], channels)


@njit(cache=True, nogil=True, inline="always")
def _add(x, y, size):  # pragma: no cover (numba)
    """``y[j] += x[j]`` for ``j < size``."""
    for j in range(size):
        y[j] += x[j]
