"""evaluation.metrics: hand-computable cases, a plain reference implementation, golden values.

The plain reference (``benchmarks/metrics_reference.py``, which benchmarks/metrics.py also
times against ours) is a literal transcription of the benchmark's MATLAB code that shares no
code with ``shards.metrics``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.metrics_reference import (
    dgauss,
    gauss,
    ref_bwconncomp4,
    ref_conn,
    ref_grad,
    reference_metrics,
)
from shards.metrics import METRICS, all_metrics, conn, grad, mse, sad, to_uint8
from tests.conftest import load_golden

REL = 1e-15  # docs/evaluation.md's bar: agreement with the MATLAB definitions within 1e-15 relative
# (measured: at most 6.9e-16, Grad; SAD, MSE and Conn 2-3e-16)


# ---------------------------------------------------------------------------------------------
# Inputs


golden = load_golden("make_metrics_golden")

# The golden cases plus more seeds of each kind, and sizes whose U touches the image border.
AGREEMENT_CASES = golden.CASES + [
    ("soft", 10, 80, 112),
    ("soft", 11, 150, 200),
    ("blobs", 12, 90, 130),
    ("blobs", 13, 128, 64),
    ("plateaus", 14, 64, 64),
    ("plateaus", 15, 96, 40),
    ("cells", 18, 50, 120),
    ("cells", 19, 80, 60),
    ("twins", 20, 90, 60),
    ("twins", 21, 75, 75),
    ("noise", 16, 40, 40),
    ("constant", 17, 64, 100),
]


def _unknown(shape: tuple[int, int]) -> np.ndarray:
    return np.full(shape, 128, np.uint8)


def _assert_close(ours: dict[str, float], ref: dict[str, float], rel: float = REL) -> None:
    for name in METRICS:
        assert ours[name] == pytest.approx(ref[name], rel=rel, abs=1e-15), (name, ours, ref)


# ---------------------------------------------------------------------------------------------
# Hand-computable cases


def test_zero_error():
    _, gt, trimap = golden.make_case("soft", 0, 60, 80)
    assert all_metrics(gt, gt, trimap) == {"sad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0}


def test_one_pixel_off():
    gt = np.zeros((20, 30), np.uint8)
    pred = gt.copy()
    pred[10, 15] = 255  # 1.0 against 0.0, at least 4 pixels from every border
    trimap = _unknown(gt.shape)
    assert sad(pred, gt, trimap) == 1 / 1000
    assert mse(pred, gt, trimap) == pytest.approx(1 / 600, rel=1e-15)
    # M is empty at every threshold, so l = t_0 = 0: phi_p = 1 - 1 = 0, phi_g = 1
    assert conn(pred, gt, trimap) == pytest.approx(1 / 1000, rel=1e-15)
    # gt is constant (no gradient); the normalised delta's gradient is the kernel itself, and
    # |hx|^2 + |hy|^2 sums to 1 + 1 over the 9x9 neighbourhood (both L2-normalised)
    assert grad(pred, gt, trimap) == pytest.approx(2 / 1000, rel=1e-12)


def test_sad_and_mse_count_only_the_unknown_region():
    gt = np.array([[0, 0, 255, 100]], np.uint8)
    pred = np.array([[255, 51, 0, 100]], np.uint8)
    trimap = np.array([[0, 128, 128, 128]], np.uint8)
    assert sad(pred, gt, trimap) == pytest.approx((51 + 255) / 255 / 1000, rel=1e-15)
    assert mse(pred, gt, trimap) == pytest.approx((0.2**2 + 1.0) / 3, rel=1e-15)


def test_grad_on_a_ramp_follows_the_kernel():
    h, w = 12, 100
    ramp = np.tile(2 * np.arange(w), (h, 1)).astype(np.uint8)  # 0, 2, ..., 198 along x
    flat = np.full((h, w), 7, np.uint8)
    trimap = np.zeros((h, w), np.uint8)
    trimap[:, 4 : w - 4] = 128  # columns whose 9-wide neighbourhood stays inside the image
    # conv of the normalised ramp c/(w-1) with g(r)*dg(c): gx = -sum(g) * sum(j*dg(j)) / (w-1)
    # (kernel factors L2-normalised); gy = 0 because the ramp is constant down the columns
    u = np.arange(-4, 5)
    g = np.array([gauss(x, 1.4) for x in u])
    dg = np.array([dgauss(x, 1.4) for x in u])
    g, dg = g / np.linalg.norm(g), dg / np.linalg.norm(dg)
    magnitude = abs(g.sum() * (u * dg).sum()) / (w - 1)
    expected = trimap.astype(bool).sum() * magnitude**2 / 1000
    assert grad(ramp, flat, trimap) == pytest.approx(expected, rel=1e-12)
    assert grad(flat, ramp, trimap) == pytest.approx(expected, rel=1e-12)
    # min-max normalisation: any ramp with the same shape normalises to the same map
    assert grad(ramp, (ramp // 2 + 50).astype(np.uint8), trimap) == pytest.approx(0, abs=1e-20)


def test_grad_uses_replicated_borders():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    gt = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    trimap = np.zeros((30, 40), np.uint8)
    trimap[0, :] = trimap[:, -1] = 128  # only border pixels
    assert grad(pred, gt, trimap) == pytest.approx(ref_grad(pred, gt, trimap), rel=1e-12)


def _two_squares(second_size: int, second_gt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 3x3 square at 255 in both maps; a second square of 255 in pred and ``second_gt`` in gt."""
    pred = np.zeros((10, 16), np.uint8)
    pred[1:4, 1:4] = 255
    pred[5 : 5 + second_size, 8 : 8 + second_size] = 255
    gt = pred.copy()
    gt[5 : 5 + second_size, 8 : 8 + second_size] = second_gt
    return pred, gt, _unknown(pred.shape)


