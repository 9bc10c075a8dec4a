"""Service configuration: environment variables with the ``FACERECON_`` prefix (or a ``.env`` file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.runtime.detector import DEFAULT_DETECTOR
from model.runtime.image_io import DEFAULT_MAX_PIXELS
from model.runtime.reconstructor import DEFAULT_MODEL


class ServiceSettings(BaseSettings):
    """Every knob of the HTTP service. ``FACERECON_MAX_BATCH=16`` sets ``max_batch`` and so on;
    lists are JSON (``FACERECON_API_KEYS='["key-1", "key-2"]'``)."""

    model_config = SettingsConfigDict(env_prefix="FACERECON_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    model_path: Path = DEFAULT_MODEL
    detector_path: Path = DEFAULT_DETECTOR
    device: Literal["auto", "cuda", "cpu"] = Field(
        default="auto", description="auto: CUDA when ONNX Runtime offers it, else CPU")
    threads: int | None = Field(default=None, ge=1, description="CPU threads of the reconstruction network's session "
                                                                "(default: the usable cores)")
    spinning: bool = Field(default=True, description="ONNX Runtime's CPU threads busy-wait between the operators "
                                                     "of a run (never past its end): a faster network (README)")
    detector_threads: int = Field(default=1, ge=1, description="CPU threads of the face detector's session "
                                                               "(small networks: 1 is fastest)")
    workers: int | None = Field(default=None, ge=1, description="threads for decoding, detection and mesh encoding "
                                                                "(default: the usable cores)")

    max_upload_bytes: int = Field(default=15 * 1024 * 1024, ge=1024,
                                  description="request body limit, enforced while it streams in")
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1, description="decoded image size limit (width x height)")
    max_faces: int = Field(default=16, ge=1, description="faces reconstructed per image at most (faces=all)")
    max_batch_images: int = Field(default=16, ge=1, description="images per /v1/reconstruct/batch request")
    texture_size: int = Field(default=512, ge=64, le=4096, description="side of the baked UV texture (texture=uv)")

    refine_crop: bool = Field(default=False, description="reconstruct detected faces a second time, cropped around "
                                                         "the first pass's landmarks (more accurate, ~5 ms slower)")
    mirror_average: bool = Field(default=False, description="also reconstruct each face from its mirror image and "
                                                            "average the two (more accurate, twice the network's work)")
    max_batch: int = Field(default=16, ge=1, description="faces per reconstruction-network run at most")
    max_wait_ms: float = Field(default=4.0, ge=0.0, description="how long the first face of a batch waits for others")
    max_in_flight: int = Field(default=32, ge=1, description="reconstruction requests admitted at once; beyond: 503")
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After sent with 503")
    # slow and oversized clients (HTTP protocol guard and body guard; service/middleware.py)
    header_timeout_s: float = Field(default=10.0, gt=0.0, description="time to send a request's line and headers, "
                                    "from the connection (or the previous answer); slower: 408 and close")
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, description="request line and headers together; "
                                                                          "larger: 431 and close")
    max_headers: int = Field(default=100, ge=8, description="header fields per request; more: 431 and close")
    body_timeout_s: float = Field(default=10.0, gt=0.0, description="grace before min_upload_rate applies: a body "
                                  "may take body_timeout_s + its size / min_upload_rate; slower: 408 and close")
    min_upload_rate: int = Field(default=16 * 1024, ge=1, description="bytes/s a body must average after the grace")
    body_idle_timeout_s: float = Field(default=10.0, gt=0.0, description="longest pause between two pieces of a "
                                                                         "body; longer: 408 and close")
    graceful_shutdown_s: int = Field(default=30, ge=0, description="how long shutdown waits for requests in flight")

    api_keys: list[SecretStr] = Field(default_factory=list, description="when set, X-API-Key must be one of them")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS (empty: none)")

    # memory: each reconstruction request reserves what it will cost (service/engine.py, WorkBudget)
    memory_budget_mb: int = Field(default=1536, ge=64, description="memory the reconstruction requests in flight "
                                  "may take together, estimated from each upload's image header (pixels, bit depth), "
                                  "its images and faces; a request that can never fit: 413, one that does not fit "
                                  "beside those in flight: 503 with Retry-After")
    batch_parallelism: int = Field(default=4, ge=1, description="images of one batch request decoded and "
                                   "reconstructed at once (its memory is reserved for that many)")
