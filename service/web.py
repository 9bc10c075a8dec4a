"""The web page at ``/``: pick, drop or snap a photo and look at its faces in 3D.

The page is static (HTML, CSS and ES modules under service/static, no build step, nothing
fetched from elsewhere) and talks to the API like any other client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"


def install_web_page(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets under ``/static``, outside the OpenAPI schema."""

    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
