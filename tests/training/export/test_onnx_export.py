import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from model.nn.encoders import EncodedFace  # noqa: E402
from model.nn.face_model import FaceReconstruction  # noqa: E402
from model.onnx_contract import (  # noqa: E402
    CODE_OUTPUTS,
    GIVEN_CODE_INPUTS,
    GIVEN_WEIGHTS,
    OUTPUT_NAMES,
    RECONSTRUCTION_OUTPUTS,
    ModelMetadata,
)

CODE_FIELDS = ("identity", "expression", "pose", "albedo", "lighting")  # GIVEN_CODE_INPUTS order


def _unit(name: str, face_model) -> float:
    """Scale of an output for unit-scale comparisons: pixels and degrees are divided by their range."""
    size = face_model.image_size
    return {"vertices_2d": size, "landmarks_2d": size, "landmarks_3d": size, "euler_degrees": 180.0,
            "scale": face_model.config.base_scale}.get(name, 1.0)


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _assert_outputs_match(outputs: dict[str, np.ndarray], expected: FaceReconstruction, face_model) -> None:
    for name in RECONSTRUCTION_OUTPUTS:
        want = getattr(expected, name).numpy()
        assert outputs[name].shape == want.shape, name
        assert np.abs(outputs[name] - want).max() / _unit(name, face_model) < 1e-4, name


def test_onnx_matches_pytorch_on_every_output(face_model, onnx_model):
    session = _session(onnx_model)
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    assert tuple(FaceReconstruction.OUTPUT_NAMES) == RECONSTRUCTION_OUTPUTS
    size = face_model.image_size
    for batch in (1, 3):  # dynamic batch
        images = np.random.default_rng(batch).random((batch, 3, size, size), dtype=np.float32)
        outputs = dict(zip(OUTPUT_NAMES, session.run(None, {"image": images})))
        with torch.no_grad():
            expected = face_model(torch.from_numpy(images))
            codes = face_model.encode(torch.from_numpy(images))
        _assert_outputs_match(outputs, expected, face_model)
        for name, field in zip(CODE_OUTPUTS, CODE_FIELDS):
            np.testing.assert_allclose(outputs[name], getattr(codes, field).numpy(), atol=1e-5, err_msg=name)


def test_the_given_codes_are_optional_inputs_that_the_optimizer_keeps(onnx_model, tmp_path):
    """Graph inputs with an initializer (IR >= 4): ONNX Runtime lists them as overridable
    initializers, not as inputs, and its optimizer (every level) keeps them as inputs instead of
    folding their defaults into constants."""
    assert onnx.load(str(onnx_model)).ir_version >= 4
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(str(onnx_model), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [i.name for i in session.get_overridable_initializers()] == [*GIVEN_CODE_INPUTS, GIVEN_WEIGHTS]
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert {i.name for i in optimized.graph.input} == {"image", *GIVEN_CODE_INPUTS, GIVEN_WEIGHTS}
    assert ModelMetadata.from_properties(session.get_modelmeta().custom_metadata_map).format_version == "2"


def _given_codes(face_model, rows: int, seed: int) -> dict[str, np.ndarray]:
    """Random codes of the encoder's shapes, (rows, ...) each, by input name."""
    rng = np.random.default_rng(seed)
    encoder = face_model.config.encoder
    shapes = ((encoder.identity_dim,), (encoder.expression_dim,), (10,), (encoder.albedo_dim,), (9, 3))
    codes = {name: rng.normal(0.0, 1.0, (rows, *shape)).astype(np.float32)
             for name, shape in zip(GIVEN_CODE_INPUTS, shapes)}
    codes["given_pose_code"][:, :6] += [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # near the identity rotation
    codes["given_pose_code"][:, 9] *= 0.1  # log scale
    return codes


@pytest.mark.parametrize("weights", [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0],
                                     [0, 0, 0, 0, 1], [1, 1, 1, 1, 1], [0.3, 0.5, 0.0, 0.7, 1.0]],
                         ids=["identity", "expression", "pose", "albedo", "lighting", "all", "blend"])
@pytest.mark.parametrize("rows", [1, 3], ids=["one-row", "row-per-crop"])
def test_given_codes_decode_as_pytorch_decodes_them(face_model, onnx_model, weights, rows):
    """Each code given alone, all of them, and a blend; one row broadcast over the batch or one
    row per crop. The code outputs stay the image's own."""
    size = face_model.image_size
    images = np.random.default_rng(5).random((3, 3, size, size), dtype=np.float32)
    given = _given_codes(face_model, rows, seed=rows)
    feeds = {"image": images, **given, GIVEN_WEIGHTS: np.tile(np.float32(weights), (rows, 1))}
    outputs = dict(zip(OUTPUT_NAMES, _session(onnx_model).run(None, feeds)))
    with torch.no_grad():
        codes = face_model.encode(torch.from_numpy(images))
        mixed = {}
        for field, name, weight in zip(CODE_FIELDS, GIVEN_CODE_INPUTS, weights):
            encoded = getattr(codes, field)
            mixed[field] = encoded + weight * (torch.from_numpy(given[name]).expand_as(encoded) - encoded)
        expected = face_model.decode(EncodedFace(**mixed))
    _assert_outputs_match(outputs, expected, face_model)
    for name, field in zip(CODE_OUTPUTS, CODE_FIELDS):
        np.testing.assert_allclose(outputs[name], getattr(codes, field).numpy(), atol=1e-5, err_msg=name)


def test_a_plain_run_is_bit_identical_with_the_defaults_fed_explicitly(face_model, onnx_model):
    session = _session(onnx_model)
    images = np.random.default_rng(4).random((2, 3, face_model.image_size, face_model.image_size), dtype=np.float32)
    defaults = {i.name: np.zeros([1, *i.shape[1:]], np.float32) for i in session.get_overridable_initializers()}
    plain = session.run(None, {"image": images})
    explicit = session.run(None, {"image": images, **defaults})
    for name, a, b in zip(OUTPUT_NAMES, plain, explicit):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_half_weights_halve_the_file_and_keep_the_outputs(face_model, onnx_model, tmp_path):
    from training.export.onnx_export import export_onnx

    half = tmp_path / "half.onnx"
    export_onnx(face_model, half, trained=False, half_weights=True)
    assert half.stat().st_size < 0.55 * onnx_model.stat().st_size
    images = np.random.default_rng(0).random((2, 3, face_model.image_size, face_model.image_size), dtype=np.float32)
    full_out = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"]).run(None, {"image": images})
    half_out = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"]).run(None, {"image": images})
    for name, a, b in zip(OUTPUT_NAMES, full_out, half_out):
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
    del props["facerecon.identity_threshold"]
    assert ModelMetadata.from_properties(props).identity_threshold == 0.0
    del props["facerecon.input_size"]
    with pytest.raises(ValueError, match="lacks facerecon.input_size"):
        ModelMetadata.from_properties(props)


def test_metadata_rejects_foreign_models():
    with pytest.raises(ValueError, match="not a facerecon export"):
        ModelMetadata.from_properties({"producer": "someone else"})
