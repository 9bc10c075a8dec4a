"""The shared dependencies through the real app: the output options and the API-key check."""

from __future__ import annotations

import numpy as np
from PIL import Image

from model.topology import FaceTopology
from tests.service.conftest import jpeg_bytes

# the shipped topology: every mesh answered has its vertices and triangles
TOPOLOGY = FaceTopology.load()
VERTICES, TRIANGLES = TOPOLOGY.num_vertices, TOPOLOGY.num_faces
OPTIONS = ("format", "texture", "space", "faces", "include_mesh")
RECONSTRUCTION_ROUTES = ("/v1/reconstruct", "/reconstruct", "/v1/reconstruct/batch")


def test_every_reconstruction_route_documents_the_same_options(client):
    schema = client.get("/openapi.json").json()
    documented = []
    for path in RECONSTRUCTION_ROUTES:
        body = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        properties = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]["properties"]
        documented.append({name: properties[name] for name in OPTIONS})
    assert documented[0] == documented[1] == documented[2]
    assert documented[0]["format"]["default"] == "glb" and documented[0]["include_mesh"]["default"] is False
    assert all(field["description"] for field in documented[0].values())


def test_the_routes_of_several_photos_document_the_same_output_options(client):
    schema = client.get("/openapi.json").json()
    documented = []
    for path in ("/v1/reconstruct", "/v1/transfer", "/v1/reconstruct/person"):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        properties = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]["properties"]
        documented.append({name: properties[name] for name in OPTIONS if name != "faces"})
        assert ("faces" in properties) == (path == "/v1/reconstruct"), path  # one face of each photo
    assert documented[0] == documented[1] == documented[2]
    assert schema["components"]["schemas"]["TextureMode"]["enum"] == ["none", "vertex", "uv", "albedo"]


def test_batch_applies_the_options_like_the_single_image_route(client, real_photos):
    group = np.concatenate([np.asarray(Image.fromarray(p).resize((320, 320))) for p in real_photos[:3]], axis=1)
    data = jpeg_bytes(group)
    options = {"format": "json", "faces": "all", "space": "canonical", "include_mesh": "true"}
    single = client.post("/v1/reconstruct", files={"image": ("group.jpg", data)}, data=options).json()
    batch = client.post("/v1/reconstruct/batch", files=[("images", ("group.jpg", data))], data=options).json()
    (item,) = batch["items"]
    assert item["status"] == 200
    for result in (single, item["result"]):
        assert result["space"] == "canonical" and result["face_count"] == 3
        assert all(np.shape(face["vertices"]) == (VERTICES, 3) for face in result["faces"])


def test_batch_rejects_an_invalid_option_with_the_field_named(client, photo_jpeg):
    response = client.post("/v1/reconstruct/batch", files=[("images", ("a.jpg", photo_jpeg))], data={"faces": "some"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "faces"]


def test_api_key_guards_every_reconstruction_route_and_no_other(make_client, photo_jpeg):
    client = make_client(api_keys=["s3cret"])
    fields = {"/v1/reconstruct/batch": ["images"], "/v1/transfer": ["identity", "expression"],
              "/v1/reconstruct/person": ["images", "images"]}
    for path in (*RECONSTRUCTION_ROUTES, "/v1/transfer", "/v1/reconstruct/person"):
        response = client.post(path, files=[(field, ("a.jpg", photo_jpeg)) for field in fields.get(path, ["image"])])
        assert response.status_code == 401, path
        assert response.json()["type"] == "urn:facerecon:problem:unauthenticated"
    for path in ("/healthz", "/readyz", "/v1/info", "/metrics"):
        assert client.get(path).status_code == 200, path
