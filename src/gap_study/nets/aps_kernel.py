"""``ApsMaxPool2d``'s backward on CPU as one kernel (numba): the gradient of its input straight
from the kept windows' gradients, without the full map's gradient in between.

Its forward is ``blurmax_kernel.max_2x2_forward`` (the 2x2 max at stride 1, padded one row
and column after the map, and each window's choice), then each image keeps one polyphase
component of the max (``gap_study.nets.downsample``). Maps are ``(N, rows, columns * C)``
channels_last rows and padding goes through index maps, as in ``blurmax_kernel``.

1. The same bits as the max's backward (``max_2x2_stride_1``'s order) over the kept
   component's gradient written into zeros: there, each input sums the gradients of the
   windows that chose it, starting from zero, and then the padding's copies are added onto
   the rows and columns they copy (the padded column row by row, the padded row, the
   corner). The kept windows of one image cover disjoint 2x2 blocks of the padded map, so
   at most one of them reaches an input before the padding's copies; the windows not kept
   add zeros, and a sum that starts at +0.0 never becomes -0.0, so leaving them out changes
   no bit. The copies are added in the same order.
2. Self-contained (no helper of another module): numba's cache notices changes to a
   function's own file only.
"""

from __future__ import annotations

from numba import njit

__all__ = ["aps_max_backward"]


@njit(cache=True, nogil=True, inline="always")
def _add_chosen(out, n, row, column, choice, y, x, k, grad, a, b,
                channels):  # pragma: no cover (numba)
    """Image ``n``'s ``out[row, column]`` channels ``+=`` those of its kept window at ``(y,
    x)`` (gradient ``grad[a, b]``) that chose entry ``k``: one padded copy. Whole arrays and
    an image index, not views: a view would count references in the loop."""
    for c in range(channels):
        if choice[n, y, x * channels + c] == k:
            out[n, row, column * channels + c] += grad[n, a, b * channels + c]


@njit(cache=True, nogil=True)
def aps_max_backward(choice, grad, phases, channels, rows, columns, zeros,
                     out):  # pragma: no cover (numba)
    """The gradient of the kept components for the max's input into ``out`` ``(N, H, W * C)``.

    ``choice`` ``(N, H, W * C)``: each window's entry (0 to 3, row-major), as
    ``max_2x2_forward`` wrote it; ``grad`` ``(N, H/2, W/2 * C)``: the kept components'
    gradient; ``phases`` ``(N,)``: each image's component ``2 i + j`` (its windows start at
    row ``i``, column ``j``); ``rows``, ``columns``: the max's padding maps (entry ``H``,
    ``W``: the row and column the padded ones copy, ``-1`` for zeros); ``zeros``: one zero
    of the dtype (a literal 0 would be typed as an integer or float64 by numba, and mixed
    arithmetic promotes float32 to float64).
    """
    images, height, width_channels = out.shape
    width = width_channels // channels
    zero = zeros[0]
    last, below = columns[width], rows[height]
    for n in range(images):
        i, j = phases[n] // 2, phases[n] % 2
        for r in range(height):
            for t in range(width_channels):
                out[n, r, t] = zero
        # 1. each kept window's gradient to the entry it chose, inside the map
        for a in range(height // 2):
            y = 2 * a + i
            for dy in range(2):
                if y + dy >= height:
                    continue
                for b in range(width // 2):
                    x = 2 * b + j
                    for dx in range(2):
                        if x + dx >= width:
                            continue
                        k, source, target = 2 * dy + dx, x * channels, (x + dx) * channels
                        for c in range(channels):
                            g = grad[n, a, b * channels + c]
                            out[n, y + dy, target + c] = zero + (
                                g if choice[n, y, source + c] == k else zero)
        # 2. the padding's copies: the padded column of each row, the padded row, the corner
        if j == 1 and last >= 0:
            for a in range(height // 2):
                y = 2 * a + i
                for dy in range(2):
                    if y + dy < height:
                        _add_chosen(out, n, y + dy, last, choice, y, width - 1, 2 * dy + 1,
                                    grad, a, width // 2 - 1, channels)
        if i == 1 and below >= 0:
            for b in range(width // 2):
                x = 2 * b + j
                for dx in range(2):
                    if x + dx < width:
                        _add_chosen(out, n, below, x + dx, choice, height - 1, x, 2 + dx,
                                    grad, height // 2 - 1, b, channels)
            if j == 1 and last >= 0:
                _add_chosen(out, n, below, last, choice, height - 1, width - 1, 3, grad,
                            height // 2 - 1, width // 2 - 1, channels)
