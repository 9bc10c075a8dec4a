"""service/client.py against the real app and the shipped models: the blocking client over a real loopback
connection (uvicorn in a thread), the asyncio client through httpx.ASGITransport, both on one app instance
whose lifespan runs in that thread's event loop."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI

from service.app import create_app
from service.client import (
    AsyncFaceReconClient,
    BadImage,
    BatchArchive,
    FaceReconClient,
    FaceReconError,
    FaceReconTransportError,
    InvalidOptions,
    MeshFile,
    NoFace,
    Overloaded,
    Unauthenticated,
)
from service.schemas import BatchJSON, PersonJSON, ReconstructionJSON
from service.settings import ServiceSettings
from tests.conftest import REPO, rendered_face
from tests.service.conftest import jpeg_bytes

KEY = "client-test-key"
RETRY_AFTER_S = 2  # the server's Retry-After: the retry tests check that the client waits exactly this
ASGI_URL = "http://testserver"


@dataclass
class Served:
    app: FastAPI
    portal: BlockingPortal
    url: str  # the uvicorn server on the loopback interface

    def run(self, function: Callable[[], Awaitable[Any]]) -> Any:
        """Runs an async test body in the app's event loop."""
        return self.portal.call(function)

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """The app with API keys and room for ONE reconstruction request in flight (so a held request makes the
    next one a real 503 from the admission middleware), started once, served by uvicorn on a free port."""
    app = create_app(ServiceSettings(api_keys=[KEY], max_in_flight=1, retry_after_s=RETRY_AFTER_S))
    with start_blocking_portal(backend="asyncio") as portal, \
            portal.wrap_async_context_manager(app.router.lifespan_context(app)):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
        serving = portal.start_task_soon(server.serve, [sock])
        deadline = time.monotonic() + 30
        while not server.started:
            assert not serving.done() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        try:
            yield Served(app, portal, f"http://127.0.0.1:{sock.getsockname()[1]}")
        finally:
            server.should_exit = True
            serving.result(timeout=30)
            sock.close()


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    """The rendered template face: one face the detector finds. 256 x 256."""
    return jpeg_bytes(rendered_face()[0])


@pytest.fixture(scope="module")
def blank_jpeg() -> bytes:
    return jpeg_bytes(np.full((256, 256, 3), 128, np.uint8))


@pytest.fixture
def client(served) -> Iterator[FaceReconClient]:
    with FaceReconClient(served.url, api_key=KEY, timeout=30) as face_client:
        yield face_client


# ------------------------------------------------------------------------------------- holding the one slot


def _multipart(photo: bytes) -> tuple[bytes, str]:
    body = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="held.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--b--\r\n")
    return body, "multipart/form-data; boundary=b"


async def _held_request(app: FastAPI, photo: bytes, admitted: asyncio.Event, release: asyncio.Event) -> int:
    """POSTs a photo whose body stops half way until ``release``: the request holds its admission slot
    (``admitted`` is set once the route is reading the body). -> its status once released."""
    body, content_type = _multipart(photo)

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:64]
        admitted.set()  # the route asked for more of the body: the request was admitted
        await release.wait()
        yield body[64:]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ASGI_URL) as http:
        response = await http.post("/v1/reconstruct", content=chunks(),
                                   headers={"Content-Type": content_type, "X-API-Key": KEY})
    return response.status_code


class HeldSlot:
    """From the test's thread: a request that holds the app's one admission slot until release()."""

    def __init__(self, served: Served, photo: bytes) -> None:
        self.portal = served.portal
        self.admitted, self.released = served.run(self._events)
        self.outcome: Future[int] = self.portal.start_task_soon(_held_request, served.app, photo, self.admitted,
                                                                self.released)
        served.run(lambda: asyncio.wait_for(self.admitted.wait(), 30))

    @staticmethod
    async def _events() -> tuple[asyncio.Event, asyncio.Event]:
        return asyncio.Event(), asyncio.Event()

    def release(self) -> int:
        """Lets the body finish; returns once the held request has been answered and left admission."""
        self.portal.call(self.released.set)
        return self.outcome.result(timeout=30)


