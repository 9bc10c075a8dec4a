"""Prints the face detector's accuracy and speed.

- AFLW2000-3D dev slice: detection rate per |yaw| bin (a face is detected when the best
  detection's box overlaps the ground-truth 68-point box with IoU >= 0.5) and the mean IoU of the
  best detection's (calibrated) box with that box;
- the same faces as small as in general photos: each image scaled so its 68-point box is 10-60%
  of a 640x480 canvas wide and pasted on a smooth background; detection rate per width;
- milliseconds per 640x480 photo (detect(), letterboxing and suppression included; median of
  50 runs) at 1 and 2 ONNX Runtime threads.

Usage: python benchmarks/bench_detector.py [--detector PATH] [--aflw2000 DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from model.conventions import points_box
from model.runtime.detector import DEFAULT_DETECTOR, FaceDetector, box_iou
from training.evaluate import DETECTED_IOU, YAW_BINS, load_aflw

REPO = Path(__file__).resolve().parents[1]
AFLW_DEV = REPO.parent / "shared" / "data" / "eval" / "aflw2000-3d-dev"
CANVAS = (640, 480)
WIDTHS = (0.1, 0.15, 0.2, 0.3, 0.45, 0.6)


def best_iou(detector: FaceDetector, image: np.ndarray, truth: np.ndarray) -> float:
    """IoU of the best-scoring detection with truth (4,); 0 when nothing is found."""
    faces = detector.detect(image)
    return float(box_iou(truth, np.array([faces[0].box]))[0]) if faces else 0.0


def background(rng: np.random.Generator) -> np.ndarray:
    cells = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    return np.array(Image.fromarray(cells).resize(CANVAS, Image.Resampling.BICUBIC))


def paste(image: np.ndarray, box: np.ndarray, width_fraction: float,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """image scaled so box is width_fraction of the canvas wide, face centred at a random spot."""
    scale = width_fraction * CANVAS[0] / (box[2] - box[0])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    small = Image.fromarray(image).resize(size, Image.Resampling.BILINEAR)
    box = box * scale
    face_w, face_h = box[2] - box[0], box[3] - box[1]
    cx = rng.uniform(face_w / 2, CANVAS[0] - face_w / 2)
    cy = rng.uniform(face_h / 2, CANVAS[1] - face_h / 2) if face_h < CANVAS[1] else CANVAS[1] / 2
    left, top = round(cx - (box[0] + box[2]) / 2), round(cy - (box[1] + box[3]) / 2)
    canvas = Image.fromarray(background(rng))
    canvas.paste(small, (left, top))
    return np.asarray(canvas), box + np.array([left, top, left, top])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", type=Path, default=DEFAULT_DETECTOR)
    parser.add_argument("--aflw2000", type=Path, default=AFLW_DEV)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    detector = FaceDetector(args.detector, threads=1)
    branches = ", ".join(f"{b.name} {b.input_size}px" for b in detector.metadata.branches)
    print(f"detector {args.detector} ({args.detector.stat().st_size / 1e3:.0f} kB; {branches})")
    rng = np.random.default_rng(0)
    photo = background(rng)
    if (args.aflw2000 / "gt.npz").is_file():
        samples = load_aflw(args.aflw2000)
        images = [np.asarray(Image.open(s.path).convert("RGB")) for s in samples]
        truths = [np.array(points_box(s.points)) for s in samples]
        ious = np.array([best_iou(detector, image, truth) for image, truth in zip(images, truths)])
        yaw = np.abs([s.yaw_deg for s in samples])
        rows = []
        for lo, hi in YAW_BINS:
            inside = (yaw >= lo) & (yaw < hi)
            rows.append(f"yaw {lo:.0f}-{min(hi, 90):.0f}: {(ious[inside] >= DETECTED_IOU).sum()}/{inside.sum()}")
        print(f"AFLW2000-3D dev ({len(samples)} images) detected: " + ", ".join(rows)
              + f"; all {(ious >= DETECTED_IOU).mean():.1%}; mean IoU with the 68-point box {ious.mean():.3f}")
        for fraction in WIDTHS:
            pasted = [paste(image, truth, fraction, rng) for image, truth in zip(images, truths)]
            small = np.array([best_iou(detector, image, truth) for image, truth in pasted])
            print(f"  pasted into 640x480 at {fraction:.0%} of the width: "
                  f"detected {(small >= DETECTED_IOU).mean():.1%}, mean IoU {small.mean():.3f}")
        photo, _ = paste(images[0], truths[0], 0.3, rng)
    else:
        print(f"no AFLW2000-3D at {args.aflw2000}: accuracy skipped")
    for threads in (1, 2):
        timed = FaceDetector(args.detector, threads=threads)
        for _ in range(5):
            timed.detect(photo)
        samples_s = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            timed.detect(photo)
            samples_s.append(time.perf_counter() - start)
        print(f"onnxruntime {ort.__version__} CPU threads={threads}: "
              f"{statistics.median(samples_s) * 1e3:.2f} ms per 640x480 photo (median of {args.repeats})")


if __name__ == "__main__":
    main()
