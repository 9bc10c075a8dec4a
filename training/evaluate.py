"""AFLW2000-3D evaluation of an exported model, through the runtime pipeline the service runs.

Layout read: ``DIR/images/*.jpg`` and ``DIR/gt.npz`` with ``names`` (N,), ``pts68`` (N, 3, 68)
(x, y, z in pixels of the image file; z larger = nearer, with an arbitrary offset) and
``yaw_deg`` (N,). :func:`convert_aflw2000` makes that layout from the original release
(``imageXXXXX.jpg`` + ``imageXXXXX.mat`` with ``pt3d_68`` and ``Pose_Para``).

Protocol (3DDFA benchmarks): NME of one image = mean 2D distance over the 68 points divided by
sqrt(w * h) of the ground-truth 68-point box; reported per |yaw| bin [0, 30), [30, 60), [60, 90]
with the mean of the bin means and the plain mean. 3D NME subtracts each set's mean z first.
``nme2d_by_region`` splits the 2D figure by iBUG region (jaw, brows, nose, eyes, mouth) and bin:
where the error comes from.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from model.conventions import points_box
from model.runtime.detector import box_iou
from model.runtime.image_io import ImageDecodeError, photo_reduction
from model.runtime.pipeline import FacePipeline, NoFaceFound
from model.runtime.reconstructor import FaceResult
from model.topology import FaceTopology

YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 91.0))
# iBUG 68-point regions: the mean over a region's points, normalised as the NME.
REGIONS_68 = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
              "mouth": range(48, 68)}
DETECTED_IOU = 0.5  # a detection is the annotated face when its box overlaps the 68-point box this much


@dataclass
class AFLWSample:
    name: str
    path: Path
    points: np.ndarray  # (68, 3) x, y, z
    yaw_deg: float


def load_aflw(root: Path) -> list[AFLWSample]:
    gt_path = root / "gt.npz"
    if not gt_path.is_file():
        raise FileNotFoundError(f"{gt_path} not found: expected DIR/images and DIR/gt.npz "
                                "(convert the original release with `facerecon evaluate --convert-from`)")
    with np.load(gt_path) as gt:
        return [
            AFLWSample(str(name), root / "images" / str(name), pts.T.astype(np.float64), float(yaw))
            for name, pts, yaw in zip(gt["names"], gt["pts68"], gt["yaw_deg"])
        ]


def convert_aflw2000(source: Path, out: Path) -> int:
    """Original AFLW2000-3D (images + .mat) -> the images/ + gt.npz layout; returns the count."""
    from scipy.io import loadmat

    mats = sorted(source.glob("*.mat"))
    if not mats:
        raise FileNotFoundError(f"no .mat files in {source}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    names, points, yaws = [], [], []
    for mat_path in mats:
        image_path = mat_path.with_suffix(".jpg")
        if not image_path.is_file():
            continue
        data = loadmat(str(mat_path))
        names.append(image_path.name)
        points.append(np.asarray(data["pt3d_68"], dtype=np.float32)[:3])
        yaws.append(math.degrees(float(np.asarray(data["Pose_Para"]).ravel()[1])))
        shutil.copyfile(image_path, out / "images" / image_path.name)
    np.savez(out / "gt.npz", names=np.array(names), pts68=np.stack(points), yaw_deg=np.array(yaws, np.float32),
             kind=np.array(["original450"] * len(names)))
    return len(names)


def box_norm(truth: np.ndarray) -> float:
    """The NME's normaliser: sqrt(w * h) of the box of the true points (68, 2 or 3)."""
    x1, y1, x2, y2 = points_box(truth)
    return math.sqrt((x2 - x1) * (y2 - y1))


