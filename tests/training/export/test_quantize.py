import numpy as np
import onnx
import pytest

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime.quantization")

from model.onnx_contract import OUTPUT_NAMES, ModelMetadata  # noqa: E402
from model.runtime.reconstructor import FaceReconstructor  # noqa: E402
from training.export.quantize import (  # noqa: E402
    FLOAT_LAYERS,
    QUANTIZATION,
    calibration_crops,
    fully_connected_layers,
    quantize_model,
    trunk_nodes,
    widen_float16_weights,
)


@pytest.fixture(scope="module")
def quantized(exported, tmp_path_factory):
    path = tmp_path_factory.mktemp("quantize") / "int8.onnx"
    return path, quantize_model(exported, path)


@pytest.fixture(scope="module")
def crops(synthetic_data):
    return calibration_crops(synthetic_data, 12)


@pytest.fixture(scope="module")
def static(exported, crops, tmp_path_factory):
    """The exported model with a static int8 trunk as well."""
    path = tmp_path_factory.mktemp("quantize") / "static.onnx"
    return path, quantize_model(exported, path, crops)


def _outputs(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUT_NAMES, session.run(None, {"image": images})))


def test_every_fully_connected_layer_but_the_pose_head_becomes_int8(exported, quantized):
    path, metadata = quantized
    source = onnx.load(str(exported))
    widen_float16_weights(source)
    layers = fully_connected_layers(source)
    graph = onnx.load(str(path))
    integer = [node.name for node in graph.graph.node if node.op_type == "MatMulInteger"]
    float_layers = [name for name in layers if name.startswith(FLOAT_LAYERS)]
    assert float_layers and len(integer) == len(layers) - len(float_layers)
    assert not any(name.startswith(FLOAT_LAYERS) for name in integer)
    kept = [node.name for node in graph.graph.node
            if node.op_type in ("Gemm", "MatMul") and node.name.startswith(FLOAT_LAYERS)]
    assert len(kept) == len(float_layers)  # the pose head's layers compute in float
    assert metadata.quantization == QUANTIZATION
    assert ModelMetadata.from_properties({p.key: p.value for p in graph.metadata_props}) == metadata
    assert path.stat().st_size < 0.75 * exported.stat().st_size


def test_quantized_model_computes_what_the_float_one_does(topology, exported, quantized):
    images = np.random.default_rng(0).random((3, 3, 128, 128)).astype(np.float32)
    before, after = _outputs(exported, images), _outputs(quantized[0], images)
    for name in ("expressive_vertices", "neutral_vertices"):
        offsets = np.abs(before[name] - topology.vertices).max()  # what the decoders add to the template
        error = np.abs(before[name] - after[name]).max()
        assert 0 < error < 0.05 * offsets, (name, error, offsets)
    assert np.abs(before["euler_degrees"] - after["euler_degrees"]).max() < 1.0


def test_quantized_model_loads_and_refuses_a_second_quantization(quantized, tmp_path):
    path, metadata = quantized
    reconstructor = FaceReconstructor(path, threads=1)
    assert reconstructor.metadata.quantization == QUANTIZATION
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(path, tmp_path / "twice.onnx")


def test_weights_read_back_from_the_quantized_graph_are_the_float_ones_within_a_quantization_step(
        topology, exported, quantized):
    from training.export.topology_transfer import model_from_onnx

    float_model, int8_model = model_from_onnx(exported, topology), model_from_onnx(quantized[0], topology)
    before, after = float_model.state_dict(), int8_model.state_dict()
    for name in ("encoder.identity_head.0.weight", "expression_decoder.offsets.mlp.4.weight",
                 "albedo_decoder.mlp.2.weight"):
        step = before[name].abs().max() / 127  # the symmetric int8 grid's spacing
        assert 0 < (after[name] - before[name]).abs().max() <= step / 2 + 1e-7, name
    for name in ("encoder.pose_head.0.weight", "encoder.pose_head.2.weight"):  # kept in float
        torch.testing.assert_close(after[name], before[name])