def test_conn_known_component():
    # second square (2x2) smaller than the 255 square: never in omega, l = 0 from i = 1:
    # phi_p = 1 - 1 = 0, phi_g = 1 - 140/255, each of the 4 pixels contributes 115/255
    pred, gt, trimap = _two_squares(2, 140)
    assert conn(pred, gt, trimap) == pytest.approx(4 * 115 / 255 / 1000, rel=1e-15)
    # second square (4x4) larger: it is omega while 140 >= 25.5*i (i <= 5), then the 3x3
    # square is: l = t_5 = 0.5, phi_p = 0.5, d_g = 140/255 - 0.5 < 0.15 so phi_g = 1
    pred, gt, trimap = _two_squares(4, 140)
    assert conn(pred, gt, trimap) == pytest.approx(16 * 0.5 / 1000, rel=1e-15)
    for case in (_two_squares(2, 140), _two_squares(4, 140)):
        assert conn(*case) == pytest.approx(ref_conn(*case), rel=1e-15)


def test_conn_thresholds_are_exact():
    # gt = 153 is exactly 0.6: it belongs to M at t = 0.6 (a float threshold from
    # arange(0, 1.1, 0.1) is 0.6000000000000001 and drops it). Empty M from t = 0.7 on, so
    # l = t_6 = 0.6: phi_p = 1 - 0.4, phi_g = 1 (d = 0): 0.4 per pixel.
    pred = np.zeros((8, 8), np.uint8)
    pred[2:6, 2:6] = 255
    gt = np.where(pred > 0, 153, 0).astype(np.uint8)
    assert conn(pred, gt, _unknown(pred.shape)) == pytest.approx(16 * 0.4 / 1000, rel=1e-15)
    # 152 is just below 0.6: l = t_5 = 0.5, phi_p = 0.5, d_g = 152/255 - 0.5 < 0.15: phi_g = 1
    gt[gt > 0] = 152
    assert conn(pred, gt, _unknown(pred.shape)) == pytest.approx(16 * 0.5 / 1000, rel=1e-15)


