"""The API end to end: the real app, the shipped ONNX models, real encoders."""

from __future__ import annotations

import io
import json
import logging
import struct
import threading
import zipfile

import numpy as np
import pytest
import trimesh
from PIL import Image

from model.topology import FaceTopology
from tests.service.conftest import jpeg_bytes

# the shipped topology: every mesh answered has its vertices and triangles
TOPOLOGY = FaceTopology.load()
VERTICES, TRIANGLES = TOPOLOGY.num_vertices, TOPOLOGY.num_faces
PROBLEM = "application/problem+json"


def _glb_json(data: bytes) -> dict:
    magic, _, _ = struct.unpack("<III", data[:12])
    assert magic == 0x46546C67
    (length,) = struct.unpack("<I", data[12:16])
    return json.loads(data[20 : 20 + length])


def _post(client, image: bytes, filename: str = "photo.jpg", **options):
    return client.post("/v1/reconstruct", files={"image": (filename, image, "image/jpeg")},
                       data={k: str(v) for k, v in options.items()})


def _assert_problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"urn:facerecon:problem:{slug}"
    assert body["status"] == status and body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_liveness_readiness_and_info(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["providers"][0] == "CPUExecutionProvider"
    info = client.get("/v1/info").json()
    assert info["vertices"] == VERTICES and info["triangles"] == TRIANGLES and info["trained"] is True
    assert info["limits"]["max_upload_bytes"] == 15 * 1024 * 1024
    assert info["model_version"].startswith(f"{info['model_version'].split('-')[0]}-steps-")


def test_glb_of_a_photo_is_a_dense_mesh_over_the_face(client, photo_jpeg, photo_box, face_photo, gltf_validator,
                                                       tmp_path):
    response = _post(client, photo_jpeg, box=photo_box)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "model/gltf-binary"
    assert response.headers["x-face-count"] == "1"
    assert 'filename="face.glb"' in response.headers["content-disposition"]
    scene = trimesh.load(io.BytesIO(response.content), file_type="glb", process=False)
    (mesh,) = scene.geometry.values()
    assert mesh.vertices.shape == (VERTICES, 3) and mesh.faces.shape == (TRIANGLES, 3)
    # image space: metres, origin at the photo centre, +Y up; the mesh lies inside the box
    height, width = face_photo.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in photo_box.split(","))
    metres_per_pixel = (mesh.vertices[:, 0].max() - mesh.vertices[:, 0].min()) / (x2 - x1)
    centre_x = mesh.vertices[:, 0].mean() / metres_per_pixel + width / 2
    centre_y = height / 2 - mesh.vertices[:, 1].mean() / metres_per_pixel
    assert x1 < centre_x < x2 and y1 < centre_y < y2
    path = tmp_path / "face.glb"
    path.write_bytes(response.content)
    issues = gltf_validator(path)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]


def test_json_gives_landmarks_pose_and_optionally_the_mesh(client, photo_jpeg, photo_box):
    plain = _post(client, photo_jpeg, box=photo_box, format="json")
    assert plain.status_code == 200 and plain.headers["content-type"] == "application/json"
    body = plain.json()
    assert body["face_count"] == 1 and body["space"] == "image"
    (face,) = body["faces"]
    assert face["score"] is None  # the box was given: no detection
    landmarks = np.array(face["landmarks_2d"])
    assert landmarks.shape == (68, 2) and np.array(face["landmarks_3d"]).shape == (68, 3)
    x1, y1, x2, y2 = (float(v) for v in photo_box.split(","))
    side = max(x2 - x1, y2 - y1)
    assert np.all(landmarks >= [x1 - 0.2 * side, y1 - 0.2 * side])
    assert np.all(landmarks <= [x2 + 0.2 * side, y2 + 0.2 * side])
    assert all(-90 <= face[k] <= 90 for k in ("yaw", "pitch", "roll"))
    assert face["vertices"] is None and face["triangles"] is None
    full = _post(client, photo_jpeg, box=photo_box, format="json", include_mesh="true", space="canonical").json()
    vertices = np.array(full["faces"][0]["vertices"])
    assert vertices.shape == (VERTICES, 3) and np.array(full["faces"][0]["triangles"]).shape == (TRIANGLES, 3)
    assert 0.1 < np.ptp(vertices[:, 0]) < 0.25  # a face about 15 cm wide


