"""Contact sheet of the large-pose data engine: a few source faces turned to a row of yaws.

Each row is one source face: its stored crop, then its synthesised views at the sheet's yaws
(no added pitch or roll), with the labels drawn: the 468 points as small dots and the 68 iBUG
points as green discs. The stored crops' edge padding (which training replaces by random
background, as the views already have it) is dimmed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from training.data.synthesize import SceneBuilder, SourceFaces, SynthesisConfig, render_view
from training.tools.topology_builder import IBUG68_FROM_MEDIAPIPE

SHEET_YAWS = (-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0)


def draw_tile(image: np.ndarray, landmarks: np.ndarray, valid: np.ndarray) -> Image.Image:
    """image (S, S, 3) uint8 with landmarks (468, 2+) drawn and the padding outside valid (4,) dimmed."""
    dimmed = (image * 0.35).astype(np.uint8)
    x0, y0, x1, y1 = np.round(valid).astype(int)
    dimmed[max(y0, 0) : y1, max(x0, 0) : x1] = image[max(y0, 0) : y1, max(x0, 0) : x1]
    canvas = Image.fromarray(dimmed)
    draw = ImageDraw.Draw(canvas, "RGBA")
    for x, y in landmarks[:, :2]:
        draw.point((float(x), float(y)), fill=(255, 255, 255, 120))
    for x, y in landmarks[IBUG68_FROM_MEDIAPIPE, :2]:
        draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=(60, 255, 60, 230))
    return canvas


def contact_sheet(sources: SourceFaces, indices: list[int], builder: SceneBuilder, config: SynthesisConfig,
                  yaws: tuple[float, ...] = SHEET_YAWS) -> Image.Image:
    """One row per face of ``indices``: the stored crop, then one view per target yaw."""
    faces = [sources.get(i) for i in indices]
    rows = []
    for face, scene in zip(faces, builder.scenes(faces)):
        row = [draw_tile(face["image"], face["landmarks"], face["valid"])]
        rng = np.random.default_rng(config.seed)
        for yaw in yaws:
            view = render_view(scene, yaw - scene.face.yaw, 0.0, 0.0, rng, config)
            row.append(draw_tile(view.image, view.landmarks, np.array([0, 0, *view.image.shape[:2]])))
        rows.append(row)
    size = rows[0][0].width
    sheet = Image.new("RGB", (size * len(rows[0]), size * len(rows)))
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            sheet.paste(tile, (c * size, r * size))
    return sheet


def write_contact_sheet(path: Path, sources: SourceFaces, builder: SceneBuilder, config: SynthesisConfig,
                        faces: int = 8) -> None:
    """The sheet of ``faces`` source faces spread evenly over the data, saved as an image at ``path``."""
    step = max(1, len(sources) // faces)
    path.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(sources, list(range(0, len(sources), step))[:faces], builder, config).save(path)
