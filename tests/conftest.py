"""Shared fixtures: the shipped topology, a small exported model, paths to optional data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

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
    from model.face_model import FaceReconstructionModel

    torch.manual_seed(0)
    model = FaceReconstructionModel(topology)
    with torch.no_grad():
        for decoder in (model.identity_decoder.offsets, model.expression_decoder.offsets, model.albedo_decoder):
            decoder.mlp[-1].weight.normal_(0.0, 0.02)
    return model.eval()


@pytest.fixture(scope="session")
def onnx_model(face_model, tmp_path_factory) -> Path:
    from training.export_onnx import export_onnx

    path = tmp_path_factory.mktemp("weights") / "facerecon.onnx"
    export_onnx(face_model, path, trained=False)
    return path


@pytest.fixture
def face_photo() -> np.ndarray:
    """A real face photo when ../shared is present, else a synthetic face-like picture."""
    from PIL import Image

    path = AFLW_DEV / "images" / "image00050.jpg"
    if path.is_file():
        return np.asarray(Image.open(path).convert("RGB"))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:200]
    face = ((xx - 100) / 70.0) ** 2 + ((yy - 120) / 95.0) ** 2 < 1
    image = np.where(face[..., None], np.array([205, 160, 135]), np.array([60, 90, 120])).astype(np.float32)
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
