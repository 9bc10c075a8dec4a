"""The web page end to end in a real headless Chromium: the real app on a free port, a real face
photo through the file input, the mesh drawn (over the photo and on its own), and an error
message for a file that is no image.

Needs Debian's `chromium` (`make test` installs it where apt-get can) and the `playwright`
package, which drives that Chromium; skips without either. The page is rendered by SwiftShader
(software WebGL), so the test needs no GPU.
"""

from __future__ import annotations

import io
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

SCREENSHOT = Path("/tmp/facerecon_page.png")  # for a person to look at
BACKGROUND = np.array([29, 35, 42])  # the 3D view's clear colour (viewer.js BACKGROUND)
WIRE = np.array([115, 242, 217])  # the wireframe colour (viewer.js WIRE_COLOUR)
BROWSER_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
SETTLED = "['ready', 'error'].includes(document.body.dataset.state)"
TIMEOUT_MS = 120_000  # a reconstruction on a busy 2-core CPU


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
