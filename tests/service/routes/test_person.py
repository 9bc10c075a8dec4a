"""/v1/reconstruct/person through the real app and the shipped models: several photos of one person, which
were used and why not, the fused face and the per-photo meshes, and the limits on the photo count."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from model.topology import FaceTopology
from service.schemas import MAX_PERSON_PHOTOS, MIN_PERSON_PHOTOS
from tests.conftest import SHARED_DATA
from tests.service.conftest import jpeg_bytes

LFW = SHARED_DATA / "train" / "lfw"
TOPOLOGY = FaceTopology.load()
BLANK = jpeg_bytes(np.full((200, 200, 3), 128, np.uint8))


@pytest.fixture(scope="module")
def person() -> list[tuple[str, bytes]]:
    """Three photos of one person (LFW): his first, second and fifth (48700-steps-0c5527ddc3da rejects
    the third, darker and frowning, as another person's: one of the about 5 % of a person's own photos
    that its calibrated threshold rejects; this test is about how the answer reports, not about that rate)."""
    found = sorted((LFW / "Colin_Powell").glob("*.jpg"))
    paths = [found[i] for i in (0, 1, 4) if i < len(found)]
    if len(paths) < 3:
        pytest.skip(f"LFW photos not found under {LFW}")
    return [(path.name, path.read_bytes()) for path in paths]


@pytest.fixture(scope="module")
def stranger() -> tuple[str, bytes]:
    path = LFW / "Serena_Williams" / "Serena_Williams_0001.jpg"
    if not path.is_file():
        pytest.skip(f"LFW photos not found under {LFW}")
    return path.name, path.read_bytes()


def _post(client, photos: list[tuple[str, bytes]], **data):
    files = [("images", (name, photo, "image/jpeg")) for name, photo in photos]
    return client.post("/v1/reconstruct/person", files=files, data={k: str(v) for k, v in data.items()})


def test_the_answer_says_which_photos_were_used_and_why_not(client, person, stranger):
    photos = [*person, ("wall.jpg", BLANK), ("notes.txt", b"not an image"), stranger]
    response = _post(client, photos, format="json", include_mesh="true", space="neutral")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["photos_sent"] == 6 and {3, 4} <= set(answer["rejected"])
    assert response.headers["x-photos-used"] == str(answer["photos_used"])
    assert response.headers["x-photos-rejected"] == str(len(answer["rejected"]))
    used, (wall, notes, other) = answer["photos"][:3], answer["photos"][3:]
    assert [p["filename"] for p in answer["photos"]] == [name for name, _ in photos]
    assert all(p["used"] and p["reason"] is None and p["result"]["face_count"] == 1 for p in used)
    assert "no face" in wall["reason"] and "not a usable image" in notes["reason"]
    assert all(not p["used"] and p["weight"] == 0 and p["result"] is None for p in (wall, notes))
    # the stranger: left out as another person when the identity codes tell (the shipped model's do not always)
    assert other["used"] or ("another person" in other["reason"] and answer["photos_used"] == 3)
    assert sum(p["weight"] for p in answer["photos"]) == pytest.approx(1.0, abs=1e-3)
    # one identity: every used photo's neutral face is the same fused face ...
    neutral = [np.array(p["result"]["faces"][0]["vertices"]) for p in used]
    for vertices in neutral[1:]:
        np.testing.assert_allclose(vertices, neutral[0], atol=1e-5)
    # ... and each keeps its own expression
    canonical = _post(client, person, format="json", include_mesh="true", space="canonical").json()
    codes = [p["result"]["faces"][0]["expression_code"] for p in canonical["photos"]]
    assert not np.allclose(codes[0], codes[1])


def test_the_neutral_face_is_one_file_and_the_posed_faces_a_zip(client, person):
    glb = _post(client, person, space="neutral", texture="uv")
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    assert 'filename="person.glb"' in glb.headers["content-disposition"]
    posed = _post(client, person[:2], space="image", format="ply", texture="vertex")
    assert posed.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(posed.content)) as archive:
        names = sorted(archive.namelist())
        summary = json.loads(archive.read("person.json"))
        ply = archive.read(names[0])
    assert names == [f"000_{person[0][0][:-4]}.ply", f"001_{person[1][0][:-4]}.ply", "person.json"]
    assert summary["photos_used"] == 2 and all(p["result"] is None for p in summary["photos"])
    assert f"element vertex {TOPOLOGY.num_vertices}".encode() in ply and b"red" in ply


def test_albedo_merges_without_the_photos(client, person):
    response = _post(client, person, space="neutral", format="obj", texture="albedo")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert {"person.obj", "person.mtl", "person.png"} <= set(archive.namelist())


@pytest.mark.parametrize("count", [0, 1, MAX_PERSON_PHOTOS + 1])
def test_the_photo_count_is_bounded(client, person, count):
    photos = (person * MAX_PERSON_PHOTOS)[:count]
    response = _post(client, photos, format="json")
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"] == ["body", "images"]
    if count:
        assert f"{MIN_PERSON_PHOTOS} to {MAX_PERSON_PHOTOS}" in response.json()["detail"]


def test_no_usable_face_at_all_is_a_problem(client):
    response = _post(client, [("a.jpg", BLANK), ("b.jpg", BLANK)], format="json")
    assert response.status_code == 422 and response.json()["type"] == "urn:facerecon:problem:no-face"
    response = _post(client, [("a.jpg", b"x"), ("b.jpg", b"")], format="json")
    assert response.status_code == 400 and response.json()["type"] == "urn:facerecon:problem:bad-image"
