"""The matting benchmark's metrics SAD, MSE, Grad and Conn, exactly as the MATLAB code defines them.

Every metric compares a predicted alpha ``pred`` with the ground truth ``gt`` on the unknown
region ``U = (trimap == 128)`` of 8-bit mattes (docs/reference.md section 4):

- ``sad``  = sum_U |p - g| / 255 / 1000
- ``mse``  = sum_U ((p - g) / 255)^2 / |U|                 (no /1000)
- ``grad`` = sum_U (|grad p~| - |grad g~|)^2 / 1000, where ``a~`` is ``a`` min-max normalised
  over the whole image (MATLAB ``mat2gray``) and the gradient is the L2-normalised 9x9 first
  derivative of a Gaussian (sigma 1.4) with replicated borders (``gaussgradient``)
- ``conn`` = sum_U |phi_p - phi_g| / 1000 with the 4-connected, step-0.1 connectivity of
  ``compute_connectivity_error``; thresholds are compared exactly on integers
  (``a/255 >= i/10`` as ``10*a >= 255*i``), and of equally large components the first in
  MATLAB's column-major numbering is kept.

SAD, MSE and Conn are computed exactly in integers and rounded once at the end; Grad in float64
(agreement with a literal float64 implementation is ~1e-15 relative). Inputs are validated
(shapes, dtypes, trimap values), so a metric never silently scores the wrong thing.

Edge cases (all tested):

- No unknown pixel (``trimap`` has no 128): every metric is 0.0. For MSE this replaces MATLAB's
  0/0 = NaN, so that one such image cannot turn a mean over images into NaN; the scorer reports
  the count of such images.
- A constant ``pred`` or ``gt`` (``max == min``): ``mat2gray`` has nothing to stretch; its
  gradient is taken as exactly 0 everywhere, whatever the constant.
- A threshold where ``pred`` and ``gt`` share no pixel (``M`` empty, e.g. 1.0 on soft mattes):
  the largest component is empty, so every pixel not yet labelled gets ``l = t_(i-1)``
  (docs/reference.md section 4). The original MATLAB code has no rule for this case (``max``
  of an empty list leaves no component to index), and the copy in the IndexNet release skips
  such thresholds (``continue``), so its unlabelled pixels end at ``l = 1``; the two agree
  whenever some pixel reaches 1.0 in both maps, as the trimap's forced foreground does in practice.
- Floating-point predictions are converted as the protocol saves them: clip to [0, 1], x255,
  round half up (``to_uint8``). Integer arrays of another dtype are accepted when their values
  lie in 0..255.

Only numpy and OpenCV are needed: no torch, no scipy. The module lives in ``shards`` (the base
of the package graph) because training's validation and ``evaluation`` both score with it;
``evaluation.metrics`` is its public name.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from shards.mattes import TRIMAP_BACKGROUND, TRIMAP_FOREGROUND, TRIMAP_UNKNOWN, to_uint8

METRICS = ("sad", "mse", "grad", "conn")

GRAD_SIGMA = 1.4
CONN_STEPS = 10  # thresholds t_i = i/10, i = 1..10
# Conn thresholds on 8-bit values: a/255 >= i/10  <=>  10*a >= 255*i  <=>  a >= ceil(25.5*i).
_CONN_LEVELS = tuple(-(-255 * i // CONN_STEPS) for i in range(1, CONN_STEPS + 1))
# phi = 1 - d*(d >= 0.15) with d = a/255 - k/10; 510*d = 2a - 51k is an integer, so
# d >= 0.15  <=>  2a - 51k >= 76.5  <=>  2a - 51k >= 77 (no rounding anywhere).
_CONN_SCALE = 510
_CONN_MIN_E = 77


def _gauss_kernels(sigma: float = GRAD_SIGMA) -> tuple[np.ndarray, np.ndarray, int]:
    """MATLAB ``gaussgradient``'s kernel as its separable factors ``(g, dg)``, each unit-norm.

    ``hx[r, c] = g(r) * dg(c) / sqrt(sum(hx^2))`` is the outer product of ``g / |g|`` and
    ``dg / |dg|``, because ``sum(hx^2) = sum(g^2) * sum(dg^2)``.
    """
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * 0.01)))
    u = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(u**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    dg = -u * g / sigma**2
    return g / np.sqrt(np.sum(g**2)), dg / np.sqrt(np.sum(dg**2)), half


_G, _DG, _HALF = _gauss_kernels()
assert _HALF == 4, "sigma 1.4 gives MATLAB's 9x9 kernel"


# ---------------------------------------------------------------------------------------------
# Inputs


def _as_2d(name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a (H, W) array, got shape {arr.shape}")
    return arr


def _prepare(
    pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the three inputs; return ``pred`` and ``gt`` as uint8 and the mask of U."""
    pred, gt, trimap = _as_2d("pred", pred), _as_2d("gt", gt), _as_2d("trimap", trimap)
    if not pred.shape == gt.shape == trimap.shape:
        raise ValueError(
            f"shapes differ: pred {pred.shape}, gt {gt.shape}, trimap {trimap.shape}; "
            "all three must be the same (H, W)"
        )
    if pred.size == 0:
        raise ValueError(f"the images are empty (shape {pred.shape})")
    if np.issubdtype(gt.dtype, np.floating):
        raise TypeError(
            f"gt must be an 8-bit matte (uint8, 0..255), got dtype {gt.dtype}; "
            "convert float mattes with to_uint8()"
        )
    for name, arr in (("gt", gt), ("trimap", trimap)):
        if not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
            raise TypeError(f"{name} must be uint8 (or another integer type), got {arr.dtype}")
    pred = to_uint8(pred)
    try:
        gt = to_uint8(gt)
    except ValueError as exc:
        raise ValueError(f"gt: {exc}") from None
    bad = (trimap != TRIMAP_BACKGROUND) & (trimap != TRIMAP_UNKNOWN) & (trimap != TRIMAP_FOREGROUND)
    if bad.any():
        found = np.unique(trimap[bad])
        shown = ", ".join(str(v) for v in found[:10]) + (" ..." if found.size > 10 else "")
        raise ValueError(
            f"trimap values must be 0, 128 or 255; also found {found.size} other value(s): "
            f"{shown} ({np.count_nonzero(bad)} pixels)"
        )
    return pred, gt, trimap == TRIMAP_UNKNOWN


