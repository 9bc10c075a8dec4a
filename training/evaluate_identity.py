"""Identity evaluation (issue 14): do the meshes tell people apart, and is expression kept out of
the neutral mesh?

``facerecon evaluate-identity --people DIR`` reconstructs every photo of a folder of people in
the LFW layout (``DIR/<Person_Name>/*.jpg``) and prints one JSON line:

- ``auc_neutral`` / ``auc_canonical``: same-vs-different-person verification AUC from the
  neutral (identity only) and the canonical (identity + expression) meshes. The score of a pair
  of photos is minus the distance of their meshes: each mesh's surface vertices (the cavities
  after them are left out) are centred and scaled to the template's centroid size (RMS distance
  of its vertices to their centroid), then rotated onto the other by orthogonal Procrustes; the
  distance is the mean vertex distance after that (the full Procrustes distance, symmetric in
  the two meshes and blind to position, orientation and size). All same-person pairs are
  scored, and all different-person pairs or a seeded random subset of them (``max_pairs``).
  The AUC is the Mann-Whitney statistic (ties count one half).
- ``distance_ratio_*``: mean same-person distance / mean different-person distance.
- ``spread_mm_*``: how much the people differ, in millimetres: every mesh is moved onto the
  template by rotation and translation only (no scaling, so real size differences count), each
  person's meshes are averaged, and the spread of a vertex is the RMS distance of the people's
  means to their mean (the same as the square root of the sum of the three per-axis variances,
  over people, ddof 0); the figure is the mean over the surface vertices.
- ``leak_mouth_opening`` / ``leak_smile_width``: least-squares slope (with intercept), over all
  photos, of the neutral mesh's measure against the canonical mesh's: 0 = the expression is
  fully removed from the neutral mesh, 1 = passed through. Mouth opening = distance of the
  inner-lip midpoints (iBUG 62 and 66) / outer eye corner distance (36 and 45); smile width =
  mouth corner distance (48 and 54) / the same eye corner distance.
- counts: ``people``, ``photos`` (used: of the people kept), ``photos_failed`` (unreadable or no
  face found, among all photos read), ``people_skipped`` (fewer usable photos than
  ``min_photos``), ``same_pairs``, ``different_pairs``; and ``seconds``.

The functions on arrays (:func:`verification_auc`, :func:`procrustes_align`,
:func:`pair_distances`, :func:`expression_leak`, :func:`spread_mm`) need no photos or model.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from model.conventions import Box, MeshSpace
from model.runtime.image_io import ImageDecodeError, load_rgb
from model.runtime.pipeline import FacePipeline, NoFaceFound
from model.topology import FaceTopology

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# iBUG 68-point indices of the expression measures.
INNER_LIP_TOP, INNER_LIP_BOTTOM = 62, 66
MOUTH_LEFT, MOUTH_RIGHT = 48, 54
EYE_OUTER_LEFT, EYE_OUTER_RIGHT = 36, 45
MAX_DIFFERENT_PAIRS = 20000
SHEET_PEOPLE = 16
SHEET_TILE = 256
_PAIR_BATCH = 256  # pairs aligned at once (memory: batch x surface vertices x 3 floats, twice)
_ENUMERATE_PAIRS = 2_000_000  # at most this many photo pairs are listed outright; more are sampled
IDENTICAL = 1e-6  # metres (at the template's size): mean distances below this are float noise of identical meshes


# --- measures on arrays -------------------------------------------------------------------


def verification_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (higher = more likely the same person) for the
    boolean labels ``same``: the probability that a random same pair scores higher than a random
    different pair, ties counting one half (Mann-Whitney U from average ranks). NaN when either
    class is empty."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    same = np.asarray(same, dtype=bool).ravel()
    if scores.shape != same.shape:
        raise ValueError(f"scores {scores.shape} and labels {same.shape} differ in length")
    positives, negatives = int(same.sum()), int((~same).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last member of each group of tied scores
    average_rank = ends - (counts - 1) / 2.0
    rank_sum = float(average_rank[inverse][same].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def _best_rotation(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cross-covariances target^T source (..., 3, 3) -> the proper rotations (..., 3, 3) that best
    turn the centred source onto the centred target, and the signs (...,) of the smallest
    singular value that excludes reflections."""
    u, _, vt = np.linalg.svd(np.asarray(covariance, dtype=np.float64))
    sign = np.where(np.linalg.det(u @ vt) < 0, -1.0, 1.0)
    u[..., :, 2] *= sign[..., None]  # u @ diag(1, 1, sign)
    return u @ vt, sign


