"""Decoding uploaded photos into RGB arrays (in memory only: uploads are never written).

A photo is decoded once. JPEGs in colour or greyscale (nearly every photo) are decoded by OpenCV
straight into the (H, W, 3) RGB answer: Pillow keeps RGB in 4 bytes a pixel, and handing its image
over as a numpy array repacks every pixel, so that OpenCV takes 0.59 ms for a 384x384 dev photo
where Pillow takes 0.75 ms to decode and 0.45 ms more to hand the pixels over (the pixels are the
same: libjpeg-turbo in both, identical on all 123 AFLW2000-3D dev photos). Pillow reads the header
and the EXIF orientation of every photo and decodes every other format (and CMYK JPEGs).

The face detector reads a :class:`Preview` of the photo, made from the answer when first asked
for (:attr:`DecodedImage.preview`), so that a photo whose face box is given pays nothing for it:
the photo itself when small, else box-filtered by an integer factor (OpenCV's area filter, straight
from the array: 5 ms at 4000x3000 after a 31 ms decode, where handing the array to Pillow alone took
34 ms). ``benchmarks/bench_detector.py`` prints these figures.

A JPEG may be decoded *reduced* (``load_rgb(..., reduction=d)``, d = 2, 4 or 8): libjpeg scales
its DCT blocks, so each answer pixel stands for a d x d block of the photo (the last, cut ones
included: ceil(W / d) x ceil(H / d)) at a fraction of the full decode's cost (0.40 against 0.71 ms
for a 450x450 dev photo at d = 2; Huffman decoding is not scaled: 30 against 76 ms at d = 8 for a
2.5 MB 4000x3000 photo). The answer says so (:attr:`DecodedImage.reduction`,
:attr:`DecodedImage.photo_size`); photo pixel coordinates are d times its own. Other formats are
decoded whole (reduction 1).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from model.compiled import read_only

DEFAULT_MAX_PIXELS = 40_000_000
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_STRIP_PIXELS = 1 << 20  # pixels converted at a time
_OPENCV_JPEG_MODES = ("RGB", "L")  # JPEG modes (YCbCr or grey) that OpenCV decodes; CMYK ones go to Pillow
# OpenCV's flags for a JPEG decoded reduced by 2, 4, 8 (its reduced-grey flags with RGB colour asked for)
_OPENCV_REDUCED = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                   8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
REDUCTIONS = (1, *_OPENCV_REDUCED)


class ImageDecodeError(ValueError):
    """The bytes are not a photo that can be used (corrupt or truncated)."""


class UnsupportedImageFormat(ImageDecodeError):
    """The bytes are not an image in one of the accepted formats."""


class ImageTooLarge(ImageDecodeError):
    """The image has more pixels than allowed (or is a decompression bomb)."""


@dataclass(frozen=True)
class Preview:
    """A photo reduced for the face detector: ``image`` (H, W, 3) uint8 RGB, upright, C-contiguous and
    read-only, is the photo box-filtered by ``factor`` (each pixel the mean of a factor x factor block;
    a last partial row or column of blocks is left out; 1: the photo itself, not copied), so a photo
    pixel coordinate is ``factor`` times a preview coordinate."""

    image: np.ndarray
    factor: int


def make_preview(image: np.ndarray, preview_side: int | None, reduction: int = 1) -> Preview:
    """The detector's :class:`Preview` of an (H, W, 3) uint8 RGB array (the photo reduced by
    ``reduction``), for a detector whose largest network input is ``preview_side`` pixels
    (:func:`preview_factor`; None: the array itself)."""
    height, width = image.shape[:2]
    factor = preview_factor(width, height, preview_side) if preview_side else 1
    if factor > 1:
        rows, cols = height // factor, width // factor
        image = cv2.resize(image[: rows * factor, : cols * factor], (cols, rows), interpolation=cv2.INTER_AREA)
    return Preview(read_only(image), factor * reduction)


class DecodedImage(np.ndarray):
    """What :func:`load_rgb` answers: an (H, W, 3) uint8 RGB array like any other that, when decoded
    for a face detector (``preview_side``), makes the detector's :class:`Preview` when first asked
    and keeps it, and that knows the photo it is: ``reduction`` d (each pixel a d x d block of the
    photo, 1 for a full decode) and the photo's upright ``photo_size``. Arrays derived from it
    (views, slices, results of arithmetic) have none of this: only the decoded photo itself does."""

    preview_side: int | None = None
    reduction: int = 1
    _photo_size: tuple[int, int] | None = None
    _preview: Preview | None = None

    def __array_finalize__(self, obj: object) -> None:
        self.preview_side = None
        self.reduction = 1
        self._photo_size = None
        self._preview = None

    @property
    def photo_size(self) -> tuple[int, int]:
        """(width, height) of the upright photo in its own pixels (the array's, times ``reduction``
        up to the cut last block)."""
        return self._photo_size or (self.shape[1], self.shape[0])

    @property
    def preview(self) -> Preview | None:
        """The detector's :class:`Preview` (:func:`make_preview`), None when not decoded for one."""
        if self._preview is None and self.preview_side:
            self._preview = make_preview(np.asarray(self), self.preview_side, self.reduction)
        return self._preview


