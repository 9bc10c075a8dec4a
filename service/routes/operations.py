"""Probes, model information and Prometheus metrics: open even when API keys are configured."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.dependencies import EngineDep, MetricsDep, SettingsDep
from service.engine import ReconstructionEngine
from service.problems import problem_doc, problem_response
from service.schemas import INFO_EXAMPLE, READY_EXAMPLE, InfoJSON, ReadyJSON

router = APIRouter(tags=["operations"])

_METRICS_EXAMPLE = ("# HELP facerecon_requests_total HTTP requests by route and status\n"
                    "# TYPE facerecon_requests_total counter\n"
                    'facerecon_requests_total{method="POST",route="/v1/reconstruct",status="200"} 42.0\n')


def _example(value: object, media_type: str = "application/json") -> dict[int | str, dict[str, object]]:
    """The ``responses`` entry that gives a route's 200 answer an example."""
    return {200: {"content": {media_type: {"example": value}}}}


@router.get("/healthz", summary="Liveness", responses=_example({"status": "ok"}))
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: models loaded and warmed up", response_model=ReadyJSON,
            responses={**_example(READY_EXAMPLE),
                       503: problem_doc("still loading or shutting down",
                                        (503, "not-ready", "models are loading or the service is stopping"),
                                        instance="/readyz")})
async def readyz(request: Request) -> ReadyJSON | JSONResponse:
    engine: ReconstructionEngine | None = getattr(request.app.state, "engine", None)
    if engine is None or not engine.ready:
        return problem_response(request, 503, "not-ready", "Not ready", "models are loading or the service is stopping")
    return ReadyJSON(status="ready", providers=engine.providers)


@router.get("/v1/info", summary="Model, mesh and limits", response_model=InfoJSON, responses=_example(INFO_EXAMPLE))
async def info(engine: EngineDep, settings: SettingsDep) -> InfoJSON:
    meta = engine.reconstructor.metadata
    return InfoJSON(
        model_version=engine.model_version, landmark_calibration=engine.landmark_calibration,
        topology_version=meta.topology_version, trained=meta.trained, vertices=meta.num_vertices,
        triangles=meta.num_faces, input_size=meta.input_size, providers=engine.providers,
        limits={"max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels,
                "max_faces": settings.max_faces, "max_batch_images": settings.max_batch_images,
                "max_in_flight": settings.max_in_flight},
        batching={"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms},
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"},
                                                               "example": _METRICS_EXAMPLE}}}})
async def prometheus_metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
