import numpy as np
import pytest

from model.runtime.crop import crop_face, square_box


def test_square_box_is_centred_with_margin():
    x, y, side = square_box((10, 20, 50, 100), margin=1.5)
    assert side == pytest.approx(120)
    assert (x + side / 2, y + side / 2) == pytest.approx((30, 60))


def test_crop_maps_back_to_the_photo():
    image = np.zeros((200, 300, 3), np.uint8)
    image[90:110, 140:160] = 255  # a white square centred at (150, 100)
    crop, transform = crop_face(image, (120, 70, 180, 130), size=64, margin=1.0)
    assert crop.shape == (64, 64, 3)
    ys, xs = np.nonzero(crop[..., 0] > 128)
    centre = transform.to_image(np.array([[xs.mean() + 0.5, ys.mean() + 0.5]]))
    np.testing.assert_allclose(centre[0], (150, 100), atol=1.0)


def test_crop_beyond_the_border_replicates_edge_pixels():
    image = np.full((50, 50, 3), 40, np.uint8)
    image[:, -1] = 200
    crop, _ = crop_face(image, (30, 10, 70, 40), size=32, margin=1.0)
    assert crop[:, -1, 0].min() > 150  # right of the photo: edge column repeated, not black


def test_box_outside_the_image_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        crop_face(np.zeros((50, 50, 3), np.uint8), (100, 100, 120, 130), size=32)
    with pytest.raises(ValueError, match="empty box"):
        crop_face(np.zeros((50, 50, 3), np.uint8), (10, 10, 5, 30), size=32)