def procrustes_align(source: np.ndarray, target: np.ndarray, scale: bool) -> np.ndarray:
    """``source`` (..., V, 3) moved onto ``target`` ((..., V, 3) or (V, 3)) by the rotation and
    translation (and, with ``scale``, the uniform scale) that minimise the sum of squared vertex
    distances (Umeyama; no reflections). Returns the moved source, float64, shape of ``source``."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    source_mean = source.mean(axis=-2, keepdims=True)
    target_mean = target.mean(axis=-2, keepdims=True)
    centred_source, centred_target = source - source_mean, target - target_mean
    covariance = np.swapaxes(centred_target, -1, -2) @ centred_source
    rotation, sign = _best_rotation(covariance)
    factor: np.ndarray | float = 1.0
    if scale:
        singular = np.linalg.svd(covariance, compute_uv=False)
        singular[..., 2] *= sign
        factor = (singular.sum(axis=-1) / (centred_source**2).sum(axis=(-2, -1)))[..., None, None]
    return factor * centred_source @ np.swapaxes(rotation, -1, -2) + target_mean


def normalise_shapes(meshes: np.ndarray, size: float = 1.0) -> np.ndarray:
    """(N, V, 3) -> float32 copies centred on their centroid with centroid size (RMS distance of
    the vertices to the centroid) ``size``."""
    centred = meshes - meshes.mean(axis=1, keepdims=True, dtype=np.float64)
    radius = np.sqrt((centred**2).sum(axis=2).mean(axis=1))
    return (centred * (size / np.maximum(radius, 1e-12))[:, None, None]).astype(np.float32)


def pair_distances(meshes: np.ndarray, pairs: np.ndarray, *, size: float = 1.0, batch: int = _PAIR_BATCH
                   ) -> np.ndarray:
    """Meshes (N, V, 3) and index pairs (P, 2) -> (P,) mean vertex distances after similarity
    alignment: both meshes centred and scaled to centroid size ``size`` (so the distances are in
    the meshes' units at that size), the first then rotated onto the second (orthogonal
    Procrustes, which is symmetric once both are centred and scaled)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    shapes = normalise_shapes(np.asarray(meshes, dtype=np.float32), size)
    out = np.empty(len(pairs), dtype=np.float64)
    for start in range(0, len(pairs), batch):  # float32 matrix products: about 4 times faster than float64
        chunk = pairs[start : start + batch]
        first, second = shapes[chunk[:, 0]], shapes[chunk[:, 1]]
        rotation, _ = _best_rotation(np.swapaxes(second, 1, 2) @ first)
        difference = first @ np.swapaxes(rotation, 1, 2).astype(np.float32) - second
        out[start : start + batch] = np.sqrt((difference * difference).sum(axis=2)).mean(axis=1)
    return out


