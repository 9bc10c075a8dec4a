"""Prints the face detector's accuracy and speed.

- AFLW2000-3D dev slice: detection rate per |yaw| bin (a face is detected when the chosen
  detection's box overlaps the ground-truth 68-point box with IoU >= 0.5) and the mean IoU of the
  chosen (calibrated) box with that box, for both ways the detector runs: ``faces=all`` (every
  branch; the best-scoring face is chosen, the figure this benchmark always printed) and
  ``faces=largest`` (the short-range branch first, the full-range one only when needed; the largest
  face is chosen, as the service answers), with how many photos needed the full-range branch;
- the dev photos scaled up 3 times (1152-1350 pixels) as JPEGs, decoded as the pipeline decodes
  them: detection reads the decoder's preview;
- the same faces as small as in general photos: each image scaled so its 68-point box is 10-60%
  of a 640x480 canvas wide and pasted on a smooth background; detection rate per width, both ways;
- milliseconds per stage on the first 10 dev photos (the mean over photos of each one's median of
  ``--repeats`` runs) at 1 and 2 ONNX Runtime threads: decode (as the pipeline decodes), the
  detector's preview of the photo (what the letterboxing reads), letterbox, network and
  suppression per branch, and detect() end to end both ways;
- a 4000x3000 JPEG (a dev photo scaled up): decode, then the detector's preview made, a draft-mode
  (DCT-scaled) decode at 1/8 for comparison, and detection from the made preview or from the
  full-resolution array (which makes the preview);
- milliseconds per 640x480 photo (detect() both ways, median of ``--repeats`` runs) at 1 and 2
  threads.

Usage: python benchmarks/bench_detector.py [--detector PATH] [--aflw2000 DIR] [--repeats N]
       [--small-face F] [--sure-score S] [--accuracy-only]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from model.conventions import FaceSelection, box_area, points_box
from model.runtime.detector import (
    DEFAULT_DETECTOR,
    SMALL_FACE,
    SURE_SCORE,
    Detection,
    DetectorInput,
    FaceDetector,
    box_iou,
    letterbox_input,
)
from model.runtime.image_io import load_rgb
from training.evaluate import DETECTED_IOU, YAW_BINS, load_aflw

REPO = Path(__file__).resolve().parents[1]
AFLW_DEV = REPO.parent / "shared" / "data" / "eval" / "aflw2000-3d-dev"
CANVAS = (640, 480)
WIDTHS = (0.1, 0.15, 0.2, 0.3, 0.45, 0.6)
STAGE_PHOTOS = 10
LARGE = (4000, 3000)
SCALED_UP = 3  # dev photos this many times as large: 1152-1350 pixels, past the decoder's preview threshold


def chosen_iou(detector: FaceDetector, image: np.ndarray, truth: np.ndarray, faces: FaceSelection) -> float:
    """IoU with truth (4,) of the face chosen from detect(image, faces): the best-scoring with
    faces=all, the largest with faces=largest (the pipeline's choice); 0 when nothing is found."""
    found = detector.detect(image, faces)
    if not found:
        return 0.0
    face = found[0] if faces is FaceSelection.all else max(found, key=lambda d: box_area(d.box))
    return float(box_iou(truth, np.array([face.box]))[0])


class CountingDetector(FaceDetector):
    """Counts the photos for which detect(faces=largest) ran more than the first branch (it asks
    short_range_suffices once per photo)."""

    full_range_runs = 0

    def short_range_suffices(self, found: Sequence[Detection], source: DetectorInput) -> bool:
        suffices = super().short_range_suffices(found, source)
        self.full_range_runs += not suffices
        return suffices


def rates(detector: CountingDetector, images: Sequence[np.ndarray], truths: Sequence[np.ndarray],
          faces: FaceSelection) -> tuple[np.ndarray, int]:
    """IoU of the chosen face per image, and for how many the full-range branch ran."""
    detector.full_range_runs = 0
    ious = np.array([chosen_iou(detector, image, truth, faces) for image, truth in zip(images, truths)])
    return ious, detector.full_range_runs if faces is FaceSelection.largest else len(images)


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


def median_ms(run: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def stage_breakdown(detector: FaceDetector, encoded: list[bytes], repeats: int) -> dict[str, float]:
    """Mean over photos of each photo's median ms per stage."""
    stages: dict[str, list[float]] = {}

    def add(name: str, run: Callable[[], object]) -> None:
        stages.setdefault(name, []).append(median_ms(run, repeats))

    decode = partial(load_rgb, preview_side=detector.largest_input)  # as FacePipeline.decode

    def decode_and_detect(data: bytes) -> list[Detection]:
        return detector.detect(decode(data), FaceSelection.largest)

    for data in encoded:
        image = decode(data)
        add("decode", partial(decode, data))
        add("preview", partial(detector.prepare, np.asarray(image)))  # made anew each time (a decode's is kept)
        source = detector.prepare(image)
        for branch in detector.metadata.branches:
            batch, transform = letterbox_input(source, branch.input_size)
            outputs = detector.run_branch(branch, batch)
            add(f"letterbox {branch.name}", partial(letterbox_input, source, branch.input_size))
            add(f"network {branch.name}", partial(detector.run_branch, branch, batch))
            add(f"suppression {branch.name}", partial(detector.branch_detections, branch, outputs, transform))
        add("detect largest", partial(detector.detect, image, FaceSelection.largest))
        add("detect all", partial(detector.detect, image, FaceSelection.all))
        add("decode + detect largest", partial(decode_and_detect, data))
    return {name: float(np.mean(values)) for name, values in stages.items()}


def jpeg(image: np.ndarray, scale: float = 1.0, size: tuple[int, int] | None = None) -> bytes:
    """image scaled (bicubic) by scale or to size, as a JPEG of quality 90."""
    size = size or (round(image.shape[1] * scale), round(image.shape[0] * scale))
    buffer = io.BytesIO()
    Image.fromarray(image).resize(size, Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def large_photo(detector: FaceDetector, photo: np.ndarray, repeats: int) -> str:
    """Decode and detection times of a LARGE JPEG made from photo."""
    data = jpeg(photo, size=LARGE)

    def draft() -> Image.Image:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (LARGE[0] // 8, LARGE[1] // 8))
        image.load()
        return image

    with_preview = load_rgb(data, preview_side=detector.largest_input)
    assert with_preview.preview is not None  # made now, kept for the detections below
    plain = np.asarray(with_preview)  # the same pixels without the preview
    figures = {
        "decode": median_ms(partial(load_rgb, data), repeats, 1),
        "decode and preview": median_ms(lambda: load_rgb(data, preview_side=detector.largest_input).preview,
                                        repeats, 1),
        "draft decode 1/8": median_ms(draft, repeats, 1),
        "detect largest from preview": median_ms(partial(detector.detect, with_preview, FaceSelection.largest),
                                                 repeats, 1),
        "detect largest from array": median_ms(partial(detector.detect, plain, FaceSelection.largest), repeats, 1),
    }
    return ", ".join(f"{name} {ms:.1f}" for name, ms in figures.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", type=Path, default=DEFAULT_DETECTOR)
    parser.add_argument("--aflw2000", type=Path, default=AFLW_DEV)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--small-face", type=float, default=SMALL_FACE, help="the rule's small_face (accuracy rows)")
    parser.add_argument("--sure-score", type=float, default=SURE_SCORE, help="the rule's sure_score (accuracy rows)")
    parser.add_argument("--accuracy-only", action="store_true", help="skip the timings")
    args = parser.parse_args()

    detector = CountingDetector(args.detector, threads=1, small_face=args.small_face, sure_score=args.sure_score)
    branches = ", ".join(f"{b.name} {b.input_size}px" for b in detector.metadata.branches)
    print(f"detector {args.detector} ({args.detector.stat().st_size / 1e3:.0f} kB; {branches}); "
          f"full-range rule: short-range face under {detector.small_face:g} of the longer side or "
          f"scoring under {detector.sure_score:g}, or none")
    rng = np.random.default_rng(0)
    photo = background(rng)
    encoded: list[bytes] = []
    if (args.aflw2000 / "gt.npz").is_file():
        samples = load_aflw(args.aflw2000)
        encoded = [s.path.read_bytes() for s in samples[:STAGE_PHOTOS]]
        images = [np.asarray(Image.open(s.path).convert("RGB")) for s in samples]
        truths = [np.array(points_box(s.points)) for s in samples]
        yaw = np.abs([s.yaw_deg for s in samples])
        print(f"AFLW2000-3D dev ({len(samples)} images)")
        for faces, chosen in ((FaceSelection.all, "best-scoring"), (FaceSelection.largest, "largest")):
            ious, full = rates(detector, images, truths, faces)
            rows = []
            for lo, hi in YAW_BINS:
                inside = (yaw >= lo) & (yaw < hi)
                rows.append(f"yaw {lo:.0f}-{min(hi, 90):.0f}: {(ious[inside] >= DETECTED_IOU).sum()}/{inside.sum()}")
            print(f"  faces={faces.value:7s} ({chosen} face) detected: " + ", ".join(rows)
                  + f"; all {(ious >= DETECTED_IOU).mean():.1%}; mean IoU with the 68-point box {ious.mean():.3f}; "
                  f"full-range ran for {full}/{len(images)}")
        enlarged = [load_rgb(jpeg(image, SCALED_UP), preview_side=detector.largest_input) for image in images]
        parts = []
        for faces in (FaceSelection.all, FaceSelection.largest):
            scaled, full = rates(detector, enlarged, [truth * SCALED_UP for truth in truths], faces)
            parts.append(f"faces={faces.value}: detected {(scaled >= DETECTED_IOU).mean():.1%}, "
                         f"mean IoU {scaled.mean():.3f}, full-range ran for {full}/{len(enlarged)}")
        print(f"  scaled {SCALED_UP}x, JPEG, decoded with the detector's preview: " + "; ".join(parts))
        for fraction in WIDTHS:
            pasted = [paste(image, truth, fraction, rng) for image, truth in zip(images, truths)]
            parts = []
            for faces in (FaceSelection.all, FaceSelection.largest):
                small, full = rates(detector, [p[0] for p in pasted], [p[1] for p in pasted], faces)
                parts.append(f"faces={faces.value}: detected {(small >= DETECTED_IOU).mean():.1%}, "
                             f"mean IoU {small.mean():.3f}, full-range ran for {full}/{len(pasted)}")
            print(f"  pasted into 640x480 at {fraction:.0%} of the width: " + "; ".join(parts))
        photo, _ = paste(images[0], truths[0], 0.3, rng)
    else:
        print(f"no AFLW2000-3D at {args.aflw2000}: accuracy and the per-stage figures skipped")
    if args.accuracy_only:
        return
    for threads in (1, 2):
        timed = FaceDetector(args.detector, threads=threads)
        if encoded:
            stages = stage_breakdown(timed, encoded, args.repeats)
            print(f"threads={threads}, ms per stage on {len(encoded)} dev photos (mean of per-photo medians of "
                  f"{args.repeats}): " + ", ".join(f"{name} {ms:.2f}" for name, ms in stages.items()))
        per_mode = [f"faces={faces.value} {median_ms(partial(timed.detect, photo, faces), args.repeats):.2f}"
                    for faces in (FaceSelection.largest, FaceSelection.all)]
        print(f"onnxruntime {ort.__version__} CPU threads={threads}: ms per 640x480 photo (median of "
              f"{args.repeats}): " + ", ".join(per_mode))
    if encoded:
        print(f"{LARGE[0]}x{LARGE[1]} JPEG, ms (median of 5): "
              + large_photo(FaceDetector(args.detector, threads=1), load_rgb(encoded[0]), 5))


if __name__ == "__main__":
    main()