def test_conn_empty_intersection_at_high_thresholds():
    # gt at 190 (< 0.8): M is empty for i = 8, 9, 10 and every pixel still at -1 gets t_7
    pred = np.zeros((9, 9), np.uint8)
    pred[3:6, 3:6] = 255
    gt = np.where(pred > 0, 190, 0).astype(np.uint8)
    trimap = _unknown(pred.shape)
    assert conn(pred, gt, trimap) == pytest.approx(9 * 0.3 / 1000, rel=1e-15)
    assert conn(pred, gt, trimap) == pytest.approx(ref_conn(pred, gt, trimap), rel=1e-15)
    # and no intersection at all: l = 0 everywhere, Conn = sum |d_p*[d_p>=.15] - d_g*[...]|
    disjoint = np.roll(pred, 3, axis=1)
    expected = (9 * 1.0 + 9 * 190 / 255) / 1000
    assert conn(pred, np.where(disjoint > 0, 190, 0).astype(np.uint8), trimap) == pytest.approx(
        expected, rel=1e-12
    )


def test_conn_ties_pick_the_first_component_in_column_major_order():
    # two equal 2x2 components at t <= 0.5: A is first in row-major order (top right), B in
    # MATLAB's column-major order (bottom left). MATLAB keeps B while both are in M.
    pred = np.zeros((8, 8), np.uint8)
    pred[1:3, 5:7] = 255  # A: 255 in both maps
    pred[5:7, 1:3] = 255  # B: 255 in pred, 140 in gt
    gt = pred.copy()
    gt[5:7, 1:3] = 140
    trimap = _unknown(pred.shape)
    # omega = B for i <= 5, so A gets l = 0 (phi 0 in both maps); then omega = A and B gets
    # l = t_5 = 0.5: phi_p = 0.5, phi_g = 1. (Keeping A would give 4 * 115/255 instead.)
    assert conn(pred, gt, trimap) == pytest.approx(4 * 0.5 / 1000, rel=1e-15)
    assert ref_conn(pred, gt, trimap) == pytest.approx(4 * 0.5 / 1000, rel=1e-15)
    # both in the same first column: the upper one comes first
    pred2 = np.zeros((8, 8), np.uint8)
    pred2[1:3, 1:3] = pred2[5:7, 1:3] = 255
    gt2 = pred2.copy()
    gt2[1:3, 1:3] = 140
    assert conn(pred2, gt2, trimap) == pytest.approx(4 * 0.5 / 1000, rel=1e-15)
    assert conn(pred2[::-1], gt2[::-1], trimap) == pytest.approx(4 * 115 / 255 / 1000, rel=1e-15)


def test_conn_background_is_not_a_component():
    # one small component in a large empty background: it is omega at every threshold, so
    # l = 1 and phi = 1 in both maps, whatever their values (a port that counts label 0 as a
    # component takes the background as omega instead and gets l = 0 for the square)
    pred = np.zeros((20, 20), np.uint8)
    pred[5:8, 5:8] = 255
    gt = np.where(pred > 0, 200, 0).astype(np.uint8)  # in M up to t = 0.7
    trimap = np.zeros_like(pred)
    trimap[5:8, 5:8] = 128
    # omega = the square for i <= 7, then M is empty: l = t_7 = 0.7
    expected = 9 * abs((1 - 0.3) - 1) / 1000
    assert conn(pred, gt, trimap) == pytest.approx(expected, rel=1e-12)


def test_conn_with_more_components_than_16_bit_labels_hold():
    # a checkerboard has no 4-connected neighbours: 65,536 single-pixel components, all tied
    h, w = 256, 512
    board = ((np.indices((h, w)).sum(axis=0) % 2) * 255).astype(np.uint8)
    gt = board.copy()
    gt[:, ::3] = np.where(board[:, ::3] > 0, 140, 0)  # some columns lower in gt
    trimap = _unknown(board.shape)
    assert conn(board, gt, trimap) == pytest.approx(ref_conn(board, gt, trimap), rel=1e-12)


