"""A typed Python client of the facerecon HTTP API (``pip install "facerecon[client]"``: httpx and pydantic).

:class:`FaceReconClient` (blocking, on ``httpx.Client``) and :class:`AsyncFaceReconClient` (``httpx.AsyncClient``)
have the same methods; both build their requests with the same functions and parse the answers with the same
functions, so they differ only in how they send and wait::

    with FaceReconClient("http://127.0.0.1:8000", api_key="...") as client:
        mesh = client.reconstruct("photo.jpg")                      # MeshFile: GLB bytes, X-Face-Count ...
        result = client.reconstruct_json("photo.jpg")               # ReconstructionJSON: landmarks and pose

    async with AsyncFaceReconClient("http://127.0.0.1:8000") as client:
        batch = await client.reconstruct_batch(["a.jpg", "b.png"], format="json")   # BatchJSON

Errors: an answer that is a problem document (RFC 9457) raises a :class:`FaceReconError`, or the subclass of its
``type`` (:class:`NoFace`, :class:`Unauthenticated` ...); a request that got no answer (connection refused,
timeout) raises :class:`FaceReconTransportError`. ``503 overloaded`` is retried after its ``Retry-After``
(at most ``retries`` times, each wait capped at ``max_retry_wait`` seconds); nothing else is retried.
"""

from __future__ import annotations

import asyncio
import io
import json
import mimetypes
import os
import time
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Generic, Literal, TypeVar, overload

import httpx
from pydantic import BaseModel, ValidationError

from model.conventions import FaceSelection, MeshSpace
from service.schemas import BatchJSON, InfoJSON, OutputFormat, PersonJSON, ReadyJSON, ReconstructionJSON, TextureMode

__all__ = [
    "AsyncFaceReconClient",
    "BadImage",
    "BadRequest",
    "BatchArchive",
    "FaceReconClient",
    "FaceReconError",
    "FaceReconTransportError",
    "HeadersTooLarge",
    "ImageSource",
    "ImageTooLarge",
    "InternalError",
    "InvalidOptions",
    "InvalidResponse",
    "MeshFile",
    "NoFace",
    "NotReady",
    "Overloaded",
    "PROBLEM_TYPE_PREFIX",
    "RequestTimeout",
    "Unauthenticated",
    "UnsupportedMediaType",
    "UploadTooLarge",
]

PROBLEM_TYPE_PREFIX = "urn:facerecon:problem:"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 3
DEFAULT_MAX_RETRY_WAIT_S = 30.0
_USER_AGENT = "facerecon-python-client"

ImageSource = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO
"""A photo to upload: its encoded bytes (JPEG, PNG or WebP), a path to it, or a binary file opened for reading."""
MeshFormat = Literal["glb", "obj", "ply"]
FormatOption = Literal["glb", "obj", "ply", "json"] | OutputFormat
TextureOption = Literal["none", "vertex", "uv", "albedo"] | TextureMode
SpaceOption = Literal["image", "canonical", "neutral"] | MeshSpace
FacesOption = Literal["largest", "all"] | FaceSelection
BoxOption = str | Sequence[float]
PoseOption = Literal["identity", "expression"]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


# --------------------------------------------------------------------------------------------------- errors


class FaceReconClientError(Exception):
    """Root of every error this client raises."""


