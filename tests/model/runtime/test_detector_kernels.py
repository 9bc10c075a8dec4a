"""The detector's compiled loops against the arithmetic they stand for."""

from __future__ import annotations

import numpy as np
import pytest

from model.runtime.detector_kernels import block_mean


def _rounded_block_means(image: np.ndarray, factor: int) -> np.ndarray:
    """Each factor x factor block's mean from the top-left corner (cut blocks over the pixels they hold),
    rounded half up, block by block in integers."""
    height, width = image.shape[:2]
    out = np.empty((-(-height // factor), -(-width // factor), 3), np.int64)
    for row in range(out.shape[0]):
        for col in range(out.shape[1]):
            block = image[row * factor:(row + 1) * factor, col * factor:(col + 1) * factor].reshape(-1, 3)
            out[row, col] = (block.astype(np.int64).sum(axis=0) * 2 + len(block)) // (2 * len(block))
    return out


@pytest.mark.parametrize(("height", "width", "factor"),
                         [(480, 640, 5), (481, 641, 5), (450, 450, 3), (7, 9, 4), (3, 2, 5), (6, 6, 1), (64, 40, 16)])
def test_block_mean_is_each_blocks_mean_rounded_half_up(height, width, factor):
    image = np.random.default_rng(height * width + factor).integers(0, 256, (height, width, 3), dtype=np.uint8)
    np.testing.assert_array_equal(block_mean(image, factor), _rounded_block_means(image, factor))


def test_block_mean_rounds_exact_halves_up_and_keeps_the_extremes():
    image = np.zeros((2, 4, 3), np.uint8)
    image[0, 0] = 1  # blocks of 2 x 2: a sum of 1 over 4 pixels is 0.25, rounds to 0
    image[:, 2:] = [[[1, 255, 2]], [[2, 255, 2]]]  # sums 6, 1020, 8 over 4: 1.5 -> 2, 255, 2
    np.testing.assert_array_equal(block_mean(image, 2), [[[0, 0, 0], [2, 255, 2]]])
    assert block_mean(np.full((9, 9, 3), 255, np.uint8), 9).tolist() == [[[255, 255, 255]]]