def test_largest_component_of_a_mask_past_2_24_pixels():
    """Past 2**24 pixels component sizes are counted with bincount (calcHist's float32 counts
    are exact only below that)."""
    from shards.metrics import _largest_component

    mask = np.ones((4100, 4100), np.uint8)
    mask[:, 2049] = 0  # left part 2049 columns wide, right part 2050: the right one is larger
    labels, label, y0, x0 = _largest_component(mask)
    assert (y0, x0) == (0, 0) and labels[0, 4000] == label != labels[0, 0]


# ---------------------------------------------------------------------------------------------
# Agreement with the plain reference


@pytest.mark.parametrize("kind,seed,h,w", AGREEMENT_CASES)
def test_agrees_with_reference(kind, seed, h, w):
    pred, gt, trimap = golden.make_case(kind, seed, h, w)
    ours = all_metrics(pred, gt, trimap)
    _assert_close(ours, reference_metrics(pred, gt, trimap))
    assert ours == {"sad": sad(pred, gt, trimap), "mse": mse(pred, gt, trimap),
                    "grad": grad(pred, gt, trimap), "conn": conn(pred, gt, trimap)}  # fmt: skip


def test_cases_have_equally_large_components():
    """The agreement cases really exercise ties (several largest components at a threshold)."""
    ties = 0
    for kind, seed, h, w in AGREEMENT_CASES:
        pred, gt, _ = golden.make_case(kind, seed, h, w)
        for i in range(1, 11):
            both = np.minimum(pred, gt).astype(int)
            labels, n = ref_bwconncomp4(10 * both >= 255 * i)
            if n > 1:
                sizes = np.bincount(labels.ravel())[1:]
                ties += np.count_nonzero(sizes == sizes.max()) > 1
    assert ties >= 3


def test_agrees_with_reference_on_random_trimaps():
    rng = np.random.default_rng(7)
    for _ in range(3):
        h, w = rng.integers(20, 70, size=2)
        pred = rng.integers(0, 256, (h, w), dtype=np.uint8)
        gt = np.clip(pred.astype(int) + rng.integers(-60, 61, (h, w)), 0, 255).astype(np.uint8)
        trimap = rng.choice(np.array([0, 128, 255], np.uint8), size=(h, w))
        _assert_close(all_metrics(pred, gt, trimap), reference_metrics(pred, gt, trimap))


# ---------------------------------------------------------------------------------------------
# Edge cases