class FaceReconError(FaceReconClientError):
    """The service answered with a problem document (RFC 9457, ``application/problem+json``).

    ``status``: the HTTP status; ``type``: ``urn:facerecon:problem:<slug>`` (``slug`` is its last part);
    ``title``: the kind of error, one per type; ``detail``: what went wrong with this request;
    ``request_id``: the X-Request-ID to quote to support; ``errors``: the invalid fields of a validation error
    (``[{"loc": [...], "msg": ...}]``); ``problem``: the whole document; ``headers``: the answer's headers
    (lower-case names). An answer that is not a problem document (a proxy's error page) gets ``type``
    ``about:blank``, the status phrase as ``title`` and the start of the body as ``detail``.
    """

    slug: str | None = None  # the problem type of the subclass

    def __init__(self, status: int, type: str, title: str, detail: str = "", request_id: str | None = None, *,
                 instance: str | None = None, errors: list[dict[str, Any]] | None = None,
                 problem: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status, self.type, self.title, self.detail, self.request_id = status, type, title, detail, request_id
        self.instance, self.errors = instance, errors
        self.problem: dict[str, Any] = dict(problem or {})
        self.headers: dict[str, str] = dict(headers or {})

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (to pass between processes) despite the keyword arguments
        return type(self), (self.status, self.type, self.title, self.detail, self.request_id), self.__dict__


class BadRequest(FaceReconError):
    """400 ``bad-request``: the request could not be parsed (not HTTP/1.1, malformed body)."""

    slug = "bad-request"


class BadImage(FaceReconError):
    """400 ``bad-image``: the image is unreadable, truncated or empty."""

    slug = "bad-image"


class Unauthenticated(FaceReconError):
    """401 ``unauthenticated``: the server has API keys and the client's is missing or wrong."""

    slug = "unauthenticated"


class RequestTimeout(FaceReconError):
    """408 ``request-timeout``: the request (head or body) was sent too slowly."""

    slug = "request-timeout"


class UploadTooLarge(FaceReconError):
    """413 ``upload-too-large``: the request body is over the server's byte limit (see ``info().limits``)."""

    slug = "upload-too-large"


class ImageTooLarge(FaceReconError):
    """413 ``image-too-large``: the decoded image is over the server's pixel limit (or a decompression bomb)."""

    slug = "image-too-large"


class UnsupportedMediaType(FaceReconError):
    """415 ``unsupported-media-type``: the upload is not a JPEG, PNG or WebP image."""

    slug = "unsupported-media-type"


class NoFace(FaceReconError):
    """422 ``no-face``: no face was detected in the image."""

    slug = "no-face"


class InvalidOptions(FaceReconError):
    """422 ``invalid-options``: an option is invalid (``errors`` names the fields), or the box is."""

    slug = "invalid-options"


class HeadersTooLarge(FaceReconError):
    """431 ``headers-too-large``: the request line and headers are over the server's limits."""

    slug = "headers-too-large"


class InternalError(FaceReconError):
    """500 ``internal-error``: the server failed; quote ``request_id``."""

    slug = "internal-error"


class Overloaded(FaceReconError):
    """503 ``overloaded``: too many requests in flight, raised once the retries are spent.
    ``retry_after``: the seconds the server asked to wait (``Retry-After``), None when it did not say."""

    slug = "overloaded"

    @property
    def retry_after(self) -> float | None:
        return _retry_after_s(self.headers.get("retry-after"))


class NotReady(FaceReconError):
    """503 ``not-ready`` from :meth:`FaceReconClient.ready`: models loading, or the service stopping."""

    slug = "not-ready"


class FaceReconTransportError(FaceReconClientError):
    """No answer: the connection failed, or the request or its answer timed out (``__cause__``: the httpx error)."""


class InvalidResponse(FaceReconClientError):
    """A success answer this client cannot read (wrong media type, a body not of the documented shape).
    ``response``: the httpx response."""

    def __init__(self, message: str, response: httpx.Response) -> None:
        super().__init__(message)
        self.response = response


_PROBLEM_CLASSES: dict[str, type[FaceReconError]] = {
    cls.slug: cls for cls in (BadRequest, BadImage, Unauthenticated, RequestTimeout, UploadTooLarge, ImageTooLarge,
                              UnsupportedMediaType, NoFace, InvalidOptions, HeadersTooLarge, InternalError,
                              Overloaded, NotReady) if cls.slug
}


# -------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MeshFile:
    """A reconstruction as a file.

    ``content``: the file's bytes: binary glTF 2.0 (``model/gltf-binary``, one node per face, metres),
    Wavefront OBJ (``model/obj``), binary PLY (``model/ply``), or a zip (``application/zip``) when there are
    several files (OBJ with MTL + PNG texture, or OBJ/PLY with several faces). ``media_type``: its media type;
    ``filename``: the server's file name (``face.glb``, ``faces.zip`` ...); ``face_count``: the faces it holds
    (``X-Face-Count``); ``request_id``: ``X-Request-ID``; ``headers``: every header of the answer, lower-case
    names (so headers the server adds later, such as ``x-faces-dropped`` or ``x-model-version``, are there too).
    """

    content: bytes
    media_type: str
    filename: str | None
    face_count: int
    request_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_zip(self) -> bool:
        return self.media_type == "application/zip"

    @property
    def faces_dropped(self) -> int | None:
        """``X-Faces-Dropped`` when the server sends it: detected faces left out (over its face limit)."""
        value = self.headers.get("x-faces-dropped")
        return int(value) if value is not None and value.strip().isdigit() else None

    @property
    def model_version(self) -> str | None:
        """``X-Model-Version`` when the server sends it: the model that made the mesh (as ``info().model_version``)."""
        return self.headers.get("x-model-version")

    def files(self) -> dict[str, bytes]:
        """The files by name: those of the zip, or ``{filename: content}``."""
        return _unzip(self.content) if self.is_zip else {self.filename or "mesh": self.content}

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Writes ``content`` under ``directory`` with the server's file name; returns the path."""
        path = Path(directory) / Path(self.filename or "mesh").name
        path.write_bytes(self.content)
        return path


@dataclass(frozen=True)
class BatchArchive:
    """A batch reconstruction with mesh files: ``content`` is a zip holding each image's files (named
    ``<index>_<stem>...``) and ``results.json``, parsed into ``summary`` (per image: status, problem).
    ``headers``: every header of the answer, lower-case names."""

    content: bytes
    summary: BatchJSON
    request_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def model_version(self) -> str | None:
        """``X-Model-Version`` when the server sends it (also ``summary.model_version``)."""
        return self.headers.get("x-model-version")

    def files(self) -> dict[str, bytes]:
        """The zip's files by name (``results.json`` included)."""
        return _unzip(self.content)


def _unzip(content: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


# ------------------------------------------------- requests: described once, sent by either client


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One API call: what to send, and how to read a success answer (error answers are read by
    :func:`_raise_problem` for every call alike)."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None


def _option(value: str | Enum | None) -> str | None:
    return value.value if isinstance(value, Enum) else value


def _form(format: FormatOption, texture: TextureOption | None, space: SpaceOption | None,
          faces: FacesOption | None, include_mesh: bool | None, box: BoxOption | None = None) -> dict[str, str]:
    """The form fields; options left None are not sent (the server's defaults apply)."""
    fields: dict[str, str | None] = {"format": _option(format), "texture": _option(texture),
                                     "space": _option(space), "faces": _option(faces)}
    if include_mesh is not None:
        fields["include_mesh"] = "true" if include_mesh else "false"
    if box is not None:
        fields["box"] = box if isinstance(box, str) else ",".join(f"{float(v):g}" for v in box)
    return {name: value for name, value in fields.items() if value is not None}


_MAGIC = ((b"\xff\xd8\xff", "image/jpeg", ".jpg"), (b"\x89PNG\r\n\x1a\n", "image/png", ".png"))


def _upload(field_name: str, image: ImageSource, fallback_name: str) -> tuple[str, tuple[str, bytes, str]]:
    """A multipart file part: (field, (file name, bytes, media type)); the media type from the bytes' signature,
    else from the file name."""
    name: str | None
    if isinstance(image, bytes | bytearray | memoryview):
        data, name = bytes(image), None
    elif isinstance(image, str | os.PathLike):
        path = Path(image)
        data, name = path.read_bytes(), path.name
    else:
        data = image.read()
        name = os.path.basename(str(getattr(image, "name", ""))) or None
    media_type, suffix = "application/octet-stream", ""
    for magic, kind, extension in _MAGIC:
        if data.startswith(magic):
            media_type, suffix = kind, extension
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        media_type, suffix = "image/webp", ".webp"
    if media_type == "application/octet-stream" and name:
        media_type = mimetypes.guess_type(name)[0] or media_type
    return field_name, (name or fallback_name + suffix, data, media_type)


def _reconstruct_call(image: ImageSource, format: FormatOption, texture: TextureOption | None,
                      space: SpaceOption | None, faces: FacesOption | None, box: BoxOption | None,
                      include_mesh: bool | None) -> _Call[MeshFile | ReconstructionJSON]:
    parse = _parse_reconstruction_json if _option(format) == "json" else _parse_mesh_file
    return _Call("POST", "/v1/reconstruct", parse, _form(format, texture, space, faces, include_mesh, box),
                 [_upload("image", image, "image")])


def _batch_call(images: Sequence[ImageSource], format: FormatOption, texture: TextureOption | None,
                space: SpaceOption | None, faces: FacesOption | None,
                include_mesh: bool | None) -> _Call[BatchArchive | BatchJSON]:
    if isinstance(images, str | bytes | bytearray | memoryview | os.PathLike):
        raise TypeError("images must be a sequence of images (a list of bytes or paths)")
    parse = _parse_batch_json if _option(format) == "json" else _parse_batch_archive
    return _Call("POST", "/v1/reconstruct/batch", parse, _form(format, texture, space, faces, include_mesh),
                 [_upload("images", image, f"image-{index}") for index, image in enumerate(images)])


def _transfer_call(identity: ImageSource, expression: ImageSource | None, expression_code: Sequence[float] | None,
                   pose: PoseOption | None, format: FormatOption, texture: TextureOption | None,
                   space: SpaceOption | None, include_mesh: bool | None) -> _Call[Any]:
    if (expression is None) == (expression_code is None):
        raise TypeError("give the expression as a photo (expression) or as a code (expression_code): one of the two")
    data = _form(format, texture, space, None, include_mesh)
    if expression_code is not None:
        data["expression_code"] = json.dumps([float(v) for v in expression_code])
    if pose is not None:
        data["pose"] = pose
    files = [_upload("identity", identity, "identity")]
    if expression is not None:
        files.append(_upload("expression", expression, "expression"))
    parse = _parse_reconstruction_json if _option(format) == "json" else _parse_mesh_file
    return _Call("POST", "/v1/transfer", parse, data, files)


def _person_call(images: Sequence[ImageSource], format: FormatOption, texture: TextureOption | None,
                 space: SpaceOption | None, include_mesh: bool | None) -> _Call[Any]:
    if isinstance(images, str | bytes | bytearray | memoryview | os.PathLike):
        raise TypeError("images must be a sequence of images (a list of bytes or paths)")
    parse = _parse_person_json if _option(format) == "json" else _parse_mesh_file
    return _Call("POST", "/v1/reconstruct/person", parse, _form(format, texture, space, None, include_mesh),
                 [_upload("images", image, f"image-{index}") for index, image in enumerate(images)])


# ---------------------------------------------------------------- answers: parsed once for either client


def _headers(response: httpx.Response) -> dict[str, str]:
    return {name.lower(): value for name, value in response.headers.items()}


def _model(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as err:
        raise InvalidResponse(f"{response.request.url.path}: the answer is not a {model.__name__}: {err}",
                              response) from err


def _parse_reconstruction_json(response: httpx.Response) -> ReconstructionJSON:
    return _model(ReconstructionJSON, response)


def _parse_batch_json(response: httpx.Response) -> BatchJSON:
    return _model(BatchJSON, response)


def _parse_person_json(response: httpx.Response) -> PersonJSON:
    return _model(PersonJSON, response)


def _parse_info(response: httpx.Response) -> InfoJSON:
    return _model(InfoJSON, response)


def _parse_ready(response: httpx.Response) -> ReadyJSON:
    return _model(ReadyJSON, response)


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def _parse_mesh_file(response: httpx.Response) -> MeshFile:
    media_type = _media_type(response)
    if media_type in ("application/json", "application/problem+json", "text/html", "text/plain", ""):
        raise InvalidResponse(f"expected a mesh file, got {media_type or 'no media type'}", response)
    try:
        face_count = int(response.headers["x-face-count"])
    except (KeyError, ValueError) as err:
        raise InvalidResponse("the answer has no valid X-Face-Count header", response) from err
    filename = None
    if "content-disposition" in response.headers:
        message = Message()
        message["content-disposition"] = response.headers["content-disposition"]
        filename = message.get_filename()
    return MeshFile(response.content, media_type, filename, face_count, response.headers.get("x-request-id"),
                    _headers(response))


def _parse_batch_archive(response: httpx.Response) -> BatchArchive:
    try:
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            summary = BatchJSON.model_validate_json(archive.read("results.json"))
    except (zipfile.BadZipFile, KeyError, ValidationError) as err:
        raise InvalidResponse(f"the batch answer is not a zip with a valid results.json: {err}", response) from err
    return BatchArchive(response.content, summary, response.headers.get("x-request-id"), _headers(response))


def _raise_problem(response: httpx.Response) -> None:
    """Raises the error of an answer that is not a success (the subclass of its problem type)."""
    if response.is_success:
        return
    headers = _headers(response)
    document: Any = None
    if "json" in _media_type(response):
        try:
            document = json.loads(response.content)
        except ValueError:
            document = None
    if not isinstance(document, dict) or not isinstance(document.get("type"), str):
        text = response.text.strip()
        raise FaceReconError(response.status_code, "about:blank", response.reason_phrase or "HTTP error", text[:500],
                             headers.get("x-request-id"), headers=headers)
    problem_type: str = document["type"]
    slug = problem_type.removeprefix(PROBLEM_TYPE_PREFIX) if problem_type.startswith(PROBLEM_TYPE_PREFIX) else ""
    errors = document.get("errors")
    status = document.get("status")
    raise _PROBLEM_CLASSES.get(slug, FaceReconError)(
        status if isinstance(status, int) else response.status_code, problem_type,
        str(document.get("title") or response.reason_phrase), str(document.get("detail") or ""),
        document.get("request_id") or headers.get("x-request-id"), instance=document.get("instance"),
        errors=errors if isinstance(errors, list) else None, problem=document, headers=headers)


def _parse(call: _Call[T], response: httpx.Response) -> T:
    _raise_problem(response)
    return call.parse(response)


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when missing or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _is_overloaded(response: httpx.Response) -> bool:
    if response.status_code != 503 or "json" not in _media_type(response):
        return False
    try:
        document = json.loads(response.content)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("type") == PROBLEM_TYPE_PREFIX + "overloaded"


@dataclass(frozen=True)
class _RetryPolicy:
    retries: int
    max_wait_s: float
    default_wait_s: float = 1.0

    def delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before trying again after ``attempt`` (1: the first) got ``response``; None: don't.
        Only ``503 overloaded`` is retried; the wait is its Retry-After (1 s when missing), at most max_wait_s."""
        if attempt > self.retries or not _is_overloaded(response):
            return None
        wait = _retry_after_s(response.headers.get("retry-after"))
        return min(self.default_wait_s if wait is None else wait, self.max_wait_s)


def _client_options(base_url: str, api_key: str | None, timeout: float | httpx.Timeout | None,
                    headers: Mapping[str, str] | None) -> dict[str, Any]:
    """Keyword arguments of httpx.Client / httpx.AsyncClient (transport added by the caller)."""
    sent = {"User-Agent": _USER_AGENT, "Accept": "application/json, application/problem+json, */*"}
    sent.update(headers or {})
    if api_key is not None:
        sent["X-API-Key"] = api_key
    return {"base_url": base_url, "headers": sent, "timeout": timeout}


def _policy(retries: int, max_retry_wait: float) -> _RetryPolicy:
    if retries < 0 or max_retry_wait < 0:
        raise ValueError("retries and max_retry_wait must not be negative")
    return _RetryPolicy(retries, max_retry_wait)


# ---------------------------------------------------------------------------------------------------- clients

class FaceReconClient:
    """The blocking client (on httpx.Client).

    ``base_url``: the service root (``http://127.0.0.1:8000``; a path prefix is kept). ``api_key``: sent as
    ``X-API-Key`` when the server has API keys. ``timeout``: seconds per request (connect, each read and write;
    or an ``httpx.Timeout``; None: none). ``retries``: how many times a ``503 overloaded`` answer is retried
    after its ``Retry-After``; ``max_retry_wait``: the longest wait in seconds. ``transport``: an httpx
    transport to use instead of the network (``httpx.ASGITransport(app)`` in tests, a mounted proxy).
    ``headers``: extra headers on every request. ``sleep``: how to wait before a retry (tests pass their own).
    Use as a context manager, or call ``close``.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                 timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES,
                 max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT_S, transport: httpx.BaseTransport | None = None,
                 headers: Mapping[str, str] | None = None, sleep: Callable[[float], None] | None = None) -> None:
        self._retry = _policy(retries, max_retry_wait)
        self._sleep = sleep or time.sleep
        self._http = httpx.Client(transport=transport, **_client_options(base_url, api_key, timeout, headers))

    def __enter__(self) -> FaceReconClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        attempt = 1
        while True:
            try:
                response = self._http.request(call.method, call.path, data=call.data, files=call.files)
            except httpx.TransportError as err:
                raise FaceReconTransportError(f"{call.method} {call.path}: {err}") from err
            delay = self._retry.delay(response, attempt)
            if delay is None:
                return _parse(call, response)
            self._sleep(delay)
            attempt += 1

    @overload
    def reconstruct(self, image: ImageSource, *, format: Literal["json"] | Literal[OutputFormat.json],
                    texture: TextureOption | None = None, space: SpaceOption | None = None,
                    faces: FacesOption | None = None, box: BoxOption | None = None,
                    include_mesh: bool | None = None) -> ReconstructionJSON: ...

    @overload
    def reconstruct(self, image: ImageSource, *, format: MeshFormat = "glb", texture: TextureOption | None = None,
                    space: SpaceOption | None = None, faces: FacesOption | None = None,
                    box: BoxOption | None = None, include_mesh: bool | None = None) -> MeshFile: ...

    @overload
    def reconstruct(self, image: ImageSource, *, format: FormatOption, texture: TextureOption | None = None,
                    space: SpaceOption | None = None, faces: FacesOption | None = None,
                    box: BoxOption | None = None, include_mesh: bool | None = None) -> MeshFile | ReconstructionJSON:
        ...

    def reconstruct(self, image: ImageSource, *, format: FormatOption = "glb", texture: TextureOption | None = None,
                    space: SpaceOption | None = None, faces: FacesOption | None = None,
                    box: BoxOption | None = None, include_mesh: bool | None = None) -> MeshFile | ReconstructionJSON:
        """``POST /v1/reconstruct``: the largest face (``faces="all"``: every face) of one photo.

        ``image``: JPEG, PNG or WebP bytes, a path, or a binary file. ``format``: ``glb`` | ``obj`` | ``ply``
        give a :class:`MeshFile` (meshes in metres, as many vertices as ``info()`` says), ``json`` a
        ``ReconstructionJSON`` (per face: box, score, yaw/pitch/roll in degrees, (68, 2) and (68, 3) landmarks in
        pixels, metres_per_pixel; with ``include_mesh`` (V, 3) vertices in metres and (F, 3) triangles).
        ``texture``: none | vertex | uv;
        ``space``: image | canonical | neutral; ``box``: ``(x1, y1, x2, y2)`` in pixels of the upright photo,
        or ``"x1,y1,x2,y2"``, to skip detection. Options left None take the server's defaults (vertex, image,
        largest). Raises :class:`NoFace`, :class:`BadImage` ... (:class:`FaceReconError`)."""
        return self._run(_reconstruct_call(image, format, texture, space, faces, box, include_mesh))

    def reconstruct_json(self, image: ImageSource, *, space: SpaceOption | None = None,
                         faces: FacesOption | None = None, box: BoxOption | None = None,
                         include_mesh: bool = False) -> ReconstructionJSON:
        """``reconstruct(image, format="json")``: landmarks and pose of the faces (and meshes with include_mesh)."""
        return self.reconstruct(image, format="json", space=space, faces=faces, box=box, include_mesh=include_mesh)

    @overload
    def reconstruct_batch(self, images: Sequence[ImageSource], *,
                          format: Literal["json"] | Literal[OutputFormat.json], texture: TextureOption | None = None,
                          space: SpaceOption | None = None, faces: FacesOption | None = None,
                          include_mesh: bool | None = None) -> BatchJSON: ...

    @overload
    def reconstruct_batch(self, images: Sequence[ImageSource], *, format: MeshFormat = "glb",
                          texture: TextureOption | None = None, space: SpaceOption | None = None,
                          faces: FacesOption | None = None, include_mesh: bool | None = None) -> BatchArchive: ...

    @overload
    def reconstruct_batch(self, images: Sequence[ImageSource], *, format: FormatOption,
                          texture: TextureOption | None = None, space: SpaceOption | None = None,
                          faces: FacesOption | None = None,
                          include_mesh: bool | None = None) -> BatchArchive | BatchJSON: ...

    def reconstruct_batch(self, images: Sequence[ImageSource], *, format: FormatOption = "glb",
                          texture: TextureOption | None = None, space: SpaceOption | None = None,
                          faces: FacesOption | None = None,
                          include_mesh: bool | None = None) -> BatchArchive | BatchJSON:
        """``POST /v1/reconstruct/batch``: several photos in one request (at most ``info().limits
        ["max_batch_images"]``). One bad image does not fail the others: each item of the ``BatchJSON``
        (``format="json"``, or the :class:`BatchArchive`'s ``summary`` for mesh formats) has its own ``status``
        and, when not 200, its problem document in ``error``."""
        return self._run(_batch_call(images, format, texture, space, faces, include_mesh))

    def transfer(self, identity: ImageSource, expression: ImageSource | None = None, *,
                 expression_code: Sequence[float] | None = None, pose: PoseOption | None = None,
                 format: MeshFormat = "glb", texture: TextureOption | None = None,
                 space: SpaceOption | None = None) -> MeshFile:
        """``POST /v1/transfer``: the largest face of ``identity`` with the expression of ``expression`` (a photo)
        or ``expression_code`` (a face's ``expression_code`` from an earlier JSON answer of the same model):
        exactly one of the two; ``pose="expression"`` takes the expression photo's head rotation too."""
        return self._run(_transfer_call(identity, expression, expression_code, pose, format, texture, space, None))

    def transfer_json(self, identity: ImageSource, expression: ImageSource | None = None, *,
                      expression_code: Sequence[float] | None = None, pose: PoseOption | None = None,
                      space: SpaceOption | None = None, include_mesh: bool = False) -> ReconstructionJSON:
        """:meth:`transfer` as JSON: the identity photo's face with the other expression (its
        ``expression_code`` is the one transferred)."""
        return self._run(_transfer_call(identity, expression, expression_code, pose, "json", None, space,
                                        include_mesh))

    def reconstruct_person(self, images: Sequence[ImageSource], *, format: MeshFormat = "glb",
                           texture: TextureOption | None = None, space: SpaceOption | None = None) -> MeshFile:
        """``POST /v1/reconstruct/person``: 2 to 8 photos of one person; with ``space="neutral"`` the one fused
        face, else a zip of each used photo's face and ``person.json``. The headers ``x-photos-used`` and
        ``x-photos-rejected`` count the photos."""
        return self._run(_person_call(images, format, texture, space, None))

    def reconstruct_person_json(self, images: Sequence[ImageSource], *, space: SpaceOption | None = None,
                                include_mesh: bool = False) -> PersonJSON:
        """:meth:`reconstruct_person` as JSON: which photos were used (and why not), their weights, each used
        photo's face on the fused identity."""
        return self._run(_person_call(images, "json", None, space, include_mesh))

    def info(self) -> InfoJSON:
        """``GET /v1/info``: model version, mesh size (vertices, triangles), providers and the server's limits."""
        return self._run(_Call("GET", "/v1/info", _parse_info))

    def ready(self) -> ReadyJSON:
        """``GET /readyz``: the execution providers once the models are loaded; raises :class:`NotReady` before."""
        return self._run(_Call("GET", "/readyz", _parse_ready))


class AsyncFaceReconClient:
    """The asyncio client (on httpx.AsyncClient): the methods of :class:`FaceReconClient`, awaited. The same
    arguments, but ``transport`` is an ``httpx.AsyncBaseTransport`` (``httpx.ASGITransport(app=app)``
    serves an app in the same process) and ``sleep`` a coroutine function (default ``asyncio.sleep``)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                 timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES,
                 max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT_S, transport: httpx.AsyncBaseTransport | None = None,
                 headers: Mapping[str, str] | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self._retry = _policy(retries, max_retry_wait)
        self._sleep = sleep or asyncio.sleep
        self._http = httpx.AsyncClient(transport=transport, **_client_options(base_url, api_key, timeout, headers))

    async def __aenter__(self) -> AsyncFaceReconClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        attempt = 1
        while True:
            try:
                response = await self._http.request(call.method, call.path, data=call.data, files=call.files)
            except httpx.TransportError as err:
                raise FaceReconTransportError(f"{call.method} {call.path}: {err}") from err
            delay = self._retry.delay(response, attempt)
            if delay is None:
                return _parse(call, response)
            await self._sleep(delay)
            attempt += 1

    @overload
    async def reconstruct(self, image: ImageSource, *, format: Literal["json"] | Literal[OutputFormat.json],
                          texture: TextureOption | None = None, space: SpaceOption | None = None,
                          faces: FacesOption | None = None, box: BoxOption | None = None,
                          include_mesh: bool | None = None) -> ReconstructionJSON: ...

    @overload
    async def reconstruct(self, image: ImageSource, *, format: MeshFormat = "glb",
                          texture: TextureOption | None = None, space: SpaceOption | None = None,
                          faces: FacesOption | None = None, box: BoxOption | None = None,
                          include_mesh: bool | None = None) -> MeshFile: ...

    @overload
    async def reconstruct(self, image: ImageSource, *, format: FormatOption, texture: TextureOption | None = None,
                          space: SpaceOption | None = None, faces: FacesOption | None = None,
                          box: BoxOption | None = None,
                          include_mesh: bool | None = None) -> MeshFile | ReconstructionJSON: ...

    async def reconstruct(self, image: ImageSource, *, format: FormatOption = "glb",
                          texture: TextureOption | None = None, space: SpaceOption | None = None,
                          faces: FacesOption | None = None, box: BoxOption | None = None,
                          include_mesh: bool | None = None) -> MeshFile | ReconstructionJSON:
        """See :meth:`FaceReconClient.reconstruct`."""
        return await self._run(_reconstruct_call(image, format, texture, space, faces, box, include_mesh))

    async def reconstruct_json(self, image: ImageSource, *, space: SpaceOption | None = None,
                               faces: FacesOption | None = None, box: BoxOption | None = None,
                               include_mesh: bool = False) -> ReconstructionJSON:
        """See :meth:`FaceReconClient.reconstruct_json`."""
        return await self.reconstruct(image, format="json", space=space, faces=faces, box=box,
                                      include_mesh=include_mesh)

    @overload
    async def reconstruct_batch(self, images: Sequence[ImageSource], *,
                                format: Literal["json"] | Literal[OutputFormat.json],
                                texture: TextureOption | None = None, space: SpaceOption | None = None,
                                faces: FacesOption | None = None, include_mesh: bool | None = None) -> BatchJSON: ...

    @overload
    async def reconstruct_batch(self, images: Sequence[ImageSource], *, format: MeshFormat = "glb",
                                texture: TextureOption | None = None, space: SpaceOption | None = None,
                                faces: FacesOption | None = None,
                                include_mesh: bool | None = None) -> BatchArchive: ...

    @overload
    async def reconstruct_batch(self, images: Sequence[ImageSource], *, format: FormatOption,
                                texture: TextureOption | None = None, space: SpaceOption | None = None,
                                faces: FacesOption | None = None,
                                include_mesh: bool | None = None) -> BatchArchive | BatchJSON: ...

    async def reconstruct_batch(self, images: Sequence[ImageSource], *, format: FormatOption = "glb",
                                texture: TextureOption | None = None, space: SpaceOption | None = None,
                                faces: FacesOption | None = None,
                                include_mesh: bool | None = None) -> BatchArchive | BatchJSON:
        """See :meth:`FaceReconClient.reconstruct_batch`."""
        return await self._run(_batch_call(images, format, texture, space, faces, include_mesh))

    async def transfer(self, identity: ImageSource, expression: ImageSource | None = None, *,
                 expression_code: Sequence[float] | None = None, pose: PoseOption | None = None,
                 format: MeshFormat = "glb", texture: TextureOption | None = None,
                 space: SpaceOption | None = None) -> MeshFile:
        """``POST /v1/transfer``: the largest face of ``identity`` with the expression of ``expression`` (a photo)
        or ``expression_code`` (a face's ``expression_code`` from an earlier JSON answer of the same model):
        exactly one of the two; ``pose="expression"`` takes the expression photo's head rotation too."""
        return await self._run(_transfer_call(identity, expression, expression_code, pose, format, texture, space,
                                              None))

    async def transfer_json(self, identity: ImageSource, expression: ImageSource | None = None, *,
                      expression_code: Sequence[float] | None = None, pose: PoseOption | None = None,
                      space: SpaceOption | None = None, include_mesh: bool = False) -> ReconstructionJSON:
        """:meth:`transfer` as JSON: the identity photo's face with the other expression (its
        ``expression_code`` is the one transferred)."""
        return await self._run(_transfer_call(identity, expression, expression_code, pose, "json", None, space,
                                        include_mesh))

    async def reconstruct_person(self, images: Sequence[ImageSource], *, format: MeshFormat = "glb",
                           texture: TextureOption | None = None, space: SpaceOption | None = None) -> MeshFile:
        """``POST /v1/reconstruct/person``: 2 to 8 photos of one person; with ``space="neutral"`` the one fused
        face, else a zip of each used photo's face and ``person.json``. The headers ``x-photos-used`` and
        ``x-photos-rejected`` count the photos."""
        return await self._run(_person_call(images, format, texture, space, None))

    async def reconstruct_person_json(self, images: Sequence[ImageSource], *, space: SpaceOption | None = None,
                                include_mesh: bool = False) -> PersonJSON:
        """:meth:`reconstruct_person` as JSON: which photos were used (and why not), their weights, each used
        photo's face on the fused identity."""
        return await self._run(_person_call(images, "json", None, space, include_mesh))

    async def info(self) -> InfoJSON:
        """See :meth:`FaceReconClient.info`."""
        return await self._run(_Call("GET", "/v1/info", _parse_info))

    async def ready(self) -> ReadyJSON:
        """See :meth:`FaceReconClient.ready`."""
        return await self._run(_Call("GET", "/readyz", _parse_ready))