def photo_reduction(image: np.ndarray) -> int:
    """The photo pixels per pixel of ``image`` along each axis: a reduced :class:`DecodedImage`'s
    ``reduction``, else 1 (a full decode or any plain array)."""
    return image.reduction if isinstance(image, DecodedImage) else 1


def photo_size(image: np.ndarray) -> tuple[int, int]:
    """(width, height) of the photo ``image`` shows, in photo pixels (:attr:`DecodedImage.photo_size`;
    a plain array's own)."""
    return image.photo_size if isinstance(image, DecodedImage) else (image.shape[1], image.shape[0])


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
    def components(self) -> int:
        """Colour components as stored (grey 1, CMYK 4, others 3)."""
        return {"L": 1, "CMYK": 4}.get(self.mode, 3)

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
        11.5; WebP 15.5. The detector's preview is not counted: 3 / f**2 bytes a pixel for its factor
        f, 0.02 at 6324x6324 and at most 0.75 (a photo under 768 pixels is its own preview, not copied)."""
        if self.format == "WEBP":
            return 16
        if self.decoded_by_opencv:
            return max(6, 3 + 2 * self.components) if self.progressive else 6
        peak = self.decoded_bytes_per_pixel + 3
        if self.format == "JPEG" and self.progressive:
            peak = max(peak, self.decoded_bytes_per_pixel + 2 * self.components)
        return peak

    def peak_bytes(self, reduction: int = 1) -> int:
        """Bytes :func:`load_rgb` holds at its peak decoding the image reduced by ``reduction`` (what
        it does: :meth:`reduction_for`). A JPEG that OpenCV decodes reduced by d holds its two
        images at 1 / d**2 of the size, and a progressive one all of its coefficients too (2 bytes
        per component, 4:4:4 bounding them above): measured at 6324x6324 and d = 4, baseline 0.37-0.39
        bytes per photo pixel, progressive (4:2:0) 3.2. Otherwise :attr:`peak_bytes_per_pixel`."""
        if not self.decoded_by_opencv or reduction == 1:
            return self.pixels * self.peak_bytes_per_pixel
        images = 6 * reduced_pixels(self.width, self.height, reduction)
        if self.progressive:
            return max(images, images // 2 + 2 * self.components * self.pixels)
        return images

    def reduction_for(self, reduction: int, min_side: int = 0) -> int:
        """The reduction :func:`load_rgb` decodes this image with when asked for ``reduction`` and
        ``min_side``, for a photo stored turned or not: 1 for an image OpenCV does not decode."""
        if not self.decoded_by_opencv:
            return 1
        reduction = size_reduction(self.width, self.height, reduction, min_side)
        return _dividing_reduction(self.width, self.height, reduction)  # as if stored turned: the header does not say


def size_reduction(width: int, height: int, reduction: int, min_side: int) -> int:
    """``reduction`` (1, 2, 4, 8) halved until the reduced image's longer side is at least ``min_side``."""
    while reduction > 1 and max(width, height) < min_side * reduction:
        reduction //= 2
    return reduction


