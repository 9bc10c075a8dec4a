"""An exported model with non-trivial weights everywhere (folded BatchNorm, decoders, landmark
offsets), shared by the tests of what reads exported graphs back."""

import pytest

torch = pytest.importorskip("torch")


def _batchnorm_stats_nudged(model):
    """Give every BatchNorm non-trivial statistics so the export folds something real."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.8, 1.2, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)


@pytest.fixture(scope="module")
def exported(topology, tmp_path_factory):
    from model.nn.face_model import FaceReconstructionModel
    from training.export.onnx_export import export_onnx

    torch.manual_seed(3)
    model = FaceReconstructionModel(topology)
    _batchnorm_stats_nudged(model)
    with torch.no_grad():
        for decoder in (model.identity_decoder.offsets, model.expression_decoder.offsets, model.albedo_decoder):
            decoder.mlp[-1].weight.normal_(0.0, 0.02)
        model.landmark_offsets.normal_(0.0, 0.001)
    path = tmp_path_factory.mktemp("transfer") / "model.onnx"
    export_onnx(model.eval(), path, trained=True, steps=7, landmark_calibration="test", half_weights=True)
    return path
