import io

import numpy as np
import pytest
from PIL import Image

from model.runtime.image_io import ImageDecodeError, load_rgb


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = 255  # left half white
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = load_rgb(_encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.shape == (40, 20, 3)
    assert out[:20].mean() > 200 and out[20:].mean() < 50  # white half now on top


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "I;16"])
def test_odd_modes_become_rgb(mode):
    base = Image.fromarray(np.linspace(0, 255, 16 * 16).reshape(16, 16).astype(np.uint8))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base).astype(np.uint16) * 257)
    else:
        image = base.convert(mode)
    out = load_rgb(_encode(image, "PNG"))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert abs(int(out[-1, -1, 0]) - 255) <= 2 and out[0, 0, 0] <= 2


def test_transparent_pixels_composite_over_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    out = load_rgb(_encode(image, "PNG"))
    assert (out == 255).all()


def test_webp_decodes():
    image = Image.new("RGB", (8, 8), (10, 200, 30))
    out = load_rgb(_encode(image, "WEBP", lossless=True))
    assert tuple(out[0, 0]) == (10, 200, 30)


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_garbage_is_a_clear_error(data):
    with pytest.raises(ImageDecodeError):
        load_rgb(data)


def test_truncated_jpeg_is_a_clear_error():
    data = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    with pytest.raises(ImageDecodeError):
        load_rgb(data[: len(data) // 2])


def test_too_many_pixels_is_refused():
    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageDecodeError, match="more than"):
        load_rgb(data, max_pixels=5000)
