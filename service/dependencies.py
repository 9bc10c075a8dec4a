"""FastAPI dependencies of the routes: the app's engine, settings and metrics, the API-key check, and the
output options that the reconstruction routes take.

Every dependency is a coroutine function: FastAPI runs a plain callable (a class included) on its
thread pool, a hop to another thread and back per dependency and request (four on /v1/reconstruct),
where these only read attributes and build small objects."""

from __future__ import annotations

import hmac
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, fields
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Form, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader

from model.conventions import FaceSelection, MeshSpace
from service.encoding import PHOTO_TEXTURES
from service.engine import ReconstructionEngine
from service.metrics import ServiceMetrics
from service.problems import ProblemError
from service.schemas import (
    FACES_HELP,
    FORMAT_HELP,
    INCLUDE_MESH_HELP,
    SPACE_HELP,
    TEXTURE_HELP,
    OutputFormat,
    TextureMode,
)
from service.settings import ServiceSettings


async def get_engine(request: Request) -> ReconstructionEngine:
    """The engine that the app's lifespan started."""
    return request.app.state.engine


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


EngineDep = Annotated[ReconstructionEngine, Depends(get_engine)]
SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="required on reconstruction routes when the server has API keys configured")


def check_api_key(settings: ServiceSettings, key: str | None) -> None:
    """401 unless no API keys are configured or ``key`` (the X-API-Key header) is one of them."""
    keys = settings.api_keys
    if keys and not any(hmac.compare_digest((key or "").encode(), k.get_secret_value().encode()) for k in keys):
        raise ProblemError(401, "unauthenticated", "Unauthenticated", "a valid X-API-Key header is required",
                           headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})


async def require_api_key(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """:func:`check_api_key` as a route dependency (which also documents the header)."""
    check_api_key(settings, key)


OptionsT = TypeVar("OptionsT", bound="OutputOptions")


@dataclass(frozen=True)
class OutputOptions:
    """How to encode the answer: form fields of every reconstruction route (/v1/reconstruct, its batch,
    /v1/transfer, /v1/reconstruct/person)."""

    format: Annotated[OutputFormat, Form(description=FORMAT_HELP, examples=["json"])] = OutputFormat.glb
    texture: Annotated[TextureMode, Form(description=TEXTURE_HELP, examples=["vertex"])] = TextureMode.vertex
    space: Annotated[MeshSpace, Form(description=SPACE_HELP, examples=["image"])] = MeshSpace.image
    include_mesh: Annotated[bool, Form(description=INCLUDE_MESH_HELP, examples=[False])] = False

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in fields(cls))

    @property
    def photo_colours(self) -> bool:
        """Whether the answer holds colours read from the photo (a mesh file coloured from what it
        saw); a JSON answer or an albedo or uncoloured mesh reads nothing of the photo past its crops."""
        return self.format is not OutputFormat.json and self.texture in PHOTO_TEXTURES


@dataclass(frozen=True)
class ReconstructionOptions(OutputOptions):
    """The output options and which faces to reconstruct: form fields of /v1/reconstruct and its batch."""

    faces: Annotated[FaceSelection, Form(description=FACES_HELP, examples=["all"])] = FaceSelection.largest


def built_in_the_event_loop(options: type[OptionsT]) -> Callable[..., Awaitable[OptionsT]]:
    """A coroutine dependency that builds ``options`` from its form fields (its signature is the
    class's, so FastAPI reads and documents the same fields as with ``Depends()``)."""

    async def build(**values: Any) -> OptionsT:
        return options(**values)

    build.__signature__ = inspect.signature(options)  # type: ignore[attr-defined]
    return build


OutputOptionsDep = Annotated[OutputOptions, Depends(built_in_the_event_loop(OutputOptions))]
OptionsDep = Annotated[ReconstructionOptions, Depends(built_in_the_event_loop(ReconstructionOptions))]


def invalid_field(name: str, message: str) -> RequestValidationError:
    """A 422 ``invalid-options`` problem naming the form field (in ``errors`` and in ``detail``)."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", name), "msg": message, "input": None}])


def form_fields(allowed: Iterable[str], repeatable: Iterable[str] = ()) -> Callable[[Request], Awaitable[None]]:
    """A dependency that refuses form fields the route does not take (a misspelt option would
    otherwise be ignored and its default used) and fields sent more than once (the last would
    otherwise win), except those in ``repeatable``. It reads the form FastAPI has parsed already."""
    known, repeats = frozenset(allowed), frozenset(repeatable)

    async def check_form_fields(request: Request) -> None:
        counts = Counter(name for name, _ in (await request.form()).multi_items())
        for name, count in counts.items():
            shown = name if len(name) <= 64 else name[:61] + "..."
            if name not in known:
                raise invalid_field(shown, f"unknown form field; this route takes {', '.join(sorted(known))}")
            if count > 1 and name not in repeats:
                raise invalid_field(shown, f"sent {count} times; send it once")

    return check_form_fields
