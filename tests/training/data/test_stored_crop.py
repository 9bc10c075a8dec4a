"""training.data.stored_crop: Pillow's resize of the square, exactly, with bounded memory."""

import numpy as np
import pytest

from model.runtime.crop import square_box
from training.data.stored_crop import stored_crop


def _whole_padded_photo_crop(image: np.ndarray, box, size: int, margin: float = 1.3) -> np.ndarray:
    """The crop as it was first written: pad the whole photo by the square's overhang, resize the square."""
    import math

    from PIL import Image

    origin_x, origin_y, side = square_box(box, margin)
    height, width = image.shape[:2]
    pad = math.ceil(max(0.0, -origin_x, -origin_y, origin_x + side - width, origin_y + side - height))
    if pad:
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    left, top = origin_x + pad, origin_y + pad
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR,
                                                    box=(left, top, left + side, top + side)))


def _random_boxes(rng: np.random.Generator, width: int, height: int, count: int):
    for _ in range(count):
        kind = rng.integers(0, 3)
        if kind == 0:  # inside the photo (the common case: detections, landmark boxes)
            side = rng.uniform(8, min(width, height))
            x1, y1 = rng.uniform(0, width - side), rng.uniform(0, height - side)
            yield x1, y1, x1 + side * rng.uniform(0.75, 1.0), y1 + side
        elif kind == 1:  # overhanging an edge
            side = rng.uniform(8, 1.5 * max(width, height))
            x1, y1 = rng.uniform(-side, width), rng.uniform(-side, height)
            yield x1, y1, x1 + side, y1 + side * rng.uniform(0.8, 1.25)
        else:  # integer boxes, scale near 1 (edge cases of Pillow's rounding)
            x1, y1 = int(rng.integers(-20, width)), int(rng.integers(-20, height))
            yield x1, y1, x1 + int(rng.integers(8, 200)), y1 + int(rng.integers(8, 200))


@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (450, 450), (97, 301)])
@pytest.mark.parametrize("size", [128, 64])
def test_crops_are_the_pixels_of_the_whole_padded_photo(shape, size):
    """Same pixels as padding the whole photo first (what the network was evaluated with), in and
    beyond the photo, for landscape, portrait (Pillow resizes those columns first) and square photos."""
    rng = np.random.default_rng(sum(shape) + size)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    compared = 0
    for box in _random_boxes(rng, shape[1], shape[0], 40):
        try:
            crop, _ = stored_crop(image, box, size, 1.3)
        except ValueError:
            continue  # the square misses the photo
        np.testing.assert_array_equal(crop, _whole_padded_photo_crop(image, box, size), err_msg=str(box))
        compared += 1
    assert compared > 25


def test_crops_in_several_bands_are_the_same(monkeypatch):
    import training.data.stored_crop as crop_module

    rng = np.random.default_rng(3)
    for shape in ((120, 200), (200, 120)):
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        boxes = [(10.5, 20.25, 110.0, 115.5), (-60.0, -40.0, 150.0, 170.0), (30.0, 10.0, 300.0, 260.0)]
        whole = [stored_crop(image, box, 64, 1.3)[0] for box in boxes]
        monkeypatch.setattr(crop_module, "_BAND_PIXELS", 700)  # a few rows or columns per band
        for box, expected in zip(boxes, whole):
            np.testing.assert_array_equal(stored_crop(image, box, 64, 1.3)[0], expected)
        monkeypatch.undo()


@pytest.mark.parametrize(("width", "height", "size"), [(640, 480, 128), (480, 640, 128), (450, 450, 128),
                                                        (200, 273, 128), (200, 272, 128), (100, 129, 128),
                                                        (100, 128, 128), (1000, 3000, 64)])
def test_the_pass_order_rule_is_this_pillows(width, height, size):
    """stored_crop splits Pillow's resize into its two passes in the order Pillow takes them for the
    whole padded photo (_vertical_first); a Pillow that orders them differently fails here."""
    from PIL import Image

    from training.data.stored_crop import _vertical_first

    rng = np.random.default_rng(width * height)
    image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
    box = (3.3, 4.7, 50.1, 51.5)
    fused = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box))
    rows = image.resize((size, height), Image.Resampling.BILINEAR, box=(box[0], 0, box[2], height))
    rows_first = np.asarray(rows.resize((size, size), Image.Resampling.BILINEAR, box=(0, box[1], size, box[3])))
    cols = image.resize((width, size), Image.Resampling.BILINEAR, box=(0, box[1], width, box[3]))
    cols_first = np.asarray(cols.resize((size, size), Image.Resampling.BILINEAR, box=(box[0], 0, box[2], size)))
    assert not np.array_equal(rows_first, cols_first)  # the case tells the orders apart
    expected = cols_first if _vertical_first(width, height, size) else rows_first
    np.testing.assert_array_equal(fused, expected)


def test_a_huge_box_allocates_about_the_crop():
    """box 0,0,10000,10000 on a 640x480 photo once padded the whole photo by ~6,000 pixels on each side
    (several GB); now the work is a strip of the square's side and bands of 2**20 pixels."""
    import time
    import tracemalloc

    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        started = time.perf_counter()
        crop, transform = stored_crop(image, (0, 0, 10000, 10000), 128, 1.3)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert crop.shape == (128, 128, 3) and transform.side == pytest.approx(13000)
    assert peak < 24 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert seconds < 5
    # beyond the photo the crop repeats its edge pixels: the far corner is the photo's corner
    np.testing.assert_array_equal(crop[-1, -1], image[-1, -1])