def mouth_measures(meshes: np.ndarray, landmarks68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Meshes (N, V, 3) and the 68 landmark vertex indices -> (mouth opening, smile width), each
    (N,) and divided by the outer eye corner distance of the same mesh."""
    points = np.asarray(meshes, dtype=np.float64)[:, np.asarray(landmarks68)]

    def distance(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(points[:, a] - points[:, b], axis=1)

    eyes = np.maximum(distance(EYE_OUTER_LEFT, EYE_OUTER_RIGHT), 1e-12)
    return distance(INNER_LIP_TOP, INNER_LIP_BOTTOM) / eyes, distance(MOUTH_LEFT, MOUTH_RIGHT) / eyes


def least_squares_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Slope of the least-squares line (with intercept) of y against x; NaN when x is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx = x - x.mean()
    denominator = float((dx**2).sum())
    if len(x) < 2 or denominator <= 1e-30:
        return float("nan")
    return float((dx * (y - y.mean())).sum() / denominator)


def expression_leak(neutral: np.ndarray, canonical: np.ndarray, landmarks68: np.ndarray) -> dict[str, float]:
    """Per-photo neutral and canonical meshes (N, V, 3) -> ``mouth_opening`` and ``smile_width``:
    slope of the neutral mesh's measure against the canonical mesh's (0 = expression removed,
    1 = passed through)."""
    neutral_opening, neutral_width = mouth_measures(neutral, landmarks68)
    canonical_opening, canonical_width = mouth_measures(canonical, landmarks68)
    return {"mouth_opening": least_squares_slope(canonical_opening, neutral_opening),
            "smile_width": least_squares_slope(canonical_width, neutral_width)}


def spread_mm(meshes: np.ndarray, labels: np.ndarray, template: np.ndarray | None = None, *, align: bool = True
              ) -> float:
    """Inter-person spread in millimetres of meshes (N, V, 3) in metres with person ``labels`` (N,):
    with ``align`` each mesh is first moved onto ``template`` (V, 3) by rotation and translation
    (no scaling); per person the mean mesh; per vertex the RMS distance of the people's means to
    their mean (= sqrt of the sum of the per-axis variances over people, ddof 0); the mean over
    vertices. NaN with fewer than two people."""
    if align and template is None:
        raise ValueError("align needs the template")
    meshes, labels = np.asarray(meshes), np.asarray(labels)
    means = []
    for label in np.unique(labels):  # one person at a time: bounded memory
        person = meshes[labels == label]
        if align:
            person = procrustes_align(person, np.asarray(template), scale=False)
        means.append(person.mean(axis=0, dtype=np.float64))
    if len(means) < 2:
        return float("nan")
    stacked = np.stack(means)
    deviation = stacked - stacked.mean(axis=0)
    per_vertex = np.sqrt((deviation**2).sum(axis=2).mean(axis=0))
    return float(per_vertex.mean() * 1000.0)


def same_pairs(labels: np.ndarray) -> np.ndarray:
    """Every pair (i < j) of photos of the same person, (P, 2) int64."""
    labels = np.asarray(labels)
    out = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        first, second = np.triu_indices(len(members), k=1)
        out.append(np.stack([members[first], members[second]], axis=1))
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), np.int64)


def different_pairs(labels: np.ndarray, max_pairs: int | None = MAX_DIFFERENT_PAIRS, seed: int = 0) -> np.ndarray:
    """Pairs (i < j) of photos of different people, (P, 2) int64 sorted: all of them, or a seeded
    random subset of ``max_pairs`` (without repeats) when there are more."""
    labels = np.asarray(labels)
    count = len(labels)
    _, sizes = np.unique(labels, return_counts=True)
    available = count * (count - 1) // 2 - int((sizes * (sizes - 1) // 2).sum())
    rng = np.random.default_rng(seed)
    if max_pairs is None or available <= max_pairs:
        if available > _ENUMERATE_PAIRS:
            raise ValueError(f"{available} different-person pairs: too many to score them all; give max_pairs")
        rows = []
        for i in range(count - 1):
            later = np.arange(i + 1, count)
            later = later[labels[later] != labels[i]]
            rows.append(np.stack([np.full(len(later), i), later], axis=1))
        return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 2), np.int64)
    if count * (count - 1) // 2 <= _ENUMERATE_PAIRS:
        first, second = np.triu_indices(count, k=1)
        keep = labels[first] != labels[second]
        pairs = np.stack([first[keep], second[keep]], axis=1).astype(np.int64)
        return pairs[np.sort(rng.choice(len(pairs), size=max_pairs, replace=False))]
    codes = np.zeros(0, dtype=np.int64)
    while len(codes) < max_pairs:  # ends: there are more than max_pairs different-person pairs
        a, b = rng.integers(0, count, size=(2, 2 * max_pairs))
        a, b = np.minimum(a, b), np.maximum(a, b)
        keep = labels[a] != labels[b]
        codes = np.unique(np.concatenate([codes, a[keep] * count + b[keep]]))
    codes = np.sort(rng.choice(codes, size=max_pairs, replace=False))
    return np.stack([codes // count, codes % count], axis=1)


def verification(meshes: np.ndarray, same: np.ndarray, different: np.ndarray, size: float) -> dict[str, float]:
    """AUC and mean distance ratio of one mesh space over the given same and different pairs."""
    same_distances = pair_distances(meshes, same, size=size)
    different_distances = pair_distances(meshes, different, size=size)
    scores = -np.concatenate([same_distances, different_distances])
    labels = np.concatenate([np.ones(len(same_distances), bool), np.zeros(len(different_distances), bool)])
    return {"auc": verification_auc(scores, labels), "distance_ratio": distance_ratio(same_distances,
                                                                                     different_distances)}


def distance_ratio(same: np.ndarray, different: np.ndarray) -> float:
    """Mean same-person distance / mean different-person distance; means under IDENTICAL (float
    noise of identical meshes) count as 0, and 0 / 0 is 1 (no separation). NaN without pairs."""
    if not len(same) or not len(different):
        return float("nan")
    same_mean, different_mean = (float(np.mean(d)) for d in (same, different))
    same_mean, different_mean = (m if m >= IDENTICAL else 0.0 for m in (same_mean, different_mean))
    if different_mean == 0.0:
        return 1.0 if same_mean == 0.0 else float("nan")
    return same_mean / different_mean


# --- contact sheet --------------------------------------------------------------------------


@dataclass
class SheetRow:
    """One person on the contact sheet: a photo's face crop and its surface meshes (Vs, 3)."""

    name: str
    photo: np.ndarray  # (S, S, 3) uint8 face crop
    neutral: np.ndarray
    canonical: np.ndarray
    mouth_opening: float  # canonical mouth opening of that photo (the sheet shows the person's widest)


def face_thumbnail(image: np.ndarray, box: Box, side: int = SHEET_TILE, margin: float = 1.5) -> np.ndarray:
    """A square crop ``margin`` times the face box's longer side around its centre, ``side`` pixels."""
    x1, y1, x2, y2 = box
    half = margin * max(x2 - x1, y2 - y1) / 2.0
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    crop = Image.fromarray(image).crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half)))
    return np.asarray(crop.resize((side, side), Image.Resampling.BILINEAR))