def point_errors(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(68, 3) predicted and true points -> (68,) 2D distances as fractions of sqrt(box area)."""
    return np.linalg.norm(predicted[:, :2] - truth[:, :2], axis=1) / box_norm(truth)


def nme(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(68, 3) predicted and true points -> (2D NME, 3D NME) as fractions of sqrt(box area)."""
    norm = box_norm(truth)
    centred_p = predicted - np.array([0, 0, predicted[:, 2].mean()])
    centred_t = truth - np.array([0, 0, truth[:, 2].mean()])
    error_3d = np.linalg.norm(centred_p - centred_t, axis=1).mean() / norm
    return float(point_errors(predicted, truth).mean()), float(error_3d)


def summarise(errors_2d: list[float], errors_3d: list[float], yaws: list[float], missing: int,
              points_2d: list[np.ndarray] | None = None) -> dict:
    """Per-bin figures (percent) of per-image NMEs; with ``points_2d`` (each image's (68,)
    :func:`point_errors`) also ``nme2d_by_region``: region -> bin -> NME."""
    e2, e3, yaw = np.array(errors_2d), np.array(errors_3d), np.abs(np.array(yaws))
    out: dict = {"n": int(len(e2)), "missing": missing}
    bin_means = []
    for lo, hi in YAW_BINS:
        key = f"nme2d_{int(lo)}_{int(hi)}"
        inside = (yaw >= lo) & (yaw < hi)
        out[f"n_{int(lo)}_{int(hi)}"] = int(inside.sum())
        value = float(e2[inside].mean() * 100) if inside.any() else float("nan")
        out[key] = round(value, 3)
        bin_means.append(value)
    out["nme2d_binmean"] = round(float(np.nanmean(bin_means)), 3)
    out["nme2d_mean"] = round(float(e2.mean() * 100), 3) if len(e2) else float("nan")
    out["nme3d_mean"] = round(float(e3.mean() * 100), 3) if len(e3) else float("nan")
    if points_2d is not None and len(points_2d):
        points = np.stack(points_2d)
        out["nme2d_by_region"] = {
            region: {f"{int(lo)}_{int(hi)}":
                     round(float(points[(yaw >= lo) & (yaw < hi)][:, list(index)].mean() * 100), 3)
                     for lo, hi in YAW_BINS if ((yaw >= lo) & (yaw < hi)).any()}
            for region, index in REGIONS_68.items()
        }
    return out


def draw_overlay(image: np.ndarray, face: FaceResult, truth: np.ndarray, topology: FaceTopology) -> Image.Image:
    """The photo with the posed mesh's base wireframe, predicted (red) and true (green) landmarks
    (drawn at the array's scale for a photo decoded reduced)."""
    canvas = Image.fromarray(np.asarray(image)).convert("RGB")
    draw = ImageDraw.Draw(canvas, "RGBA")
    scale = 1.0 / photo_reduction(image)
    points, truth = face.image_points[:, :2] * scale, truth[:, :2] * scale
    for a, b, c in topology.base_faces:
        # Draw the triangles that face the camera (counter-clockwise on screen with y down = negative area).
        (xa, ya), (xb, yb), (xc, yc) = points[a], points[b], points[c]
        if (xb - xa) * (yc - ya) - (yb - ya) * (xc - xa) < 0:
            draw.polygon([(xa, ya), (xb, yb), (xc, yc)], outline=(80, 200, 255, 110))
    radius = max(1.5, canvas.width / 250)
    for x, y in truth[:, :2]:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(40, 255, 40, 230))
    for x, y in face.landmarks_2d * scale:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(255, 40, 40, 230))
    return canvas


def evaluate_aflw(root: Path, pipeline: FacePipeline, *, boxes: str = "gt",
                  overlays: Path | None = None) -> dict[str, float | int]:
    """Evaluate every image of ``root`` through the runtime's one pipeline (as the service and the
    CLI run it, with the pipeline's refine and mirror-averaging settings); images that cannot be
    read count as missing.

    ``boxes="gt"`` gives the pipeline the ground-truth 68-point box; ``boxes="detect"`` lets it
    detect and take the face the service takes (the largest); an image where that face is not the
    annotated one (IoU < 0.5 with its 68-point box) or no face is found counts as missing.
    """
    if boxes not in ("gt", "detect"):
        raise ValueError(f"boxes must be gt or detect, not {boxes!r}")
    topology = pipeline.reconstructor.topology
    errors_2d, errors_3d, points_2d, yaws, missing = [], [], [], [], 0
    if overlays is not None:
        overlays.mkdir(parents=True, exist_ok=True)
    for sample in load_aflw(root):
        try:
            image = pipeline.decode(sample.path.read_bytes())
        except (OSError, ImageDecodeError):
            missing += 1
            continue
        truth_box = points_box(sample.points)
        try:
            (face,) = pipeline.reconstruct(image, box=truth_box if boxes == "gt" else None).faces
        except NoFaceFound:
            missing += 1
            continue
        if boxes == "detect" and box_iou(np.array(truth_box), np.array([face.box]))[0] < DETECTED_IOU:
            missing += 1
            continue
        predicted = face.result.landmarks_3d
        e2, e3 = nme(predicted, sample.points)
        errors_2d.append(e2)
        errors_3d.append(e3)
        points_2d.append(point_errors(predicted, sample.points))
        yaws.append(sample.yaw_deg)
        if overlays is not None:
            draw_overlay(image, face.result, sample.points, topology).save(overlays / f"{Path(sample.name).stem}.png")
    return summarise(errors_2d, errors_3d, yaws, missing, points_2d)
