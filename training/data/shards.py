"""The prepared-data shard format: one writer, one reader.

A data folder holds ``shard_00000.npz``, ``shard_00001.npz``, ...; each holds N face samples:

- ``jpeg`` (total bytes,) uint8 and ``offsets`` (N + 1,) int64: sample i's JPEG-encoded square
  crop is ``jpeg[offsets[i]:offsets[i + 1]]``;
- ``landmarks`` (N, 468, 3) float32: MediaPipe's points in crop pixels (x, y, depth);
- ``valid`` (N, 4) float32: x1, y1, x2, y2 of the crop's part that holds real photo pixels;
- ``names`` (N,) str: source file relative to its data root's parent; ``is_val`` (N,) bool;
- optional per-sample arrays, e.g. ``yaw`` (N,) degrees from ``facerecon synthesize``.

A shard is written to ``*.tmp.npz`` and renamed, so a folder never holds a half-written shard.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

JPEG_QUALITY = 94
STANDARD_KEYS = ("jpeg", "offsets", "landmarks", "valid", "names", "is_val")


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard_{index:05d}.npz"


def shard_paths(folder: Path) -> list[Path]:
    """The complete shards of ``folder``, in order."""
    return sorted(p for p in folder.glob("shard_*.npz") if not p.name.endswith(".tmp.npz"))


def encode_jpeg(image: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 RGB -> JPEG bytes as a uint8 array, at the shards' quality."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def decode_jpeg(jpeg: np.ndarray, offsets: np.ndarray, row: int) -> np.ndarray:
    """Sample ``row``'s crop (S, S, 3) uint8 RGB out of a shard's ``jpeg`` and ``offsets``."""
    data = jpeg[offsets[row] : offsets[row + 1]]
    return np.asarray(Image.open(io.BytesIO(data.tobytes())).convert("RGB"))


def write_shard(path: Path, samples: Sequence[dict], names: Sequence[str], val: Sequence[bool],
                extra: dict[str, np.ndarray] | None = None) -> None:
    """Write one shard of samples (dicts with ``jpeg``, ``landmarks``, ``valid``); ``extra`` holds
    more per-sample arrays (N, ...) to store beside the standard ones."""
    jpegs = [s["jpeg"] for s in samples]
    offsets = np.cumsum([0] + [len(j) for j in jpegs]).astype(np.int64)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        jpeg=np.concatenate(jpegs) if jpegs else np.zeros(0, np.uint8),
        offsets=offsets,
        landmarks=np.stack([s["landmarks"] for s in samples]) if samples else np.zeros((0, 468, 3), np.float32),
        valid=np.stack([s["valid"] for s in samples]) if samples else np.zeros((0, 4), np.float32),
        names=np.array(names, dtype=str),
        is_val=np.array(val, dtype=bool),
        **(extra or {}),  # type: ignore[arg-type]  # array names, never numpy>=2.1's allow_pickle
    )
    tmp.replace(path)


def read_shard(path: Path, keys: Sequence[str] = STANDARD_KEYS) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of one shard (an optional key the shard lacks is left out)."""
    with np.load(path) as data:
        return {key: data[key] for key in keys if key in data.files}
