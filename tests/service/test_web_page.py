"""The web page end to end in a real headless Chromium: the real app on a free port, a real face
photo through the file input, the mesh drawn (over the photo and on its own), and an error
message for a file that is no image.

Needs Debian's `chromium` (`make test` installs it where apt-get can) and the `playwright`
package, which drives that Chromium; skips without either. The page is rendered by SwiftShader
(software WebGL), so the test needs no GPU.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import ServiceSettings
from service.web import STATIC_DIR
from tests.conftest import SHARED_DATA

SCREENSHOT = Path("/tmp/facerecon_page.png")  # for a person to look at
SCREENS = Path(os.environ.get("FACERECON_SCREENSHOTS", "/tmp/facerecon_screens"))  # the transfer and person modes
BACKGROUND = np.array([29, 35, 42])  # the 3D view's clear colour (viewer.js BACKGROUND)
WIRE = np.array([115, 242, 217])  # the wireframe colour (viewer.js WIRE_COLOUR)
BROWSER_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
SETTLED = "['ready', 'error'].includes(document.body.dataset.state)"
TIMEOUT_MS = 120_000  # a reconstruction on a busy 2-core CPU
LFW = SHARED_DATA / "train" / "lfw"


def test_page_and_its_modules_are_served_outside_the_api_schema():
    client = TestClient(create_app(ServiceSettings()))  # no lifespan: the page needs no model
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = set(re.findall(r'(?:src|href)="/static/([^"]+)"', page.text))
    for module in STATIC_DIR.glob("*.js"):
        assets |= set(re.findall(r'from "\./([^"]+)"', module.read_text()))
    assert {"app.js", "style.css", "viewer.js"} <= assets
    for name in assets:
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name
        if name.endswith(".js"):  # browsers run ES modules only with a JavaScript media type
            assert "javascript" in response.headers["content-type"], name
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(path.startswith("/static") for path in paths)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed (`make test` installs Debian's chromium where apt-get can)")
    return path


@pytest.fixture(scope="module")
def browser(chromium):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (test extra) is missing")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server_url():
    """The real app with the shipped models, served by uvicorn in a thread on a free port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(ServiceSettings()), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5):
                break
        except OSError as err:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the service did not become ready") from err
            time.sleep(0.5)
    yield url
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest.fixture
def face_photo_file(face_photo, tmp_path) -> Path:
    path = tmp_path / "face.jpg"
    Image.fromarray(face_photo).save(path, quality=92)
    return path


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def near(image: np.ndarray, colour: np.ndarray, tolerance: int) -> np.ndarray:
    return np.abs(image - colour).max(axis=2) <= tolerance


def photo_box_on_canvas(box: str, photo_size: tuple[int, int], canvas_size: tuple[int, int]) -> np.ndarray:
    """A photo pixel box -> canvas pixels, the photo fitted as the overlay's camera fits it
    (centred, 2% margin)."""
    (width, height), (canvas_w, canvas_h) = photo_size, canvas_size
    zoom = min(canvas_w / width, canvas_h / height) / 1.02
    x1, y1, x2, y2 = (float(v) for v in box.split(","))
    return np.array([canvas_w / 2 + (x1 - width / 2) * zoom, canvas_h / 2 + (y1 - height / 2) * zoom,
                     canvas_w / 2 + (x2 - width / 2) * zoom, canvas_h / 2 + (y2 - height / 2) * zoom])


