import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from training.export.topology_transfer import (  # noqa: E402
    coarse_row_map,
    model_from_onnx,
    transfer_decoders,
    transfer_topology,
)


def test_weights_read_back_from_the_graph_compute_what_the_graph_computes(topology, exported):
    model = model_from_onnx(exported, topology)
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).random((2, 3, model.image_size, model.image_size)).astype(np.float32)
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": images})))
    with torch.no_grad():
        result = model(torch.as_tensor(images))
    for name in ("expressive_vertices", "neutral_vertices", "albedo", "lighting", "rotation"):
        np.testing.assert_allclose(getattr(result, name).numpy(), outputs[name], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(result.landmarks_2d.numpy(), outputs["landmarks_2d"], atol=2e-3)


def test_decoder_rows_become_midpoints_of_the_base_rows(topology, exported):
    """On a coarse vertex the transferred decoder outputs the mean of its edge's two base vertices;
    base vertices (and with them the landmarks) keep exactly their outputs."""
    source = model_from_onnx(exported, topology)
    target = model_from_onnx(exported, topology)
    rows = coarse_row_map(topology, source.config.coarse_level)
    transfer_decoders(source, target, rows)
    images = torch.rand(2, 3, source.image_size, source.image_size)
    with torch.no_grad():
        before, after = source(images), target(images)
        coarse = target.identity_decoder.offsets.mlp(target.encoder(images * 2 - 1).identity)
    np.testing.assert_array_equal(after.landmarks_2d.numpy(), before.landmarks_2d.numpy())
    np.testing.assert_array_equal(after.expressive_vertices[:, :468].numpy(),
                                  before.expressive_vertices[:, :468].numpy())
    coarse = coarse.view(2, -1, 3)
    a, b = topology.edge_parents[0]
    np.testing.assert_allclose(coarse[:, 468].numpy(), (0.5 * (coarse[:, a] + coarse[:, b])).numpy(), atol=1e-6)


def test_transfer_refuses_a_topology_with_other_base_vertices(topology, exported):
    import dataclasses

    moved = dataclasses.replace(topology, vertices=topology.vertices * 1.1)
    with pytest.raises(ValueError, match="base vertices"):
        transfer_topology(exported, topology, moved)


def test_transfer_onto_the_same_topology_rebuilds_the_graph_unchanged(topology, exported, tmp_path):
    from training.export.onnx_export import export_onnx

    model, metadata = transfer_topology(exported, topology, topology)
    out = tmp_path / "again.onnx"
    export_onnx(model, out, trained=metadata.trained, steps=metadata.training_steps,
                landmark_calibration=metadata.landmark_calibration, half_weights=True)
    images = np.random.default_rng(2).random((2, 3, model.image_size, model.image_size)).astype(np.float32)
    runs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": images})
            for p in (exported, out)]
    for before, after in zip(*runs):
        np.testing.assert_allclose(after, before, atol=1e-4)


def test_a_format_1_graph_is_read_back_and_exported_with_the_code_outputs(topology, exported, tmp_path):
    """The shipped files before the code outputs (format 1) carry over: the same weights, the new graph."""
    from model.onnx_contract import OUTPUT_NAMES, RECONSTRUCTION_OUTPUTS
    from tests.model.runtime.test_reconstructor import format_1_graph
    from training.export.onnx_export import export_onnx

    old = tmp_path / "format1.onnx"
    format_1_graph(exported, old)
    model, metadata = transfer_topology(old, topology, topology)
    out = tmp_path / "format2.onnx"
    assert export_onnx(model, out, trained=metadata.trained, steps=metadata.training_steps).format_version == "2"
    images = np.random.default_rng(3).random((2, 3, model.image_size, model.image_size)).astype(np.float32)
    before = ort.InferenceSession(str(old), providers=["CPUExecutionProvider"]).run(None, {"image": images})
    after = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": images})
    assert len(before) == len(RECONSTRUCTION_OUTPUTS) and len(after) == len(OUTPUT_NAMES)
    for name, a, b in zip(RECONSTRUCTION_OUTPUTS, before, after):
        np.testing.assert_allclose(b, a, atol=2e-3 if name.startswith(("landmarks", "vertices_2d")) else 1e-4,
                                   err_msg=name)


