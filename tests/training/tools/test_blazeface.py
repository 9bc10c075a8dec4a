"""The BlazeFace networks rebuilt from MediaPipe's .tflite files: channel padding changes nothing
but the layout."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mediapipe")
pytest.importorskip("tflite")
torch = pytest.importorskip("torch")

from model.runtime.detector import letterbox  # noqa: E402
from training.tools.blazeface import BlazeFace, _Conv, _Pad  # noqa: E402
from training.tools.detector_convert import verification_images  # noqa: E402


@pytest.mark.parametrize("source", ["short", "full"])
def test_padded_channels_leave_the_outputs_unchanged(source):
    plain, padded = BlazeFace.from_mediapipe(source).eval(), BlazeFace.from_mediapipe(source).eval()
    grown = padded.net.pad_channels(16)
    assert grown > 0
    image = torch.from_numpy(letterbox(verification_images()[0], plain.spec.input_size)[0][None])
    with torch.no_grad():
        expected, got = plain(image), padded(image)
    assert expected[0].max() > 0.8  # the photo has a face, so the comparison covers a real detection
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g.numpy(), e.numpy(), atol=1e-4)


def test_padded_short_range_network_holds_whole_blocks():
    net = BlazeFace.from_mediapipe("short").eval().net
    residual_pads = sum(isinstance(layer, _Pad) for layer in net.layers)
    net.pad_channels(16)
    convs = [layer.conv for layer in net.layers if isinstance(layer, _Conv)]
    # Every convolution but the first (RGB in) reads whole blocks of 16; every one but the four
    # heads (read by reshapes: 2, 6, 32 and 96 true channels) writes whole blocks.
    assert all(c.in_channels % 16 == 0 for c in convs[1:])
    assert sorted(c.out_channels for c in convs if c.out_channels % 16) == [2, 6]
    # 24 -> 28 channels are both held as 32, and so on: 7 of the 11 residual channel paddings vanish.
    assert residual_pads == 11
    assert sum(isinstance(layer, _Pad) and any(layer.pad) for layer in net.layers) == 4