def render_grey(meshes: np.ndarray, faces: np.ndarray, template: np.ndarray, side: int = SHEET_TILE
                ) -> np.ndarray:
    """Meshes (B, V, 3) in metres (glTF axes), aligned to ``template`` (V, 3) -> front and side
    views (B, 2, side, side) uint8: orthographic, Lambert-shaded grey, one scale for every mesh
    (the template's extent fills 85 % of a tile), so sizes and profiles compare across tiles.
    The side view looks at the face's right cheek, the nose pointing right."""
    import torch

    from model.nn.geometry import vertex_normals
    from model.nn.renderer import render

    front = np.asarray(meshes, dtype=np.float32)
    side_view = np.stack([front[..., 2], front[..., 1], -front[..., 0]], axis=-1)  # yaw +90 degrees
    template_side = np.stack([template[:, 2], template[:, 1], -template[:, 0]], axis=-1)
    extent = max(float(np.ptp(template[:, :2], axis=0).max()), float(np.ptp(template_side[:, :2], axis=0).max()))
    pixels_per_metre = 0.85 * side / extent
    light = torch.tensor([0.25, 0.35, 1.0])
    light = light / light.norm()
    faces_t = torch.as_tensor(np.asarray(faces, dtype=np.int64))
    out = np.zeros((len(front), 2, side, side), dtype=np.uint8)
    for view, (vertices, reference) in enumerate(((front, template), (side_view, template_side))):
        centre = (reference.min(axis=0) + reference.max(axis=0)) / 2.0
        local = torch.as_tensor(vertices - centre[None, None].astype(np.float32))
        normals = vertex_normals(local, faces_t)
        grey = (0.12 + 0.88 * (normals @ light).clamp(min=0.0))[..., None]
        screen = torch.stack([side / 2.0 + pixels_per_metre * local[..., 0],
                              side / 2.0 - pixels_per_metre * local[..., 1],
                              pixels_per_metre * local[..., 2]], dim=-1)
        with torch.no_grad():
            result = render(screen, faces_t, grey, torch.zeros(local.shape[1], dtype=torch.long), side, side)
        background = 0.18
        image = result.image[:, 0] * result.mask[:, 0] + background * (1 - result.mask[:, 0])
        out[:, view] = (image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return out


def contact_sheet(rows: list[SheetRow], topology: FaceTopology, side: int = SHEET_TILE) -> Image.Image:
    """One row per person: the photo, then front and side views of the neutral and of the
    canonical mesh (both moved onto the template by rotation and translation)."""
    header = 22
    columns = ("photo", "neutral front", "neutral side", "canonical front", "canonical side")
    sheet = Image.new("RGB", (side * len(columns), header + side * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(columns):
        draw.text((c * side + 6, 5), title, fill=(0, 0, 0))
    template = topology.vertices[: topology.num_surface_vertices].astype(np.float64)
    if not rows:
        return sheet
    meshes = procrustes_align(np.stack([m for row in rows for m in (row.neutral, row.canonical)]), template,
                              scale=False)
    rendered = render_grey(meshes, topology.surface_faces, template, side)  # one batch: (2 * rows, 2 views, S, S)
    for r, row in enumerate(rows):
        views = rendered[2 * r : 2 * r + 2]  # (neutral, canonical) x (front, side)
        top = header + r * side
        sheet.paste(Image.fromarray(np.ascontiguousarray(row.photo)).resize((side, side)), (0, top))
        for m in range(2):
            for v in range(2):
                sheet.paste(Image.fromarray(views[m, v]).convert("RGB"), ((1 + 2 * m + v) * side, top))
        label = f"{row.name}  (mouth {row.mouth_opening:.2f})"
        box = draw.textbbox((4, top + 4), label)
        draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
        draw.text((4, top + 4), label, fill=(255, 255, 255))
    return sheet


# --- the evaluation -------------------------------------------------------------------------


def person_folders(people_dir: Path, *, validation_only: bool = False, val_fraction: float = 0.05,
                   seed: int = 0) -> list[tuple[str, list[Path]]]:
    """(folder name, sorted photos) per sub-folder of ``people_dir``; with ``validation_only``
    only the people in the prepared data's validation split (subject key
    ``<people_dir name>/<folder>``, as ``facerecon prepare`` hashes it)."""
    if not people_dir.is_dir():
        raise FileNotFoundError(f"people folder not found: {people_dir}")
    from training.data.prepare import is_validation

    root_name = people_dir.resolve().name
    out = []
    for folder in sorted(p for p in people_dir.iterdir() if p.is_dir()):
        if validation_only and not is_validation(f"{root_name}/{folder.name}", val_fraction, seed):
            continue
        photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        out.append((folder.name, photos))
    return out


def evaluate_identity(people_dir: Path, pipeline: FacePipeline, *, min_photos: int = 2,
                      max_people: int | None = None, validation_only: bool = False, val_fraction: float = 0.05,
                      seed: int = 0, max_pairs: int | None = MAX_DIFFERENT_PAIRS, pair_seed: int = 0,
                      contact_sheet_path: Path | None = None, show_progress: bool = True) -> dict:
    """Reconstruct the photos of ``people_dir`` (one sub-folder per person) and measure identity
    separation, spread and expression leak (see the module docstring); people with fewer than
    ``min_photos`` usable photos are skipped, and at most ``max_people`` are kept (folders in
    name order). Raises ValueError when fewer than two people are left."""
    if min_photos < 2:
        raise ValueError("min_photos must be at least 2 (a person needs a same-person pair)")
    started = time.perf_counter()
    topology = pipeline.reconstructor.topology
    surface = topology.num_surface_vertices
    folders = [(name, photos) for name, photos in person_folders(people_dir, validation_only=validation_only,
                                                                 val_fraction=val_fraction, seed=seed)
               if len(photos) >= min_photos]
    if not folders:
        raise ValueError(f"no person folder in {people_dir} holds {min_photos} photos or more"
                         + (" in the validation split" if validation_only else ""))
    neutral: list[np.ndarray] = []
    canonical: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    sheet_rows: list[SheetRow] = []
    failed = skipped = 0
    total = sum(len(photos) for _, photos in folders) if max_people is None else None
    progress = tqdm(total=total, unit="photo", file=sys.stderr, disable=not show_progress, desc="identity")
    for name, photos in folders:
        if max_people is not None and len(names) >= max_people:
            break
        person_neutral, person_canonical = [], []
        best: SheetRow | None = None
        for path in photos:
            progress.update(1)
            try:
                image = load_rgb(path.read_bytes())
                reconstruction = pipeline.reconstruct(image)
            except (OSError, ImageDecodeError, NoFaceFound):
                failed += 1
                continue
            face = reconstruction.faces[0]
            n = face.result.vertices(MeshSpace.neutral, reconstruction.size)[:surface].astype(np.float32)
            c = face.result.vertices(MeshSpace.canonical, reconstruction.size)[:surface].astype(np.float32)
            person_neutral.append(n)
            person_canonical.append(c)
            if contact_sheet_path is not None and len(sheet_rows) < SHEET_PEOPLE:
                opening = float(mouth_measures(c[None], topology.landmarks68)[0][0])
                if best is None or opening > best.mouth_opening:
                    best = SheetRow(name, face_thumbnail(image, face.box), n, c, opening)
        if len(person_neutral) < min_photos:
            skipped += 1
            continue
        labels.extend([len(names)] * len(person_neutral))
        names.append(name)
        neutral.extend(person_neutral)
        canonical.extend(person_canonical)
        if best is not None:
            sheet_rows.append(best)
    progress.close()
    if len(names) < 2:
        raise ValueError(f"only {len(names)} person(s) in {people_dir} with {min_photos} or more photos where a "
                         "face was found: need at least 2")
    label_array = np.asarray(labels)
    neutral_array = np.stack(neutral)
    del neutral
    canonical_array = np.stack(canonical)
    del canonical
    same = same_pairs(label_array)
    different = different_pairs(label_array, max_pairs, pair_seed)
    template = topology.vertices[:surface].astype(np.float64)
    size = float(np.sqrt(((template - template.mean(axis=0)) ** 2).sum(axis=1).mean()))
    result: dict[str, float | int] = {}
    spaces = {"neutral": neutral_array, "canonical": canonical_array}
    for space, meshes in spaces.items():
        scores = verification(meshes, same, different, size)
        result[f"auc_{space}"] = round(scores["auc"], 4)
        result[f"distance_ratio_{space}"] = round(scores["distance_ratio"], 4)
    for space, meshes in spaces.items():
        result[f"spread_mm_{space}"] = round(spread_mm(meshes, label_array, template), 3)
    leak = expression_leak(neutral_array, canonical_array, topology.landmarks68)
    result["leak_mouth_opening"] = round(leak["mouth_opening"], 4)
    result["leak_smile_width"] = round(leak["smile_width"], 4)
    result.update({"people": len(names), "photos": len(label_array), "photos_failed": failed,
                   "people_skipped": skipped, "same_pairs": len(same), "different_pairs": len(different)})
    if contact_sheet_path is not None:
        contact_sheet_path.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(sheet_rows, topology).save(contact_sheet_path)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def json_safe(metrics: dict) -> dict:
    """NaN and infinities (e.g. a slope over photos without variation) -> None, so that the line is strict JSON."""
    return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in metrics.items()}