def test_a_box_with_an_answer_of_no_photo_colours_decodes_reduced_in_photo_pixels(client, face_photo, photo_box,
                                                                                   monkeypatch):
    """A large JPEG with its face box: the JSON answer (no colours from the photo) comes from the JPEG
    decoded reduced, the GLB coloured from the photo from the whole; both in the photo's pixels."""
    pipeline = client.app.state.engine.pipeline
    decode, reductions = pipeline.decode, []

    def spy(*args, **kwargs):
        image = decode(*args, **kwargs)
        reductions.append(image.reduction)
        return image

    monkeypatch.setattr(pipeline, "decode", spy)
    height, width = face_photo.shape[:2]
    large = np.asarray(Image.fromarray(face_photo).resize((4 * width, 4 * height), Image.Resampling.BICUBIC))
    box = ",".join(f"{4 * float(v):.1f}" for v in photo_box.split(","))
    body = _post(client, jpeg_bytes(large), box=box, format="json").json()
    expected = pipeline.decode_reduction(tuple(float(v) for v in box.split(",")))
    assert reductions == [expected] and expected >= 4
    assert (body["width"], body["height"]) == (4 * width, 4 * height)
    x1, y1, x2, y2 = (float(v) for v in box.split(","))
    landmarks = np.array(body["faces"][0]["landmarks_2d"])
    assert np.all(landmarks >= [x1 - 0.2 * (x2 - x1), y1 - 0.2 * (y2 - y1)])
    assert np.all(landmarks <= [x2 + 0.2 * (x2 - x1), y2 + 0.2 * (y2 - y1)])
    assert _post(client, jpeg_bytes(large), box=box).status_code == 200 and reductions[1] == 1


def test_metres_per_pixel_lays_the_image_space_mesh_onto_the_photo(client, photo_jpeg, photo_box, topology):
    body = _post(client, photo_jpeg, box=photo_box, format="json", include_mesh="true", space="image").json()
    face = body["faces"][0]
    vertices = np.array(face["vertices"])
    pixels = vertices[:, :2] / face["metres_per_pixel"] * [1, -1] + [body["width"] / 2, body["height"] / 2]
    # The chin and the inner-face landmarks sit within a few millimetres of their vertices.
    inner = [8, *range(27, 68)]
    landmarks = np.array(face["landmarks_2d"])[inner]
    x1, y1, x2, y2 = (float(v) for v in photo_box.split(","))
    assert np.abs(pixels[topology.landmarks68[inner]] - landmarks).mean() < 0.05 * (x2 - x1)


def test_spaces_differ_as_documented(client, photo_jpeg, photo_box):
    def vertices(space: str) -> np.ndarray:
        body = _post(client, photo_jpeg, box=photo_box, format="json", include_mesh="true", space=space).json()
        return np.array(body["faces"][0]["vertices"])

    image, canonical, neutral = vertices("image"), vertices("canonical"), vertices("neutral")
    # canonical and neutral are frontal and centred; image is placed where the face is in the photo
    assert np.abs(canonical.mean(axis=0)[:2]).max() < 0.03
    assert not np.allclose(image, canonical, atol=1e-3)
    # neutral removes the expression only: close to canonical, but not equal
    difference = np.linalg.norm(neutral - canonical, axis=1)
    assert 0 < difference.max() < 0.03


@pytest.mark.parametrize(("options", "media_type", "names"), [
    ({"format": "obj", "texture": "none"}, "model/obj", None),
    ({"format": "obj", "texture": "vertex"}, "model/obj", None),
    ({"format": "obj", "texture": "uv"}, "application/zip", {"face.obj", "face.mtl", "face.png"}),
    ({"format": "ply", "texture": "vertex"}, "model/ply", None),
])
def test_obj_and_ply_formats(client, photo_jpeg, photo_box, options, media_type, names):
    response = _post(client, photo_jpeg, box=photo_box, **options)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    if names is not None:
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert set(archive.namelist()) == names
        return
    file_type = options["format"]
    mesh = trimesh.load(io.BytesIO(response.content), file_type=file_type, process=False, maintain_order=True)
    assert mesh.vertices.shape == (VERTICES, 3)
    if options["texture"] == "vertex":
        colours = np.asarray(mesh.visual.vertex_colors)[:, :3]
        assert colours.std() > 5  # sampled from the photo, not a constant


