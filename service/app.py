"""HTTP service (ONNX Runtime only). This first version exposes liveness and model information;
the reconstruction endpoints arrive with the service issue."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from model.inference import DEFAULT_MODEL, FaceReconstructor


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.reconstructor = FaceReconstructor(DEFAULT_MODEL)
    yield


app = FastAPI(title="facerecon", version="0.1.0", lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/v1/info")
async def info() -> dict[str, object]:
    reconstructor: FaceReconstructor = app.state.reconstructor
    meta = reconstructor.metadata
    return {
        "topology_version": meta.topology_version,
        "trained": meta.trained,
        "vertices": meta.num_vertices,
        "faces": meta.num_faces,
        "input_size": meta.input_size,
        "providers": reconstructor.session.get_providers(),
    }
