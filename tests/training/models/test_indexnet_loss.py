"""training.models.indexnet.loss: hand-computed cases of the alpha and composition
terms (docs/reference.md section 3)."""

from __future__ import annotations

import math

import pytest
import torch

from configs import LossConfig
from training.models.indexnet.loss import matting_loss

EPS = 1e-6


def _scene(b: int = 2, h: int = 8, w: int = 8, seed: int = 0):
    """Random alpha/fg/bg, the exact composite, and an unknown mask with known pixels too."""
    g = torch.Generator().manual_seed(seed)
    alpha = torch.rand(b, 1, h, w, generator=g)
    fg, bg = torch.rand(b, 3, h, w, generator=g), torch.rand(b, 3, h, w, generator=g)
    unknown = torch.rand(b, 1, h, w, generator=g) > 0.5
    unknown[:, :, 0, 0] = True  # every sample has unknown pixels
    return alpha, fg, bg, alpha * fg + (1 - alpha) * bg, unknown


def test_zero_where_the_prediction_is_the_truth():
    alpha, fg, bg, merged, unknown = _scene()
    pred = torch.where(unknown, alpha, torch.full_like(alpha, 7.0))  # known pixels: anything
    total, l_alpha, l_comp = matting_loss(pred, alpha, fg, bg, merged, unknown)
    # only the constant eps floor remains: one eps per pixel (x3 channels), over |U|
    pixels, counts = 8 * 8, unknown.sum(dim=(1, 2, 3)).double()
    assert l_alpha.item() == pytest.approx((pixels * EPS / counts).mean().item(), rel=1e-3)
    assert l_comp.item() == pytest.approx((3 * pixels * EPS / counts).mean().item(), rel=1e-3)
    assert total.item() == pytest.approx(0.5 * l_alpha.item() + 0.5 * l_comp.item())
    assert total.item() < 1e-5


def test_known_pixels_never_count():
    alpha, fg, bg, merged, unknown = _scene(seed=1)
    pred = torch.rand(alpha.shape, generator=torch.Generator().manual_seed(2))
    changed = torch.where(unknown, pred, -5.0 * torch.ones_like(pred)).requires_grad_()
    base = matting_loss(pred, alpha, fg, bg, merged, unknown)
    moved = matting_loss(changed, alpha, fg, bg, merged, unknown)
    assert torch.equal(base.total, moved.total.detach())
    moved.total.backward()
    assert torch.all(changed.grad[~unknown] == 0) and changed.grad[unknown].abs().sum() > 0


def test_one_pixel_off_by_hand():
    # 2x2 image, two unknown pixels, one predicted 0.5 too high; fg - bg = (1, 0.5, -0.5)
    alpha = torch.tensor([[[[0.2, 0.6], [1.0, 0.0]]]])
    pred = alpha + torch.tensor([[[[0.5, 0.0], [0.0, 0.0]]]])
    unknown = torch.tensor([[[[True, True], [False, False]]]])
    fg = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    bg = torch.tensor([0.0, 0.0, 0.5]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    merged = alpha * fg + (1 - alpha) * bg
    total, l_alpha, l_comp = matting_loss(pred, alpha, fg, bg, merged, unknown)
    floor = EPS  # sqrt(0 + eps^2) for each of the other pixels
    expect_alpha = (math.sqrt(0.5**2 + EPS**2) + 3 * floor) / 2
    # composition error 0.5 * (fg - bg) = (0.5, 0.25, -0.25), summed over RGB: 1.0
    expect_comp = (0.5 + 0.25 + 0.25 + (3 * 4 - 3) * floor) / 2
    assert l_alpha.item() == pytest.approx(expect_alpha, rel=1e-6)
    assert l_comp.item() == pytest.approx(expect_comp, rel=1e-6)
    assert total.item() == pytest.approx(0.5 * expect_alpha + 0.5 * expect_comp, rel=1e-6)
    assert total.item() == pytest.approx(0.375, abs=1e-5)


def test_composition_sums_the_three_channels():
    alpha = torch.full((1, 1, 4, 4), 0.5)
    pred = alpha + 0.1
    unknown = torch.ones_like(alpha, dtype=torch.bool)
    bg = torch.zeros(1, 3, 4, 4)
    one = torch.zeros(1, 3, 4, 4)
    one[:, 0] = 1.0  # fg differs from bg in red only
    three = torch.ones(1, 3, 4, 4)  # in every channel
    comp_one = matting_loss(pred, alpha, one, bg, alpha * one, unknown).comp.item()
    comp_three = matting_loss(pred, alpha, three, bg, alpha * three, unknown).comp.item()
    assert comp_one == pytest.approx(0.1, rel=1e-4)
    assert comp_three == pytest.approx(0.3, rel=1e-4)  # summed, not averaged


def test_batch_mean_of_per_sample_means():
    alpha = torch.zeros(2, 1, 4, 4)
    pred = alpha.clone()
    unknown = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    unknown[0, 0, 0, 0] = True  # one unknown pixel, error 0.2
    unknown[1, 0, :2, :2] = True  # four unknown pixels, one with error 0.2
    pred[0, 0, 0, 0] = 0.2
    pred[1, 0, 0, 0] = 0.2
    fg = bg = torch.zeros(2, 3, 4, 4)
    l_alpha = matting_loss(pred, alpha, fg, bg, bg, unknown).alpha.item()
    assert l_alpha == pytest.approx((0.2 + 0.2 / 4) / 2, rel=1e-3)


def test_raw_prediction_is_not_clamped_and_weights_apply():
    alpha = torch.ones(1, 1, 2, 2)
    pred = torch.full((1, 1, 2, 2), 1.5)  # above 1: still 0.5 off
    unknown = torch.ones_like(alpha, dtype=torch.bool)
    fg = bg = torch.zeros(1, 3, 2, 2)
    cfg = LossConfig(alpha_weight=1.0, comp_weight=0.0, eps=1e-6)
    result = matting_loss(pred, alpha, fg, bg, bg, unknown, cfg)
    assert result.alpha.item() == pytest.approx(0.5, rel=1e-6)
    assert result.total.item() == pytest.approx(result.alpha.item())


def test_low_precision_prediction_gives_a_float32_loss():
    alpha, fg, bg, merged, unknown = _scene()
    result = matting_loss(alpha.bfloat16(), alpha, fg, bg, merged, unknown)
    assert all(t.dtype == torch.float32 and t.dim() == 0 for t in result)


def test_no_unknown_pixels_stays_finite():
    alpha, fg, bg, merged, _ = _scene(b=1)
    none = torch.zeros_like(alpha, dtype=torch.bool)
    result = matting_loss(alpha + 0.3, alpha, fg, bg, merged, none)
    assert torch.isfinite(result.total) and result.total.item() < 1e-3


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("pred", (2, 3, 8, 8), r"pred must be \(B, 1, H, W\)"),
        ("fg", (2, 1, 8, 8), r"fg must be \(2, 3, 8, 8\)"),
        ("unknown", (2, 1, 4, 4), r"unknown must be \(2, 1, 8, 8\)"),
    ],
)
def test_shape_mismatch_is_a_clear_error(name, shape, message):
    alpha, fg, bg, merged, unknown = _scene()
    args = {"pred": alpha, "alpha": alpha, "fg": fg, "bg": bg, "merged": merged, "unknown": unknown}
    args[name] = torch.zeros(shape)
    with pytest.raises(ValueError, match=message):
        matting_loss(**args)
