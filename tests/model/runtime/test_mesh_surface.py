"""The shipped model's meshes as a viewer sees them: no pleats, and an open mouth is open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.conventions import MeshSpace
from model.runtime.detector import DEFAULT_DETECTOR, FaceDetector
from model.runtime.pipeline import FacePipeline
from model.runtime.reconstructor import DEFAULT_MODEL, FaceReconstructor
from model.topology import FaceTopology
from tests.conftest import SHARED_DATA
from tests.model.test_topology import _fold_angles

UTKFACE = SHARED_DATA / "train" / "utkface"
AFLW_DEV = SHARED_DATA / "eval" / "aflw2000-3d-dev" / "images"
# A wide-open smile, a closed mouth turned about 30 degrees, and a face turned about 60 degrees.
OPEN_MOUTH = UTKFACE / "16_0_0_20170104012457770.jpg"
PHOTOS = [OPEN_MOUTH, UTKFACE / "28_1_4_20170117202544912.jpg", AFLW_DEV / "image00460.jpg",
          AFLW_DEV / "image03730.jpg"]

needs_photos = pytest.mark.skipif(
    not all(p.is_file() for p in PHOTOS), reason="needs the face photos of ../shared/data (utkface, aflw2000-3d-dev)")


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline(FaceReconstructor(DEFAULT_MODEL), FaceDetector(DEFAULT_DETECTOR))


def _reconstruct(pipeline: FacePipeline, path: Path):
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"))
    rec = pipeline.reconstruct(image)
    return rec, rec.faces[0]


@needs_photos
@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_reconstructed_meshes_do_not_fold(pipeline: FacePipeline, path: Path):
    rec, face = _reconstruct(pipeline, path)
    topology = pipeline.reconstructor.topology
    for space in (MeshSpace.canonical, MeshSpace.neutral):
        vertices = face.result.vertices(space, rec.size)
        assert _fold_angles(vertices, topology.faces).max() < 120.0, space


@needs_photos
def test_an_open_mouth_shows_the_inside_of_the_mouth_not_a_sheet(pipeline: FacePipeline):
    """Rendered from the front, the pixels between the parted lips belong to the mouth's cavity
    surface (behind the lips), not to a surface stretched across the opening."""
    torch = pytest.importorskip("torch")
    from model.nn.renderer import rasterize

    rec, face = _reconstruct(pipeline, OPEN_MOUTH)
    topology: FaceTopology = pipeline.reconstructor.topology
    vertices = face.result.vertices(MeshSpace.canonical, rec.size).astype(np.float64)
    size, scale = 512, 512 / 0.2  # 20 cm across the image
    centre = vertices[: topology.num_surface_vertices].mean(axis=0)
    screen = np.stack([(vertices[:, 0] - centre[0]) * scale + size / 2,
                       -(vertices[:, 1] - centre[1]) * scale + size / 2, vertices[:, 2] * scale], axis=1)
    fragments = rasterize(torch.as_tensor(screen[None], dtype=torch.float32), torch.as_tensor(topology.faces),
                          size, size)
    upper, lower = screen[topology.landmarks68[62]], screen[topology.landmarks68[66]]
    assert lower[1] - upper[1] > 8  # the lips are apart in the image: the photo's mouth is open
    cavity_faces = 0
    for t in np.linspace(0.3, 0.7, 5):
        x, y = upper[:2] + t * (lower[:2] - upper[:2])
        face_index = int(fragments.face_index[0, int(y), int(x)])
        assert face_index >= 0
        cavity_faces += bool((topology.faces[face_index] >= topology.num_surface_vertices).all())
    assert cavity_faces == 5