# ---------------------------------------------------------------------------------------------
# The metrics on validated inputs (uint8 p, g; bool unknown mask u)


def _sad(p: np.ndarray, g: np.ndarray, u: np.ndarray) -> float:
    diff = p[u].astype(np.int32) - g[u]
    return int(np.abs(diff).sum(dtype=np.int64)) / 255 / 1000


def _mse(p: np.ndarray, g: np.ndarray, u: np.ndarray) -> float:
    count = int(np.count_nonzero(u))
    if count == 0:
        return 0.0
    diff = p[u].astype(np.int32) - g[u]
    return int(np.dot(diff.astype(np.int64), diff)) / 255**2 / count


def _unknown_box(u: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """The bounding box of U grown by ``margin`` and clipped to the image (None: U empty)."""
    rows, cols = np.flatnonzero(u.any(axis=1)), np.flatnonzero(u.any(axis=0))
    if rows.size == 0:
        return None
    h, w = u.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, w)),
    )


def _grad_magnitude(a: np.ndarray, box: tuple[slice, slice], at: np.ndarray) -> np.ndarray:
    """|grad mat2gray(a)| at the pixels ``at`` (flat indices into ``box``), float64.

    The filter is linear and its kernel sums to 0, so filtering ``a`` and dividing by
    ``max - min`` equals filtering ``(a - min) / (max - min)``. The box reaches at least the
    kernel's half-size past U on every side where it is not clipped by the image border, so
    replicating the box's border reproduces the full image's replicated border exactly on U.
    """
    lo, hi = int(a.min()), int(a.max())
    if lo == hi:  # mat2gray of a constant map: no gradient, whatever its value
        return np.zeros(at.size, np.float64)
    crop = a[box]
    # sepFilter2D correlates where MATLAB convolves: that only flips the signs of gx, gy.
    gx = cv2.sepFilter2D(crop, cv2.CV_64F, _DG, _G, borderType=cv2.BORDER_REPLICATE).ravel()[at]
    gy = cv2.sepFilter2D(crop, cv2.CV_64F, _G, _DG, borderType=cv2.BORDER_REPLICATE).ravel()[at]
    return np.sqrt(gx * gx + gy * gy) / (hi - lo)


