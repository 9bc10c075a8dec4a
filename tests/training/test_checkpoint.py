import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from model.nn.face_model import FaceReconstructionModel  # noqa: E402
from model.onnx_contract import ModelMetadata  # noqa: E402
from service.cli import main  # noqa: E402
from training.checkpoint import load_checkpoint, save_checkpoint, store_landmark_calibration  # noqa: E402
from training.export.landmark_calibration import read_offsets  # noqa: E402


def _model_with_offsets(topology) -> tuple[FaceReconstructionModel, np.ndarray]:
    torch.manual_seed(0)
    model = FaceReconstructionModel(topology).eval()
    offsets = np.random.default_rng(0).normal(0.0, 0.01, (68, 3)).astype(np.float32)
    model.landmark_offsets.copy_(torch.from_numpy(offsets))
    return model, offsets


def _calibration(path) -> str:
    return ModelMetadata.from_properties({p.key: p.value for p in onnx.load(str(path)).metadata_props}
                                         ).landmark_calibration


def test_a_checkpoint_with_offsets_exports_them_as_the_graph_initializer(topology, tmp_path):
    model, offsets = _model_with_offsets(topology)
    checkpoint = tmp_path / "last.pt"
    save_checkpoint(checkpoint, model, steps=12, landmark_calibration="a test set")
    loaded, _ = load_checkpoint(checkpoint, topology)
    np.testing.assert_array_equal(loaded.landmark_offsets.numpy(), offsets)
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    np.testing.assert_array_equal(read_offsets(out), offsets)
    assert _calibration(out) == "a test set"


def test_a_checkpoint_from_before_the_offsets_were_saved_loads_with_zero_offsets(topology, tmp_path):
    model, _ = _model_with_offsets(topology)
    checkpoint = tmp_path / "old.pt"
    save_checkpoint(checkpoint, model, steps=5)
    data = torch.load(checkpoint, weights_only=True)
    del data["state_dict"]["landmark_offsets"], data["landmark_calibration"]
    torch.save(data, checkpoint)
    loaded, _ = load_checkpoint(checkpoint, topology)
    assert torch.equal(loaded.landmark_offsets, torch.zeros(68, 3))
    weights = model.state_dict()
    for name, value in loaded.state_dict().items():
        if name != "landmark_offsets":
            assert torch.equal(value, weights[name]), name
    out = tmp_path / "old.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    np.testing.assert_array_equal(read_offsets(out), np.zeros((68, 3)))
    assert _calibration(out) == "none"


def test_storing_a_calibration_checks_it_is_the_models_checkpoint(topology, tmp_path):
    model, _ = _model_with_offsets(topology)
    checkpoint = tmp_path / "last.pt"
    save_checkpoint(checkpoint, model, steps=12, extra={"optimiser": {"state": {}}})
    offsets = np.full((68, 3), 0.005)
    with pytest.raises(ValueError, match="12 training steps .* after 13 steps .* not its checkpoint"):
        store_landmark_calibration(checkpoint, offsets, "set", topology_version=topology.version, steps=13)
    store_landmark_calibration(checkpoint, offsets, "set", topology_version=topology.version, steps=12)
    data = torch.load(checkpoint, weights_only=True)
    assert data["landmark_calibration"] == "set" and data["optimiser"] == {"state": {}}
    np.testing.assert_array_equal(data["state_dict"]["landmark_offsets"].numpy(), offsets.astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_checkpoint_without_an_identity_trunk_tail_seeds_it_from_the_shared_trunk(topology):
    """A model gaining EncoderConfig.identity_trunk_blocks from an earlier checkpoint answers exactly as
    that checkpoint's model until it trains; a checkpoint that has the tail keeps its own."""
    from model.nn.encoders import EncoderConfig
    from model.nn.face_model import ModelConfig
    from training.checkpoint import load_model_state

    model, _ = _model_with_offsets(topology)
    tailed = FaceReconstructionModel(topology, ModelConfig(encoder=EncoderConfig(identity_trunk_blocks=1))).eval()
    load_model_state(tailed, model.state_dict())
    images = torch.rand(2, 3, model.image_size, model.image_size)
    with torch.no_grad():
        torch.testing.assert_close(tailed(images).neutral_vertices, model(images).neutral_vertices)
        tailed.encoder.identity_trunk.project[1].bias.add_(0.5)
    own = tailed.state_dict()
    again = FaceReconstructionModel(topology, ModelConfig(encoder=EncoderConfig(identity_trunk_blocks=1))).eval()
    load_model_state(again, own)
    for name, value in again.state_dict().items():
        assert torch.equal(value, own[name]), name
