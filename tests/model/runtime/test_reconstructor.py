from pathlib import Path

import numpy as np
import onnx
import pytest

from model.onnx_contract import CODE_OUTPUTS, GIVEN_CODE_INPUTS, GIVEN_WEIGHTS
from model.runtime.reconstructor import FaceReconstructor


def format_1_graph(source: Path, out: Path) -> None:
    """Write ``source`` as a model of format 1 would be: no code outputs, no given-code inputs (their
    defaults left as constants)."""
    graph = onnx.load(str(source))
    for values, names in ((graph.graph.input, {*GIVEN_CODE_INPUTS, GIVEN_WEIGHTS}), (graph.graph.output, CODE_OUTPUTS)):
        kept = [value for value in values if value.name not in names]
        del values[:]
        values.extend(kept)
    for prop in graph.metadata_props:
        if prop.key == "facerecon.format_version":
            prop.value = "1"
    onnx.save(graph, str(out))


@pytest.fixture(scope="module")
def reconstructor(onnx_model):
    return FaceReconstructor(onnx_model, threads=1)


def test_reconstructs_each_box_in_one_batch(reconstructor, face_photo, topology):
    h, w = face_photo.shape[:2]
    boxes = [(0.2 * w, 0.2 * h, 0.8 * w, 0.8 * h), (0.0, 0.0, 0.5 * w, 0.5 * h)]
    faces = reconstructor.reconstruct(face_photo, boxes)
    assert len(faces) == 2
    for face, box in zip(faces, boxes):
        assert face.box == box
        assert face.image_points.shape == (topology.num_vertices, 3)
        np.testing.assert_allclose(face.landmarks_2d, face.image_points[topology.landmarks68, :2], atol=1e-3)
        # The crop's centre maps to the box centre.
        centre = face.crop.to_image(np.array([[reconstructor.input_size / 2] * 2]))[0]
        np.testing.assert_allclose(centre, [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], atol=1e-3)
    assert not np.allclose(faces[0].image_points, faces[1].image_points)


def test_image_space_mesh_lines_up_with_the_photo(reconstructor, face_photo):
    h, w = face_photo.shape[:2]
    (face,) = reconstructor.reconstruct(face_photo, [(0.25 * w, 0.2 * h, 0.75 * w, 0.8 * h)])
    mesh = face.vertices("image", (w, h))
    # Looking down -Z at the image-space mesh reproduces the projected pixels.
    pixels = mesh[:, :2] / face.metres_per_pixel * np.array([1, -1]) + np.array([w / 2, h / 2])
    np.testing.assert_allclose(pixels, face.image_points[:, :2], atol=1e-2)
    # Metric scale survives: the face keeps the template's width (pose barely turns it).
    width = np.ptp(face.vertices("canonical", (w, h))[:, 0])
    assert 0.1 < width < 0.2
    assert np.ptp(mesh[:, 0]) == pytest.approx(width, rel=0.25)


def test_spaces_are_checked(reconstructor, face_photo):
    (face,) = reconstructor.reconstruct(face_photo, [(10, 10, 100, 100)])
    with pytest.raises(ValueError, match="not a valid MeshSpace"):
        face.vertices("sideways", (200, 200))  # type: ignore[arg-type]


def test_missing_model_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="facerecon export"):
        FaceReconstructor(tmp_path / "none.onnx")


def test_a_file_that_is_no_onnx_model_is_a_value_error(tmp_path, capsys):
    from service.cli import main

    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        FaceReconstructor(bad)
    assert main(["calibrate-landmarks", "--aflw2000", str(tmp_path), "--model", str(bad),
                 "--out", str(tmp_path / "out.onnx")]) == 2
    assert "not a loadable ONNX model" in capsys.readouterr().err


def test_model_for_another_topology_is_refused(onnx_model, topology):
    import dataclasses

    other = dataclasses.replace(topology, version="0.other")
    with pytest.raises(ValueError, match="topology"):
        FaceReconstructor(onnx_model, topology=other)


def test_a_model_without_the_code_outputs_says_how_to_re_export_it(onnx_model, tmp_path):
    old = tmp_path / "format1.onnx"
    format_1_graph(onnx_model, old)
    with pytest.raises(ValueError, match="format 1.*facerecon export --checkpoint.*facerecon transfer-topology"):
        FaceReconstructor(old)
