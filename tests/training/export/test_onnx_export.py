import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from model.nn.face_model import FaceReconstruction  # noqa: E402
from model.onnx_contract import ModelMetadata  # noqa: E402


def _unit(name: str, face_model) -> float:
    """Scale of an output for unit-scale comparisons: pixels and degrees are divided by their range."""
    size = face_model.image_size
    return {"vertices_2d": size, "landmarks_2d": size, "landmarks_3d": size, "euler_degrees": 180.0,
            "scale": face_model.config.base_scale}.get(name, 1.0)


def test_onnx_matches_pytorch_on_every_output(face_model, onnx_model):
    session = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(FaceReconstruction.OUTPUT_NAMES)
    size = face_model.image_size
    for batch in (1, 3):  # dynamic batch
        images = np.random.default_rng(batch).random((batch, 3, size, size), dtype=np.float32)
        outputs = session.run(None, {"image": images})
        with torch.no_grad():
            expected = face_model(torch.from_numpy(images))
        for name, got in zip(FaceReconstruction.OUTPUT_NAMES, outputs):
            want = getattr(expected, name).numpy()
            assert got.shape == want.shape, name
            assert np.abs(got - want).max() / _unit(name, face_model) < 1e-4, name


def test_half_weights_halve_the_file_and_keep_the_outputs(face_model, onnx_model, tmp_path):
    from training.export.onnx_export import export_onnx

    half = tmp_path / "half.onnx"
    export_onnx(face_model, half, trained=False, half_weights=True)
    assert half.stat().st_size < 0.55 * onnx_model.stat().st_size
    images = np.random.default_rng(0).random((2, 3, face_model.image_size, face_model.image_size), dtype=np.float32)
    full_out = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"]).run(None, {"image": images})
    half_out = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"]).run(None, {"image": images})
    for name, a, b in zip(FaceReconstruction.OUTPUT_NAMES, full_out, half_out):
        assert a.dtype == b.dtype == np.float32, name
        assert np.abs(a - b).max() / _unit(name, face_model) < 5e-3, name
    properties = {p.key: p.value for p in onnx.load(str(half)).metadata_props}
    assert ModelMetadata.from_properties(properties).num_vertices == face_model.faces.max() + 1


def test_metadata_travels_with_the_graph(face_model, onnx_model, topology):
    session = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    meta = ModelMetadata.from_properties(session.get_modelmeta().custom_metadata_map)
    assert meta.topology_version == topology.version
    assert meta.input_size == face_model.image_size
    assert meta.trained is False
    assert (meta.num_vertices, meta.num_faces) == (topology.num_vertices, topology.num_faces)
    opset = {o.domain: o.version for o in __import__("onnx").load(str(onnx_model)).opset_import}
    assert opset[""] >= 17


def test_metadata_of_earlier_exports_takes_the_newer_fields_defaults(onnx_model):
    session = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    props = dict(session.get_modelmeta().custom_metadata_map)
    del props["facerecon.landmark_calibration"]
    assert ModelMetadata.from_properties(props).landmark_calibration == "none"
    del props["facerecon.input_size"]
    with pytest.raises(ValueError, match="lacks facerecon.input_size"):
        ModelMetadata.from_properties(props)


def test_metadata_rejects_foreign_models():
    with pytest.raises(ValueError, match="not a facerecon export"):
        ModelMetadata.from_properties({"producer": "someone else"})
