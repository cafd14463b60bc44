"""training.models.vitmatte.loss: ViTMatte's four loss terms, against hand-computable cases and the
official formulation (hustvl/ViTMatte, modeling/criterion/matting_criterion.py) at 512x512."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.models.vitmatte.loss import (
    GAUSSIAN,
    SOBEL_X,
    SOBEL_Y,
    laplacian_loss,
    laplacian_pyramid,
    vitmatte_loss,
)


def _case(side: int, seed: int = 0, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(batch, 1, side, side, generator=g)
    pred = torch.rand(batch, 1, side, side, generator=g)
    unknown = (torch.rand(batch, 1, side, side, generator=g) < 0.3).float()
    return pred, gt, unknown


def test_the_kernels_are_reference_md_s():
    row = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    assert torch.equal(GAUSSIAN[0, 0], torch.outer(row, row) / 256)
    assert GAUSSIAN.sum() == 1
    assert SOBEL_X[0, 0].tolist() == [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    assert SOBEL_Y[0, 0].tolist() == [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]


def test_a_perfect_prediction_costs_nothing_and_each_term_is_a_region_mean():
    _, gt, unknown = _case(64)
    loss = vitmatte_loss(gt, gt, unknown)
    assert float(loss.unknown_l1) == float(loss.known_l1) == float(loss.laplacian) == 0
    # only the penalty on the prediction's own gradient is left: 0.01 (|gx| + |gy|) there
    gx, gy = (F.conv2d(gt, k, padding=1).abs() for k in (SOBEL_X, SOBEL_Y))
    penalty = 0.01 * ((gx * unknown).sum() + (gy * unknown).sum()) / unknown.sum()
    assert torch.isclose(loss.gradient, penalty)
    pred = gt + 0.25 * unknown  # an error of 0.25 on the unknown pixels only
    loss = vitmatte_loss(pred, gt, unknown)
    assert torch.isclose(loss.unknown_l1, torch.tensor(0.25)) and float(loss.known_l1) == 0
    pred = gt + 0.5 * (1 - unknown)  # and 0.5 on the known ones only
    loss = vitmatte_loss(pred, gt, unknown)
    assert torch.isclose(loss.known_l1, torch.tensor(0.5)) and float(loss.unknown_l1) == 0
    assert torch.isclose(loss.total, sum(loss[1:]))


def test_a_constant_offset_has_no_band_pass_energy_but_its_level_four_residue():
    """The pyramid of a constant: every band-pass level is 0 inside (the kernel sums to 1) and
    the reflect padding keeps the borders exact too, so an offset costs no Laplacian loss."""
    gt = torch.zeros(1, 1, 64, 64)
    for level in laplacian_pyramid(gt + 0.3):
        assert level.abs().max() < 1e-6
    assert laplacian_loss(gt + 0.3, gt) < 1e-6


def test_no_unknown_pixel_gives_zero_unknown_terms_not_a_division_by_zero():
    pred, gt, _ = _case(64)
    loss = vitmatte_loss(pred, gt, torch.zeros_like(gt))
    assert float(loss.unknown_l1) == 0 and float(loss.gradient) == 0
    assert torch.isfinite(loss.total) and loss.known_l1 > 0


def _official(pred, gt, m):
    """The official terms, written out as its file computes them (valid at 512x512)."""
    scale = m.shape[0] * 262144 / m.sum()
    known = (m == 0).float()
    k_scale = known.shape[0] * 262144 / known.sum()
    sx, sy = SOBEL_X, SOBEL_Y
    dpx, dgx = F.conv2d(pred, sx, padding=1), F.conv2d(gt, sx, padding=1)
    dpy, dgy = F.conv2d(pred, sy, padding=1), F.conv2d(gt, sy, padding=1)
    gradient = (
        F.l1_loss(dpx * m, dgx * m) * scale
        + F.l1_loss(dpy * m, dgy * m) * scale
        + 0.01 * torch.mean(torch.abs(dpx * m)) * scale
        + 0.01 * torch.mean(torch.abs(dpy * m)) * scale
    )
    return (
        F.l1_loss(pred * m, gt * m) * scale,
        F.l1_loss(pred * known, gt * known) * k_scale,
        gradient,
    )


def test_at_512_the_terms_equal_the_official_code_s():
    pred, gt, unknown = _case(512, seed=3)
    ours = vitmatte_loss(pred, gt, unknown)
    for got, want in zip(
        (ours.unknown_l1, ours.known_l1, ours.gradient), _official(pred, gt, unknown), strict=True
    ):
        assert torch.allclose(got, want, rtol=1e-5), (got, want)


def test_the_loss_trains():
    pred, gt, unknown = _case(64, seed=5)
    pred.requires_grad_(True)
    vitmatte_loss(pred, gt, unknown).total.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
