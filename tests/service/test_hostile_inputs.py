"""Hostile and careless requests against the real app (issue 16): boxes that are malformed or far
outside the photo, form fields that are unknown or sent twice, faces beyond max_faces, requests
whose memory does not fit, and a server that must write no file while it serves.

Each case checks the status, the problem type and that the app is still ready afterwards; the
memory cases check the test process's peak RSS around the request (the app runs in it)."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import ServiceSettings
from tests.conftest import REPO, rendered_face
from tests.service.conftest import jpeg_bytes, wait_until_ready

PROBLEM = "application/problem+json"
MIB = 1 << 20
BIG = 6324  # pixels a side: 40 M pixels, just under the default limit


# --- helpers --------------------------------------------------------------------------------------


def _photo(faces: int = 1) -> np.ndarray:
    """A 640x480 photo holding ``faces`` rendered faces side by side (256 px each)."""
    canvas = np.full((480, 640 if faces < 3 else 256 * faces, 3), 200, np.uint8)
    for index in range(faces):
        canvas[112:368, 256 * index + (64 if faces == 1 else 0):][:, :256] = rendered_face()[0]
    return canvas


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _big_png(side: int = BIG, sixteen_bit: bool = False) -> bytes:
    """A side x side PNG: the rendered face scaled up 12x (nearest, so it compresses) on a plain ground."""
    face = rendered_face()[0]
    scaled = Image.fromarray(face).resize((256 * 12 * side // BIG,) * 2, Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (side, side), tuple(int(v) for v in face[0, 0]))
    canvas.paste(scaled, ((side - scaled.width) // 2, (side - scaled.height) // 2))
    if sixteen_bit:
        return _png(Image.fromarray(np.asarray(canvas.convert("L")).astype(np.uint16) * 257))
    return _png(canvas)


def _post(client: TestClient, path: str = "/v1/reconstruct", files: list | None = None,
          data: dict | None = None):
    return client.post(path, files=files if files is not None else [("image", ("p.jpg", jpeg_bytes(_photo()),
                                                                                "image/jpeg"))],
                       data=data or {})


def _assert_problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"urn:facerecon:problem:{slug}" and body["status"] == status
    return body


def _assert_field_named(body: dict, field: str) -> None:
    assert [error["loc"] for error in body["errors"]] == [["body", field]], body
    assert body["detail"].startswith(f"{field}: "), body["detail"]


def _assert_ready(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200


def _rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError(f"no {field} in /proc/self/status")


def _peak_rss_above(call: Callable[[], object]) -> tuple[object, float]:
    """(call's result, the process's peak RSS during it above its RSS before, MiB): the kernel's
    peak (reset through /proc/self/clear_refs), else a 2 ms sampler."""
    base = _rss_mib()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        peak, done = [base], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mib())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = call()
        finally:
            done.set()
            sampler.join()
        return result, peak[0] - base
    result = call()
    return result, _rss_mib("VmHWM") - base


pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")


@pytest.fixture(scope="module")
def tight() -> Iterator[TestClient]:
    """The app with two faces per image at most and a 256 MiB memory budget."""
    with TestClient(create_app(ServiceSettings(max_faces=2, memory_budget_mb=256)),
                    raise_server_exceptions=False) as client:
        yield client


# --- boxes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("box", [
    "1..2,3,400,400", ".", "1" * 400 + ",1,2,3", "-inf,0,10,10", "nan,0,10,10", "1,2,3", "1,2,3,4,5",
    "0,0,1e300,1e300",  # finite, far beyond the photo
    "0,0,1e7,1e7",
    "0,0,10000,10000",  # once 11.5 s and +3 GB
    "10,10,10.000001,10.000001",  # once answered 200 with nonsense
    "0,0,7.9,100",  # under 8 pixels wide
    "0,0,400,90",  # more than 4 times as wide as high
    "-5000,-5000,-4000,-4000",
    "700,10,800,90",  # outside the 640x480 photo
])
def test_malformed_or_unbounded_boxes_are_invalid_options_naming_box(client, box):
    response, peak = _peak_rss_above(lambda: _post(client, data={"box": box}))
    _assert_field_named(_assert_problem(response, 422, "invalid-options"), "box")
    assert peak < 64, f"+{peak:.0f} MiB"
    _assert_ready(client)


def test_the_widest_box_the_rule_allows_is_cheap(client):
    """A box as far out as the rule allows: the crop's square is 4.9 times the photo's side, built
    from a strip and bands, not from the photo padded by thousands of pixels."""
    started = time.perf_counter()
    response, peak = _peak_rss_above(lambda: _post(client, data={"box": "-640,-480,1280,960", "format": "json"}))
    assert response.status_code == 200, response.text
    assert response.json()["faces"][0]["box"] == [-640, -480, 1280, 960]
    assert peak < 64, f"+{peak:.0f} MiB"
    assert time.perf_counter() - started < 5
    _assert_ready(client)


# --- form fields --------------------------------------------------------------------------------------


def _photo_file(field: str = "image") -> tuple[str, tuple[str, bytes, str]]:
    return field, ("p.jpg", jpeg_bytes(_photo()), "image/jpeg")


@pytest.mark.parametrize(("path", "files", "data", "field"), [
    ("/v1/reconstruct", [_photo_file()], {"fromat": "obj"}, "fromat"),  # once: the default GLB, silently
    ("/v1/reconstruct", [_photo_file()], {"format": ["obj", "glb"]}, "format"),  # once: the last won
    ("/v1/reconstruct", [_photo_file(), _photo_file()], {}, "image"),
    ("/reconstruct", [_photo_file()], {"box": ["0,0,100,100", "10,10,90,90"]}, "box"),
    ("/v1/reconstruct", [_photo_file(), _photo_file("images")], {}, "images"),
    ("/v1/reconstruct/batch", [_photo_file("images")], {"box": "0,0,100,100"}, "box"),  # a batch takes no box
    ("/v1/reconstruct/batch", [_photo_file("images"), _photo_file()], {}, "image"),
    ("/v1/reconstruct/batch", [_photo_file("images")], {"faces": ["all", "all"]}, "faces"),
    ("/v1/transfer", [_photo_file("identity"), _photo_file("expression")], {"box": "0,0,100,100"}, "box"),
    ("/v1/transfer", [_photo_file("identity"), _photo_file("expression")], {"faces": "all"}, "faces"),
    ("/v1/transfer", [_photo_file("identity"), _photo_file("identity"), _photo_file("expression")], {}, "identity"),
    ("/v1/transfer", [_photo_file("identity")], {"expression_code": ["[0]", "[1]"]}, "expression_code"),
    ("/v1/transfer", [_photo_file("identity"), _photo_file("expression")], {"pose": ["identity"] * 2}, "pose"),
    ("/v1/transfer", [_photo_file("image"), _photo_file("expression")], {}, "image"),
    ("/v1/reconstruct/person", [_photo_file("images")] * 2, {"box": "0,0,100,100"}, "box"),
    ("/v1/reconstruct/person", [_photo_file("images")] * 2, {"faces": "all"}, "faces"),
    ("/v1/reconstruct/person", [_photo_file("images")] * 2, {"space": ["neutral"] * 2}, "space"),
    ("/v1/reconstruct/person", [_photo_file("images")] * 2 + [_photo_file()], {}, "image"),
])
def test_unknown_or_repeated_form_fields_are_invalid_options_naming_them(client, path, files, data, field):
    _assert_field_named(_assert_problem(_post(client, path, files, data), 422, "invalid-options"), field)
    _assert_ready(client)


def test_a_batch_repeats_images_by_design(client):
    response = _post(client, "/v1/reconstruct/batch", [_photo_file("images")] * 3, {"format": "json"})
    assert response.status_code == 200, response.text
    assert response.json()["succeeded"] == 3


# --- faces beyond max_faces ---------------------------------------------------------------------------


def test_faces_beyond_max_faces_are_reported(tight):
    three = [("image", ("three.jpg", jpeg_bytes(_photo(faces=3)), "image/jpeg"))]
    glb = _post(tight, files=three, data={"faces": "all"})
    assert glb.status_code == 200, glb.text
    assert glb.headers["x-face-count"] == "2" and glb.headers["x-faces-dropped"] == "1"
    body = _post(tight, files=three, data={"faces": "all", "format": "json"}).json()
    assert body["face_count"] == 2 and len(body["faces"]) == 2 and body["faces_dropped"] == 1
    largest = _post(tight, files=three)
    assert largest.headers["x-face-count"] == "1" and "x-faces-dropped" not in largest.headers
    batch = _post(tight, "/v1/reconstruct/batch", [("images", three[0][1])], {"faces": "all", "format": "json"})
    (item,) = batch.json()["items"]
    assert item["faces_dropped"] == 1 and item["result"]["faces_dropped"] == 1


# --- the memory budget --------------------------------------------------------------------------------


def test_a_request_that_can_never_fit_is_image_too_large(tight):
    """A 0.6 MB PNG of 40 M pixels needs about 350 MiB once decoded: over a 256 MiB budget it is
    refused from its header, before anything is decoded; so is a batch of them."""
    big = _big_png()
    started = time.perf_counter()
    response, peak = _peak_rss_above(lambda: _post(tight, files=[("image", ("big.png", big, "image/png"))]))
    body = _assert_problem(response, 413, "image-too-large")
    assert "MiB" in body["detail"] and "256 MiB" in body["detail"]
    assert time.perf_counter() - started < 2 and peak < 64, f"+{peak:.0f} MiB"
    batch = _post(tight, "/v1/reconstruct/batch", [("images", ("big.png", big, "image/png"))] * 16)
    _assert_problem(batch, 413, "image-too-large")
    # the routes that work on several photos at once hold them all: two of those never fit either
    pair = [("identity", ("big.png", big, "image/png")), ("expression", ("big.png", big, "image/png"))]
    _assert_problem(_post(tight, "/v1/transfer", pair), 413, "image-too-large")
    _assert_problem(_post(tight, "/v1/reconstruct/person", [("images", ("big.png", big, "image/png"))] * 2), 413,
                    "image-too-large")
    _assert_ready(tight)


def test_a_batch_works_on_fewer_images_at_once_when_its_share_would_not_fit(tight):
    from model.runtime.image_io import ImageHeader

    engine = tight.app.state.engine
    small, large = ImageHeader("PNG", 1000, 1000, "RGB"), ImageHeader("PNG", 3000, 3000, "RGB")
    assert engine.batch_plan([small] * 16, MIB, faces="largest")[0] == 4
    parallel, cost = engine.batch_plan([large] * 16, MIB, faces="largest")
    assert parallel == 2 and cost <= engine.budget.capacity < engine.request_cost([large] * 16, MIB,
                                                                                 faces="largest", parallel=3)


def test_a_request_that_does_not_fit_now_is_overloaded_with_retry_after(tight):
    engine = tight.app.state.engine
    engine.budget.used = engine.budget.capacity - MIB  # as if requests in flight held all but 1 MiB
    try:
        response = _post(tight)
        _assert_problem(response, 503, "overloaded")
        assert int(response.headers["retry-after"]) >= 1
        for path, files in (("/v1/transfer", [_photo_file("identity"), _photo_file("expression")]),
                            ("/v1/reconstruct/person", [_photo_file("images")] * 2)):
            _assert_problem(_post(tight, path, files), 503, "overloaded")
    finally:
        engine.budget.used = 0
    assert _post(tight).status_code == 200  # fits once the others are done
    assert engine.budget.used == 0  # every reservation is given back, also after errors
    _assert_problem(_post(tight, data={"box": "0,0,1,1"}), 422, "invalid-options")
    assert engine.budget.used == 0
    _assert_ready(tight)


@pytest.mark.parametrize("sixteen_bit", [False, True], ids=["8-bit", "16-bit"])
def test_a_40_megapixel_png_stays_within_its_reservation(client, sixteen_bit):
    """Once +543 MB (8-bit) and +820 MB (16-bit) at the peak for this 0.5 MB upload; now Pillow's
    decoded image and the RGB array (7 bytes a pixel, 5 for 16-bit), within what was reserved."""
    big = _big_png(sixteen_bit=sixteen_bit)
    engine = client.app.state.engine
    (header,) = engine.read_headers([big])
    reserved = engine.request_cost([header], len(big), faces="largest") / MIB
    response, peak = _peak_rss_above(lambda: _post(client, files=[("image", ("big.png", big, "image/png"))]))
    assert response.status_code == 200, response.text
    assert peak < min(reserved, 400), f"+{peak:.0f} MiB (reserved {reserved:.0f} MiB)"
    _assert_ready(client)


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_a_40_megapixel_jpeg_is_decoded_reduced_within_its_smaller_reservation(client, progressive):
    """A JPEG of the PNG's 40 M pixels is decoded at a quarter (its longer side keeps 1,581 pixels):
    a baseline one is reserved a small part of what a whole decode takes, a progressive one keeps
    its coefficients (2 bytes per component); both peak within their reservations."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(_big_png())).save(buffer, "JPEG", quality=90, progressive=progressive)
    big = buffer.getvalue()
    engine = client.app.state.engine
    (header,) = engine.read_headers([big])
    assert header.reduction_for(8, 1024) == 4
    reserved = engine.request_cost([header], len(big), faces="largest") / MIB
    whole = engine.request_cost([header], len(big), faces="largest", box=True) / MIB  # counted whole
    assert reserved < (0.75 if progressive else 0.2) * whole
    response, peak = _peak_rss_above(lambda: _post(client, files=[("image", ("big.jpg", big, "image/jpeg"))]))
    assert response.status_code == 200, response.text
    assert peak < reserved, f"+{peak:.0f} MiB (reserved {reserved:.0f} MiB)"
    _assert_ready(client)


