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


@pytest.mark.parametrize(("side", "expected"), [(50.0, 1), (128.0, 1), (319.9, 1), (320.0, 2), (639.0, 2),
                                                (640.0, 4), (1030.0, 4), (1280.0, 8)])
def test_the_reduction_is_the_greatest_power_of_two_that_leaves_a_quarter_more_than_the_crop(side, expected):
    assert crop_reduction((0.0, 0.0, side, side), 128, margin=1.0) == expected


@pytest.mark.parametrize("k", [2, 4, 8])
def test_the_block_reduction_is_the_rounded_block_means(k):
    from model.runtime.crop import _block_means

    photo = np.random.default_rng(k).integers(0, 256, (8 * k + 3, 5 * k + 1, 3), dtype=np.uint8)  # cut blocks too
    assert np.abs(_block_means(photo, k) - _block_mean_reference(photo, k)).max() <= 0.5 + 1e-9


def test_the_reduction_averages_what_would_alias():
    """Columns alternating black and white: a square five crops across is their block means, grey;
    one 1.95 crops across (no block reduction) is blurred to nearly grey, where a plain bilinear resize
    reads whichever columns its samples land on."""
    import cv2

    photo = np.zeros((700, 700, 3), np.uint8)
    photo[:, ::2] = 255
    crop, _ = crop_face(photo, (20.0, 36.0, 20.0 + 5 * 128, 36.0 + 5 * 128), 128, margin=1.0)
    assert np.abs(crop.astype(int) - 127.5).max() <= 0.5
    crop, _ = crop_face(photo, (20.3, 30.7, 270.1, 280.5), 128, margin=1.0)
    plain = cv2.resize(photo[31:281, 20:270], (128, 128), interpolation=cv2.INTER_LINEAR)
    assert np.abs(crop.astype(int) - 127.5).max() < 32 and np.abs(plain.astype(int) - 127.5).max() > 100


@pytest.mark.parametrize("scale", [0.8, 1.3, 1.7, 1.95, 2.6, 3.3, 4.3])
def test_the_crop_stands_in_for_pillows_antialiased_resize(scale):
    """Within a level or so of Pillow's antialiased bilinear resize of the square (what the network was
    evaluated with), at scales with and without a block reduction."""
    from PIL import Image

    rng = np.random.default_rng(int(scale * 10))
    photo = np.asarray(Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize(
        (800, 600), Image.Resampling.BICUBIC))  # detail at every scale up to about 10 pixels
    side = 128 * scale
    box = (401.3 - side / 2, 297.8 - side / 2, 401.3 + side / 2, 297.8 + side / 2)
    crop, transform = crop_face(photo, box, 128, margin=1.0)
    pillow = np.asarray(Image.fromarray(photo).resize((128, 128), Image.Resampling.BILINEAR, box=(
        transform.origin_x, transform.origin_y, transform.origin_x + side, transform.origin_y + side)))
    assert np.abs(crop.astype(int) - pillow).mean() < 1.0


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
    crop, _ = crop_face(image, (30, 10, 70, 40), size=16, margin=1.0)  # reduced by 2: the last 2 columns' mean
    assert (crop[:, -4:, 0] == crop[:, -1:, 0]).all() and 100 < crop[:, -1, 0].min() <= 120


def test_box_outside_the_image_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        crop_face(np.zeros((50, 50, 3), np.uint8), (100, 100, 120, 130), size=32)
    with pytest.raises(ValueError, match="empty box"):
        crop_face(np.zeros((50, 50, 3), np.uint8), (10, 10, 5, 30), size=32)


@pytest.mark.parametrize("reduction", [2, 4])
def test_a_photo_decoded_reduced_gives_the_crop_of_the_whole_photo(reduction):
    """The photo already reduced by d (its d x d block means, as a JPEG decoded with DCT scaling) with
    ``reduction=d``, for squares the crop reduces by d or more: the same crop and map as from the
    whole photo, up to rounding the block means twice."""
    rng = np.random.default_rng(reduction)
    coarse = rng.integers(0, 256, (60, 80, 3)).astype(np.float32)
    photo = np.clip(np.kron(coarse, np.ones((8, 8, 1))) + rng.normal(0, 8, (480, 640, 3)), 0, 255).astype(np.uint8)
    reduced = np.rint(_block_mean_reference(photo, reduction)).astype(np.uint8)
    for box in [(200.3, 120.8, 420.5, 390.1), (-80.0, 250.0, 180.0, 520.0), (420.5, -30.25, 700.0, 230.0)]:
        assert crop_reduction(box, 64) >= reduction
        whole, whole_map = crop_face(photo, box, 64)
        crop, crop_map = crop_face(reduced, box, 64, reduction=reduction)
        assert crop_map == whole_map
        assert np.abs(crop.astype(int) - whole).max() <= 1, box


def test_a_huge_box_reads_the_photo_once_and_allocates_about_the_crop():
    """box 0,0,10000,10000 on a 640x480 photo: a 13,000-pixel square reduced by 64 (10 x 8 block means
    of the photo), the rest the photo's edge repeated."""
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
    assert (crop[20:, 20:] == crop[-1, -1]).all()  # beyond the photo's corner: its corner repeated
