"""``BlurMaxPool2d``'s two steps as one CPU kernel (numba): the 2x2 max at stride 1 and the
binomial filter at stride 2, each padded in the layer's mode, forward and backward, on a
channels_last map; and the max alone, which ``ApsMaxPool2d`` takes before its sampling (its
backward: ``aps_kernel``).
They work on NumPy arrays; ``gap_study.nets.blurmax_autograd`` wraps them as autograd
functions of torch tensors, which ``gap_study.nets.downsample`` calls on CPU.

Every map is ``(N, rows, columns * C)``: a channels_last map with its rows flattened. No
padded copy is made: each step reads its padding through index maps (``source_rows`` in
``blurmax_autograd``), whose entry ``t`` is the row (or column) of the padded map that padded
row ``t`` copies, ``-1`` where the mode pads zeros.

1. Inner loops index 1-D views by their own loop variable: numba's wrap-around of an index
   it cannot prove non-negative keeps LLVM from vectorising. The loops over the images run
   on borrowed arrays (``_borrowed``), so that no view counts references. The forward's
   helpers are inlined, which its speed needs; the backward's are calls, as fast.
2. Serial and in a fixed order, so deterministic. One thread, whatever
   ``torch.get_num_threads()`` says (the study runs one per run).
3. Each sum adds its terms in turn to zero, in the map's dtype, in one fixed order
   (``_sum_terms``, ``_window_grads``), in registers where the loop allows. A rewrite that
   keeps each order keeps the bits; no fast-math, so no fused multiply-adds.
4. One module: numba's cache notices changes to a function's own file only, and a cached
   kernel holds the code of every helper it calls.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

__all__ = ["blurmax_backward", "blurmax_forward", "max_2x2_forward"]


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
    """Each entry of a row ``(W * C)`` against the one a column to its right (``_first_max``),
    the last column's against the padded column ``last`` (or zeros)."""
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
def _windows(image, channels, rows, columns, zeros, out, choice, pairs, pair_choices,
             ):  # pragma: no cover (numba)
    """The 2x2 windows' max of ``image`` ``(H, W * C)``, padded one row and column after by
    the maps ``rows``, ``columns``, into ``out``, and which entry it is (0 to 3, row-major)
    into ``choice``; ``pairs``, ``pair_choices`` ``(2, W * C)``: scratch.

    1. Each row's pairs once (``_pairs``), then each window the better of its two rows'
       pairs, the lower only if strictly larger or NaN: ``max_pool2d``'s rule over the four
       in row-major order (the first maximum; the last NaN), in two comparisons, not three.
    2. A window's choice by arithmetic on the comparison, not a branch: LLVM vectorises no
       branch between int8 choices on AVX2, which then costs a misprediction a window.
    """
    last = columns[columns.shape[0] - 1]
    _pairs(image[0], channels, last, zeros, pairs[0], pair_choices[0])
    for y in range(image.shape[0]):
        top, bottom = y % 2, 1 - y % 2
        below = rows[y + 1]
        if below >= 0:
            _pairs(image[below], channels, last, zeros, pairs[bottom], pair_choices[bottom])
        else:
            pairs[bottom] = 0
            pair_choices[bottom] = 0
        upper, lower, target = pairs[top], pairs[bottom], out[y]
        upper_choice, lower_choice = pair_choices[top], pair_choices[bottom]
        chosen = choice[y]
        for j in range(image.shape[1]):
            best, v = upper[j], lower[j]
            lower_wins = np.int8((v > best) | (v != v))
            target[j] = v if lower_wins else best
            above = upper_choice[j]
            chosen[j] = above + lower_wins * (lower_choice[j] + np.int8(2) - above)


@njit(cache=True, nogil=True, inline="always")
def _window_values(image, channels, rows, columns, zeros, out, pairs,
                   ):  # pragma: no cover (numba)
    """``_windows`` without the choice (a branch in its loops slowed them): the same values."""
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
    """A window's gradient if the window chose entry ``k``, else zero."""
    return grad if chosen == k else zero


