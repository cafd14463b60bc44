"""training.data.augment: the reference crop recipe on uint8 arrays, and the tensors it yields."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from configs import load_config
from shards.mattes import trimap_from_alpha
from training.data.augment import (
    CROP_CHANNELS,
    _window_trimap,
    compose_batch,
    crop_sample,
    matte_maps,
    pack_crops,
    sample_band_pixel,
    to_tensors,
)
from training.models.imagenet import IMAGENET_MEAN, IMAGENET_STD
from training.models.indexnet.input import make_input


def _cfg(**augment):
    base = {"input_size": 64, "crop_sizes": [64, 96, 128], "small_image_min_side": 100}
    return load_config(
        overrides=[f"augment.{k}={v}" for k, v in {**base, **augment}.items()]
    ).augment


def _sample(h=160, w=200, seed=0):
    rng = np.random.default_rng(seed)
    fg = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    alpha[:, w // 2 :] = 255
    alpha[:, w // 2 - 3 : w // 2 + 3] = 128  # a vertical unknown band
    return fg, bg, alpha


def test_crop_shapes_values_and_centre():
    cfg = _cfg(flip_prob=0.0)
    fg, bg, alpha = _sample()
    for seed in range(20):
        crops = crop_sample(fg, bg, alpha, cfg, np.random.default_rng(seed))
        assert {k: v.shape for k, v in crops.items()} == {
            "fg": (64, 64, 3), "bg": (64, 64, 3), "alpha": (64, 64), "trimap": (64, 64)
        }  # fmt: skip
        assert all(v.dtype == np.uint8 for v in crops.values())
        assert set(np.unique(crops["trimap"])) <= {0, 128, 255}
        assert (crops["trimap"] == 128).any(), "the crop is centred on the unknown region"


def test_trimap_radius_range_is_used():
    cfg = _cfg(flip_prob=0.0, trimap_radius=[1, 19], crop_sizes=[64])
    fg, bg, alpha = _sample()
    widths = set()
    for seed in range(40):
        crops = crop_sample(fg, bg, alpha, cfg, np.random.default_rng(seed))
        widths.add(int((crops["trimap"][32] == 128).sum()))
    assert min(widths) <= 6 + 2 * 3 and max(widths) >= 6 + 2 * 15  # radius varies 1..19


def test_small_images_are_rescaled_first():
    cfg = _cfg(crop_sizes=[64], flip_prob=0.0)
    fg, bg, alpha = _sample(h=40, w=50)  # below input_size 64: rescaled to min side 100
    crops = crop_sample(fg, bg, alpha, cfg, np.random.default_rng(0))
    assert crops["alpha"].shape == (64, 64)


def test_flip_and_determinism():
    fg, bg, alpha = _sample()
    a = crop_sample(fg, bg, alpha, _cfg(flip_prob=0.0), np.random.default_rng(3))
    b = crop_sample(fg, bg, alpha, _cfg(flip_prob=1.0), np.random.default_rng(3))
    again = crop_sample(fg, bg, alpha, _cfg(flip_prob=0.0), np.random.default_rng(3))
    assert all(np.array_equal(a[k], again[k]) for k in a)
    assert all(np.array_equal(a[k][:, ::-1], b[k]) for k in a)


def test_binary_matte_still_crops():
    fg, bg, alpha = _sample()
    alpha = np.where(alpha > 0, 255, 0).astype(np.uint8)
    crops = crop_sample(fg, bg, alpha, _cfg(), np.random.default_rng(0))
    assert crops["alpha"].shape == (64, 64)


def test_tensors_composite_and_normalisation():
    rng = np.random.default_rng(0)
    crops = {
        "fg": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        "bg": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        "alpha": rng.integers(0, 256, (8, 8), dtype=np.uint8),
        "trimap": rng.choice(np.array([0, 128, 255], np.uint8), (8, 8)),
    }
    t = to_tensors(crops, make_input)
    assert t["image"].shape == (4, 8, 8) and t["alpha"].shape == (1, 8, 8)
    assert all(v.dtype == torch.float32 for v in t.values())
    a = t["alpha"]
    assert torch.allclose(t["merged"], a * t["fg"] + (1 - a) * t["bg"])
    # crops are RGB, as the reader decodes them: channel order is kept
    assert torch.allclose(t["fg"][0], torch.from_numpy(crops["fg"][..., 0] / 255).float())
    rgb = t["image"][:3] * torch.tensor(IMAGENET_STD)[:, None, None]
    rgb = rgb + torch.tensor(IMAGENET_MEAN)[:, None, None]
    assert torch.allclose(rgb, t["merged"], atol=1e-6)
    assert torch.equal(t["unknown"][0], torch.from_numpy(crops["trimap"] == 128).float())
    assert torch.allclose(t["image"][3], torch.from_numpy(crops["trimap"] / 255).float())


def test_crop_sides_that_do_not_fit_are_not_chosen():
    cfg = _cfg(crop_sizes=[64, 96, 128], flip_prob=0.0)
    fg, bg, alpha = _sample(h=70, w=300)  # only 64 fits the 70-pixel side
    for seed in range(10):
        crops = crop_sample(fg, bg, alpha, cfg, np.random.default_rng(seed))
        assert crops["alpha"].shape == (64, 64)


def _soft_matte(h=90, w=120, seed=0):
    """A matte with a few soft blobs (unknown pixels scattered, some touching the border)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    alpha = np.zeros((h, w))
    for _ in range(4):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(5, 25)
        alpha = np.maximum(alpha, np.clip((r - np.hypot(yy - cy, xx - cx)) / 4, 0, 1))
    return np.rint(alpha * 255).astype(np.uint8)


