"""Decoding uploaded photos into RGB arrays (in memory only: uploads are never written).

A photo is decoded once. When asked (``preview_side``), :func:`load_rgb` also keeps a small copy for
the face detector, box-filtered from the decoder's own image before it is dropped: the detector then
never copies or scales the full-resolution array (a 4000x3000 photo: 8 ms for the reduced copy
instead of 34 ms to hand the array back to Pillow and 8 ms to reduce it). A second decode at reduced
scale (libjpeg's DCT scaling, Pillow's draft mode) costs as much (9 ms at 1/8 of 4000x3000, 0.6 ms at
1/2 of 450x450 against 0.15 ms to reduce) and would be a second decode of every JPEG, so it is not
used; ``benchmarks/bench_detector.py`` prints these figures.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_STRIP_PIXELS = 1 << 20  # pixels converted at a time
_PREVIEW_MODES = ("RGB", "L")  # decoded modes a preview is made from (others: the detector reads the array)
# EXIF orientation -> the transpose that makes the stored image upright (as ImageOps.exif_transpose)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageDecodeError(ValueError):
    """The bytes are not a photo that can be used (corrupt or truncated)."""


class UnsupportedImageFormat(ImageDecodeError):
    """The bytes are not an image in one of the accepted formats."""


class ImageTooLarge(ImageDecodeError):
    """The image has more pixels than allowed (or is a decompression bomb)."""


@dataclass(frozen=True)
class Preview:
    """A photo reduced for the face detector: ``image`` (RGB, upright) is the photo box-filtered by
    ``factor`` (each pixel the mean of a factor x factor block; the last row and column of blocks
    may be partial; 1: the photo itself), so a photo pixel coordinate is ``factor`` times a preview
    coordinate."""

    image: Image.Image
    factor: int


class DecodedImage(np.ndarray):
    """What :func:`load_rgb` answers: an (H, W, 3) uint8 RGB array like any other, carrying the
    detector's :class:`Preview` when one was made. Arrays derived from it (views, slices, results
    of arithmetic) carry none: only the decoded photo itself does."""

    preview: Preview | None = None

    def __array_finalize__(self, obj: object) -> None:
        self.preview = None


def preview_factor(width: int, height: int, preview_side: int) -> int:
    """The box filter's factor for a preview: the largest integer that leaves the longer side at
    least 2 x ``preview_side`` (room for the detector's own reduction to each network's input);
    1 (no preview) for photos under 4 x ``preview_side``."""
    return max(1, max(width, height) // (2 * preview_side))


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, before anything is decoded."""

    format: str  # Pillow's name: "JPEG", "PNG", "WEBP"
    width: int  # as stored (an EXIF rotation may swap width and height)
    height: int
    mode: str  # Pillow's mode of the decoded image: "RGB", "L", "I;16", ...
    progressive: bool = False  # a progressive JPEG (decoded from a buffer of all its coefficients)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes_per_pixel(self) -> int:
        """Bytes a pixel takes in Pillow's decoded image (RGB is stored as 4 bytes)."""
        if self.mode in ("1", "L", "P"):
            return 1
        return 2 if self.mode.startswith("I;16") else 4

    @property
    def peak_bytes_per_pixel(self) -> int:
        """Bytes per pixel that :func:`load_rgb` holds at its peak: Pillow's decoded image and the
        (H, W, 3) answer; a progressive JPEG's coefficients (2 bytes per component) while it decodes;
        a WebP's decoded frame held three times (libwebp's canvas, its copy, Pillow's image). Measured
        on 6324x6324 images: PNG RGB 7.0, 16-bit grey 5.1, RGBA 7.2, palette 4.1; JPEG 7.0, progressive
        9.6 (CMYK 11.5); WebP 15.5. The detector's preview (``preview_side``) is not counted: 4 / f**2
        bytes a pixel for its factor f, 0.02 at 6324x6324 and at most 1 (under 1152 pixels); a small
        photo's preview is Pillow's decoded image, counted above, kept."""
        if self.format == "WEBP":
            return 16
        peak = self.decoded_bytes_per_pixel + 3
        if self.format == "JPEG" and self.progressive:
            components = {"L": 1, "CMYK": 4}.get(self.mode, 3)
            peak = max(peak, self.decoded_bytes_per_pixel + 2 * components)
        return peak