def test_page_shows_the_mesh_on_the_photo_and_api_errors(browser, server_url, face_photo_file, photo_box, tmp_path):
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(server_url + "/")
    assert "facerecon" in page.title()
    assert page.evaluate("document.body.dataset.state") == "idle", page.inner_text("#message")

    page.set_input_files("#photo-input", str(face_photo_file))
    page.wait_for_function(SETTLED, timeout=TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#message")
    assert page.inner_text("#status").startswith("1 face")
    assert page.is_enabled("button[data-format=glb]")
    page.wait_for_timeout(300)  # the photo texture and the next frame

    shaded = pixels(page.locator("#view").screenshot())  # on the photo, shaded
    page.screenshot(path=str(tmp_path / "page.png"))
    page.screenshot(path=str(SCREENSHOT))

    # The wireframe over the photo covers the face: its wire pixels span about the face's box
    page.check("input[name=mode][value=wireframe]")
    page.wait_for_timeout(300)
    wire = near(pixels(page.locator("#view").screenshot()), WIRE, 40)
    assert wire.sum() > 2000, "no wireframe over the photo"
    ys, xs = np.nonzero(wire)
    with Image.open(face_photo_file) as photo:
        box = photo_box_on_canvas(photo_box, photo.size, (shaded.shape[1], shaded.shape[0]))
    box_centre = (box[:2] + box[2:]) / 2
    assert xs.min() < box_centre[0] < xs.max() and ys.min() < box_centre[1] < ys.max()
    assert 0.8 < (xs.max() - xs.min()) / (box[2] - box[0]) < 1.4, "the mesh is not the face's width"
    assert abs(np.median(xs) - box_centre[0]) < 0.15 * (box[2] - box[0]), "the mesh is off the face"

    # Without the photo, the mesh alone is drawn: plenty of shaded, varied pixels
    page.check("input[name=mode][value=shaded]")
    page.uncheck("#overlay")
    page.wait_for_timeout(300)
    alone = pixels(page.locator("#view").screenshot())
    drawn = alone[~near(alone, BACKGROUND, 12)]
    assert len(drawn) > 0.05 * alone.shape[0] * alone.shape[1], "the 3D view is blank"
    assert drawn.std(axis=0).max() > 8, "the mesh has no shading"
    assert near(shaded, BACKGROUND, 12).mean() < near(alone, BACKGROUND, 12).mean(), "the photo backdrop is missing"

    # A file that is no image: the API's problem, readable on the page
    page.set_input_files("#photo-input", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                 "buffer": b"these are notes, not a photo"}])
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=TIMEOUT_MS)
    assert page.is_visible("#message")
    message = page.inner_text("#message")
    assert "Unsupported media type" in message and "JPEG" in message
    assert page_errors == []
    page.close()


