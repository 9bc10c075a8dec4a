"""The real app with the shipped models, and photos to send it."""

from __future__ import annotations

import io
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from model.runtime.detector import DEFAULT_DETECTOR
from model.runtime.reconstructor import DEFAULT_MODEL
from service.app import create_app
from service.settings import ServiceSettings
from tests.conftest import AFLW_DEV, rendered_face

if not (DEFAULT_MODEL.is_file() and DEFAULT_DETECTOR.is_file()):
    pytest.skip("the shipped models are missing from model/weights", allow_module_level=True)


def jpeg_bytes(image: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture
def make_client():
    """Builds a TestClient (lifespan run: models loaded and warmed up) for given settings."""
    clients = []

    def make(**overrides) -> TestClient:
        client = TestClient(create_app(ServiceSettings(**overrides)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(ServiceSettings()), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def photo_jpeg(face_photo) -> bytes:
    return jpeg_bytes(face_photo)


@pytest.fixture
def photo_box(face_photo) -> str:
    """Form value of a face box for face_photo (its 68-landmark box when the real photo is there)."""
    if (AFLW_DEV / "gt.npz").is_file():
        from model.conventions import points_box
        from training.evaluate import load_aflw

        sample = next(s for s in load_aflw(AFLW_DEV) if s.name == "image00050.jpg")
        return ",".join(f"{v:.1f}" for v in points_box(sample.points))
    landmarks = rendered_face()[1]
    return ",".join(f"{v:.1f}" for v in (*landmarks.min(axis=0), *landmarks.max(axis=0)))


@pytest.fixture
def real_photos() -> list[np.ndarray]:
    """Real face photos (AFLW2000-3D dev slice); skips without ../shared."""
    paths = sorted((AFLW_DEV / "images").glob("*.jpg"))[:6] if AFLW_DEV.is_dir() else []
    if not paths:
        pytest.skip(f"real face photos not found under {AFLW_DEV}")
    return [np.asarray(Image.open(path).convert("RGB")) for path in paths]


def wait_until_ready(process: subprocess.Popen, port: int, timeout_s: float = 90.0) -> None:
    """Wait until a ``facerecon serve`` subprocess on loopback ``port`` answers /readyz with 200."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200:
                return
        except OSError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.1)