def test_window_trimap_equals_the_full_trimap_cropped():
    for seed in range(6):
        alpha = _soft_matte(seed=seed)
        for radius in (1, 7, 19):
            full = trimap_from_alpha(alpha, radius)
            for y0, x0, side in ((0, 0, 40), (50, 80, 40), (20, 33, 64), (26, 56, 64)):
                got = _window_trimap(alpha, y0, x0, side, radius)
                assert np.array_equal(got, full[y0 : y0 + side, x0 : x0 + side])


def test_band_pixels_are_drawn_uniformly_from_the_band():
    alpha = _soft_matte(h=24, w=32, seed=3)
    radius = 2
    band = trimap_from_alpha(alpha, radius) == 128
    rng = np.random.default_rng(0)
    counts = np.zeros(alpha.shape, np.int64)
    draws = 100 * int(band.sum())
    unknown = (alpha > 0) & (alpha < 255)
    for _ in range(draws):
        y, x = sample_band_pixel(unknown, radius, rng)
        counts[y, x] += 1
    assert not counts[~band].any(), "only band pixels are drawn"
    assert 0 < band.sum() < band.size
    assert counts[band].min() > 55 and counts[band].max() < 150  # 100 expected each
    assert sample_band_pixel(np.zeros((8, 8), bool), radius, rng) is None


def _random_crops(rng, side=8):
    return {
        "fg": rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
        "bg": rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
        "alpha": rng.integers(0, 256, (side, side), dtype=np.uint8),
        "trimap": rng.choice(np.array([0, 128, 255], np.uint8), (side, side)),
    }


def test_packed_crops_hold_every_plane_and_compose_as_one_sample_does():
    rng = np.random.default_rng(1)
    samples = [_random_crops(rng) for _ in range(3)]
    packed = torch.stack([pack_crops(c) for c in samples])
    assert packed.dtype == torch.uint8 and packed.shape == (3, 8, 8, 8)
    for crops, planes in zip(samples, packed, strict=True):
        assert np.array_equal(planes[..., CROP_CHANNELS["fg"]].numpy(), crops["fg"])
        assert np.array_equal(planes[..., CROP_CHANNELS["bg"]].numpy(), crops["bg"])
        assert np.array_equal(planes[..., 6].numpy(), crops["alpha"])
        assert np.array_equal(planes[..., 7].numpy(), crops["trimap"])
    batch = compose_batch(packed, make_input)
    for i, crops in enumerate(samples):  # the batched step gives each sample's own tensors
        for name, tensor in to_tensors(crops, make_input).items():
            assert torch.equal(batch[name][i], tensor), name
    # and the same float math as written out by hand: merged = a * fg + (1 - a) * bg
    a = torch.from_numpy(samples[0]["alpha"]).float() / 255
    fg = torch.from_numpy(samples[0]["fg"]).permute(2, 0, 1).float() / 255
    bg = torch.from_numpy(samples[0]["bg"]).permute(2, 0, 1).float() / 255
    assert torch.allclose(batch["merged"][0], a * fg + (1 - a) * bg, atol=1e-6)


def test_crops_from_matte_maps_equal_the_crops_without_them():
    """The maps a cached matte keeps (one distance transform of the whole matte) give exactly
    the crops of the per-window trimap, for every seed, radius and crop side."""
    cfg = _cfg(trimap_radius=[1, 30], flip_prob=0.5)
    fg, bg, _ = _sample(h=90, w=120)
    for matte_seed in range(4):
        alpha = _soft_matte(seed=matte_seed)
        maps = matte_maps(alpha)
        assert maps.near is not None and maps.nbytes == alpha.size + maps.tiles.size
        for seed in range(40):
            plain = crop_sample(fg, bg, alpha, cfg, np.random.default_rng(seed))
            fast = crop_sample(fg, bg, alpha, cfg, np.random.default_rng(seed), maps)
            for name in plain:
                assert np.array_equal(plain[name], fast[name]), (matte_seed, seed, name)
    binary = (np.arange(90 * 120).reshape(90, 120) % 2 * 255).astype(np.uint8)
    assert matte_maps(binary).near is None
    plain = crop_sample(fg, bg, binary, cfg, np.random.default_rng(0))
    fast = crop_sample(fg, bg, binary, cfg, np.random.default_rng(0), matte_maps(binary))
    assert all(np.array_equal(plain[k], fast[k]) for k in plain)
    wide = _cfg(trimap_radius=[255, 300])  # beyond what near holds: the window path is used
    alpha = _soft_matte(seed=0)
    plain = crop_sample(fg, bg, alpha, wide, np.random.default_rng(2))
    fast = crop_sample(fg, bg, alpha, wide, np.random.default_rng(2), matte_maps(alpha))
    assert all(np.array_equal(plain[k], fast[k]) for k in plain)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_step_composes_on_the_device_what_the_cpu_composes():
    rng = np.random.default_rng(2)
    packed = torch.stack([pack_crops(_random_crops(rng, 64)) for _ in range(4)])
    cpu = compose_batch(packed, make_input)
    gpu = compose_batch(packed.cuda(), make_input)
    for name, tensor in cpu.items():
        assert torch.allclose(gpu[name].cpu(), tensor, rtol=0, atol=1e-6), name
