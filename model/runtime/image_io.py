"""Decoding uploaded photos into RGB arrays (in memory only: uploads are never written).

A photo is decoded once. JPEGs in colour or greyscale (nearly every photo) are decoded by OpenCV
straight into the (H, W, 3) RGB answer: Pillow keeps RGB in 4 bytes a pixel, and handing its image
over as a numpy array repacks every pixel, so that OpenCV takes 0.59 ms for a 384x384 dev photo
where Pillow takes 0.75 ms to decode and 0.45 ms more to hand the pixels over (the pixels are the
same: libjpeg-turbo in both, identical on all 123 AFLW2000-3D dev photos). Pillow reads the header
and the EXIF orientation of every photo and decodes every other format (and CMYK JPEGs).

The face detector reads a :class:`Preview` of the photo, made from the answer when first asked
for (:attr:`DecodedImage.preview`), so that a photo whose face box is given pays nothing for it:
the photo itself as a Pillow image when small, else box-filtered by an integer factor (OpenCV's
area filter, straight from the array: 5 ms at 4000x3000 after a 31 ms decode, where handing the
array to Pillow alone took 34 ms). ``benchmarks/bench_detector.py`` prints these figures.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_STRIP_PIXELS = 1 << 20  # pixels converted at a time
_OPENCV_JPEG_MODES = ("RGB", "L")  # JPEG modes (YCbCr or grey) that OpenCV decodes; CMYK ones go to Pillow


class ImageDecodeError(ValueError):
    """The bytes are not a photo that can be used (corrupt or truncated)."""


class UnsupportedImageFormat(ImageDecodeError):
    """The bytes are not an image in one of the accepted formats."""


class ImageTooLarge(ImageDecodeError):
    """The image has more pixels than allowed (or is a decompression bomb)."""


@dataclass(frozen=True)
class Preview:
    """A photo reduced for the face detector: ``image`` (RGB, upright) is the photo box-filtered by
    ``factor`` (each pixel the mean of a factor x factor block; a last partial row or column of
    blocks is left out; 1: the photo itself), so a photo pixel coordinate is ``factor`` times a
    preview coordinate."""

    image: Image.Image
    factor: int


def make_preview(image: np.ndarray, preview_side: int | None) -> Preview:
    """The detector's :class:`Preview` of an (H, W, 3) uint8 RGB array, for a detector whose largest
    network input is ``preview_side`` pixels (:func:`preview_factor`; None: the photo itself)."""
    height, width = image.shape[:2]
    factor = preview_factor(width, height, preview_side) if preview_side else 1
    if factor > 1:
        rows, cols = height // factor, width // factor
        image = cv2.resize(image[: rows * factor, : cols * factor], (cols, rows), interpolation=cv2.INTER_AREA)
    return Preview(Image.fromarray(np.asarray(image)), factor)


class DecodedImage(np.ndarray):
    """What :func:`load_rgb` answers: an (H, W, 3) uint8 RGB array like any other that, when decoded
    for a face detector (``preview_side``), makes the detector's :class:`Preview` when first asked
    and keeps it. Arrays derived from it (views, slices, results of arithmetic) have none: only
    the decoded photo itself does."""

    preview_side: int | None = None
    _preview: Preview | None = None

    def __array_finalize__(self, obj: object) -> None:
        self.preview_side = None
        self._preview = None

    @property
    def preview(self) -> Preview | None:
        """The detector's :class:`Preview` (:func:`make_preview`), None when not decoded for one."""
        if self._preview is None and self.preview_side:
            self._preview = make_preview(np.asarray(self), self.preview_side)
        return self._preview

    @property
    def as_pillow(self) -> Image.Image | None:
        """The photo itself as a Pillow image when one was made already (the detector's preview of
        a small photo), else None: the face crops are resized from it without copying their windows."""
        return self._preview.image if self._preview is not None and self._preview.factor == 1 else None


