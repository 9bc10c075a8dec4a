"""Data preparation: label photos with MediaPipe's 468 dense landmarks and store face crops.

``facerecon prepare --images DIR [DIR ...] --out DATA [--workers N]`` writes

- ``DATA/shard_00000.npz`` ...: JPEG-encoded square crops around each face with their
  landmarks in crop pixels, the part of the crop that holds real photo pixels (the rest is
  edge padding), and whether the sample is in the validation split;
- ``DATA/manifest.json``: counts of images read, faces labelled, files skipped and why.

Work is cut into shards by the sorted file list, so a stopped run resumes where it was: shards
that exist are kept. The validation split is fixed by a seeded hash of the subject (the person's
folder for LFW-style layouts, else the file), so no person is on both sides.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.conventions import Box, points_box
from model.runtime.image_io import ImageDecodeError, load_rgb
from training.data.landmarks import MediaPipeLabeler
from training.data.shards import encode_jpeg, shard_path, write_shard
from training.data.stored_crop import stored_crop
from training.tools.topology_builder import IBUG68_FROM_MEDIAPIPE, find_images

log = logging.getLogger(__name__)

STORED_MARGIN = 1.8  # stored crop side / face box side: room for scale, shift and rotation jitter


@dataclass(frozen=True)
class PrepareConfig:
    """Settings of :func:`prepare_dataset`."""

    crop_size: int = 192
    shard_size: int = 2048
    val_fraction: float = 0.05
    seed: int = 0
    workers: int = 2


@dataclass
class ShardStats:
    images_read: int = 0
    faces_labelled: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def add(self, other: ShardStats) -> None:
        self.images_read += other.images_read
        self.faces_labelled += other.faces_labelled
        for reason, count in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count


def face_box(landmarks: np.ndarray) -> Box:
    """The face box the model is trained on: bounds of the 68 iBUG points of (468, 2+) landmarks."""
    return points_box(landmarks[IBUG68_FROM_MEDIAPIPE])


def subject_key(path: Path, root: Path) -> str:
    """Identity used for the split: the folder under the root when there is one (LFW), else the file."""
    relative = path.relative_to(root)
    return f"{root.name}/{relative.parts[0]}" if len(relative.parts) > 1 else f"{root.name}/{relative.stem}"


def is_validation(key: str, fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < fraction


_labeler: MediaPipeLabeler | None = None


def _init_worker() -> None:
    global _labeler
    os.environ.setdefault("GLOG_minloglevel", "2")
    warnings.filterwarnings("ignore", category=UserWarning, module="google.protobuf")
    _labeler = MediaPipeLabeler()


def label_one(path: Path, crop_size: int) -> tuple[str, dict | None]:
    """Read, label and crop one photo -> (status, sample); status is 'ok' or why it was skipped."""
    try:
        image = load_rgb(path.read_bytes())
    except (OSError, ImageDecodeError):
        return "unreadable", None
    if min(image.shape[:2]) < 32:
        return "too small", None
    assert _labeler is not None
    landmarks = _labeler.label(image)
    if landmarks is None:
        return "no face found", None
    crop, transform = stored_crop(image, face_box(landmarks), crop_size, STORED_MARGIN)
    origin_x, origin_y, scale = transform.origin_x, transform.origin_y, 1.0 / transform.pixels_per_crop_pixel
    height, width = image.shape[:2]
    points = (landmarks - np.array([origin_x, origin_y, 0.0], dtype=np.float32)) * scale
    valid = np.array([-origin_x, -origin_y, width - origin_x, height - origin_y], dtype=np.float32) * scale
    return "ok", {
        "jpeg": encode_jpeg(crop),
        "landmarks": points.astype(np.float32),
        "valid": np.clip(valid, 0, crop_size),
    }


def _label_task(args: tuple[Path, int]) -> tuple[str, dict | None]:
    return label_one(*args)



def prepare_dataset(image_dirs: list[Path], out: Path, config: PrepareConfig = PrepareConfig()) -> dict:
    """Label every photo under ``image_dirs`` into shards under ``out``; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    entries = [(path, root) for root in image_dirs for path in find_images([root])]
    if not entries:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, image_dirs))}")
    shards = [entries[i : i + config.shard_size] for i in range(0, len(entries), config.shard_size)]
    totals = ShardStats()
    progress = tqdm(total=len(entries), desc="prepare", unit="image")
    done = 0
    context = multiprocessing.get_context("spawn")
    with context.Pool(config.workers, initializer=_init_worker) as pool:
        for index, shard in enumerate(shards):
            path = shard_path(out, index)
            stats_path = path.with_suffix(".json")
            if path.is_file() and stats_path.is_file():
                stats = ShardStats(**json.loads(stats_path.read_text()))
            else:
                stats, samples, names, val = ShardStats(), [], [], []
                tasks = [(p, config.crop_size) for p, _ in shard]
                for (file_path, root), (status, sample) in zip(shard, pool.imap(_label_task, tasks, chunksize=16)):
                    stats.images_read += status != "unreadable"
                    if sample is None:
                        stats.skip(status)
                        continue
                    stats.faces_labelled += 1
                    samples.append(sample)
                    names.append(str(file_path.relative_to(root.parent)))
                    val.append(is_validation(subject_key(file_path, root), config.val_fraction, config.seed))
                write_shard(path, samples, names, val)
                stats_path.write_text(json.dumps(asdict(stats)))
            totals.add(stats)
            done += len(shard)
            progress.set_postfix_str(f"faces {totals.faces_labelled}, skipped {sum(totals.skipped.values())}",
                                     refresh=False)
            progress.update(done - progress.n)
    progress.close()
    manifest = {
        "images_found": len(entries),
        **asdict(totals),
        "shards": len(shards),
        "config": asdict(config),
        "stored_margin": STORED_MARGIN,
        "sources": [str(d) for d in image_dirs],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
