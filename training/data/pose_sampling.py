"""Pose-balanced sampling: draw training faces so that every yaw range is seen about equally often.

The prepared photos are mostly frontal; with synthesised turned faces mixed in (see
:mod:`training.data.synthesize`), a sampler weighted by 1 / (faces in the sample's |yaw| bin) makes
the drawn yaw histogram flat. Bins with fewer than ``min_bin_count`` faces are weighted as if
they had that many, so a handful of faces is not repeated endlessly: the histogram is flat up to
where the data runs out. ``power`` below 1 flattens only part way (0: uniform sampling). The
sign of the yaw is ignored since training mirrors half the crops.

Shards that store no ``yaw`` (those of ``facerecon prepare``) get it from :func:`estimate_yaw`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler


@dataclass(frozen=True)
class SamplingConfig:
    """How the trainer draws its training faces."""

    pose_balanced: bool = False  # False: uniformly at random
    bin_degrees: float = 10.0  # width of the |yaw| bins made equally likely
    min_bin_count: int = 50  # a bin with fewer faces is weighted as if it had this many
    power: float = 1.0  # weights are 1 / count ** power: 1 draws every bin equally often, 0 ignores the yaw


def estimate_yaw(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Yaw in degrees (N,) of faces from their 2D landmarks (N, 468, 2+) in pixels (y down).

    Fits the scaled-orthographic camera that best maps the template's 468 base vertices
    (468, 3) onto each face's points (least squares, then the nearest pair of orthonormal rows)
    and reads the yaw of that rotation as :func:`model.nn.geometry.matrix_to_euler_degrees` does:
    positive when the nose points to the image's right.
    """
    if len(landmarks) == 0:
        return np.zeros(0, np.float32)
    model = template - template.mean(axis=0)
    points = landmarks[..., :2].astype(np.float64) * np.array([1.0, -1.0])  # y up, as the model frame
    points = points - points.mean(axis=1, keepdims=True)
    rows = np.einsum("kv,nvc->nck", np.linalg.pinv(model), points)  # (N, 2, 3): points ~ model @ rows.T
    left, _, right = np.linalg.svd(rows, full_matrices=False)
    first, second = (left @ right).transpose(1, 0, 2)  # nearest orthonormal rows, (N, 3) each
    depth_row = np.cross(first, second)
    return np.degrees(np.arcsin(np.clip(-depth_row[:, 0], -1.0, 1.0))).astype(np.float32)


def pose_balanced_weights(yaw: np.ndarray, config: SamplingConfig) -> np.ndarray:
    """Sampling weight (N,) of each face with yaw (N,) degrees:
    1 / max(faces in its |yaw| bin, min_bin_count) ** power."""
    bins = (np.abs(yaw) // config.bin_degrees).astype(np.int64)
    counts = np.bincount(bins)
    return 1.0 / np.maximum(counts[bins], config.min_bin_count).astype(np.float64) ** config.power


class WeightedStream(Sampler[int]):
    """``num_samples`` indices drawn with replacement in proportion to ``weights`` (N,).

    Unlike :class:`torch.utils.data.WeightedRandomSampler` it draws in chunks, so a practically
    endless stream (the trainer asks for 10**9) costs no memory up front.
    """

    def __init__(self, weights: np.ndarray, num_samples: int, generator: torch.Generator, chunk: int = 4096) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.num_samples = num_samples
        self.generator = generator
        self.chunk = chunk

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        for start in range(0, self.num_samples, self.chunk):
            count = min(self.chunk, self.num_samples - start)
            yield from torch.multinomial(self.weights, count, replacement=True, generator=self.generator).tolist()