def _grad(p: np.ndarray, g: np.ndarray, u: np.ndarray) -> float:
    box = _unknown_box(u, _HALF)
    if box is None:
        return 0.0
    at = np.flatnonzero(u[box])
    diff = _grad_magnitude(p, box, at) - _grad_magnitude(g, box, at)
    return float(np.sum(diff * diff)) / 1000  # not np.dot: BLAS threads would spin


def _largest_component(mask: np.ndarray) -> tuple[np.ndarray | None, int, int, int]:
    """MATLAB's ``bwconncomp(mask, 4)`` then ``[~, id] = max(sizes)``, on a 0/1 uint8 mask.

    Returns:
        ``(labels, label, y0, x0)``: the labels of the mask's bounding box (origin ``y0, x0``)
        and the label of the largest 4-connected component; of equally large ones, the one
        whose first pixel in column-major order comes first (MATLAB numbers components in that
        order and ``max`` returns the first maximum). ``labels`` is None when the mask is empty.
    """
    x0, y0, w, h = cv2.boundingRect(mask)
    if w == 0:
        return None, 0, 0, 0
    box = mask[y0 : y0 + h, x0 : x0 + w]  # every pixel of the mask is in its bounding box
    try:  # 16-bit labels are faster to make and to count
        n, labels = cv2.connectedComponents(box, connectivity=4, ltype=cv2.CV_16U)
    except cv2.error:  # 65,535 components or more
        n, labels = cv2.connectedComponents(box, connectivity=4, ltype=cv2.CV_32S)
    if labels.dtype == np.uint16 and labels.size < 2**24:  # calcHist counts exactly in float32
        sizes = cv2.calcHist([labels], [0], None, [n], [0, n]).ravel().astype(np.int64)
    else:
        sizes = np.bincount(labels.ravel(), minlength=n)
    sizes[0] = 0  # label 0 is the background, not a component
    largest = sizes.max()
    tied = np.flatnonzero(sizes == largest)
    if tied.size == 1:
        return labels, int(tied[0]), y0, x0
    # the first pixel, in column-major order, of any of the tied components is the first
    # pixel of the component MATLAB numbers first among them
    first = int(np.argmax(np.isin(labels, tied).T))  # index col * h + row in the box
    col, row = divmod(first, h)
    return labels, int(labels[row, col]), y0, x0


