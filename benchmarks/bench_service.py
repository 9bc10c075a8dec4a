"""Load test of the running service over loopback: starts `facerecon serve` on a free port,
then sends a 640x480 JPEG with one face (detect + reconstruct + GLB) at concurrency 1, 4, 16
(and one level above the admission limit), each with a fixed request count and a time cap.
Prints requests/s, p50/p99 latency and failures per level.

When the peer harness of ../shared/peers is set up (bench_pipeline.py's --peers), 3DDFA_V2's photo
to dense mesh time on the AFLW2000-3D dev images is measured in the same run, before the service
starts and after it stops, and the p50 of single requests (the first 50, then the concurrency 1
level) is printed as a ratio to it too: this virtual machine's speed drifts by 10-50 % from hour to
hour, which moves the milliseconds more than the ratio.

Usage: python benchmarks/bench_service.py [--requests 200] [--photo PATH] [--format glb] [--texture vertex]
       [--peers DIR]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from bench_pipeline import AFLW_DEV, time_peer
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTO = AFLW_DEV / "images" / "image00050.jpg"


def photo_640x480(path: Path) -> bytes:
    """The face photo scaled to 360 px high and centred on a 640x480 canvas (edge colour), as a JPEG."""
    face = Image.open(path).convert("RGB")
    face = face.resize((round(face.width * 360 / face.height), 360))
    canvas = Image.new("RGB", (640, 480), tuple(int(v) for v in np.asarray(face)[0, 0]))
    canvas.paste(face, ((640 - face.width) // 2, (480 - face.height) // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def multipart(image: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n".encode() + image + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError("the service did not become ready")


def run_level(port: int, body: bytes, content_type: str, concurrency: int, requests: int, cap_s: float) -> dict:
    """Each worker keeps one connection and sends requests until the shared count or the time cap is reached."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    budget = iter(range(requests))
    deadline = time.monotonic() + cap_s

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in budget:
            if time.monotonic() > deadline:
                break
            start = time.perf_counter()
            try:
                conn.request("POST", "/v1/reconstruct", body=body, headers={"Content-Type": content_type})
                response = conn.getresponse()
                response.read()
                status = response.status
            except OSError:
                status = 0
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            elapsed = time.perf_counter() - start
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    wall = time.perf_counter() - started
    ok = statuses.get(200, 0)
    ms = sorted(1000.0 * v for v in latencies)
    return {
        "concurrency": concurrency, "requests": sum(statuses.values()), "ok": ok,
        "rejected_503": statuses.get(503, 0), "failed": sum(n for s, n in statuses.items() if s not in (200, 503)),
        "req_per_s": round(ok / wall, 1),
        "p50_ms": round(statistics.median(ms), 1) if ms else None,
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1) if ms else None,
    }


def peer_total_ms(peers: Path) -> float | None:
    """3DDFA_V2's photo to dense mesh time on the first 10 dev images (ms; 20 runs after 5), or None
    where the peer harness or the images are missing."""
    if not (AFLW_DEV / "images").is_dir():
        return None
    figures = time_peer(peers, AFLW_DEV, 20, 5, 2)
    return None if figures is None else figures["total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--cap-s", type=float, default=60.0, help="time cap per level")
    parser.add_argument("--format", default="glb", choices=("glb", "obj", "ply", "json"))
    parser.add_argument("--texture", default="vertex", choices=("none", "vertex", "uv"),
                        help="colours of the mesh (the service's default: vertex)")
    parser.add_argument("--levels", default="1,4,16,64")
    parser.add_argument("--max-in-flight", type=int, default=32)
    parser.add_argument("--peers", type=Path, default=Path(os.environ.get("PEERS", "/tmp/peers")),
                        help="the 3DDFA_V2 peer harness (bench_pipeline.py): timed in the same run where set up")
    args = parser.parse_args()
    if not args.photo.is_file():
        sys.exit(f"error: no face photo at {args.photo} (pass --photo)")
    body, content_type = multipart(photo_640x480(args.photo), {"format": args.format, "texture": args.texture})
    port = free_port()
    env = {**os.environ, "FACERECON_PORT": str(port), "FACERECON_LOG_LEVEL": "warning",
           "FACERECON_MAX_IN_FLIGHT": str(args.max_in_flight)}
    peer_before = peer_total_ms(args.peers)
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=REPO, env=env)
    try:
        wait_ready(port)
        print(f"cores {len(os.sched_getaffinity(0))}, photo 640x480 JPEG {len(body) // 1024} KiB, "
              f"format {args.format}, texture {args.texture}, max_in_flight {args.max_in_flight}")
        single = run_level(port, body, content_type, 1, 50, args.cap_s)
        print(json.dumps({"single_request_p50_ms": single["p50_ms"], "p99_ms": single["p99_ms"]}))
        levels = []
        for concurrency in (int(v) for v in args.levels.split(",")):
            levels.append(run_level(port, body, content_type, concurrency, args.requests, args.cap_s))
            print(json.dumps(levels[-1]))
    finally:
        server.terminate()
        server.wait(timeout=60)
    peer_after = peer_total_ms(args.peers)
    if peer_before is not None and peer_after is not None:
        peer = (peer_before + peer_after) / 2
        lone = [single["p50_ms"], *(level["p50_ms"] for level in levels if level["concurrency"] == 1)]
        print(json.dumps({"peer_3ddfa_v2_total_ms": [round(peer_before, 2), round(peer_after, 2)],
                          "single_request_p50_over_peer_total": [round(v / peer, 2) for v in lone if v is not None]}))


if __name__ == "__main__":
    main()
