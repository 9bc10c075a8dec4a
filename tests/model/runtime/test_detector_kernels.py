"""The detector's compiled loops against what they stand for."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model.runtime.detector_kernels import block_mean


@pytest.mark.parametrize(("height", "width", "factor"),
                         [(480, 640, 5), (481, 641, 5), (450, 450, 3), (7, 9, 4), (3, 2, 5), (64, 40, 16), (99, 37, 7)])
def test_block_mean_gives_pillows_reduce(height, width, factor):
    """The same numbers as Image.reduce, cut blocks at the right and bottom edges included: the
    inputs the detector's box calibration was fitted on."""
    rng = np.random.default_rng(height * width + factor)
    for image in (rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                  np.full((height, width, 3), rng.integers(0, 256, 3), np.uint8)):  # noise; one colour
        np.testing.assert_array_equal(block_mean(image, factor), np.asarray(Image.fromarray(image).reduce(factor)))


def test_block_mean_is_each_blocks_mean_within_one_level():
    image = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    means = image.reshape(20, 3, 30, 3, 3).mean(axis=(1, 3))
    assert np.abs(block_mean(image, 3) - means).max() <= 1.0
    assert block_mean(np.full((9, 9, 3), 255, np.uint8), 9).tolist() == [[[255, 255, 255]]]