def preview_factor(width: int, height: int, preview_side: int) -> int:
    """The box filter's factor for a preview: the largest integer that leaves the longer side at
    least 2 x ``preview_side`` (room for the detector's own reduction to each network's input);
    1 (the photo itself) for photos under 4 x ``preview_side``."""
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
    def decoded_by_opencv(self) -> bool:
        """Whether :func:`load_rgb` decodes it with OpenCV (a JPEG in colour or greyscale)."""
        return _decoded_by_opencv(self.format, self.mode)

    @property
    def decoded_bytes_per_pixel(self) -> int:
        """Bytes a pixel takes in Pillow's decoded image (RGB is stored as 4 bytes)."""
        if self.mode in ("1", "L", "P"):
            return 1
        return 2 if self.mode.startswith("I;16") else 4

    @property
    def peak_bytes_per_pixel(self) -> int:
        """Bytes per pixel that :func:`load_rgb` holds at its peak. OpenCV's JPEGs: two (H, W, 3)
        images, its decoded one and the RGB answer (or the answer and its upright copy for a photo
        stored turned): 6.0 measured at 6324x6324, baseline or progressive (4:2:0), upright or turned;
        a progressive JPEG's coefficients (2 bytes per component, 4:4:4) bound it above. Pillow's
        images: its decoded image and the answer; a progressive CMYK JPEG's coefficients; a WebP's
        decoded frame held three times (libwebp's canvas, its copy, Pillow's image). Measured on
        6324x6324 images: PNG RGB 7.0, 16-bit grey 5.1, RGBA 7.2, palette 4.1; CMYK JPEG progressive
        11.5; WebP 15.5. The detector's preview is not counted: 4 / f**2 bytes a pixel for its factor
        f, 0.02 at 6324x6324 and at most 4 (a photo under 768 pixels, its preview the photo itself)."""
        if self.format == "WEBP":
            return 16
        components = {"L": 1, "CMYK": 4}.get(self.mode, 3)
        if self.decoded_by_opencv:
            return max(6, 3 + 2 * components) if self.progressive else 6
        peak = self.decoded_bytes_per_pixel + 3
        if self.format == "JPEG" and self.progressive:
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

    ``preview_side``: the face detector's largest network input, for which the answer makes its
    :class:`Preview` when asked (:attr:`DecodedImage.preview`).

    Memory: a JPEG in colour or greyscale is decoded by OpenCV into the answer (and copied upright
    when stored turned). Others: Pillow's decoded image and the answer, nothing else of the image's
    size: the conversion runs a strip at a time, writing straight into the upright answer. An
    upright RGB photo of one strip is answered as Pillow hands its pixels over (one copy, read-only).
    """
    image = _open(data, max_pixels, formats)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if _decoded_by_opencv(image.format or "", image.mode):
                out = _decode_jpeg(data, image)
            else:
                out = _decode_pillow(image)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageTooLarge(f"image too large: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"corrupt or truncated image: {err}") from None
    out.preview_side = preview_side
    return out


def _decoded_by_opencv(image_format: str, mode: str) -> bool:
    """Whether a photo of Pillow's ``image_format`` and ``mode`` goes to OpenCV (a JPEG in colour or greyscale)."""
    return image_format == "JPEG" and mode in _OPENCV_JPEG_MODES


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8; 1 upright) of an opened image."""
    return int(image.getexif().get(ExifTags.Base.Orientation, 1))


def _decode_jpeg(data: bytes, header: Image.Image) -> DecodedImage:
    """A colour or greyscale JPEG (``header``: Pillow's opened, undecoded image) decoded by OpenCV."""
    orientation = _orientation(header)
    flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION  # the orientation: Pillow's reading of the EXIF
    stored = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if stored is None or stored.shape != (header.height, header.width, 3):
        raise ImageDecodeError("corrupt or truncated image: the JPEG data does not decode")
    if orientation in range(2, 9):  # else upright (1), or a value EXIF does not define
        turned = np.empty((header.width, header.height, 3) if orientation in (5, 6, 7, 8) else stored.shape, np.uint8)
        _upright_view(turned, orientation)[...] = stored
        stored = turned
    stored.flags.writeable = False  # as Pillow's pixels: nothing downstream writes into the photo
    return stored.view(DecodedImage)


def _decode_pillow(image: Image.Image) -> DecodedImage:
    """Any other image Pillow opened, decoded by Pillow (see :func:`load_rgb`)."""
    image.load()
    orientation = _orientation(image)
    width, height = image.size
    if image.mode == "RGB" and orientation == 1 and width * height <= _STRIP_PIXELS:
        # Pillow's own pixels as they are (one copy, no second buffer to fill): the common photo
        return np.asarray(image).view(DecodedImage)
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
    return out
