"""HTTP checks of a running facerecon container (standard library only: runs on the host's python3).

    python3 docker/smoke.py wait URL [TIMEOUT_S]          wait for /readyz 200; print its providers
    python3 docker/smoke.py serve URL PHOTO OUT_DIR [MAX_IN_FLIGHT]
                                                          readiness, /v1/info (and its max_in_flight: the
                                                          settings given reached the service), a photo -> a
                                                          valid GLB, a cut JPEG -> problem+json; into OUT_DIR
    python3 docker/smoke.py port                          print a free loopback TCP port

Used by docker/build-and-smoke.sh; exits non-zero with the reason on the first failed check.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

GLB_MAGIC, GLB_JSON, GLB_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
PROBLEM = "application/problem+json"


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def multipart(field: str, filename: str, content: bytes, content_type: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def wait_ready(base: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, _, body = request(f"{base}/readyz", timeout=2)
            if status == 200:
                return json.loads(body)
            last = f"{status} {body[:200]!r}"
        except OSError as error:
            last = str(error)
        time.sleep(0.25)
    raise CheckFailed(f"{base}/readyz not 200 within {timeout_s:.0f} s (last: {last})")


def glb_mesh_counts(data: bytes) -> tuple[int, int]:
    """Check a GLB's container (header, JSON chunk, BIN chunk, accessors inside the buffer) and
    return (vertices, triangles) of its first mesh primitive."""
    check(len(data) >= 28, f"GLB of {len(data)} bytes")
    magic, version, length = struct.unpack_from("<III", data, 0)
    check(magic == GLB_MAGIC and version == 2, f"not a glTF 2.0 binary (magic {magic:#x}, version {version})")
    check(length == len(data), f"GLB header says {length} bytes, got {len(data)}")
    json_length, json_type = struct.unpack_from("<II", data, 12)
    check(json_type == GLB_JSON and json_length % 4 == 0, "first GLB chunk is not an aligned JSON chunk")
    gltf = json.loads(data[20:20 + json_length])
    offset = 20 + json_length
    bin_length, bin_type = struct.unpack_from("<II", data, offset)
    check(bin_type == GLB_BIN and offset + 8 + bin_length == len(data), "second GLB chunk is not the BIN chunk")
    check(gltf["asset"]["version"] == "2.0", "asset.version is not 2.0")
    check(gltf["buffers"][0]["byteLength"] <= bin_length, "buffer 0 is longer than the BIN chunk")
    for view in gltf["bufferViews"]:
        check(view.get("byteOffset", 0) + view["byteLength"] <= gltf["buffers"][view["buffer"]]["byteLength"],
              "a buffer view runs past its buffer")
    primitive = gltf["meshes"][0]["primitives"][0]
    positions = gltf["accessors"][primitive["attributes"]["POSITION"]]
    indices = gltf["accessors"][primitive["indices"]]
    check(positions["type"] == "VEC3" and indices["count"] % 3 == 0, "POSITION is not VEC3 or indices not triangles")
    return positions["count"], indices["count"] // 3


def serve_checks(base: str, photo: Path, out: Path, max_in_flight: int | None = None) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    passed = []
    ready = wait_ready(base, 120)
    check(ready.get("status") == "ready" and ready.get("providers"), f"/readyz body {ready}")
    passed.append(f"/readyz 200, providers {ready['providers']}")
    status, _, body = request(f"{base}/v1/info")
    check(status == 200, f"/v1/info answered {status}")
    info = json.loads(body)
    check(info["providers"] == ready["providers"], "/v1/info and /readyz name different providers")
    passed.append(f"/v1/info 200: model {info['model_version']}, {info['vertices']} vertices")
    if max_in_flight is not None:
        check(info["limits"]["max_in_flight"] == max_in_flight,
              f"/v1/info max_in_flight {info['limits']['max_in_flight']}, configured {max_in_flight}")
        passed.append(f"the configured settings reached the service (max_in_flight {max_in_flight})")

    form, content_type = multipart("image", photo.name, photo.read_bytes(), "image/jpeg")
    started = time.monotonic()
    status, headers, body = request(f"{base}/v1/reconstruct", form, {"Content-Type": content_type}, timeout=60)
    took = time.monotonic() - started
    check(status == 200, f"photo answered {status}: {body[:300]!r}")
    check(headers.get("content-type") == "model/gltf-binary", f"photo answered {headers.get('content-type')}")
    check(headers.get("x-face-count") == "1", f"X-Face-Count {headers.get('x-face-count')}")
    check(headers.get("x-model-version") == info["model_version"], "X-Model-Version differs from /v1/info")
    vertices, triangles = glb_mesh_counts(body)
    check((vertices, triangles) == (info["vertices"], info["triangles"]),
          f"GLB mesh {vertices} vertices / {triangles} triangles, "
          f"/v1/info says {info['vertices']} / {info['triangles']}")
    (out / "face.glb").write_bytes(body)
    passed.append(f"photo -> model/gltf-binary, a valid GLB of {vertices} vertices and {triangles} triangles "
                  f"({took:.2f} s)")

    truncated = photo.read_bytes()[: photo.stat().st_size // 3]  # a JPEG cut short: unreadable
    form, content_type = multipart("image", "cut.jpg", truncated, "image/jpeg")
    status, headers, body = request(f"{base}/v1/reconstruct", form, {"Content-Type": content_type})
    check(status == 400 and headers.get("content-type") == PROBLEM, f"bad upload answered {status} "
          f"{headers.get('content-type')}")
    problem = json.loads(body)
    check(problem["type"] == "urn:facerecon:problem:bad-image" and problem["status"] == 400, f"problem {problem}")
    (out / "bad-upload.json").write_bytes(body)
    passed.append("truncated JPEG -> 400 application/problem+json, type urn:facerecon:problem:bad-image")
    return passed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["port"]:
            print(free_port())
        elif argv[:1] == ["wait"] and len(argv) in (2, 3):
            timeout = float(argv[2]) if len(argv) == 3 else 120.0
            print(json.dumps(wait_ready(argv[1].rstrip("/"), timeout)["providers"]))
        elif argv[:1] == ["serve"] and len(argv) in (4, 5):
            limit = int(argv[4]) if len(argv) == 5 else None
            for line in serve_checks(argv[1].rstrip("/"), Path(argv[2]), Path(argv[3]), limit):
                print(f"ok: {line}")
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
