"""The web page's 3D view seen from behind: the inside of the face mask is shaded as the inside
(darker, a little warmer), not lit like the outside.

Renders the real viewer.js and meshes.js (with the face topology's template mesh, as the API
would send it) in headless Chromium with SwiftShader, from the front and from behind. Needs
Debian's `chromium` and the `playwright` package; skips without either.
"""

from __future__ import annotations

import functools
import io
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from model.topology import FaceTopology
from service.web import STATIC_DIR

BROWSER_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
BACKGROUND = np.array([29, 35, 42])  # viewer.js BACKGROUND
PAGE = """<!doctype html>
<html><body style="margin:0">
<canvas id="view" style="width:320px;height:320px;display:block"></canvas>
<script type="module">
import { Viewer } from "./viewer.js";
import { boundingSphere, buildFaces, photoPlacement } from "./meshes.js";
const viewer = new Viewer(document.getElementById("view"));
const frame = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
window.showFace = async (vertices, triangles) => {
  const face = { vertices, triangles, box: [0, 0, 100, 100], metres_per_pixel: 0.001 };
  const result = { space: "canonical", width: 100, height: 100, faces: [face] };
  const faces = buildFaces(result, result, photoPlacement(result));
  viewer.setScene(faces, null, boundingSphere(faces));
  viewer.setMode("shaded");
  await frame();
};
window.turn = async (yaw) => {
  viewer.camera.yaw = yaw;
  viewer.redraw();
  await frame();
};
window.ready = true;
</script>
</body></html>
"""


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    """The viewer's modules and a test page, served on a free port."""
    folder = tmp_path_factory.mktemp("viewer")
    for module in STATIC_DIR.glob("*.js"):
        shutil.copy(module, folder / module.name)
    (folder / "index.html").write_text(PAGE)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


@pytest.fixture(scope="module")
def page(page_url):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (`make test` installs Debian's chromium where apt-get can)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (test extra) is missing")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 320, "height": 320}, device_scale_factor=1)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_url)
            page.wait_for_function("window.ready === true", timeout=60_000)
            topology = FaceTopology.load()
            page.evaluate("([v, t]) => window.showFace(v, t)",
                          [topology.vertices.tolist(), topology.faces.tolist()])
            assert not errors, errors
            yield page
        finally:
            browser.close()


def _mask_pixels(page, yaw: float) -> np.ndarray:
    """(N, 3) int: the pixels the face covers, seen turned by `yaw` radians."""
    page.evaluate("(yaw) => window.turn(yaw)", yaw)
    image = np.asarray(Image.open(io.BytesIO(page.locator("#view").screenshot())).convert("RGB")).astype(int)
    covered = np.abs(image - BACKGROUND).max(axis=2) > 6
    assert covered.mean() > 0.05, "the face does not show"
    return image[covered]


def test_the_inside_of_the_mask_is_darker_and_warmer_than_the_outside(page):
    front = _mask_pixels(page, 0.0)
    behind = _mask_pixels(page, np.pi)
    front_mean, behind_mean = front.mean(axis=0), behind.mean(axis=0)
    # the outside is lit: brighter than the background; the inside about half as bright
    assert front_mean.mean() > 120, front_mean
    assert behind_mean.mean() < 0.65 * front_mean.mean(), (front_mean, behind_mean)
    # and warmer: more red for its blue than the grey outside
    assert behind_mean[0] / behind_mean[2] > front_mean[0] / front_mean[2] + 0.05, (front_mean, behind_mean)