@njit(cache=True, nogil=True)
def _window_grads(up, up_choice, own, own_choice, channels, zero, target, column,
                  ):  # pragma: no cover (numba)
    """One row of the padded map's gradient into ``target`` ``(W * C)``, its padded column's
    into ``column`` ``(C)``, from the windows of the row above (gradient ``up``, choices
    ``up_choice``) and of its own: each entry sums them in ``max_pool2d``'s order, the window
    above and left of it first, its own last; one that did not choose it adds zero."""
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
def _window_gradients(choice, grad, channels, rows, columns, zeros, never, out, border,
                      ):  # pragma: no cover (numba)
    """Each window's gradient ``grad`` ``(H, W * C)`` given to the entry ``choice`` names,
    into ``out``; ``border`` ``(H + 2, W * C)``: scratch; ``never``: a choice no window
    makes, for the windows missing above the first row and below the padded one.

    1. Each input sums its windows' gradients in ``max_pool2d``'s order (``_window_grads``).
    2. The padded row's and column's gradients are summed apart, then added onto the row and
       column they copy, the column first (``circular_pad``'s order); zeros dropped.
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


@njit(cache=True, nogil=True, inline="always")
def _sum_terms(out, size, zero, count, weights, sources, picks, starts, offset,
               ):  # pragma: no cover (numba)
    """``out[j]`` for ``j < size``: ``sum(weights[k] * sources[picks[k], offset + starts[k]
    + j] for k < count)``, each product added in turn to ``zero``: the order of every sum
    in the kernel. The first two or three add in registers, in one pass; any more, or a
    single one, onto ``out``."""
    in_registers = min(count, 3) if count >= 2 else 0
    second = 1 if in_registers else 0  # with fewer than two terms, unused: the first again
    s0 = sources[picks[0], offset + starts[0]:]
    s1 = sources[picks[second], offset + starts[second]:]
    t0, t1 = weights[0], weights[second]
    if in_registers == 3:
        s2 = sources[picks[2], offset + starts[2]:]
        t2 = weights[2]
        for j in range(size):
            total = zero
            total += t0 * s0[j]
            total += t1 * s1[j]
            total += t2 * s2[j]
            out[j] = total
    elif in_registers == 2:
        for j in range(size):
            total = zero
            total += t0 * s0[j]
            total += t1 * s1[j]
            out[j] = total
    else:
        for j in range(size):
            out[j] = zero
    for k in range(in_registers, count):
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
    position copies ``y``, from output ``o``. ``K``: room for every output's every tap."""
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
    offsets, no_offsets = horizontal
    width, radius = image.shape[1], taps.shape[0] // 2
    middle = line[0, radius * channels:]
    for oy in range(out.shape[0]):
        _sum_terms(middle, width, zero, count[oy], weights[oy], image, sources[oy],
                   no_offsets, 0)
        _fill_border(line[0], channels, columns)
        target = out[oy]
        for ox in range(target.shape[0] // channels):
            _sum_terms(target[ox * channels:], channels, zero, taps.shape[0], taps, line,
                       no_offsets, offsets, 2 * ox * channels)


@njit(cache=True, nogil=True)
def _blur_backward(grad, channels, taps, vertical, columns, out, lines, zero, no_offsets,
                   ):  # pragma: no cover (numba)
    """The adjoint of ``_blur``: ``grad`` ``(Ho, Wo * C)`` spread along each output row
    into ``lines`` ``(Ho, (W + 2 r) * C)``, zero before, its padded columns added onto
    those they copy, then down the rows into the image's gradient ``out`` ``(H, W * C)``
    (``vertical``: ``_terms`` of the rows; ``no_offsets``: zeros, their offsets)."""
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
                   no_offsets, radius * channels)


@njit(cache=True, nogil=True, inline="always")
def _axpy(a, x, y, size):  # pragma: no cover (numba)
    """``y[j] += a * x[j]`` for ``j < size``."""
    for j in range(size):
        y[j] += a * x[j]


@intrinsic
def _borrowed(typingctx, array):  # pragma: no cover (numba)
    """``array`` without its memory's record, so that views of it count no references (numba
    counts each with an atomic increment and decrement; ``benchmarks/README.md`` has what that
    cost). Only for the arguments of a function that is not inlined, whose caller holds them
    for the call; never returned or stored."""
    if not isinstance(array, types.Array):
        return None

    def codegen(context, builder, signature, args):
        borrowed = context.make_array(array)(context, builder, value=args[0])
        borrowed.meminfo = cgutils.get_null_value(borrowed.meminfo.type)
        return borrowed._getvalue()
    return array(array), codegen


@njit(cache=True, nogil=True)
def _blurmax_images(x, channels, taps, max_rows, max_columns, blur_columns, out, choice,
                    vertical, horizontal, maxed, zeros, pairs, pair_choices, line,
                    ):  # pragma: no cover (numba)
    """``blurmax_forward``'s loop over the images, on borrowed arrays (``_borrowed``)."""
    x, out, choice = _borrowed(x), _borrowed(out), _borrowed(choice)
    maxed, zeros, pairs = _borrowed(maxed), _borrowed(zeros), _borrowed(pairs)
    pair_choices = _borrowed(pair_choices)
    line, vertical = _borrowed(line), (vertical[0], _borrowed(vertical[1]),
                                       _borrowed(vertical[2]))
    for n in range(x.shape[0]):
        if choice.shape[0]:
            _windows(x[n], channels, max_rows, max_columns, zeros, maxed, choice[n], pairs,
                     pair_choices)
        else:
            _window_values(x[n], channels, max_rows, max_columns, zeros, maxed, pairs)
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
    no_offsets = np.zeros(vertical[1].shape[1], np.int64)
    for n in range(out.shape[0]):
        _blur_backward(grad[n], channels, taps, vertical, blur_columns, grad_maxed, lines,
                       zeros[0], no_offsets)
        _window_gradients(choice[n], grad_maxed, channels, max_rows, max_columns, zeros,
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
def _max_images(x, channels, rows, columns, out, choice, zeros, pairs, pair_choices,
                ):  # pragma: no cover (numba)
    """``max_2x2_forward``'s loop over the images, on borrowed arrays (``_borrowed``)."""
    x, out, choice, zeros = _borrowed(x), _borrowed(out), _borrowed(choice), _borrowed(zeros)
    pairs, pair_choices = _borrowed(pairs), _borrowed(pair_choices)
    for n in range(x.shape[0]):
        if choice.shape[0]:
            _windows(x[n], channels, rows, columns, zeros, out[n], choice[n], pairs,
                     pair_choices)
        else:
            _window_values(x[n], channels, rows, columns, zeros, out[n], pairs)


@njit(cache=True, nogil=True)
def max_2x2_forward(x, channels, rows, columns, out, choice):  # pragma: no cover (numba)
    """The 2x2 max at stride 1 of ``x`` ``(N, H, W * C)``, padded one row and column after by
    the maps ``rows``, ``columns``, into ``out`` ``(N, H, W * C)``; each window's maximum into
    ``choice`` (int8, like ``x``) for the backward, unless it is empty."""
    width = x.shape[2]
    _max_images(x, channels, rows, columns, out, choice, np.zeros(width, x.dtype),
                np.empty((2, width), x.dtype), np.empty((2, width), np.int8))