def test_the_quantized_graph_keeps_the_given_code_inputs(exported, quantized):
    from model.onnx_contract import GIVEN_CODE_INPUTS, GIVEN_WEIGHTS

    session = ort.InferenceSession(str(quantized[0]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [i.name for i in session.get_overridable_initializers()] == [*GIVEN_CODE_INPUTS, GIVEN_WEIGHTS]
    images = np.random.default_rng(1).random((2, 3, 128, 128)).astype(np.float32)
    given = {"given_expression_code": np.random.default_rng(2).normal(0.0, 1.0, (1, 64)).astype(np.float32),
             GIVEN_WEIGHTS: np.float32([[0, 1, 0, 0, 0]])}
    float_out = dict(zip(OUTPUT_NAMES, ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(
        None, {"image": images, **given})))
    int8_out = dict(zip(OUTPUT_NAMES, session.run(None, {"image": images, **given})))
    plain = dict(zip(OUTPUT_NAMES, session.run(None, {"image": images})))
    moved = np.abs(int8_out["expressive_vertices"] - plain["expressive_vertices"]).max()
    error = np.abs(int8_out["expressive_vertices"] - float_out["expressive_vertices"]).max()
    assert error < 0.25 * moved  # the given expression moves the face as in the float graph, within int8 error


def test_calibration_crops_are_augmented_training_crops_the_same_every_time(synthetic_data, crops):
    again = calibration_crops(synthetic_data, 12)
    assert crops.shape == (12, 3, 128, 128) and crops.dtype == np.float32 and 0 <= crops.min() < crops.max() <= 1
    np.testing.assert_array_equal(crops, again)
    from model.topology import FaceTopology
    from training.data.augment import AugmentConfig
    from training.data.dataset import PreparedFaces

    plain = PreparedFaces(synthetic_data, "val", FaceTopology.load(), AugmentConfig())  # un-jittered crops
    assert len(plain) and not any(np.array_equal(plain[0]["image"].numpy(), crop) for crop in crops)


def test_the_static_trunk_runs_in_int8_and_computes_what_the_float_one_does(topology, exported, static, crops):
    path, metadata = static
    source = onnx.load(str(exported))
    widen_float16_weights(source)
    trunk = trunk_nodes(source)
    graph = onnx.load(str(path))
    ops = [node.op_type for node in graph.graph.node]
    assert ops.count("QLinearConv") == sum(node.op_type == "Conv" for node in source.graph.node) > 20
    assert "Conv" not in ops and ops.count("QLinearAdd") == sum(n.op_type == "Add" for n in source.graph.node
                                                              if n.name in trunk) > 0
    layers = fully_connected_layers(source)
    assert ops.count("MatMulInteger") == len(layers) - sum(name.startswith(FLOAT_LAYERS) for name in layers) > 0
    assert metadata.quantization.startswith("int8 convolutional trunk (static, 12 calibration crops)")
    assert FaceReconstructor(path, threads=1).metadata == metadata
    before, after = _outputs(exported, crops[:4]), _outputs(path, crops[:4])
    for name in ("expressive_vertices", "neutral_vertices"):
        offsets = np.abs(before[name] - topology.vertices).max()
        error = np.abs(before[name] - after[name]).max()
        assert 0 < error < 0.1 * offsets, (name, error, offsets)


def test_weights_read_back_from_the_static_graph_compute_what_it_does(topology, exported, static, crops):
    from training.export.topology_transfer import model_from_onnx

    float_model, int8_model = model_from_onnx(exported, topology), model_from_onnx(static[0], topology)
    before, after = float_model.state_dict(), int8_model.state_dict()
    kernels = [name for name in before if name.startswith("encoder.trunk.") and before[name].ndim == 4]
    assert len(kernels) > 20
    for name in kernels:  # within half a step of each output channel's symmetric int8 grid
        step = before[name].abs().amax(dim=(1, 2, 3), keepdim=True) / 127
        assert ((after[name] - before[name]).abs() <= step / 2 + 1e-6).all(), name
    images = torch.from_numpy(crops[:4])
    with torch.no_grad():
        read_back, original = int8_model(images), float_model(images)
    graph = _outputs(static[0], crops[:4])
    offsets = np.abs(graph["expressive_vertices"] - topology.vertices).max()
    error = np.abs(read_back.expressive_vertices.numpy() - graph["expressive_vertices"]).max()
    assert error < 0.1 * offsets
    assert (read_back.expressive_vertices - original.expressive_vertices).abs().max() < 0.1 * offsets


def test_the_quantize_command_calibrates_the_trunk_on_prepared_data(exported, synthetic_data, tmp_path, capsys):
    from service.cli import main

    out = tmp_path / "int8.onnx"
    assert main(["quantize", "--model", str(exported), "--out", str(out), "--calibration", str(synthetic_data),
                 "--calibration-crops", "6"]) == 0
    assert "static, 6 calibration crops" in capsys.readouterr().out
    assert sum(node.op_type == "QLinearConv" for node in onnx.load(str(out)).graph.node) > 20
    for bad, message in ((["--calibration", str(tmp_path)], "no prepared shards"),
                         (["--calibration", str(synthetic_data), "--calibration-crops", "0"], "at least 1")):
        assert main(["quantize", "--model", str(exported), "--out", str(tmp_path / "bad.onnx"), *bad]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad.onnx").exists()
