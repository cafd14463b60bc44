"""training.models.indexnet.input.make_input: one network input for training and inference,
bit for bit."""

from __future__ import annotations

import numpy as np
import torch

from training.data.augment import to_tensors
from training.inference import _input
from training.models.imagenet import IMAGENET_MEAN, IMAGENET_STD
from training.models.indexnet.input import make_input
from training.models.registry import INDEXNET


def test_make_input_normalises_rgb_and_scales_the_trimap():
    planes = make_input(torch.ones(3, 4, 6), torch.full((4, 6), 128, dtype=torch.uint8))
    assert planes.shape == (4, 4, 6) and planes.dtype == torch.float32
    assert np.allclose(planes[:3, 0, 0].numpy(), (1 - IMAGENET_MEAN) / IMAGENET_STD)
    assert np.allclose(planes[3].numpy(), 128 / 255)


def test_inference_and_training_inputs_are_the_formula_bit_for_bit():
    """Both paths give exactly what the numpy formula (the former inference code) gives."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    trimap = rng.choice(np.array([0, 128, 255], np.uint8), (20, 24))
    image = (rgb.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    formula = np.concatenate([image, trimap.astype(np.float32)[..., None] / 255], axis=2)
    formula = formula.transpose(2, 0, 1)
    flipped = np.ascontiguousarray(rgb[..., ::-1])[..., ::-1]  # a view with negative strides
    flipped.flags.writeable = False  # as Pillow's arrays are
    for pixels in (rgb, flipped):
        planes = _input(INDEXNET, pixels, trimap)
        assert planes.shape == (1, 4, 20, 24) and planes.is_contiguous()
        np.testing.assert_array_equal(planes[0].numpy(), formula)
    # training: a composite of fg == bg == the image is the image itself (crops are RGB)
    alpha = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    tensors = to_tensors({"fg": rgb, "bg": rgb, "alpha": alpha, "trimap": trimap}, make_input)
    np.testing.assert_array_equal(tensors["image"].numpy(), formula)
