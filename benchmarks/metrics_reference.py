"""The four matting metrics transcribed plainly from the benchmark's MATLAB code (slow, literal).

A line-by-line transcription of ``compute_sad_loss``, ``compute_mse_loss``,
``compute_gradient_loss`` (with ``mat2gray`` and ``gaussgradient``) and
``compute_connectivity_error``, with scipy.ndimage standing in for ``imfilter(...,
'replicate', 'conv')`` and ``bwconncomp(..., 4)`` (docs/reference.md section 4). It shares no
code with ``shards.metrics``: tests/evaluation/test_metrics.py checks ours against it, and
benchmarks/metrics.py times the two.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def ref_sad(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    pred, gt = pred.astype(np.float64) / 255, gt.astype(np.float64) / 255
    return float(np.sum(np.abs(pred - gt)[trimap == 128]) / 1000)


def ref_mse(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    pred, gt = pred.astype(np.float64) / 255, gt.astype(np.float64) / 255
    unknown = trimap == 128
    if not unknown.any():
        return 0.0  # our documented choice for MATLAB's 0/0
    return float(np.sum(((pred - gt) ** 2)[unknown]) / np.count_nonzero(unknown))


def gauss(x: float, sigma: float) -> float:
    return math.exp(-(x**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))


def dgauss(x: float, sigma: float) -> float:
    return -x * gauss(x, sigma) / sigma**2


def ref_gaussgradient(im: np.ndarray, sigma: float = 1.4) -> tuple[np.ndarray, np.ndarray]:
    epsilon = 1e-2
    halfsize = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    size = 2 * halfsize + 1
    hx = np.zeros((size, size))
    for i in range(1, size + 1):
        for j in range(1, size + 1):
            u = (i - halfsize - 1, j - halfsize - 1)
            hx[i - 1, j - 1] = gauss(u[0], sigma) * dgauss(u[1], sigma)
    hx = hx / math.sqrt(np.sum(np.abs(hx) * np.abs(hx)))
    hy = hx.T
    gx = ndimage.convolve(im, hx, mode="nearest")  # imfilter(IM, hx, 'replicate', 'conv')
    gy = ndimage.convolve(im, hy, mode="nearest")
    return gx, gy


def ref_mat2gray(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    lo, hi = a.min(), a.max()
    if hi == lo:
        return np.zeros_like(a)  # our documented choice: a constant map has no gradient
    return (a - lo) / (hi - lo)


def ref_grad(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    pred_x, pred_y = ref_gaussgradient(ref_mat2gray(pred))
    target_x, target_y = ref_gaussgradient(ref_mat2gray(gt))
    pred_amp = np.sqrt(pred_x**2 + pred_y**2)
    target_amp = np.sqrt(target_x**2 + target_y**2)
    error_map = (pred_amp - target_amp) ** 2
    return float(np.sum(error_map[trimap == 128]) / 1000)


FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def ref_bwconncomp4(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels numbered as MATLAB numbers them: in column-major scan order (label the transpose;
    ndimage numbers components in raster order of their first pixel)."""
    labels_t, n = ndimage.label(mask.T, structure=FOUR)
    return labels_t.T, n


def ref_conn(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    pred_i, gt_i = pred.astype(np.int64), gt.astype(np.int64)
    pred_f, gt_f = pred.astype(np.float64) / 255, gt.astype(np.float64) / 255
    l_map = np.full(pred.shape, -1.0)
    for i in range(1, 11):  # thresh_steps(ii) = i/10, compared exactly on integers
        pred_alpha_thresh = 10 * pred_i >= 255 * i
        target_alpha_thresh = 10 * gt_i >= 255 * i
        labels, n = ref_bwconncomp4(pred_alpha_thresh & target_alpha_thresh)
        omega = np.zeros(pred.shape, bool)
        if n > 0:
            size_vec = np.bincount(labels.ravel())[1:]  # label 0 is the background
            max_id = int(np.argmax(size_vec)) + 1  # [~, max_id] = max(size_vec): the first
            omega = labels == max_id
        flag = (l_map == -1) & ~omega
        l_map[flag] = (i - 1) / 10
    l_map[l_map == -1] = 1
    pred_d = pred_f - l_map
    target_d = gt_f - l_map
    pred_phi = 1 - pred_d * (pred_d >= 0.15)
    target_phi = 1 - target_d * (target_d >= 0.15)
    return float(np.sum(np.abs(pred_phi - target_phi)[trimap == 128]) / 1000)


REFERENCE = {"sad": ref_sad, "mse": ref_mse, "grad": ref_grad, "conn": ref_conn}


def reference_metrics(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> dict[str, float]:
    """The four metrics by the plain reference (uint8 inputs)."""
    return {name: fn(pred, gt, trimap) for name, fn in REFERENCE.items()}