def test_detects_faces_without_a_box(client, real_photos):
    from model.conventions import points_box
    from tests.conftest import AFLW_DEV
    from training.evaluate import load_aflw

    samples = {s.path.name: s for s in load_aflw(AFLW_DEV)}
    names = sorted(samples)[:len(real_photos)]  # real_photos are the first images by name
    for name, photo in zip(names, real_photos):
        if abs(samples[name].yaw_deg) > 30:
            continue
        body = _post(client, jpeg_bytes(photo), format="json").json()
        (face,) = body["faces"]
        assert 0.5 < face["score"] <= 1.0
        truth = np.array(points_box(samples[name].points))
        found = np.array(face["box"])
        inter = np.clip(np.minimum(truth[2:], found[2:]) - np.maximum(truth[:2], found[:2]), 0, None).prod()
        union = np.prod(truth[2:] - truth[:2]) + np.prod(found[2:] - found[:2]) - inter
        assert inter / union > 0.5, name


def test_all_faces_of_a_group_photo(client, real_photos):
    size = 320
    tiles = [np.asarray(Image.fromarray(p).resize((size, size))) for p in real_photos[:3]]
    group = np.concatenate(tiles, axis=1)
    data = jpeg_bytes(group)
    largest = _post(client, data, format="json", faces="largest").json()
    everyone = _post(client, data, format="json", faces="all").json()
    assert largest["face_count"] == 1
    assert everyone["face_count"] == 3
    centres = sorted((f["box"][0] + f["box"][2]) / 2 for f in everyone["faces"])
    assert [int(c // size) for c in centres] == [0, 1, 2]  # one face per tile
    glb = _post(client, data, faces="all", space="canonical")
    assert glb.headers["x-face-count"] == "3"
    nodes = _glb_json(glb.content)["nodes"]
    assert len(nodes) == 3
    obj = _post(client, data, faces="all", format="obj")
    assert obj.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(obj.content)) as archive:
        assert len([n for n in archive.namelist() if n.endswith(".obj")]) == 3


def _encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.mark.parametrize("variant", ["grey", "rgba", "palette", "16-bit", "webp", "png"])
def test_image_kinds_are_accepted(client, face_photo, photo_box, variant):
    photo = Image.fromarray(face_photo)
    data = {
        "grey": lambda: _encoded(photo.convert("L"), "JPEG"),
        "rgba": lambda: _encoded(photo.convert("RGBA"), "PNG"),
        "palette": lambda: _encoded(photo.convert("P"), "PNG"),
        "16-bit": lambda: _encoded(Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257), "PNG"),
        "webp": lambda: _encoded(photo, "WEBP"),
        "png": lambda: _encoded(photo, "PNG"),
    }[variant]()
    response = _post(client, data, box=photo_box, format="json")
    assert response.status_code == 200, response.text
    assert response.json()["face_count"] == 1


def test_exif_orientation_is_honoured(client, face_photo, photo_box):
    upright = _post(client, jpeg_bytes(face_photo), box=photo_box, format="json").json()
    # stored rotated by 90 degrees, with EXIF orientation 6 ("rotate 90 CW to display")
    stored = Image.fromarray(face_photo).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = _post(client, _encoded(stored, "JPEG", quality=92, exif=exif), box=photo_box, format="json").json()
    assert (rotated["width"], rotated["height"]) == (upright["width"], upright["height"])
    a = np.array(upright["faces"][0]["landmarks_2d"])
    b = np.array(rotated["faces"][0]["landmarks_2d"])
    assert np.abs(a - b).mean() < 2.0


