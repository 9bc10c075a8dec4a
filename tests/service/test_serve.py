"""`facerecon serve` as a real process: settings from the environment, readiness, JSON logs,
and a graceful shutdown that finishes the request in flight."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from tests.conftest import REPO
from tests.service.conftest import jpeg_bytes, wait_until_ready


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def _multipart(files: list[bytes]) -> tuple[bytes, str]:
    parts = [b'--b\r\nContent-Disposition: form-data; name="images"; filename="p.jpg"\r\n'
             b"Content-Type: image/jpeg\r\n\r\n" + data + b"\r\n" for data in files]
    return b"".join(parts) + b"--b--\r\n", "multipart/form-data; boundary=b"


def test_serve_process_shuts_down_gracefully(face_photo):
    port = _free_port()
    env = {**os.environ, "FACERECON_PORT": str(port), "FACERECON_LOG_LEVEL": "info", "FACERECON_MAX_BATCH_IMAGES": "40"}
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_ready(server, port)
        status, body = _get(port, "/v1/info")
        assert status == 200 and json.loads(body)["limits"]["max_batch_images"] == 40  # from the environment

        # a slow request: 40 photos in one batch request (several hundred ms), then SIGTERM while it runs
        payload, content_type = _multipart([jpeg_bytes(face_photo)] * 40)
        result = {}

        def slow_request():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", "/v1/reconstruct/batch", body=payload, headers={"Content-Type": content_type})
            response = conn.getresponse()
            result["status"], result["body"] = response.status, response.read()
            result["done"] = time.monotonic()

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.15)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        worker.join(timeout=60)
        assert result.get("status") == 200  # the request in flight was finished, not dropped
        assert result["done"] > signalled
        # uvicorn re-raises the signal once it has shut down cleanly
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
    stderr = server.stderr.read()
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any("Application shutdown complete" in entry["message"] for entry in logs)
    assert "\x1b" not in stderr and "\\u001b" not in stderr  # no terminal colours (uvicorn's color_message)
    assert not any("color_message" in entry for entry in logs)
    access = [entry for entry in logs if entry["logger"] == "facerecon.access"]
    assert any(entry["route"] == "/v1/reconstruct/batch" and entry["status"] == 200 for entry in access)
    assert all("request_id" in entry for entry in access)
    assert np.isfinite(sum(entry["duration_ms"] for entry in access))