def _conn(p: np.ndarray, g: np.ndarray, u: np.ndarray) -> float:
    index = np.flatnonzero(u)  # U's pixels, row-major flat indices
    if index.size == 0:
        return 0.0
    both = np.minimum(p, g)  # p >= t and g >= t  <=>  min(p, g) >= t
    both_u = both.ravel()[index]
    rows, cols = np.divmod(index, u.shape[1])
    # MATLAB's loop gives a pixel l = t_k, k = the number of leading thresholds t_1, t_2, ...
    # whose largest component omega holds it (k = 10, l = 1: all of them). Only pixels of U
    # matter, and only those in every omega so far ("alive") can go on counting.
    k = np.zeros(index.size, np.int32)
    alive = np.arange(index.size)
    for level in _CONN_LEVELS:
        alive = alive[both_u[alive] >= level]  # omega lies in M
        if alive.size == 0:
            break  # no need to label M: no pixel of U can be in omega
        mask = cv2.threshold(both, level - 1, 1, cv2.THRESH_BINARY)[1]  # M as 0/1
        labels, label, y0, x0 = _largest_component(mask)
        at = (rows[alive] - y0) * labels.shape[1] + (cols[alive] - x0)  # alive is in M's box
        alive = alive[labels.ravel()[at] == label]
        if alive.size == 0:
            break
        k[alive] += 1
    # d = a/255 - k/10 as e = 510*d = 2a - 51k; phi_p - phi_g = (e_g - e_p) / 510 where the
    # e count only at d >= 0.15, e >= 77. Exact in integers.
    e_p = 2 * p.ravel()[index].astype(np.int32) - 51 * k
    e_g = 2 * g.ravel()[index].astype(np.int32) - 51 * k
    e_p[e_p < _CONN_MIN_E] = 0
    e_g[e_g < _CONN_MIN_E] = 0
    return int(np.abs(e_p - e_g).sum(dtype=np.int64)) / _CONN_SCALE / 1000


# ---------------------------------------------------------------------------------------------
# Public API


def sad(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    """Sum of absolute differences on the unknown region, in thousands.

    Args:
        pred: (H, W) uint8 predicted alpha in 0..255, or float in [0, 1] (see ``to_uint8``).
        gt: (H, W) uint8 ground-truth alpha in 0..255.
        trimap: (H, W) uint8 with values 0, 128 (unknown) and 255 only.

    Returns:
        ``sum_U |p - g| / 255 / 1000`` (0.0 when U is empty).

    Raises:
        ValueError: shapes differ or are not 2-D, trimap values other than 0/128/255,
            out-of-range or non-finite values.
        TypeError: a dtype that is not an 8-bit matte (see ``to_uint8``).
    """
    return _sad(*_prepare(pred, gt, trimap))


def mse(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    """Mean squared error on the unknown region (alphas in [0, 1]; not divided by 1000).

    Args and Raises as for ``sad``.

    Returns:
        ``sum_U ((p - g) / 255)^2 / |U|``; 0.0 when U is empty (MATLAB would give NaN).
    """
    return _mse(*_prepare(pred, gt, trimap))


def grad(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    """Gradient error on the unknown region, in thousands.

    Each map is min-max normalised over the whole image (``mat2gray``; a constant map has zero
    gradient), filtered with the L2-normalised 9x9 derivative of a Gaussian (sigma 1.4, rows
    ``g``, columns ``dg``; its transpose for y) with replicated borders, in float64.

    Args and Raises as for ``sad``.

    Returns:
        ``sum_U (|grad p~| - |grad g~|)^2 / 1000`` (0.0 when U is empty).
    """
    return _grad(*_prepare(pred, gt, trimap))


def conn(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    """Connectivity error on the unknown region, in thousands (step 0.1, 4-connectivity).

    For ``i = 1..10``: ``M = (p >= t_i) & (g >= t_i)`` with ``t_i = i/10`` (exactly
    ``10*a >= 255*i``); ``omega`` = the largest 4-connected component of ``M`` (the first in
    column-major order among equally large ones; empty if ``M`` is); pixels with ``l == -1``
    outside ``omega`` get ``l = t_(i-1)``. Afterwards pixels still at -1 get 1.
    ``d = a/255 - l``, ``phi = 1 - d * (d >= 0.15)``.

    Args and Raises as for ``sad``.

    Returns:
        ``sum_U |phi_p - phi_g| / 1000`` (0.0 when U is empty).
    """
    return _conn(*_prepare(pred, gt, trimap))


def all_metrics(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> dict[str, float]:
    """All four metrics with one validation: ``{"sad", "mse", "grad", "conn"}`` -> float.

    Args and Raises as for ``sad``.
    """
    p, g, u = _prepare(pred, gt, trimap)
    return {
        "sad": _sad(p, g, u),
        "mse": _mse(p, g, u),
        "grad": _grad(p, g, u),
        "conn": _conn(p, g, u),
    }