def test_bad_images_get_their_statuses(client, photo_jpeg):
    _assert_problem(_post(client, b"", box="0,0,10,10"), 400, "bad-image")
    _assert_problem(_post(client, photo_jpeg[: len(photo_jpeg) // 3]), 400, "bad-image")
    _assert_problem(_post(client, b"%PDF-1.4 not an image", "doc.pdf"), 415, "unsupported-media-type")
    _assert_problem(_post(client, _encoded(Image.new("RGB", (64, 64)), "GIF"), "a.gif"), 415, "unsupported-media-type")
    blank = _post(client, jpeg_bytes(np.full((480, 640, 3), 128, np.uint8)))
    assert "no face" in _assert_problem(blank, 422, "no-face")["detail"]


def test_invalid_options_are_422_with_the_field_named(client, photo_jpeg):
    body = _assert_problem(_post(client, photo_jpeg, format="stl"), 422, "invalid-options")
    assert body["errors"][0]["loc"] == ["body", "format"]
    _assert_problem(_post(client, photo_jpeg, space="sideways"), 422, "invalid-options")
    _assert_problem(_post(client, photo_jpeg, box="1,2,3"), 422, "invalid-options")
    _assert_problem(_post(client, photo_jpeg, box="10,10,5,20"), 422, "invalid-options")
    _assert_problem(_post(client, photo_jpeg, box="5000,5000,6000,6000"), 422, "invalid-options")
    missing = client.post("/v1/reconstruct", data={"format": "glb"})
    assert _assert_problem(missing, 422, "invalid-options")["errors"][0]["loc"] == ["body", "image"]
    _assert_problem(client.get("/v1/nothing-here"), 404, "not-found")
    _assert_problem(client.get("/v1/reconstruct"), 405, "method-not-allowed")


def test_upload_and_pixel_limits(make_client, face_photo):
    small = make_client(max_upload_bytes=50_000, max_pixels=100_000)
    big = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8))
    assert len(big) > 50_000
    _assert_problem(_post(small, big), 413, "upload-too-large")

    def chunks():  # no Content-Length: the limit must trip while the body streams in
        body = (b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
                b"Content-Type: image/jpeg\r\n\r\n" + big + b"\r\n--b--\r\n")
        for start in range(0, len(body), 8192):
            yield body[start:start + 8192]

    streamed = small.post("/v1/reconstruct", content=chunks(),
                          headers={"Content-Type": "multipart/form-data; boundary=b"})
    _assert_problem(streamed, 413, "upload-too-large")
    many_pixels = _encoded(Image.new("RGB", (400, 400), (128, 100, 90)), "PNG")  # small file, 160,000 pixels
    assert len(many_pixels) < 50_000
    _assert_problem(_post(small, many_pixels), 413, "image-too-large")


def test_api_keys(make_client, photo_jpeg, photo_box):
    client = make_client(api_keys=["s3cret", "other"])
    _assert_problem(_post(client, photo_jpeg, box=photo_box), 401, "unauthenticated")
    wrong = client.post("/v1/reconstruct", files={"image": ("a.jpg", photo_jpeg)}, headers={"X-API-Key": "nope"})
    assert _assert_problem(wrong, 401, "unauthenticated") and wrong.headers["www-authenticate"]
    ok = client.post("/v1/reconstruct", files={"image": ("a.jpg", photo_jpeg)}, data={"box": photo_box},
                     headers={"X-API-Key": "other"})
    assert ok.status_code == 200
    assert client.get("/healthz").status_code == 200  # probes stay open


def test_uploads_never_touch_the_disk(client, face_photo, photo_box, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise AssertionError("an upload was about to be written to a temporary file")

    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    noisy = np.clip(face_photo.astype(np.int16) + np.random.default_rng(1).integers(-24, 25, face_photo.shape), 0, 255)
    large = _encoded(Image.fromarray(noisy.astype(np.uint8)).resize((1600, 1600)), "PNG")
    assert len(large) > 1.5 * 1024 * 1024  # past Starlette's default 1 MB spooling threshold
    scale = 1600 / face_photo.shape[1]
    box = ",".join(str(float(v) * scale) for v in photo_box.split(","))
    assert _post(client, large, "big.png", box=box, format="json").status_code == 200


def test_request_ids_and_structured_logs_without_upload_data(client, photo_jpeg, photo_box, caplog):
    from service.logs import JsonFormatter

    with caplog.at_level("INFO", logger="facerecon.access"):
        response = client.post("/v1/reconstruct", files={"image": ("secret-name.jpg", photo_jpeg)},
                               data={"box": photo_box}, headers={"X-Request-ID": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    (record,) = [r for r in caplog.records if getattr(r, "request_id", None) == "req-42"]
    line = json.loads(JsonFormatter().format(record))
    assert line["status"] == 200 and line["route"] == "/v1/reconstruct" and line["duration_ms"] > 0
    assert "secret-name" not in caplog.text
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert len(generated) == 32


def test_batch_endpoint_reports_each_image(client, photo_jpeg):
    files = [("images", ("one.jpg", photo_jpeg, "image/jpeg")),
             ("images", ("broken.jpg", b"not an image", "image/jpeg")),
             ("images", ("two.jpg", photo_jpeg, "image/jpeg"))]
    blank = jpeg_bytes(np.full((200, 200, 3), 90, np.uint8))
    files.append(("images", ("blank.jpg", blank, "image/jpeg")))
    response = client.post("/v1/reconstruct/batch", files=files)
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        summary = json.loads(archive.read("results.json"))
        meshes = sorted(n for n in archive.namelist() if n.endswith(".glb"))
    statuses = [item["status"] for item in summary["items"]]
    expected_detected = statuses[0] == 200
    assert statuses[1] == 415 and statuses[3] == 422
    assert summary["items"][1]["error"]["type"] == "urn:facerecon:problem:unsupported-media-type"
    if expected_detected:
        assert meshes == ["000_one.glb", "002_two.glb"]
    as_json = client.post("/v1/reconstruct/batch", files=files, data={"format": "json"}).json()
    assert as_json["failed"] + as_json["succeeded"] == 4
    too_many = client.post("/v1/reconstruct/batch", files=[("images", ("a.jpg", photo_jpeg))] * 17)
    _assert_problem(too_many, 422, "invalid-options")


def test_concurrent_requests_share_network_batches(make_client, photo_jpeg, photo_box):
    client = make_client(max_wait_ms=300.0, max_batch=8)
    results = []

    def call():
        results.append(_post(client, photo_jpeg, box=photo_box, format="json").status_code)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 6
    metrics = client.get("/metrics").text
    count = _metric(metrics, "facerecon_batch_size_count")
    total = _metric(metrics, "facerecon_batch_size_sum")
    warmup = 1 + 8  # the warm-up batches
    assert count - 2 < 6 and total - warmup == 6  # fewer network runs than requests


def _metric(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
            return float(line.split()[-1])
    raise AssertionError(f"{name}{labels} not in metrics")


def test_overload_answers_503_with_retry_after_and_loses_nothing_accepted(make_client, photo_jpeg, photo_box):
    client = make_client(max_in_flight=2, max_wait_ms=400.0, max_batch=64, retry_after_s=3)
    statuses: list[int] = []
    lock = threading.Lock()
    rejected = []

    def call():
        response = _post(client, photo_jpeg, box=photo_box, format="json")
        with lock:
            statuses.append(response.status_code)
            if response.status_code == 503:
                rejected.append(response)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(statuses)) == [200, 503]
    assert statuses.count(200) >= 2
    for response in rejected:
        assert response.headers["retry-after"] == "3"
        _assert_problem(response, 503, "overloaded")
    metrics = client.get("/metrics").text
    assert _metric(metrics, "facerecon_requests_rejected_total") == statuses.count(503)
    assert _metric(metrics, "facerecon_requests_in_flight") == 0


def test_metrics_count_requests_by_route_and_status(client, photo_jpeg, photo_box):
    before = client.get("/metrics").text
    label = '{method="POST",route="/v1/reconstruct",status="415"}'
    start = _metric(before, "facerecon_requests_total", label) if label in before else 0.0
    _post(client, b"nope")
    after = client.get("/metrics").text
    assert _metric(after, "facerecon_requests_total", label) == start + 1
    for name in ("facerecon_request_duration_seconds_bucket", "facerecon_inference_seconds_count",
                 "facerecon_faces_per_image_count", "facerecon_batch_queue_depth", "facerecon_detection_seconds_count"):
        assert name in after


def test_openapi_documents_options_media_types_and_errors(client):
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/v1/reconstruct"]["post"]
    content = operation["responses"]["200"]["content"]
    assert {"model/gltf-binary", "model/obj", "model/ply", "application/zip", "application/json"} <= set(content)
    for status in ("400", "401", "413", "415", "422", "503"):
        assert "application/problem+json" in operation["responses"][status]["content"], status
    body_ref = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    properties = schema["components"]["schemas"][body_ref]["properties"]
    assert {"image", "format", "texture", "space", "faces", "include_mesh", "box"} <= set(properties)
    assert all(properties[name].get("description") for name in properties)
    assert "/reconstruct" in schema["paths"] and "/v1/reconstruct/batch" in schema["paths"]
    assert client.get("/docs").status_code == 200


def test_detects_a_rendered_face_anywhere_in_a_photo(client):
    """Runs without ../shared: the detector finds the rendered template face, wherever it is."""
    from tests.conftest import rendered_face

    face, landmarks = rendered_face()
    for left, top in [(40, 30), (340, 200)]:
        canvas = np.full((480, 640, 3), 200, np.uint8)
        canvas[top:top + 256, left:left + 256] = face
        body = _post(client, jpeg_bytes(canvas), format="json").json()
        (found,) = body["faces"]
        truth = np.concatenate([landmarks.min(axis=0), landmarks.max(axis=0)]) + [left, top, left, top]
        box = np.array(found["box"])
        inter = np.clip(np.minimum(truth[2:], box[2:]) - np.maximum(truth[:2], box[:2]), 0, None).prod()
        union = np.prod(truth[2:] - truth[:2]) + np.prod(box[2:] - box[:2]) - inter
        assert inter / union > 0.5 and found["score"] > 0.5
        predicted = np.array(found["landmarks_2d"])
        assert np.abs(predicted - (landmarks + [left, top])).mean() < 0.1 * (truth[2] - truth[0])


def test_refine_crop_recrops_detected_faces_around_their_landmark_vertices(client, make_client, topology):
    from tests.conftest import rendered_face

    canvas = np.full((480, 640, 3), 200, np.uint8)
    canvas[100:356, 300:556] = rendered_face()[0]
    data = jpeg_bytes(canvas)
    first = _post(client, data, format="json", include_mesh="true", space="image").json()
    (once,) = first["faces"]
    (twice,) = _post(make_client(refine_crop=True), data, format="json").json()["faces"]
    vertices = np.array(once["vertices"])[topology.landmarks68, :2]
    pixels = vertices / once["metres_per_pixel"] * [1, -1] + [first["width"] / 2, first["height"] / 2]
    # the refined box is the box of the first pass's landmark vertices; the detection score is kept
    np.testing.assert_allclose(twice["box"], [*pixels.min(axis=0), *pixels.max(axis=0)], atol=0.05)
    assert twice["score"] == once["score"]


def test_mirror_average_setting_averages_each_face_with_its_mirror_image(make_client):
    from model.runtime.reconstructor import DEFAULT_MODEL, FaceReconstructor
    from tests.conftest import rendered_face

    face, landmarks = rendered_face()
    canvas = np.full((480, 640, 3), 200, np.uint8)
    canvas[100:356, 300:556] = face
    box = (*(landmarks.min(axis=0) + [300, 100]), *(landmarks.max(axis=0) + [300, 100]))
    data = jpeg_bytes(canvas)
    box_option = ",".join(f"{v:.2f}" for v in box)
    (served,) = _post(make_client(mirror_average=True), data, format="json", box=box_option).json()["faces"]
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    parsed_box = tuple(float(f"{v:.2f}") for v in box)
    (direct,) = FaceReconstructor(DEFAULT_MODEL, threads=1, mirror_average=True).reconstruct(decoded, [parsed_box])
    (plain,) = FaceReconstructor(DEFAULT_MODEL, threads=1).reconstruct(decoded, [parsed_box])
    np.testing.assert_allclose(served["landmarks_2d"], direct.landmarks_2d, atol=0.01)
    assert np.abs(direct.landmarks_2d - plain.landmarks_2d).max() > 0.05


def test_every_answer_names_the_model_version(make_client, photo_jpeg, photo_box):
    from model.runtime.reconstructor import DEFAULT_MODEL, FaceReconstructor

    model = FaceReconstructor(DEFAULT_MODEL)
    origin = "https://viewer.example"
    client = make_client(api_keys=["s3cret"], cors_origins=[origin])
    info = client.get("/v1/info").json()
    assert info["model_version"] == model.model_version
    assert info["landmark_calibration"] == model.metadata.landmark_calibration
    key = {"X-API-Key": "s3cret", "Origin": origin}
    answers = {
        "ok": _post_with(client, photo_jpeg, key, box=photo_box),
        "json": _post_with(client, photo_jpeg, key, box=photo_box, format="json"),
        "batch": client.post("/v1/reconstruct/batch", files=[("images", ("a.jpg", photo_jpeg))],
                             data={"format": "json"}, headers=key),
        "unauthenticated": _post_with(client, photo_jpeg, {"Origin": origin}),
        "bad image": _post_with(client, b"not an image", key),
        "not found": client.get("/nowhere", headers=key),
        "probe": client.get("/healthz"),
        "metrics": client.get("/metrics"),
        "page": client.get("/"),
        "docs": client.get("/docs"),
        "openapi": client.get("/openapi.json"),
    }
    for name, response in answers.items():
        assert response.headers.get("x-model-version") == model.model_version, name
    assert "x-model-version" in answers["ok"].headers["access-control-expose-headers"].lower()
    assert answers["unauthenticated"].status_code == 401 and answers["not found"].status_code == 404
    body = answers["json"].json()
    assert body["model_version"] == model.model_version
    assert body["landmark_calibration"] == model.metadata.landmark_calibration
    batch = answers["batch"].json()
    assert batch["model_version"] == model.model_version
    assert batch["items"][0]["result"]["model_version"] == model.model_version
    zipped = client.post("/v1/reconstruct/batch", files=[("images", ("a.jpg", photo_jpeg))], headers=key)
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        assert json.loads(archive.read("results.json"))["model_version"] == model.model_version


def _post_with(client, image: bytes, headers: dict[str, str], **options):
    return client.post("/v1/reconstruct", files={"image": ("photo.jpg", image, "image/jpeg")},
                       data={k: str(v) for k, v in options.items()}, headers=headers)


@pytest.fixture
def ort_offers_cuda(monkeypatch):
    """ONNX Runtime as onnxruntime-gpu on a machine without a usable GPU: it lists the CUDA provider, and
    sessions asked for it quietly run on the CPU (this CPU-only build cannot create it either)."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_a_cuda_deployment_without_cuda_fails_start_up_instead_of_reporting_ready(ort_offers_cuda):
    from fastapi.testclient import TestClient

    from model.runtime.sessions import DeviceUnavailable
    from service.app import create_app
    from service.settings import ServiceSettings

    client = TestClient(create_app(ServiceSettings(device="cuda")), raise_server_exceptions=False)
    with pytest.raises(DeviceUnavailable, match="could not create CUDAExecutionProvider.*FACERECON_DEVICE=cpu"):
        with client:
            pytest.fail(f"started and answered /readyz {client.get('/readyz').status_code} without CUDA")


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_auto_falls_back_to_the_cpu_with_a_warning_and_names_its_provider(ort_offers_cuda, make_client, caplog):
    with caplog.at_level(logging.WARNING):
        client = make_client(device="auto")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("facerecon")]
    assert any("CUDAExecutionProvider" in message and "CPUExecutionProvider" in message for message in warned), warned
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["providers"] == ["CPUExecutionProvider"]
    assert client.get("/v1/info").json()["providers"] == ["CPUExecutionProvider"]