def _dividing_reduction(width: int, height: int, reduction: int) -> int:
    """``reduction`` halved until it divides both sides: what a photo stored turned or flipped can be
    decoded reduced by (libjpeg's blocks start at the stored image's top-left corner, which turning
    can move to another corner, where a cut block would shift the upright photo's coordinates)."""
    while reduction > 1 and (width % reduction or height % reduction):
        reduction //= 2
    return reduction


def reduced_pixels(width: int, height: int, reduction: int) -> int:
    """Pixels of a width x height image decoded reduced by ``reduction`` (cut blocks included)."""
    return -(-width // reduction) * -(-height // reduction)


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
             preview_side: int | None = None, reduction: int = 1, min_side: int = 0) -> DecodedImage:
    """JPEG / PNG / WebP / ... bytes -> (H, W, 3) uint8 RGB, upright per its EXIF orientation.

    ``formats`` restricts the accepted formats (Pillow names such as ``"JPEG"``; default: any
    Pillow reads). The pixel limit is checked from the header, before anything is decoded.
    Greyscale, palette, RGBA (alpha composited over white) and 16-bit images are converted.

    ``preview_side``: the face detector's largest network input, for which the answer makes its
    :class:`Preview` when asked (:attr:`DecodedImage.preview`). ``reduction`` (1, 2, 4 or 8): a
    JPEG that OpenCV decodes is decoded reduced by it (module docstring), or by less where its
    longer side would fall under ``min_side`` pixels; the answer's ``reduction`` is what was done
    (1 for other formats).

    Memory: a JPEG in colour or greyscale is decoded by OpenCV into the answer (and copied upright
    when stored turned). Others: Pillow's decoded image and the answer, nothing else of the image's
    size: the conversion runs a strip at a time, writing straight into the upright answer. An
    upright RGB photo of one strip is answered as Pillow hands its pixels over (one copy, read-only).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, not {reduction!r}")
    image = _open(data, max_pixels, formats)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if _decoded_by_opencv(image.format or "", image.mode):
                out = _decode_jpeg(data, image, size_reduction(image.width, image.height, reduction, min_side))
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


def _decode_jpeg(data: bytes, header: Image.Image, reduction: int) -> DecodedImage:
    """A colour or greyscale JPEG (``header``: Pillow's opened, undecoded image) decoded by OpenCV,
    reduced by ``reduction`` (1, 2, 4, 8), or less for a photo stored turned or flipped whose sides
    it does not divide (:func:`_dividing_reduction`)."""
    orientation = _orientation(header)
    if orientation in range(2, 9):
        reduction = _dividing_reduction(header.width, header.height, reduction)
    flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION  # the orientation: Pillow's reading of the EXIF
    stored = cv2.imdecode(np.frombuffer(data, np.uint8), flags | _OPENCV_REDUCED.get(reduction, 0))
    rows, cols = -(-header.height // reduction), -(-header.width // reduction)
    if stored is None or stored.shape != (rows, cols, 3):
        raise ImageDecodeError("corrupt or truncated image: the JPEG data does not decode")
    transposed = orientation in (5, 6, 7, 8)
    if orientation in range(2, 9):  # else upright (1), or a value EXIF does not define
        turned = np.empty((cols, rows, 3) if transposed else stored.shape, np.uint8)
        _upright_view(turned, orientation)[...] = stored
        stored = turned
    stored.flags.writeable = False  # as Pillow's pixels: nothing downstream writes into the photo
    out = stored.view(DecodedImage)
    if reduction > 1:
        out.reduction = reduction
        out._photo_size = (header.height, header.width) if transposed else (header.width, header.height)
    return out


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
