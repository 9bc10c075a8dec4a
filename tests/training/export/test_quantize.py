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
    fully_connected_layers,
    quantize_model,
    widen_float16_weights,
)


@pytest.fixture(scope="module")
def quantized(exported, tmp_path_factory):
    path = tmp_path_factory.mktemp("quantize") / "int8.onnx"
    return path, quantize_model(exported, path)


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