def test_a_batch_of_large_pngs_stays_within_its_reservation(client):
    """16 PNGs of 2.6 M pixels: decoded a few at a time and encoded as each finishes, so the batch
    never holds all 16 (it once held every decoded image until the end)."""
    png = _big_png(side=1600)
    engine = client.app.state.engine
    headers = engine.read_headers([png] * 16)
    parallel, reserved_bytes = engine.batch_plan(headers, 16 * len(png), faces="largest")
    reserved = reserved_bytes / MIB
    assert parallel == engine.settings.batch_parallelism == 4
    response, peak = _peak_rss_above(
        lambda: _post(client, "/v1/reconstruct/batch", [("images", ("p.png", png, "image/png"))] * 16))
    assert response.status_code == 200, response.text
    assert peak < reserved, f"+{peak:.0f} MiB (reserved {reserved:.0f} MiB)"
    assert peak < 16 * 1600 * 1600 * 7 / MIB / 2  # under half of all 16 decoded at once
    _assert_ready(client)


# --- nothing written ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tree(root: Path, skip: tuple[str, ...] = ()) -> set[str]:
    """Every path under root (not following links), but under the top-level names in skip."""
    listing: set[str] = set()
    for folder, dirs, files in os.walk(root):
        if Path(folder) == root:
            dirs[:] = [d for d in dirs if d not in skip]
        listing.update(os.path.join(folder, name) for name in dirs + files)
    return listing


