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
    with pytest.raises(ImageDecodeError, match="^corrupt or truncated image: "):
        load_rgb(data[: len(data) // 2])  # in its header
    noise = Image.fromarray(np.random.default_rng(3).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    data = _encode(noise, "JPEG", quality=90)
    with pytest.raises(ImageDecodeError, match="^corrupt or truncated image: the JPEG data does not decode$"):
        load_rgb(data[: len(data) * 7 // 10])  # in its pixels


def test_a_jpeg_whose_frames_disagree_is_refused_by_both_decoders():
    """Pillow's header takes the last frame header before the scan, libjpeg refuses a second one: a
    small first frame cannot hide a huge second one from the pixel limit, nor the other way round."""
    from model.runtime.image_io import ImageTooLarge

    data = _encode(Image.new("RGB", (64, 48), (10, 200, 30)), "JPEG")
    start = data.index(b"\xff\xc0")
    frame = data[start : start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")]
    huge = frame[:5] + (30000).to_bytes(2, "big") + (30000).to_bytes(2, "big") + frame[9:]
    rest = data[start + len(frame) :]
    with pytest.raises(ImageTooLarge):
        load_rgb(data[:start] + frame + huge + rest)
    with pytest.raises(ImageDecodeError, match="does not decode"):
        load_rgb(data[:start] + huge + frame + rest)


def test_too_many_pixels_is_refused():
    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageDecodeError, match="more than"):
        load_rgb(data, max_pixels=5000)


def _first_decoding(data: bytes) -> np.ndarray:
    """load_rgb as first written (whole-image conversions with Pillow), the reference for its pixels."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if image.mode in {"I;16", "I;16B", "I;16L", "I;16N", "I"}:
        values = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / peak), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("RGB"))


def _odd_images() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    grey16 = Image.fromarray(rng.integers(0, 65535, (37, 53), dtype=np.uint16))
    cases = []
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        cases.append((f"jpeg-{orientation}", _encode(rgb, "JPEG", exif=exif.tobytes(), quality=90)))
        cases.append((f"png16-{orientation}", _encode(grey16, "PNG", exif=exif.tobytes())))
    rgba = np.asarray(rgb.convert("RGBA")).copy()
    rgba[..., 3] = rng.integers(0, 256, rgba.shape[:2])
    cases += [("rgba", _encode(Image.fromarray(rgba), "PNG")), ("cmyk", _encode(rgb.convert("CMYK"), "JPEG")),
              ("palette", _encode(rgb.convert("P"), "PNG")), ("palette-alpha", _encode(rgb.convert("P"), "PNG",
                                                                                       transparency=3)),
              ("grey16-low", _encode(Image.fromarray(rng.integers(0, 200, (9, 7), dtype=np.uint16)), "PNG")),
              ("bilevel", _encode(rgb.convert("1"), "PNG")), ("la", _encode(rgb.convert("LA"), "PNG"))]
    return cases


@pytest.mark.parametrize(("name", "data"), _odd_images(), ids=[name for name, _ in _odd_images()])
def test_strip_decoding_gives_the_pixels_of_whole_image_conversion(name, data, monkeypatch):
    import model.runtime.image_io as image_io

    monkeypatch.setattr(image_io, "_STRIP_PIXELS", 100)  # several strips even for these small images
    out = load_rgb(data)
    expected = _first_decoding(data)
    assert out.shape == expected.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_upright_rgb_photo_is_the_decoders_pixels_handed_over_read_only(fmt):
    """The common photo skips the second buffer: its answer is the decoder's pixels (OpenCV's for a
    JPEG, Pillow's for the rest), one copy, read-only (nothing downstream writes into the photo)."""
    from model.runtime.image_io import DecodedImage

    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    data = _encode(rgb, fmt, quality=90)
    out = load_rgb(data)
    assert isinstance(out, DecodedImage) and out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert not out.flags.writeable and out.flags.c_contiguous
    np.testing.assert_array_equal(out, _first_decoding(data))


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("progressive", [False, True])
def test_opencvs_jpeg_pixels_are_pillows(mode, progressive):
    """JPEGs go to OpenCV (faster to an RGB array); the pixels are the ones Pillow decodes."""
    from model.runtime.image_io import read_header

    smooth = Image.fromarray(np.random.default_rng(2).integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize(
        (120, 90), Image.Resampling.BICUBIC)
    data = _encode(smooth.convert(mode), "JPEG", quality=90, progressive=progressive)
    assert read_header(data).decoded_by_opencv
    np.testing.assert_array_equal(load_rgb(data), _first_decoding(data))


def test_the_header_is_read_without_decoding():
    from model.runtime.image_io import ImageTooLarge, read_header

    data = _encode(Image.new("RGB", (300, 200), (9, 9, 9)), "PNG")
    header = read_header(data[: len(data) - 20])  # truncated: the pixels would not decode
    assert (header.format, header.width, header.height, header.mode) == ("PNG", 300, 200, "RGB")
    assert header.pixels == 60_000 and header.peak_bytes_per_pixel == 7
    with pytest.raises(ImageTooLarge):
        read_header(data, max_pixels=50_000)
    progressive = read_header(_encode(Image.new("CMYK", (64, 64)), "JPEG", progressive=True))
    assert progressive.progressive and progressive.peak_bytes_per_pixel == 12
    assert read_header(_encode(Image.new("I;16", (8, 8)), "PNG")).peak_bytes_per_pixel == 5
    assert read_header(_encode(Image.new("RGB", (8, 8)), "WEBP")).peak_bytes_per_pixel == 16


def _block_means(image: np.ndarray, factor: int) -> np.ndarray:
    height, width = image.shape[:2]
    blocks = image.reshape(height // factor, factor, width // factor, factor, -1).astype(np.float64)
    return blocks.mean(axis=(1, 3))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_the_preview_is_the_upright_photo_box_filtered(orientation, mode):
    """Made from the decoder's image while decoding, it is the upright answer reduced by the factor."""
    from model.runtime.image_io import DecodedImage, preview_factor

    rng = np.random.default_rng(orientation)
    stored = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
        (96, 72), Image.Resampling.BICUBIC))  # smooth, stored 96 x 72
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(Image.fromarray(stored).convert(mode), "JPEG", exif=exif.tobytes(), quality=95)
    out = load_rgb(data, preview_side=16)
    assert isinstance(out, DecodedImage) and out.preview is not None
    assert out.preview.factor == preview_factor(96, 72, 16) == 3  # the longer side stays >= 2 x 16
    np.testing.assert_array_equal(out, load_rgb(data))  # the same pixels with or without a preview
    preview = out.preview.image
    assert preview.dtype == np.uint8 and preview.shape == (out.shape[0] // 3, out.shape[1] // 3, 3)
    assert np.abs(preview - _block_means(out, 3)).max() <= 1  # rounding
    assert out[1:].preview is None and out.copy().preview is None and (out + 0).preview is None


@pytest.mark.parametrize("case", ["rgb", "turned", "grey", "rgba", "palette"])
def test_a_small_photos_preview_is_the_upright_answer_itself_made_when_first_asked(case):
    """Whatever the photo was stored as, the preview is made from the upright RGB answer, only when
    the detector asks for it (a photo whose face box is given pays nothing), and then kept."""
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned
    data = {"rgb": _encode(rgb, "PNG"), "turned": _encode(rgb, "JPEG", exif=exif.tobytes()),
            "grey": _encode(rgb.convert("L"), "PNG"), "rgba": _encode(rgb.convert("RGBA"), "PNG"),
            "palette": _encode(rgb.convert("P"), "PNG")}[case]
    small = load_rgb(data, preview_side=21)  # 80 < 4 x 21: not reduced
    assert small._preview is None  # nothing made yet
    writeable = small.flags.writeable
    assert small.preview.factor == 1
    np.testing.assert_array_equal(small.preview.image, small)
    assert np.shares_memory(small.preview.image, small)  # not copied
    assert not small.preview.image.flags.writeable and small.flags.writeable == writeable  # a read-only view
    assert small.preview is small.preview  # made once
    assert load_rgb(data, preview_side=16).preview.factor == 2  # 80 >= 4 x 16
    assert load_rgb(data).preview is None  # not decoded for a detector


def _cut_block_means(image: np.ndarray, factor: int) -> np.ndarray:
    """Each factor x factor block's mean from the top-left corner, cut blocks over what they have."""
    height, width = image.shape[:2]
    padded = np.pad(image.astype(np.float64), ((0, -height % factor), (0, -width % factor), (0, 0)))
    counts = np.pad(np.ones((height, width, 1)), ((0, -height % factor), (0, -width % factor), (0, 0)))
    return _block_means(padded, factor) / _block_means(counts, factor)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("reduction", [2, 4, 8])
def test_a_jpeg_decoded_reduced_is_the_upright_photos_block_means(orientation, reduction):
    """libjpeg's DCT scaling: each pixel stands for a reduction x reduction block of the upright photo
    (close to its mean), the photo's size and the reduction carried with the answer."""
    from model.runtime.image_io import DecodedImage, photo_reduction, photo_size

    rng = np.random.default_rng(reduction)
    stored = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
        (192, 144), Image.Resampling.BICUBIC))  # smooth, stored 192 x 144: both sides multiples of 8 and 16
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(Image.fromarray(stored), "JPEG", exif=exif.tobytes(), quality=95)
    whole, reduced = load_rgb(data), load_rgb(data, reduction=reduction)
    assert isinstance(reduced, DecodedImage) and photo_reduction(reduced) == reduced.reduction == reduction
    assert reduced.photo_size == photo_size(whole) == (whole.shape[1], whole.shape[0])
    assert reduced.shape == (whole.shape[0] // reduction, whole.shape[1] // reduction, 3)
    assert np.abs(reduced - _block_means(whole, reduction)).mean() < 1.5
    assert not reduced.flags.writeable and reduced[1:].reduction == 1  # views are plain arrays again


def test_a_reduced_decode_covers_cut_blocks_and_keeps_the_photos_size():
    rng = np.random.default_rng(5)
    stored = np.asarray(Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).resize(
        (101, 75), Image.Resampling.BICUBIC))
    data = _encode(Image.fromarray(stored), "JPEG", quality=95)
    whole, reduced = load_rgb(data), load_rgb(data, reduction=4)
    assert reduced.shape == (19, 26, 3) and reduced.photo_size == (101, 75)  # ceil(75 / 4), ceil(101 / 4)
    assert np.abs(reduced - _cut_block_means(whole, 4)).mean() < 2.0


def test_a_turned_jpeg_whose_sides_the_reduction_does_not_divide_is_reduced_less():
    """Turning moves the stored image's top-left corner, where libjpeg's blocks start: a cut block
    would then shift the upright photo's coordinates, so the reduction drops to one that divides."""
    exif = Image.Exif()
    exif[0x0112] = 3  # stored upside down
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (36, 52, 3), dtype=np.uint8))
    turned = _encode(image, "JPEG", exif=exif.tobytes())
    assert load_rgb(turned, reduction=8).reduction == 4  # 52 and 36: multiples of 4, not of 8
    assert load_rgb(_encode(image, "JPEG"), reduction=8).reduction == 8  # upright: cut blocks are fine


def test_formats_other_than_opencvs_jpegs_are_decoded_whole():
    from model.runtime.image_io import photo_size

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    for data in (_encode(image, "PNG"), _encode(image.convert("CMYK"), "JPEG")):
        out = load_rgb(data, reduction=4)
        assert out.reduction == 1 and out.shape == (40, 60, 3) and photo_size(out) == (60, 40)
    with pytest.raises(ValueError, match="reduction"):
        load_rgb(_encode(image, "PNG"), reduction=3)


def test_the_preview_of_a_reduced_decode_maps_to_photo_pixels():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    out = load_rgb(_encode(image, "JPEG"), preview_side=40, reduction=2)  # 320 x 240, preview factor 4
    assert out.preview is not None and out.preview.factor == 8 and out.preview.image.shape == (60, 80, 3)


def test_a_reduction_stops_where_the_longer_side_would_fall_under_min_side():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    data = _encode(image, "JPEG")
    assert load_rgb(data, reduction=8, min_side=100).reduction == 2  # 150 >= 100 > 75
    assert load_rgb(data, reduction=8, min_side=37).reduction == 8
    assert load_rgb(data, reduction=8, min_side=301).reduction == 1
    assert load_rgb(data, reduction=4).reduction == 4  # no floor
