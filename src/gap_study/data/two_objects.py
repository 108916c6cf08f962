"""Two-object canvases: two test objects of different classes on one canvas, each at a seeded
random position (``docs/study.md``, "Data"). With one object on a blank canvas any map that
finds ink points at it; with two, a class's map must pick its own object
(``gap_study.measures.localization.two_object_hits``).

Each object is cut to its tight box and pasted whole; the two boxes never touch (at least one
pixel lies between them), so each box's pixels are exactly its object's.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GAP", "MAX_DRAWS", "crop", "fits", "place_pair", "two_object_canvases"]

GAP = 1  # pixels at least between the two boxes
MAX_DRAWS = 100  # pairs drawn for one canvas before giving up


def crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` ``image`` cut to ``box`` ``(top, left, bottom, right)``, bottom/right
    exclusive."""
    top, left, bottom, right = (int(v) for v in box)
    return image[:, top:bottom, left:right]


def fits(first: tuple[int, int], second: tuple[int, int], canvas: int) -> bool:
    """Whether objects of sizes ``(height, width)`` can lie on a ``canvas`` square with ``GAP``
    pixels between their boxes: two boxes are apart exactly when they are side by side or one
    above the other."""
    (h1, w1), (h2, w2) = first, second
    if max(h1, h2, w1, w2) > canvas:
        return False
    return w1 + w2 + GAP <= canvas or h1 + h2 + GAP <= canvas


def _clashes(starts: np.ndarray, size: int, other: int, canvas: int) -> np.ndarray:
    """For a box of side ``size`` starting at each of ``starts``: how many starts of a box of
    side ``other`` on the same axis come closer than ``GAP`` to it."""
    low = np.maximum(0, starts - other - GAP + 1)
    high = np.minimum(canvas - other, starts + size + GAP - 1)
    return np.maximum(0, high - low + 1)


def place_pair(first: tuple[int, int], second: tuple[int, int], canvas: int,
               rng: np.random.Generator) -> tuple[tuple[int, int], tuple[int, int]]:
    """Top-left corners ``(top, left)`` of two objects of sizes ``(height, width)``, drawn
    uniformly among all placements on the ``canvas`` square that keep ``GAP`` pixels between
    their boxes: the first corner weighted by how many places it leaves the second, then the
    second uniformly among those. The objects must ``fit``."""
    if not fits(first, second, canvas):
        raise ValueError(f"objects of {first[0]}x{first[1]} and {second[0]}x{second[1]} "
                         f"pixels cannot lie apart on a {canvas}x{canvas} canvas")
    (h1, w1), (h2, w2) = first, second
    rows, cols = np.arange(canvas - h1 + 1), np.arange(canvas - w1 + 1)
    room = (canvas - h2 + 1) * (canvas - w2 + 1)
    left_free = room - np.outer(_clashes(rows, h1, h2, canvas), _clashes(cols, w1, w2, canvas))
    cumulative = np.cumsum(left_free.ravel())
    pick = int(np.searchsorted(cumulative, rng.integers(cumulative[-1]), side="right"))
    top, left = divmod(pick, len(cols))
    tops, lefts = np.arange(canvas - h2 + 1), np.arange(canvas - w2 + 1)
    near_rows = (tops > top - h2 - GAP) & (tops < top + h1 + GAP)
    near_cols = (lefts > left - w2 - GAP) & (lefts < left + w1 + GAP)
    free = np.flatnonzero(~np.outer(near_rows, near_cols).ravel())
    top2, left2 = divmod(int(free[rng.integers(len(free))]), len(lefts))
    return (top, left), (top2, left2)


def _draw_pair(labels: np.ndarray, sizes: np.ndarray, usable: np.ndarray, canvas: int,
               rng: np.random.Generator) -> tuple[int, int]:
    """Indices of two objects of different classes that fit together: the first uniform over
    ``usable``, the second uniform over the usable objects of the other classes; a pair that
    does not fit is drawn again, at most ``MAX_DRAWS`` times."""
    for _ in range(MAX_DRAWS):
        first = int(usable[rng.integers(len(usable))])
        others = usable[labels[usable] != labels[first]]
        second = int(others[rng.integers(len(others))])
        if fits(tuple(sizes[first]), tuple(sizes[second]), canvas):
            return first, second
    raise ValueError(
        f"data.two_objects: {MAX_DRAWS} pairs of test objects of different classes in a row "
        f"did not fit apart on the {canvas}x{canvas} canvas (objects up to "
        f"{sizes[usable, 0].max()}x{sizes[usable, 1].max()} pixels; two need room side by side "
        f"or one above the other, with {GAP} pixel between them): set data.two_objects: 0 "
        "(no two-object canvases; e.g. for cifar10, whose photos fill their image) or a "
        "larger data.canvas")


def two_object_canvases(images: np.ndarray, labels: np.ndarray, boxes: np.ndarray, count: int,
                        seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` canvases of the size of ``images`` (``(N, C, H, W)``, objects on a zero
    background with tight ``boxes``), each holding two objects of different classes at random
    positions whose boxes keep ``GAP`` pixels apart; the same ``seed`` gives the same canvases,
    byte for byte. Objects are drawn with replacement across canvases (``_draw_pair``), cut to
    their boxes and pasted onto a zero canvas (``place_pair``).

    Returns ``uint8 (count, C, H, W)`` canvases, ``int64 (count, 2)`` classes and ``int64
    (count, 2, 4)`` boxes ``(top, left, bottom, right)``, bottom/right exclusive, the first
    object's first.
    """
    if count < 0:
        raise ValueError(f"data.two_objects = {count}: the number of two-object canvases "
                         "must be 0 (none) or more")
    _, channels, height, width = images.shape
    canvases = np.zeros((count, channels, height, width), dtype=images.dtype)
    pair_labels = np.zeros((count, 2), dtype=np.int64)
    pair_boxes = np.zeros((count, 2, 4), dtype=np.int64)
    if count == 0:
        return canvases, pair_labels, pair_boxes
    if height != width:
        raise ValueError(f"two-object canvases need square images, not {height}x{width}")
    sizes = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    usable = np.flatnonzero((sizes > 0).all(axis=1))  # an all-zero image has no object
    if len(np.unique(labels[usable])) < 2:
        raise ValueError(f"data.two_objects = {count}: two-object canvases need test objects of "
                         "at least two classes; set data.two_objects: 0 or keep more test "
                         "images (data.max_test)")
    rng = np.random.default_rng(seed)
    for i in range(count):
        pair = _draw_pair(labels, sizes, usable, height, rng)
        corners = place_pair(tuple(sizes[pair[0]]), tuple(sizes[pair[1]]), height, rng)
        for slot, (index, (top, left)) in enumerate(zip(pair, corners, strict=True)):
            h, w = (int(v) for v in sizes[index])
            canvases[i, :, top:top + h, left:left + w] = crop(images[index], boxes[index])
            pair_labels[i, slot] = labels[index]
            pair_boxes[i, slot] = (top, left, top + h, left + w)
    return canvases, pair_labels, pair_boxes