def test_serving_writes_no_file(tmp_path):
    """`facerecon serve` started, serving and stopped writes nothing: not ONNX Runtime's telemetry
    store and device id (~/.cache/Microsoft/DeveloperTools/.onnxruntime) nor its .ses file in the
    temporary folder, no other temporary file, no new file in the checkout or in /tmp. The server gets its own empty
    HOME, TMPDIR and working folder and, as in the images, PYTHONDONTWRITEBYTECODE;
    ORT_DISABLE_TELEMETRY is taken out of its environment: the service must switch telemetry off itself."""
    home, temp, work = (tmp_path / name for name in ("home", "tmp", "work"))
    for folder in (home, temp, work):
        folder.mkdir()
    port = _free_port()
    env = {key: value for key, value in os.environ.items()
           if key not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")}
    env.update(HOME=str(home), TMPDIR=str(temp), PYTHONDONTWRITEBYTECODE="1", FACERECON_PORT=str(port),
               FACERECON_LOG_LEVEL="warning", PYTHONPATH=str(REPO))
    checkout_before = _tree(REPO, skip=(".git", ".venv", "node_modules"))
    tmp_before = set(os.listdir("/tmp"))
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_ready(server, port, 60)
        body = (b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n"
                b"Content-Type: image/jpeg\r\n\r\n" + jpeg_bytes(_photo()) + b"\r\n--b--\r\n")
        part = body[: -len(b"--b--\r\n")]  # the photo's part, without the closing boundary
        bodies = {"/v1/reconstruct": body,
                  "/v1/reconstruct/batch": body.replace(b'name="image"', b'name="images"'),
                  "/v1/transfer": (part.replace(b'name="image"', b'name="identity"')
                                   + part.replace(b'name="image"', b'name="expression"') + b"--b--\r\n"),
                  "/v1/reconstruct/person": part.replace(b'name="image"', b'name="images"') * 2 + b"--b--\r\n"}
        for path, data in bodies.items():
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                             headers={"Content-Type": "multipart/form-data; boundary=b"})
            assert urllib.request.urlopen(request, timeout=60).status == 200, path
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    written = {str(folder): sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
               for folder in (home, temp, work)}
    assert written == {str(home): [], str(temp): [], str(work): []}
    created = sorted(path for path in _tree(REPO, skip=(".git", ".venv", "node_modules")) - checkout_before
                     if "__pycache__" not in path and ".pytest_cache" not in path)
    assert created == []
    assert sorted(set(os.listdir("/tmp")) - tmp_before) == []
