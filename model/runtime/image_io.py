"""Decoding uploaded photos into RGB arrays (in memory only: uploads are never written)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class ImageDecodeError(ValueError):
    """The bytes are not a photo that can be used (corrupt or truncated)."""


class UnsupportedImageFormat(ImageDecodeError):
    """The bytes are not an image in one of the accepted formats."""


class ImageTooLarge(ImageDecodeError):
    """The image has more pixels than allowed (or is a decompression bomb)."""


def load_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, formats: Sequence[str] | None = None) -> np.ndarray:
    """JPEG / PNG / WebP / ... bytes -> (H, W, 3) uint8 RGB, upright per its EXIF orientation.

    ``formats`` restricts the accepted formats (Pillow names such as ``"JPEG"``; default: any
    Pillow reads). The pixel limit is checked from the header, before anything is decoded.
    Greyscale, palette, RGBA (alpha composited over white) and 16-bit images are converted.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=list(formats) if formats else None)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(f"image is {width}x{height}, more than {max_pixels} pixels")
            image = ImageOps.exif_transpose(image)
            image.load()
    except UnidentifiedImageError:
        accepted = ", ".join(formats) if formats else "an image format Pillow reads"
        raise UnsupportedImageFormat(f"not an image in an accepted format ({accepted})") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageTooLarge(f"image too large: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, ImageDecodeError):
            raise
        raise ImageDecodeError(f"corrupt or truncated image: {err}") from None
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / peak), 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"))
