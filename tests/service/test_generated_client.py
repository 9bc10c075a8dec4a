"""The app's /openapi.json is complete enough for a well-kept generator (openapi-python-client) to build a
client from it: every operation, and a model for every JSON answer that then reads the real app's answers."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from service.settings import ServiceSettings

pytest.importorskip("openapi_python_client")  # the `test` extra

PACKAGE = "facerecon_generated"


@dataclass
class Generated:
    returncode: int
    output: str
    root: Path  # holds the package PACKAGE

    @property
    def package(self) -> Path:
        return self.root / PACKAGE


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Generated:
    """openapi-python-client run on the app's OpenAPI document (no lifespan needed to build it)."""
    work = tmp_path_factory.mktemp("generated")
    schema = work / "openapi.json"
    schema.write_text(json.dumps(create_app(ServiceSettings()).openapi()))
    config = work / "config.json"
    config.write_text(json.dumps({"package_name_override": PACKAGE, "post_hooks": []}))
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(schema),
               "--config", str(config), "--meta", "none", "--output-path", str(work / PACKAGE)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=work)
    return Generated(result.returncode, result.stdout + result.stderr, work)


def import_models(generated: Generated, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The generated package's ``models`` module (imported afresh)."""
    monkeypatch.syspath_prepend(str(generated.root))
    for name in [name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + ".")]:
        monkeypatch.delitem(sys.modules, name)
    return importlib.import_module(PACKAGE + ".models")


def test_generator_builds_a_client_of_every_operation(generated, client, monkeypatch):
    assert generated.returncode == 0, generated.output
    generated_models = import_models(generated, monkeypatch)
    modules = {path.stem for path in (generated.package / "api").rglob("*.py") if path.stem != "__init__"}
    operations = sum(len(path) for path in create_app(ServiceSettings()).openapi()["paths"].values())
    assert len(modules) == operations, modules
    models = set(generated_models.__all__)
    assert {"InfoJSON", "ReadyJSON", "OutputFormat", "TextureMode", "MeshSpace", "FaceSelection"} <= models
    info = client.get("/v1/info").json()
    assert generated_models.InfoJSON.from_dict(info).to_dict() == info


def test_generated_client_has_the_reconstruction_models(generated, client, photo_jpeg, monkeypatch):
    assert generated.returncode == 0, generated.output
    generated_models = import_models(generated, monkeypatch)
    assert "Could not find reference" not in generated.output, generated.output
    assert {"ReconstructionJSON", "FaceJSON", "BatchJSON", "BatchItemJSON"} <= set(generated_models.__all__)
    api = "\n".join(path.read_text() for path in (generated.package / "api").rglob("*.py"))
    assert "ReconstructionJSON.from_dict" in api and "BatchJSON.from_dict" in api
    files = {"image": ("photo.jpg", photo_jpeg, "image/jpeg")}
    result = client.post("/v1/reconstruct", files=files, data={"format": "json", "include_mesh": "false"}).json()
    parsed = generated_models.ReconstructionJSON.from_dict(result)
    assert parsed.face_count == result["face_count"]
    assert parsed.to_dict()["faces"][0]["box"] == result["faces"][0]["box"]
    batch = client.post("/v1/reconstruct/batch", files={"images": files["image"]}, data={"format": "json"}).json()
    assert generated_models.BatchJSON.from_dict(batch).to_dict()["succeeded"] == batch["succeeded"]


def test_generator_has_no_warnings(generated):
    assert generated.returncode == 0, generated.output
    assert "WARNING" not in generated.output and "Warning(s)" not in generated.output, generated.output
