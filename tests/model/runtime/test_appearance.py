"""The shipped model's albedo is the person's: its colour follows the face's colour in the photo
(darker skin, darker albedo), and it does not carry the photo's light."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model.runtime.detector import DEFAULT_DETECTOR, FaceDetector
from model.runtime.pipeline import FacePipeline
from model.runtime.reconstructor import DEFAULT_MODEL, FaceReconstructor
from tests.conftest import SHARED_DATA

LFW = SHARED_DATA / "train" / "lfw"
# People of the training data's validation split (never trained on), of light and dark skin.
PEOPLE = ("Bill_Frist", "Elton_John", "Hugo_Chavez", "Julianne_Moore", "Muhammad_Ali", "Pedro_Almodovar",
          "Paul_Kagame", "Etta_James", "George_Foreman", "Patti_Labelle")
LUMA = np.array([0.299, 0.587, 0.114])
pytestmark = pytest.mark.skipif(not LFW.is_dir(), reason="needs the face photos of ../shared/data (train/lfw)")


@pytest.fixture(scope="module")
def faces() -> list[tuple[float, float]]:
    """(photo luma, albedo luma) of each photo's face: the photo read at the face's own cheek,
    nose and forehead vertices (those facing the camera), the albedo's mean over the same ones."""
    pipeline = FacePipeline(FaceReconstructor(DEFAULT_MODEL), FaceDetector(DEFAULT_DETECTOR))
    pairs = []
    for person in PEOPLE:
        for path in sorted((LFW / person).glob("*.jpg"))[:2]:
            image = np.asarray(Image.open(path).convert("RGB"))
            result = pipeline.reconstruct(image).faces[0].result
            surface = pipeline.reconstructor.topology.num_surface_vertices
            points = result.image_points[:surface]
            # the vertices nearest the camera: the middle of the face, never the hair or the background
            front = points[:, 2] >= np.quantile(points[:, 2], 0.7)
            x, y = np.round(points[front, :2]).astype(int).T
            inside = (x >= 0) & (x < image.shape[1]) & (y >= 0) & (y < image.shape[0])
            photo = image[y[inside], x[inside]].mean(axis=0) / 255.0
            pairs.append((float(photo @ LUMA), float(result.albedo[:surface][front].mean(axis=0) @ LUMA)))
    return pairs


def test_albedo_follows_the_faces_colour_in_the_photo(faces):
    photo, albedo = np.array(faces).T
    assert np.corrcoef(photo, albedo)[0, 1] > 0.6
    # and it spans a real range: a face twice as dark in the photo is clearly darker in the albedo
    assert albedo.max() - albedo.min() > 0.25 * (photo.max() - photo.min())