def test_no_unknown_pixels_gives_zero():
    pred, gt, trimap = golden.make_case("soft", 0, 40, 50)
    trimap = np.where(trimap == 128, 255, trimap).astype(np.uint8)
    assert all_metrics(pred, gt, trimap) == {"sad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0}


def test_constant_prediction_has_no_gradient_whatever_its_value():
    _, gt, trimap = golden.make_case("constant", 6, 50, 60)
    values = {grad(np.full(gt.shape, v, np.uint8), gt, trimap) for v in (0, 77, 255)}
    assert len(values) == 1
    assert values.pop() == pytest.approx(ref_grad(np.zeros_like(gt), gt, trimap), rel=1e-12)
    flat = np.full(gt.shape, 30, np.uint8)
    assert grad(flat, np.full(gt.shape, 200, np.uint8), trimap) == 0.0


def test_float_predictions_are_converted_like_the_protocol():
    pred, gt, trimap = golden.make_case("soft", 1, 60, 70)
    as_float = pred.astype(np.float64) / 255
    assert all_metrics(as_float, gt, trimap) == all_metrics(pred, gt, trimap)
    assert all_metrics(as_float.astype(np.float32), gt, trimap) == all_metrics(pred, gt, trimap)
    # out-of-range network outputs are clipped
    over = as_float.copy()
    over[pred == 255] = 1.3
    over[pred == 0] = -0.2
    assert all_metrics(over, gt, trimap) == all_metrics(pred, gt, trimap)


def test_to_uint8():
    values = np.array([[-0.3, 0.0, 0.2, 0.5, 0.25, 1.0, 1.7]])
    # clip, x255, round half up: 0.5 -> 127.5 -> 128, 0.25 -> 63.75 -> 64
    assert to_uint8(values).tolist() == [[0, 0, 51, 128, 64, 255, 255]]
    halves = np.array([[0.5, 2.5, 10.5]]) / 255  # x * 255 gives back exactly k + 0.5 here
    assert to_uint8(halves).tolist() == [[1, 3, 11]]  # half up (MATLAB), not half to even
    assert to_uint8(np.array([[0, 255]], np.int64)).dtype == np.uint8
    same = np.array([[3, 4]], np.uint8)
    assert to_uint8(same) is same
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(np.array([[0.1, np.nan]]))
    with pytest.raises(ValueError, match=r"0\.\.255, found -1\.\.256"):
        to_uint8(np.array([[-1, 256]]))
    with pytest.raises(TypeError, match="bool"):
        to_uint8(np.array([[True]]))


def test_integer_dtypes_in_range_are_accepted():
    pred, gt, trimap = golden.make_case("blobs", 2, 40, 40)
    wide = all_metrics(pred.astype(np.int64), gt.astype(np.uint16), trimap.astype(np.int32))
    assert wide == all_metrics(pred, gt, trimap)


# ---------------------------------------------------------------------------------------------
# Errors


def test_shapes_must_match():
    a = np.zeros((4, 5), np.uint8)
    with pytest.raises(ValueError, match=r"shapes differ: pred \(4, 5\), gt \(5, 4\)"):
        sad(a, a.T.copy(), a)
    with pytest.raises(ValueError, match=r"pred must be a \(H, W\) array, got shape \(4, 5, 3\)"):
        mse(np.zeros((4, 5, 3), np.uint8), a, a)
    with pytest.raises(ValueError, match="empty"):
        grad(a[:0], a[:0], a[:0])


def test_trimap_values_other_than_0_128_255_are_named():
    pred = np.zeros((4, 4), np.uint8)
    trimap = np.full((4, 4), 128, np.uint8)
    trimap[0, 0], trimap[1, 1], trimap[2, 2] = 1, 200, 200
    with pytest.raises(ValueError, match=r"0, 128 or 255.*2 other value\(s\): 1, 200 \(3 pixels\)"):
        conn(pred, pred, trimap)


def test_bad_dtypes():
    a = np.zeros((4, 4), np.uint8)
    with pytest.raises(TypeError, match="gt must be an 8-bit matte.*to_uint8"):
        sad(a, a.astype(np.float32), a)
    with pytest.raises(TypeError, match="trimap must be uint8 .*float64"):
        sad(a, a, a.astype(np.float64))
    with pytest.raises(TypeError, match="bool"):
        sad(a.astype(bool), a, a)
    with pytest.raises(ValueError, match=r"gt: .*0\.\.255"):
        sad(a, a.astype(np.int32) + 300, a)


# ---------------------------------------------------------------------------------------------
# Golden values (regenerate with tests/golden/make_metrics_golden.py)


def test_golden_values():
    stored = json.loads(golden.GOLDEN.read_text())["cases"]
    assert [c["name"] for c in stored] == [golden.case_name(k, s) for k, s, _, _ in golden.CASES]
    for case, (kind, seed, h, w) in zip(stored, golden.CASES, strict=True):
        pred, gt, trimap = golden.make_case(kind, seed, h, w)
        hashes = {
            "pred": golden.sha256(pred),
            "gt": golden.sha256(gt),
            "trimap": golden.sha256(trimap),
        }
        assert hashes == case["sha256"], f"{case['name']}: the generated inputs changed"
        ours = all_metrics(pred, gt, trimap)
        for name in ("sad", "mse", "conn"):  # exact integer arithmetic: bit for bit
            assert ours[name] == case["metrics"][name], (case["name"], name)
        assert ours["grad"] == pytest.approx(case["metrics"]["grad"], rel=1e-9), case["name"]
        _assert_close(case["metrics"], reference_metrics(pred, gt, trimap))
