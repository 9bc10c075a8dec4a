"""Shared fixtures: the shipped topology, a small exported model, paths to optional data."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FACERECON_SHARED_DATA", REPO.parent / "shared" / "data"))
AFLW_DEV = SHARED_DATA / "eval" / "aflw2000-3d-dev"
GLTF_VALIDATE_SCRIPT = REPO / "tests" / "gltf_validate.mjs"
GLTF_VALIDATOR_PACKAGE = REPO / "node_modules" / "gltf-validator"


@pytest.fixture(scope="session")
def gltf_validator() -> Callable[[Path], dict]:
    """Runs the Khronos glTF validator (npm gltf-validator) on a file; returns its ``issues`` report.
    Skips when node or the package is missing (`make test` installs it when npm exists)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: cannot run the Khronos glTF validator")
    if not GLTF_VALIDATOR_PACKAGE.is_dir():
        pytest.skip("gltf-validator is not installed: run `npm install` at the repository root")

    def validate(path: Path) -> dict:
        result = subprocess.run(["node", str(GLTF_VALIDATE_SCRIPT), str(path)], capture_output=True, text=True,
                                cwd=REPO, timeout=120)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["issues"]

    return validate


@pytest.fixture(scope="session")
def topology():
    from model.topology import FaceTopology

    return FaceTopology.load()


@pytest.fixture(scope="session")
def face_model(topology):
    """A randomly initialised model whose decoders are nudged off zero, so outputs vary per image."""
    torch = pytest.importorskip("torch")
    from model.nn.face_model import FaceReconstructionModel

    torch.manual_seed(0)
    model = FaceReconstructionModel(topology)
    with torch.no_grad():
        for decoder in (model.identity_decoder.offsets, model.expression_decoder.offsets, model.albedo_decoder):
            decoder.mlp[-1].weight.normal_(0.0, 0.02)
    return model.eval()


@pytest.fixture(scope="session")
def onnx_model(face_model, tmp_path_factory) -> Path:
    from training.export.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("weights") / "facerecon.onnx"
    export_onnx(face_model, path, trained=False)
    return path


@functools.lru_cache(maxsize=1)
def rendered_face() -> tuple[np.ndarray, np.ndarray]:
    """A frontal render of the template face (skin, dark eyes and brows, red lips, Lambert
    shading) on a plain background, which the face detector finds: a face photo for machines
    without ../shared. -> image (256, 256, 3) uint8, its 68 landmarks (68, 2) in pixels."""
    torch = pytest.importorskip("torch")
    from model.nn.geometry import euler_to_matrix, ndc_to_screen, pose_transform, vertex_normals
    from model.nn.renderer import render
    from model.topology import REGION_NAMES, FaceTopology

    topology = FaceTopology.load()
    colours = {name: (0.85, 0.66, 0.55) for name in REGION_NAMES}
    colours.update({"eye_left": (0.15, 0.1, 0.1), "eye_right": (0.15, 0.1, 0.1), "brow_left": (0.3, 0.2, 0.15),
                    "brow_right": (0.3, 0.2, 0.15), "upper_lip": (0.7, 0.35, 0.35),
                    "lower_lip": (0.7, 0.35, 0.35), "mouth": (0.3, 0.1, 0.1)})
    palette = torch.tensor([colours[name] for name in REGION_NAMES])
    faces = torch.as_tensor(topology.faces)
    posed = pose_transform(torch.as_tensor(topology.vertices)[None], euler_to_matrix(*torch.zeros(3, 1)),
                           torch.zeros(1, 3), torch.tensor([7.0]))
    shading = 0.3 + 0.7 * vertex_normals(posed, faces)[..., 2:].clamp(min=0.25)
    screen = ndc_to_screen(posed, 256)
    out = render(screen, faces, palette[torch.as_tensor(topology.regions)][None] * shading,
                 torch.as_tensor(topology.regions), 256, 256)
    image = out.image * out.mask + torch.tensor([0.35, 0.45, 0.55]).view(1, 3, 1, 1) * (1 - out.mask)
    landmarks = screen[0, torch.as_tensor(topology.landmarks68), :2].numpy()
    return (image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), landmarks


@pytest.fixture
def face_photo() -> np.ndarray:
    """A real face photo when ../shared is present, else :func:`rendered_face`."""
    from PIL import Image

    path = AFLW_DEV / "images" / "image00050.jpg"
    if path.is_file():
        return np.asarray(Image.open(path).convert("RGB"))
    return rendered_face()[0].copy()