def _open(data: bytes, max_pixels: int, formats: Sequence[str] | None) -> Image.Image:
    """Image.open with the pixel limit checked from the header; errors as ours."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=list(formats) if formats else None)
    except UnidentifiedImageError:
        accepted = ", ".join(formats) if formats else "an image format Pillow reads"
        raise UnsupportedImageFormat(f"not an image in an accepted format ({accepted})") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageTooLarge(f"image too large: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"corrupt or truncated image: {err}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height}, more than {max_pixels} pixels")
    return image


def read_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                formats: Sequence[str] | None = None) -> ImageHeader:
    """The format, size and mode of an encoded image, read from its header without decoding it
    (what a request will cost). Raises the errors of :func:`load_rgb` that the header shows."""
    image = _open(data, max_pixels, formats)
    progressive = bool(image.info.get("progressive") or image.info.get("progression"))
    return ImageHeader(image.format or "", image.width, image.height, image.mode, progressive)


def _strips(image: Image.Image) -> Iterator[tuple[int, Image.Image]]:
    """(first row, the rows from there) in strips of about _STRIP_PIXELS pixels: copies that small
    (an image of one strip is not copied)."""
    rows = max(1, _STRIP_PIXELS // max(1, image.width))
    if rows >= image.height:
        yield 0, image
        return
    for top in range(0, image.height, rows):
        yield top, image.crop((0, top, image.width, min(top + rows, image.height)))


def _upright_view(out: np.ndarray, orientation: int) -> np.ndarray:
    """A view of the upright array ``out`` indexed like the stored image (row, column), for EXIF
    ``orientation`` 1-8: writing the stored image into it writes ``out`` upright (what
    ImageOps.exif_transpose does, without a second copy of the image)."""
    views = {
        2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
        3: lambda a: a[::-1, ::-1],  # ROTATE_180
        4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
        5: lambda a: a.transpose(1, 0, 2),  # TRANSPOSE
        6: lambda a: np.rot90(a, 1),  # ROTATE_270 (clockwise)
        7: lambda a: np.rot90(a, 1)[:, ::-1],  # TRANSVERSE
        8: lambda a: np.rot90(a, -1),  # ROTATE_90 (counter-clockwise)
    }
    return views.get(orientation, lambda a: a)(out)


def load_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, formats: Sequence[str] | None = None, *,
             preview_side: int | None = None) -> DecodedImage:
    """JPEG / PNG / WebP / ... bytes -> (H, W, 3) uint8 RGB, upright per its EXIF orientation.

    ``formats`` restricts the accepted formats (Pillow names such as ``"JPEG"``; default: any
    Pillow reads). The pixel limit is checked from the header, before anything is decoded.
    Greyscale, palette, RGBA (alpha composited over white) and 16-bit images are converted.

    ``preview_side``: the face detector's largest network input; a photo at least 4 times as large
    (longer side) that decodes to RGB or greyscale gets a :class:`Preview` (:func:`preview_factor`),
    made from the decoded image, at most 1/4 of its pixels (1/16 of its bytes at 4000x3000); a
    smaller one stored upright in RGB gets the decoder's image itself (factor 1), which the detector
    then reads without copying the array back into Pillow (0.16 ms at 640x480).

    Memory: Pillow's decoded image and the answer, nothing else of the image's size: the
    conversion runs a strip at a time, writing straight into the upright answer. An upright RGB
    photo of one strip is answered as Pillow hands its pixels over (one copy, read-only).
    """
    image = _open(data, max_pixels, formats)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageTooLarge(f"image too large: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"corrupt or truncated image: {err}") from None
    width, height = image.size
    if image.mode == "RGB" and orientation == 1 and width * height <= _STRIP_PIXELS:
        # Pillow's own pixels as they are (one copy, no second buffer to fill): the common photo
        out = np.asarray(image).view(DecodedImage)
        _add_preview(out, image, orientation, preview_side)
        return out
    transposed = orientation in (5, 6, 7, 8)
    out = np.empty((width, height, 3) if transposed else (height, width, 3), np.uint8).view(DecodedImage)
    stored = _upright_view(out, orientation)
    scale = None
    if image.mode in _SIXTEEN_BIT_MODES:  # to 8 bits: by 65535 when any value passes 255, else by 255
        peak = 65535.0 if max(int(np.asarray(strip).max()) for _, strip in _strips(image)) > 255 else 255.0
        scale = 255.0 / peak
    for top, strip in _strips(image):
        rows = stored[top : top + strip.height]
        if scale is not None:
            grey = np.clip(np.asarray(strip, dtype=np.float32) * scale, 0, 255).astype(np.uint8)
            rows[...] = grey[..., None]
            continue
        if strip.mode in ("RGBA", "LA", "PA") or (strip.mode == "P" and "transparency" in strip.info):
            rgba = strip.convert("RGBA")
            strip = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        rows[...] = np.asarray(strip if strip.mode == "RGB" else strip.convert("RGB"))
    _add_preview(out, image, orientation, preview_side)
    return out


def _add_preview(out: DecodedImage, image: Image.Image, orientation: int, preview_side: int | None) -> None:
    """Give ``out`` the detector's :class:`Preview`: reduced from the decoded ``image`` when the photo
    is large enough, ``image`` itself when it is small, upright and RGB (see :func:`load_rgb`)."""
    if not preview_side:
        return
    factor = preview_factor(image.width, image.height, preview_side)
    if factor == 1 and image.mode == "RGB" and orientation == 1:  # the upright photo itself, no copy
        out.preview = Preview(image, 1)
    elif factor > 1 and image.mode in _PREVIEW_MODES:
        small = image.reduce(factor)
        small = small if small.mode == "RGB" else small.convert("RGB")
        out.preview = Preview(small.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else small, factor)
