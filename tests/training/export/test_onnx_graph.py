import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import torch.nn.functional as F  # noqa: E402

from training.export.onnx_graph import fold_pads_into_convs  # noqa: E402


class _Padded(torch.nn.Module):
    """TensorFlow-style layers: an asymmetric SAME pad before a stride-2 conv, a symmetric one before a
    depthwise conv that pads a little itself, a channel pad before a residual add, and a pad that two
    layers read."""

    def __init__(self) -> None:
        super().__init__()
        self.down = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.wide = torch.nn.Conv2d(8, 16, 1)
        self.shared = torch.nn.Conv2d(16, 16, 3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.down(F.pad(image, (0, 1, 0, 1))))
        x = torch.relu(self.depthwise(F.pad(x, (1, 1, 1, 1))))
        x = self.wide(x) + F.pad(x, (0, 0, 0, 0, 0, 8))  # channels 8 -> 16: not a spatial pad
        shared = F.pad(x, (1, 1, 1, 1))
        return self.shared(shared) + shared[..., 1:-1, 1:-1]  # the pad has two readers


def test_spatial_zero_pads_fold_into_their_convolutions_with_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    model = _Padded().eval()
    path = tmp_path / "padded.onnx"
    image = torch.rand(1, 3, 33, 33)
    torch.onnx.export(model, (image,), str(path), input_names=["image"], output_names=["out"],
                      dynamic_axes={"image": {0: "batch"}, "out": {0: "batch"}}, opset_version=17, dynamo=False)
    graph = onnx.load(str(path))
    before = sum(node.op_type == "Pad" for node in graph.graph.node)

    assert fold_pads_into_convs(graph) == 2
    assert sum(node.op_type == "Pad" for node in graph.graph.node) == before - 2 == 2
    pads = sorted(tuple(a.ints) for node in graph.graph.node if node.op_type == "Conv"
                  for a in node.attribute if a.name == "pads")
    assert (0, 0, 1, 1) in pads and (2, 2, 2, 2) in pads  # the stride-2 conv's, the depthwise conv's 1 + 1
    onnx.checker.check_model(graph)

    batch = np.random.default_rng(0).random((2, 3, 33, 33), dtype=np.float32)
    folded = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(folded.run(None, {"image": batch})[0], plain.run(None, {"image": batch})[0])
