import numpy as np
import pytest

from model.runtime.crop import crop_face, crop_reduction, square_box


def _block_mean_reference(photo: np.ndarray, k: int) -> np.ndarray:
    """Each k x k block's mean from the top-left corner, cut blocks over the pixels they have (float)."""
    height, width = photo.shape[:2]
    out = np.empty((-(-height // k), -(-width // k), 3))
    for row in range(out.shape[0]):
        for col in range(out.shape[1]):
            out[row, col] = photo[row * k : (row + 1) * k, col * k : (col + 1) * k].reshape(-1, 3).mean(axis=0)
    return out


def test_square_box_is_centred_with_margin():
    x, y, side = square_box((10, 20, 50, 100), margin=1.5)
    assert side == pytest.approx(120)
    assert (x + side / 2, y + side / 2) == pytest.approx((30, 60))


@pytest.mark.parametrize(("side", "expected"), [(50.0, 1), (128.0, 1), (128.5, 2), (256.0, 2), (256.5, 4),
                                                (1030.0, 16)])
def test_the_reduction_is_the_least_power_of_two_that_fits_the_square_in_the_crop(side, expected):
    assert crop_reduction((0.0, 0.0, side, side), 128, margin=1.0) == expected


@pytest.mark.parametrize("k", [2, 4, 8])
def test_a_square_on_the_block_grid_is_the_photos_block_means(k):
    """A square k * size photo pixels across on the k x k block grid: crop pixel (i, j) is the mean of
    photo block (i, j) under it, exactly (the resample lands on the reduced pixels' centres)."""
    rng = np.random.default_rng(k)
    size, photo = 32, rng.integers(0, 256, (400, 500, 3), dtype=np.uint8)
    x0, y0 = 5 * k, 3 * k
    crop, transform = crop_face(photo, (x0, y0, x0 + k * size, y0 + k * size), size, margin=1.0)
    assert transform.side == k * size and (transform.origin_x, transform.origin_y) == (x0, y0)
    expected = _block_mean_reference(photo[y0 : y0 + k * size, x0 : x0 + k * size], k)
    assert np.abs(crop - expected).max() <= 0.5 + 1e-9  # the rounded means


def test_the_reduction_averages_what_would_alias():
    """Columns alternating black and white, cropped at half resolution: grey, where a plain bilinear
    resize would read whichever columns its samples land on."""
    photo = np.zeros((300, 300, 3), np.uint8)
    photo[:, ::2] = 255
    crop, _ = crop_face(photo, (20.3, 30.7, 270.1, 280.9), 128, margin=1.0)
    assert np.abs(crop.astype(int) - 128).max() <= 1


def test_cut_blocks_at_the_photos_edge_are_the_means_of_their_pixels():
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (45, 37, 3), dtype=np.uint8)  # neither side a multiple of 4
    crop, _ = crop_face(photo, (0, 0, 4 * 16, 4 * 16), 16, margin=1.0)
    expected = _block_mean_reference(photo, 4)  # 12 x 10 blocks, the last row and column cut
    np.testing.assert_allclose(crop[:12, :10], expected, atol=0.5 + 1e-9)
    # beyond the photo the crop repeats the reduced photo's edge pixels
    np.testing.assert_allclose(crop[:12, 10:], np.repeat(expected[:, -1:], 6, axis=1), atol=0.5 + 1e-9)
    np.testing.assert_allclose(crop[12:, :10], np.repeat(expected[-1:], 4, axis=0), atol=0.5 + 1e-9)


def test_crop_maps_back_to_the_photo():
    for scale in (1, 3):  # the crop at the photo's resolution, and reduced by 4
        image = np.zeros((200 * scale, 300 * scale, 3), np.uint8)
        image[90 * scale : 110 * scale, 140 * scale : 160 * scale] = 255  # centred at (150, 100) * scale
        box = (120 * scale, 70 * scale, 180 * scale, 130 * scale)
        crop, transform = crop_face(image, box, size=64, margin=1.0)
        assert crop.shape == (64, 64, 3)
        ys, xs = np.nonzero(crop[..., 0] > 128)
        centre = transform.to_image(np.array([[xs.mean() + 0.5, ys.mean() + 0.5]]))
        np.testing.assert_allclose(centre[0], (150 * scale, 100 * scale), atol=scale)


def test_crop_beyond_the_border_replicates_edge_pixels():
    image = np.full((50, 50, 3), 40, np.uint8)
    image[:, -1] = 200
    crop, _ = crop_face(image, (30, 10, 70, 40), size=64, margin=1.0)
    assert crop[:, -1, 0].min() == 200  # right of the photo: edge column repeated, not black
    crop, _ = crop_face(image, (30, 10, 70, 40), size=32, margin=1.0)  # reduced by 2: the last 2 columns' mean
    np.testing.assert_array_equal(crop[:, -1, 0], 120)


def test_box_outside_the_image_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        crop_face(np.zeros((50, 50, 3), np.uint8), (100, 100, 120, 130), size=32)
    with pytest.raises(ValueError, match="empty box"):
        crop_face(np.zeros((50, 50, 3), np.uint8), (10, 10, 5, 30), size=32)


@pytest.mark.parametrize("reduction", [2, 4])
def test_a_photo_decoded_reduced_gives_the_crop_of_the_whole_photo(reduction):
    """The photo already reduced by d (its d x d block means, as a JPEG decoded with DCT scaling) with
    ``reduction=d``: the same crop and map as from the whole photo, up to rounding the block means twice."""
    rng = np.random.default_rng(reduction)
    coarse = rng.integers(0, 256, (60, 80, 3)).astype(np.float32)
    photo = np.clip(np.kron(coarse, np.ones((8, 8, 1))) + rng.normal(0, 8, (480, 640, 3)), 0, 255).astype(np.uint8)
    reduced = np.rint(_block_mean_reference(photo, reduction)).astype(np.uint8)
    for box in [(200.3, 120.8, 420.5, 390.1), (-40.0, 300.0, 160.0, 520.0), (500.5, 10.25, 700.0, 170.0)]:
        whole, whole_map = crop_face(photo, box, 64)
        crop, crop_map = crop_face(reduced, box, 64, reduction=reduction)
        assert crop_map == whole_map
        assert np.abs(crop.astype(int) - whole).max() <= 1, box


def test_a_huge_box_reads_the_photo_once_and_allocates_about_the_crop():
    """box 0,0,10000,10000 on a 640x480 photo: a 13,000-pixel square reduced by 128, the photo 5 x 4
    block means of it, the rest the photo's edge repeated."""
    import tracemalloc

    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        crop, transform = crop_face(image, (0, 0, 10000, 10000), 128)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert crop.shape == (128, 128, 3) and transform.side == pytest.approx(13000)
    assert peak < 2**20, f"{peak / 2**20:.1f} MiB"
    corner = _block_mean_reference(image, 128)[-1, -1]
    np.testing.assert_allclose(crop[-1, -1], corner, atol=0.5 + 1e-9)