def test_api_docs_render_without_the_internet(browser, server_url):
    """/docs (Swagger UI) and /redoc (ReDoc) load every script, style sheet and icon from this server (the
    files of an installed package), under a Content-Security-Policy that lets scripts come from it alone."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    elsewhere: list[str] = []

    def only_this_server(route):
        if route.request.url.startswith(server_url):
            route.continue_()
        else:  # no network beyond the server: a CDN request fails, and is recorded
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", only_this_server)
    page = context.new_page()
    console: list[str] = []
    page_errors: list[str] = []
    page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page_errors.append(str(error)))

    response = page.goto(server_url + "/docs")
    assert response is not None and response.ok
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "https:" not in csp and "'unsafe-eval'" not in csp
    # (waits by selectors: the page's policy refuses the eval that wait_for_function would need)
    page.get_by_text("/v1/reconstruct/batch").first.wait_for(timeout=60_000)
    text = page.inner_text("body")
    assert "/v1/reconstruct" in text and "/v1/info" in text and "Reconstruct the faces of a photo" in text

    response = page.goto(server_url + "/redoc")
    assert response is not None and response.ok
    page.locator("h2", has_text="Reconstruct several photos in one request").first.wait_for(timeout=60_000)
    assert "/v1/reconstruct" in page.inner_text("body")

    assert elsewhere == [], "the docs pages fetched from elsewhere"
    assert page_errors == []
    # ReDoc always shows Redocly's logo from its CDN in the menu, and hides it when it does not load: the
    # policy blocks that image; nothing else may be refused
    refused = [line for line in console if "Content Security Policy" in line and "cdn.redoc.ly/redoc/logo" not in line]
    assert refused == [], refused
    context.close()


def _lfw(*names: str) -> list[Path]:
    paths = [LFW / name.rsplit("_", 1)[0] / f"{name}.jpg" for name in names]
    if not all(path.is_file() for path in paths):
        pytest.skip(f"LFW photos not found under {LFW}")
    return paths


def _shot(page, name: str) -> np.ndarray:
    """The 3D view now (after a frame); the whole page saved as SCREENS/name.png for a person to look at."""
    page.wait_for_timeout(400)
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)
    return pixels(page.locator("#view").screenshot())


def test_page_transfers_an_expression_and_fuses_several_photos(browser, server_url, tmp_path):
    identity, expression, second = _lfw("Colin_Powell_0001", "Tom_Jones_0001", "Colin_Powell_0002")
    wall = tmp_path / "wall.png"
    Image.fromarray(np.full((160, 160, 3), 120, np.uint8)).save(wall)
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(server_url + "/")

    # transfer: the face photo first (nothing to show yet), then the expression photo
    page.check("input[name=task][value=transfer]")
    assert page.is_visible("#expression-zone") and not page.is_visible("#person-zone")
    page.set_input_files("#photo-input", str(identity))
    assert page.evaluate("document.body.dataset.state") == "idle"
    page.set_input_files("#expression-input", str(expression))
    page.wait_for_function(SETTLED, timeout=TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#message")
    assert "Tom_Jones_0001.jpg's expression on Colin_Powell_0001.jpg's face" in page.inner_text("#status")
    page.check("input[name=mode][value=textured]")
    on_photo = _shot(page, "transfer_textured_on_photo")
    page.check("input[name=space][value=canonical]")
    page.wait_for_function(SETTLED, timeout=TIMEOUT_MS)
    expressive = _shot(page, "transfer_expressive")
    page.check("input[name=mode][value=albedo]")
    albedo = _shot(page, "transfer_expressive_albedo")
    page.check("input[name=space][value=neutral]")
    page.wait_for_function(SETTLED, timeout=TIMEOUT_MS)
    neutral = _shot(page, "transfer_neutral_albedo")
    for view in (on_photo, expressive, albedo, neutral):
        assert (~near(view, BACKGROUND, 12)).mean() > 0.05, "the 3D view is blank"
    assert np.abs(albedo - expressive).mean() > 2, "the albedo view looks like the textured one"
    # the open mouth: the expressive face differs from the neutral one (same camera, same look)
    assert np.abs(albedo - neutral).max(axis=2).astype(bool).mean() > 0.002
    page.check("#expression-pose")  # the expression photo's head pose too
    page.check("input[name=space][value=image]")
    page.check("input[name=mode][value=textured]")
    page.wait_for_function(SETTLED, timeout=TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#message")
    _shot(page, "transfer_pose_from_expression")

    # several photos of one person: two of Colin Powell and a wall; the list says which were used
    page.check("input[name=task][value=person]")
    assert page.is_visible("#person-zone") and not page.is_visible("#drop-zone")
    page.set_input_files("#person-input", [str(identity), str(second), str(wall)])
    page.wait_for_function(SETTLED, timeout=TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#message")
    assert page.inner_text("#status").startswith("2 of 3 photos used")
    items = page.locator("#person-photos li")
    assert items.count() == 3 and "no face" in items.nth(2).inner_text()
    assert page.locator("#person-photos li.rejected").count() == 1
    first = _shot(page, "person_first_photo")
    page.locator("#person-photos li button").nth(1).click()  # the second photo's face on it
    page.wait_for_function(f"document.querySelector('#status').textContent.includes('{second.name}')",
                           timeout=TIMEOUT_MS)
    page.wait_for_function(SETTLED, timeout=TIMEOUT_MS)
    other = _shot(page, "person_second_photo")
    assert np.abs(first - other).mean() > 2, "the second photo's face looks like the first's"
    page.check("input[name=space][value=neutral]")
    page.check("input[name=mode][value=albedo]")
    page.wait_for_function(SETTLED, timeout=TIMEOUT_MS)
    _shot(page, "person_neutral_albedo")
    assert page_errors == []
    page.close()
