"""Peak memory per request kind of a real `facerecon serve` process (Linux: /proc/PID/status).

For each kind it starts a fresh server on a free port, sends one small warm-up request, reads
VmRSS (the baseline), resets the peak (``5 > /proc/PID/clear_refs``), sends the kind's request(s),
then reads VmHWM (the peak) and VmRSS again. Prints one JSON line per kind: baseline MB, peak
above baseline MB, RSS left above baseline afterwards, the answers' statuses and the wall time.

Kinds: ``jpeg`` a 640x480 JPEG with one face; ``png`` a 6324x6324 8-bit RGB PNG (a face scaled
up 8x, ~0.4 MB); ``png16`` the same as 16-bit greyscale (~0.25 MB); ``batch`` 16 of those PNGs
in one batch request; ``png_x8`` 8 concurrent ``png`` requests; ``huge_box`` the JPEG with
``box=0,0,10000,10000``; ``wide_box`` the JPEG with the widest box the rules allow.

Usage: python benchmarks/bench_memory.py [--kinds jpeg,png,png16,big_jpeg,batch,png_x8,huge_box,wide_box]
       [--repeat 2] [--env FACERECON_MEMORY_BUDGET_MB=1024 ...]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import DEFAULT_PHOTO, REPO, free_port, photo_640x480, wait_ready  # noqa: E402

BIG_SIDE = 6324


def big_canvas(path: Path) -> Image.Image:
    """BIG_SIDE x BIG_SIDE: the face photo scaled up 8x (nearest: compresses well) on a plain canvas."""
    face = Image.open(path).convert("RGB")
    face = face.resize((face.width * 8, face.height * 8), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (BIG_SIDE, BIG_SIDE), tuple(int(v) for v in np.asarray(face)[0, 0]))
    canvas.paste(face, ((BIG_SIDE - face.width) // 2, (BIG_SIDE - face.height) // 2))
    return canvas


def big_png(path: Path, sixteen_bit: bool = False) -> bytes:
    """:func:`big_canvas` as a PNG (8-bit RGB, or 16-bit grey)."""
    canvas = big_canvas(path)
    image = Image.fromarray(np.asarray(canvas.convert("L")).astype(np.uint16) * 257) if sixteen_bit else canvas
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def big_jpeg(path: Path) -> bytes:
    """:func:`big_canvas` as a baseline JPEG (decoded reduced by 4: its longer side keeps 1,581 pixels)."""
    buffer = io.BytesIO()
    big_canvas(path).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def multipart(files: list[tuple[str, bytes, str]], fields: dict[str, str]) -> tuple[bytes, str]:
    """files: (field, data, content type)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    for index, (field, data, content_type) in enumerate(files):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="p{index}"\r\n'
                     f"Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def status_mb(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024.0
    return values


def post(port: int, path: str, body: bytes, content_type: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", path, body=body, headers={"Content-Type": content_type})
    response = conn.getresponse()
    response.read()
    return response.status


def requests_for(kind: str, jpeg: bytes, png: bytes, png16: bytes, big: bytes
                 ) -> tuple[list[tuple[str, bytes, str]], int]:
    """[(path, body, content type)] sent at once, and how many times in parallel."""
    single = "/v1/reconstruct"
    if kind == "jpeg":
        return [(single, *multipart([("image", jpeg, "image/jpeg")], {}))], 1
    if kind == "png":
        return [(single, *multipart([("image", png, "image/png")], {}))], 1
    if kind == "png16":
        return [(single, *multipart([("image", png16, "image/png")], {}))], 1
    if kind == "big_jpeg":
        return [(single, *multipart([("image", big, "image/jpeg")], {}))], 1
    if kind == "batch":
        return [("/v1/reconstruct/batch", *multipart([("images", png, "image/png")] * 16, {}))], 1
    if kind == "png_x8":
        return [(single, *multipart([("image", png, "image/png")], {}))], 8
    if kind == "huge_box":
        return [(single, *multipart([("image", jpeg, "image/jpeg")], {"box": "0,0,10000,10000"}))], 1
    if kind == "wide_box":
        return [(single, *multipart([("image", jpeg, "image/jpeg")], {"box": "-640,-480,1280,960"}))], 1
    raise SystemExit(f"unknown kind {kind}")


def measure(kind: str, jpeg: bytes, png: bytes, png16: bytes, big: bytes, repeat: int, env_extra: dict[str, str]
            ) -> dict:
    port = free_port()
    env = {**os.environ, "FACERECON_PORT": str(port), "FACERECON_LOG_LEVEL": "warning", **env_extra}
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=REPO, env=env)
    try:
        wait_ready(port)
        warm_body, warm_type = multipart([("image", jpeg, "image/jpeg")], {})
        post(port, "/v1/reconstruct", warm_body, warm_type)
        time.sleep(0.5)
        base = status_mb(server.pid)["VmRSS"]
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # peak RSS := current RSS
        requests, parallel = requests_for(kind, jpeg, png, png16, big)
        statuses: dict[int, int] = {}
        started = time.perf_counter()
        for _ in range(repeat):
            with ThreadPoolExecutor(parallel) as pool:
                for status in pool.map(lambda r: post(port, *r), requests * parallel):
                    statuses[status] = statuses.get(status, 0) + 1
        wall = time.perf_counter() - started
        time.sleep(0.5)
        after = status_mb(server.pid)
        return {"kind": kind, "base_mb": round(base), "peak_above_base_mb": round(after["VmHWM"] - base),
                "rss_after_above_base_mb": round(after["VmRSS"] - base), "statuses": statuses,
                "seconds_per_round": round(wall / repeat, 2)}
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--kinds", default="jpeg,png,png16,big_jpeg,batch,png_x8,huge_box,wide_box")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of each kind's request(s)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server (repeatable)")
    args = parser.parse_args()
    if not args.photo.is_file():
        sys.exit(f"error: no face photo at {args.photo} (pass --photo)")
    env_extra = dict(item.split("=", 1) for item in args.env)
    jpeg, png, png16 = photo_640x480(args.photo), big_png(args.photo), big_png(args.photo, sixteen_bit=True)
    big = big_jpeg(args.photo)
    print(f"jpeg 640x480 {len(jpeg) // 1024} KiB, png {BIG_SIDE}x{BIG_SIDE} {len(png) // 1024} KiB, "
          f"16-bit {len(png16) // 1024} KiB, jpeg {BIG_SIDE}x{BIG_SIDE} {len(big) // 1024} KiB; server env {env_extra}")
    for kind in args.kinds.split(","):
        print(json.dumps(measure(kind, jpeg, png, png16, big, args.repeat, env_extra)), flush=True)


if __name__ == "__main__":
    main()