def test_a_graph_with_a_colour_summary_is_read_back_with_it(topology, tmp_path):
    """The appearance heads' colour path (EncoderConfig.colour_grid) survives a read-back: the
    rebuilt model has it, with the graph's weights, and computes the graph's albedo and lighting."""
    from model.nn.encoders import EncoderConfig
    from model.nn.face_model import FaceReconstructionModel, ModelConfig
    from training.export.onnx_export import export_onnx

    torch.manual_seed(4)
    model = FaceReconstructionModel(topology, ModelConfig(encoder=EncoderConfig(colour_grid=4))).eval()
    with torch.no_grad():
        model.encoder.colour_summary.mlp[-1].weight.normal_(0.0, 0.1)
        model.encoder.lighting_head[-1].weight.normal_(0.0, 0.05)
        model.albedo_decoder.mlp[-1].weight.normal_(0.0, 0.05)
    path = tmp_path / "coloured.onnx"
    export_onnx(model, path, trained=True, steps=1)
    rebuilt, _ = transfer_topology(path, topology, topology)
    assert rebuilt.config.encoder.colour_grid == 4
    images = torch.rand(2, 3, model.image_size, model.image_size)
    with torch.no_grad():
        before, after = model(images), rebuilt(images)
    for name in ("albedo", "lighting", "expressive_vertices"):
        np.testing.assert_allclose(getattr(after, name).numpy(), getattr(before, name).numpy(), atol=1e-5)


def tailed_model(topology, seed: int):
    """A model with a one-block identity trunk tail whose projection and identity decoder answer
    visibly (their fresh weights are near zero)."""
    from model.nn.encoders import EncoderConfig
    from model.nn.face_model import FaceReconstructionModel, ModelConfig

    torch.manual_seed(seed)
    model = FaceReconstructionModel(topology, ModelConfig(encoder=EncoderConfig(identity_trunk_blocks=1))).eval()
    with torch.no_grad():
        model.identity_decoder.offsets.mlp[-1].weight.normal_(0.0, 0.05)
        model.encoder.identity_trunk.project[1].weight.normal_(0.0, 0.02)
    return model


def test_a_graph_with_an_identity_trunk_tail_is_read_back_with_it(topology, tmp_path):
    """The identity head's own trunk blocks (EncoderConfig.identity_trunk_blocks) survive a read-back:
    the rebuilt model has them, with the graph's weights, and computes the graph's neutral face."""
    from training.export.onnx_export import export_onnx

    model = tailed_model(topology, seed=5)
    path = tmp_path / "tailed.onnx"
    export_onnx(model, path, trained=True, steps=1)
    rebuilt, _ = transfer_topology(path, topology, topology)
    assert rebuilt.config.encoder.identity_trunk_blocks == 1
    images = torch.rand(2, 3, model.image_size, model.image_size)
    with torch.no_grad():
        before, after = model(images), rebuilt(images)
    for name in ("neutral_vertices", "expressive_vertices"):
        np.testing.assert_allclose(getattr(after, name).numpy(), getattr(before, name).numpy(), atol=1e-5)


def test_a_quantized_graph_with_an_identity_trunk_tail_is_read_back(topology, tmp_path):
    """The shipped kind of graph: float16 weights, int8 heads (training.export.quantize), whose
    optimised node order runs the tail's convolutions interleaved with the shared trunk's last block.
    The rebuilt model computes what the graph computes, up to the int8 activations' rounding."""
    from training.export.onnx_export import export_onnx
    from training.export.quantize import quantize_model

    model = tailed_model(topology, seed=6)
    export_onnx(model, tmp_path / "float.onnx", trained=True, steps=1, half_weights=True)
    quantize_model(tmp_path / "float.onnx", tmp_path / "int8.onnx")
    rebuilt, _ = transfer_topology(tmp_path / "int8.onnx", topology, topology)
    images = torch.rand(2, 3, model.image_size, model.image_size)
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    graph_out = dict(zip(names, session.run(None, {session.get_inputs()[0].name: images.numpy()})))
    with torch.no_grad():
        after = rebuilt(images)
    for name, tolerance in (("neutral_vertices", 1e-4), ("expressive_vertices", 1e-4), ("landmarks_2d", 0.02)):
        np.testing.assert_allclose(getattr(after, name).numpy(), graph_out[name], atol=tolerance)  # m, pixels