class CountingTransport(httpx.HTTPTransport):
    """The network transport, recording the status of every attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response


class CountingASGITransport(httpx.ASGITransport):
    def __init__(self, app: FastAPI) -> None:
        super().__init__(app=app)
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


# -------------------------------------------------------------------------------------------- blocking client


def test_json_reconstruction_parses_into_the_schema(client, face_jpeg):
    result = client.reconstruct(face_jpeg, format="json")
    assert isinstance(result, ReconstructionJSON)
    assert (result.width, result.height, result.face_count, len(result.faces)) == (256, 256, 1, 1)
    face = result.faces[0]
    assert np.asarray(face.landmarks_2d).shape == (68, 2) and np.asarray(face.landmarks_3d).shape == (68, 3)
    assert face.vertices is None and face.metres_per_pixel > 0
    info = client.info()
    assert result.model_version == info.model_version and "-steps-" in result.model_version
    assert result.landmark_calibration == info.landmark_calibration

    with_mesh = client.reconstruct_json(face_jpeg, space="canonical", include_mesh=True)
    assert with_mesh.space.value == "canonical"
    assert np.asarray(with_mesh.faces[0].vertices).shape[1] == 3 and np.asarray(with_mesh.faces[0].triangles).ndim == 2


def test_glb_comes_back_as_a_mesh_file(client, face_jpeg, tmp_path):
    mesh = client.reconstruct(face_jpeg)
    assert isinstance(mesh, MeshFile)
    assert mesh.content.startswith(b"glTF") and mesh.face_count == 1
    assert (mesh.media_type, mesh.filename, mesh.is_zip) == ("model/gltf-binary", "face.glb", False)
    assert mesh.request_id and mesh.headers["x-request-id"] == mesh.request_id
    assert mesh.headers["x-face-count"] == "1"  # every header, read generically
    assert mesh.model_version == client.info().model_version
    assert mesh.save(tmp_path).read_bytes() == mesh.content

    photo = tmp_path / "portrait.jpg"  # a path works as well as bytes
    photo.write_bytes(face_jpeg)
    ply = client.reconstruct(photo, format="ply", texture="none")
    assert ply.content.startswith(b"ply") and ply.media_type == "model/ply" and ply.face_count == 1


def test_no_face_raises_no_face_with_the_problem_fields(client, blank_jpeg):
    with pytest.raises(NoFace) as caught:
        client.reconstruct(blank_jpeg)
    error = caught.value
    assert isinstance(error, FaceReconError)
    assert (error.status, error.type, error.title) == (422, "urn:facerecon:problem:no-face", "No face found")
    assert error.detail and error.request_id and error.instance == "/v1/reconstruct"
    assert error.headers["x-request-id"] == error.request_id


def test_other_problems_raise_their_classes(client, served, face_jpeg):
    with pytest.raises(BadImage) as bad:
        client.reconstruct(b"")
    assert bad.value.status == 400 and "empty" in bad.value.detail
    with pytest.raises(InvalidOptions) as invalid:
        client.reconstruct(face_jpeg, box="1,2")
    assert invalid.value.status == 422 and invalid.value.type.endswith(":invalid-options")
    with pytest.raises(InvalidOptions) as invalid_field:
        client.reconstruct(face_jpeg, format="stl")
    assert invalid_field.value.errors and invalid_field.value.errors[0]["loc"][-1] == "format"
    # a problem type the client has no class for: the base class, with its fields
    with FaceReconClient(served.url + "/nowhere") as lost, pytest.raises(FaceReconError) as unknown:
        lost.info()
    assert type(unknown.value) is FaceReconError
    assert (unknown.value.status, unknown.value.type) == (404, "urn:facerecon:problem:not-found")


def test_wrong_api_key_raises_unauthenticated_and_is_not_retried(served, face_jpeg):
    transport, sleeps = CountingTransport(), []
    with FaceReconClient(served.url, api_key="wrong", transport=transport, retries=5, sleep=sleeps.append) as client:
        with pytest.raises(Unauthenticated) as caught:
            client.reconstruct(face_jpeg)
        assert client.info().limits["max_in_flight"] == 1  # the probes and info need no key
        assert client.ready().status == "ready"
    assert (caught.value.status, caught.value.type) == (401, "urn:facerecon:problem:unauthenticated")
    assert caught.value.request_id
    assert transport.statuses == [401, 200, 200] and sleeps == []


def test_overloaded_is_retried_after_retry_after_then_succeeds(served, face_jpeg):
    held = HeldSlot(served, face_jpeg)
    transport, sleeps, held_status = CountingTransport(), [], []

    def sleep(seconds: float) -> None:  # instead of waiting: let the held request finish
        sleeps.append(seconds)
        held_status.append(held.release())

    try:
        with FaceReconClient(served.url, api_key=KEY, transport=transport, sleep=sleep) as client:
            result = client.reconstruct_json(face_jpeg)
    finally:
        if not held_status:
            held.release()
    assert result.face_count == 1
    assert transport.statuses == [503, 200] and sleeps == [RETRY_AFTER_S] and held_status == [200]


def test_overloaded_retries_are_bounded_and_waits_capped(served, face_jpeg):
    held = HeldSlot(served, face_jpeg)
    transport, sleeps = CountingTransport(), []
    try:
        with FaceReconClient(served.url, api_key=KEY, transport=transport, retries=2, max_retry_wait=0.5,
                             sleep=sleeps.append) as client, pytest.raises(Overloaded) as caught:
            client.reconstruct(face_jpeg)
    finally:
        assert held.release() == 200
    assert transport.statuses == [503, 503, 503] and sleeps == [0.5, 0.5]
    assert caught.value.status == 503 and caught.value.retry_after == RETRY_AFTER_S


def test_batch(client, face_jpeg, blank_jpeg):
    summary = client.reconstruct_batch([face_jpeg, blank_jpeg], format="json")
    assert isinstance(summary, BatchJSON) and (summary.succeeded, summary.failed) == (1, 1)
    assert summary.items[0].result is not None and summary.items[0].result.face_count == 1
    assert summary.items[1].status == 422 and summary.items[1].error
    assert summary.items[1].error["type"] == "urn:facerecon:problem:no-face"

    archive = client.reconstruct_batch([face_jpeg, blank_jpeg])
    assert isinstance(archive, BatchArchive) and archive.summary.succeeded == 1
    assert archive.model_version == archive.summary.model_version == summary.model_version
    files = archive.files()
    assert "results.json" in files and any(name.endswith(".glb") for name in files)


def test_transfer_and_person(client, face_jpeg, blank_jpeg):
    mirrored = jpeg_bytes(np.ascontiguousarray(rendered_face()[0][:, ::-1]))
    result = client.transfer_json(face_jpeg, mirrored)
    assert isinstance(result, ReconstructionJSON) and result.face_count == 1
    code = result.faces[0].expression_code
    again = client.transfer_json(face_jpeg, expression_code=code, space="canonical", include_mesh=True)
    assert again.space.value == "canonical" and again.faces[0].vertices is not None
    mesh = client.transfer(face_jpeg, mirrored, pose="expression", texture="albedo")
    assert mesh.content.startswith(b"glTF") and mesh.face_count == 1
    with pytest.raises(TypeError, match="one of the two"):
        client.transfer(face_jpeg)
    with pytest.raises(NoFace):
        client.transfer(face_jpeg, blank_jpeg)
    with pytest.raises(InvalidOptions):
        client.transfer(face_jpeg, expression_code=[0.0] * 3)

    person = client.reconstruct_person_json([face_jpeg, mirrored, blank_jpeg], space="neutral")
    assert isinstance(person, PersonJSON) and (person.photos_sent, person.photos_used) == (3, 2)
    assert person.rejected == [2] and "no face" in (person.photos[2].reason or "")
    fused = client.reconstruct_person([face_jpeg, mirrored], space="neutral", texture="uv")
    assert fused.filename == "person.glb" and fused.face_count == 1 and fused.headers["x-photos-used"] == "2"
    posed = client.reconstruct_person([face_jpeg, mirrored], format="ply")
    assert posed.is_zip and posed.face_count == 2 and "person.json" in posed.files()
    with pytest.raises(InvalidOptions):
        client.reconstruct_person([face_jpeg])


def test_no_answer_raises_the_transport_error():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with FaceReconClient(f"http://127.0.0.1:{port}", timeout=5) as client, pytest.raises(FaceReconTransportError):
        client.ready()


def test_the_client_needs_neither_the_server_nor_onnx_runtime():
    code = ("import sys, service.client; "
            "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn', 'onnxruntime') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------- asyncio client


def test_async_client_reconstructs_and_raises_problems(served, face_jpeg, blank_jpeg):
    async def body() -> None:
        async with AsyncFaceReconClient(ASGI_URL, api_key=KEY, transport=served.transport()) as client:
            result = await client.reconstruct(face_jpeg, format="json")
            assert isinstance(result, ReconstructionJSON) and result.face_count == 1 and len(result.faces) == 1
            mesh = await client.reconstruct(face_jpeg, format="glb")
            assert mesh.content.startswith(b"glTF") and mesh.face_count == 1
            with pytest.raises(NoFace) as no_face:
                await client.reconstruct(blank_jpeg)
            assert no_face.value.status == 422 and no_face.value.request_id
            batch = await client.reconstruct_batch([face_jpeg, blank_jpeg], format="json")
            assert (batch.succeeded, batch.failed) == (1, 1)
            code = result.faces[0].expression_code
            transferred = await client.transfer_json(face_jpeg, expression_code=code)
            assert transferred.face_count == 1
            assert (await client.transfer(face_jpeg, face_jpeg)).content.startswith(b"glTF")
            person = await client.reconstruct_person_json([face_jpeg, face_jpeg, blank_jpeg])
            assert (person.photos_used, person.rejected) == (2, [2])
            assert (await client.reconstruct_person([face_jpeg, face_jpeg], space="neutral")).face_count == 1
            assert (await client.info()).vertices > 0 and (await client.ready()).status == "ready"
        async with AsyncFaceReconClient(ASGI_URL, api_key="wrong", transport=served.transport()) as client:
            with pytest.raises(Unauthenticated) as caught:
                await client.reconstruct_json(face_jpeg)
            assert caught.value.status == 401 and caught.value.detail

    served.run(body)


def test_async_client_retries_overloaded(served, face_jpeg):
    async def body() -> tuple[list[int], list[float], list[int], int]:
        admitted, release = asyncio.Event(), asyncio.Event()
        held = asyncio.create_task(_held_request(served.app, face_jpeg, admitted, release))
        await asyncio.wait_for(admitted.wait(), 30)
        transport, sleeps, held_status = CountingASGITransport(served.app), [], []

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            release.set()
            held_status.append(await held)

        try:
            async with AsyncFaceReconClient(ASGI_URL, api_key=KEY, transport=transport, sleep=sleep) as client:
                result = await client.reconstruct_json(face_jpeg)
        finally:
            release.set()
            await held
        return transport.statuses, sleeps, held_status, result.face_count

    assert served.run(body) == ([503, 200], [RETRY_AFTER_S], [200], 1)
