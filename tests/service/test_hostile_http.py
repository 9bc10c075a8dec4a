"""Hostile HTTP clients against a real `facerecon serve` on loopback, with raw sockets: slow and oversized
request heads, bodies that never finish or crawl, keyless floods while a client with the key is served,
overload; every case checks the status and problem type, and that the server stays ready with its memory
bounded. One server for the module, with small limits and short timeouts."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest

from tests.conftest import REPO
from tests.service.conftest import wait_until_ready
from tests.service.test_serve import _free_port, _get

API_KEY = "hostile-test-key"
ORIGIN = "https://app.example"
HEADER_TIMEOUT_S = 1.5
BODY_GRACE_S = 1.5
BODY_IDLE_S = 1.0
MAX_IN_FLIGHT = 4
MAX_UPLOAD_BYTES = 1_000_000
RSS_GROWTH_LIMIT_MB = 80  # over the RSS once ready; an unguarded header flood alone held +193 MB
PROBLEM_TYPE = "urn:facerecon:problem:"


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    baseline_rss_mb: float

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            line = next(line for line in status if line.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024.0

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def assert_healthy(self) -> None:
        assert self.process.poll() is None, "the server died"
        assert _get(self.port, "/readyz")[0] == 200
        assert self.rss_mb() < self.baseline_rss_mb + RSS_GROWTH_LIMIT_MB, (self.rss_mb(), self.baseline_rss_mb)


@pytest.fixture(scope="module")
def server():
    if not sys.platform.startswith("linux"):
        pytest.skip("reads the server's memory from /proc")
    port = _free_port()
    env = {**os.environ, "FACERECON_PORT": str(port), "FACERECON_LOG_LEVEL": "warning",
           "FACERECON_API_KEYS": json.dumps([API_KEY]), "FACERECON_CORS_ORIGINS": json.dumps([ORIGIN]),
           "FACERECON_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S), "FACERECON_BODY_TIMEOUT_S": str(BODY_GRACE_S),
           "FACERECON_BODY_IDLE_TIMEOUT_S": str(BODY_IDLE_S), "FACERECON_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
           "FACERECON_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES), "FACERECON_RETRY_AFTER_S": "2",
           "FACERECON_MAX_HEADER_BYTES": "16384", "FACERECON_MAX_HEADERS": "100",
           "FACERECON_WORKERS": "2", "FACERECON_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_ready(process, port)
        started = Server(port, process, 0.0)
        started.baseline_rss_mb = started.rss_mb()
        yield started
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after it

    def problem(self, slug: str) -> dict:
        assert self.headers.get("content-type") == "application/problem+json", self
        document = json.loads(self.body)
        assert document["type"] == PROBLEM_TYPE + slug and document["status"] == self.status, document
        return document


def read_answer(sock: socket.socket, timeout: float = 10.0) -> Answer | None:
    """One HTTP/1.1 answer read off a raw socket, or None when the connection ended without one."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    if b"\r\n\r\n" not in data:
        return None
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    closed = False
    try:
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        if headers.get("connection") == "close":
            closed = sock.recv(1) == b""
    except ConnectionResetError:
        closed = True
    return Answer(int(lines[0].split()[1]), headers, body, closed)


def wait_closed(sock: socket.socket, timeout: float) -> float:
    """Seconds until the server closes the connection (whatever it sends before is discarded)."""
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


FILE_PART = b'--b\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'


def request_head(path: str = "/v1/reconstruct", key: str | None = API_KEY, length: int | None = None,
                 extra: str = "") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Origin: {ORIGIN}",
             "Content-Type: multipart/form-data; boundary=b"]
    if key is not None:
        lines.append(f"X-API-Key: {key}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def multipart(image: bytes, **fields: str) -> bytes:
    parts = [f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(FILE_PART + image + b"\r\n")
    return b"".join(parts) + b"--b--\r\n"


def authenticated_reconstruct(server: Server, image: bytes, box: str) -> tuple[int, float]:
    """POST /v1/reconstruct with the key, as a well-behaved client: (status, seconds)."""
    body = multipart(image, box=box, format="json")
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/reconstruct", body=body,
                 headers={"Content-Type": "multipart/form-data; boundary=b", "X-API-Key": API_KEY})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.monotonic() - started


def metrics_text(server: Server) -> str:
    status, body = _get(server.port, "/metrics")
    assert status == 200
    return body.decode()


def counted(text: str, route: str, status: int) -> float:
    label = f'facerecon_requests_total{{method="POST",route="{route}",status="{status}"}} '
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(label))


def test_slowloris_heads_get_408_and_are_closed(server):
    socks = [server.connect() for _ in range(10)]
    started = time.monotonic()
    for sock in socks:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
    answers: list[Answer | None] = [None] * len(socks)
    while any(answer is None for answer in answers) and time.monotonic() - started < HEADER_TIMEOUT_S + 5:
        for index, sock in enumerate(socks):  # a header line every 0.2 s: never done
            if answers[index] is None:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                    sock.settimeout(0.02)
                    if sock.recv(1, socket.MSG_PEEK):
                        answers[index] = read_answer(sock)
                except TimeoutError:
                    pass
                except OSError:
                    answers[index] = read_answer(sock)
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    for answer in answers:
        assert answer is not None and answer.status == 408 and answer.closed
        assert "did not arrive" in answer.problem("request-timeout")["detail"]
    assert HEADER_TIMEOUT_S - 0.2 < elapsed < HEADER_TIMEOUT_S + 3
    server.assert_healthy()


def test_a_steady_keep_alive_connection_outlives_the_head_timeout(server):
    """The head timer runs from the connection or the previous answer only: a client sending requests on
    one connection for longer than it is served throughout, and an idle connection is closed silently."""
    with server.connect() as sock:
        started = time.monotonic()
        while time.monotonic() - started < HEADER_TIMEOUT_S + 1:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            answer = read_answer(sock)
            assert answer is not None and answer.status == 200
            time.sleep(0.3)
        assert wait_closed(sock, timeout=10) < HEADER_TIMEOUT_S + 1
    server.assert_healthy()


def test_one_megabyte_header_gets_431(server):
    with server.connect() as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        except OSError:
            pass  # the server may close before it is all sent
        answer = read_answer(sock)
    assert answer is not None and answer.status == 431 and answer.closed
    answer.problem("headers-too-large")
    server.assert_healthy()


def test_too_many_headers_get_431(server):
    with server.connect() as sock:
        fields = b"".join(b"X-Field-%d: v\r\n" % i for i in range(150))  # 2.5 kB: under the byte limit
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + fields + b"\r\n")
        answer = read_answer(sock)
    assert answer is not None and answer.status == 431
    answer.problem("headers-too-large")
    assert answer.headers["x-model-version"].split("-")[1] == "steps"  # answers outside the app name the model too
    with server.connect() as sock:  # 90 fields are fine
        fields = b"".join(b"X-Field-%d: v\r\n" % i for i in range(90))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n" + fields + b"\r\n")
        answer = read_answer(sock)
    assert answer is not None and answer.status == 200
    server.assert_healthy()


def test_header_flood_keeps_memory_bounded(server):
    """20 connections each sending 10 MB of a head that never ends."""
    peak = [server.rss_mb()]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], server.rss_mb())
            time.sleep(0.02)

    results: list[tuple[int, Answer | None]] = []
    lock = threading.Lock()

    def flood() -> None:
        sent = 0
        with server.connect() as sock:
            try:
                sock.sendall(b"POST /v1/reconstruct HTTP/1.1\r\nHost: test\r\nX-Flood: ")
                piece = b"a" * 65536
                while sent < 10 * 1024 * 1024:
                    sock.sendall(piece)
                    sent += len(piece)
            except OSError:
                pass
            answer = read_answer(sock, timeout=5)
        with lock:
            results.append((sent, answer))

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=flood) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    done.set()
    sampler.join()
    assert len(results) == 20
    for sent, answer in results:
        assert sent < 10 * 1024 * 1024  # cut off long before the end
        if answer is not None:  # else the connection was reset before the answer could be read
            assert answer.status == 431
            answer.problem("headers-too-large")
    assert sum(answer is not None for _, answer in results) >= 10
    assert peak[0] < server.baseline_rss_mb + RSS_GROWTH_LIMIT_MB, (peak[0], server.baseline_rss_mb)
    server.assert_healthy()


def test_body_shorter_than_its_content_length_gets_408(server):
    with server.connect() as sock:
        started = time.monotonic()
        sock.sendall(request_head(length=100_000) + b"--b\r\n")
        answer = read_answer(sock)
        elapsed = time.monotonic() - started
    assert answer is not None and answer.status == 408 and answer.closed
    assert "no part of the request body arrived" in answer.problem("request-timeout")["detail"]
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert BODY_IDLE_S - 0.1 < elapsed < BODY_IDLE_S + 2
    server.assert_healthy()


def test_crawling_upload_gets_408(server):
    """A byte every 0.2 s never pauses for the idle timeout, but falls behind the minimum rate."""
    with server.connect() as sock:
        started = time.monotonic()
        sock.sendall(request_head(length=5000) + FILE_PART)
        while time.monotonic() - started < BODY_GRACE_S + 5:
            try:
                sock.sendall(b"x")
            except OSError:
                break
            sock.settimeout(0.2)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                pass
        answer = read_answer(sock)
        elapsed = time.monotonic() - started
    assert answer is not None and answer.status == 408 and answer.closed
    assert "slower than" in answer.problem("request-timeout")["detail"]
    assert BODY_GRACE_S - 0.1 < elapsed < BODY_GRACE_S + 2
    server.assert_healthy()


def test_slow_keyless_uploads_do_not_starve_a_client_with_the_key(server, photo_jpeg, photo_box):
    """40 keyless uploads at a byte a second, against 4 admission slots: each is refused at once with 401
    (before admission, before its body is read) and closed soon after; the client with the key gets 200."""
    before = metrics_text(server)
    socks = [server.connect() for _ in range(40)]
    for sock in socks:
        sock.sendall(request_head(key=None, length=100_000) + b"-")
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.5):
            for sock in socks:
                try:
                    sock.send(b"-")
                except OSError:
                    pass

    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        time.sleep(0.3)
        status, seconds = authenticated_reconstruct(server, photo_jpeg, photo_box)
        assert status == 200 and seconds < 5.0, (status, seconds)
        answers = [read_answer(sock, timeout=5) for sock in socks]
        for answer in answers:
            assert answer is not None and answer.status == 401
            answer.problem("unauthenticated")
            assert answer.headers["access-control-allow-origin"] == ORIGIN
            assert answer.headers["www-authenticate"]
        # the unread rest of each body may trickle in only until the head timeout, then the server hangs up
        started = time.monotonic()
        for sock in socks:
            wait_closed(sock, timeout=HEADER_TIMEOUT_S + 5)
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 3
    finally:
        stop.set()
        trickler.join()
        for sock in socks:
            sock.close()
    after = metrics_text(server)
    assert counted(after, "/v1/reconstruct", 401) - counted(before, "/v1/reconstruct", 401) == 40
    server.assert_healthy()


def test_overload_and_upload_limit_answers_carry_cors_and_their_route(server, photo_jpeg, photo_box):
    """Slow uploads with the key hold every admission slot: a fifth request gets 503 with Retry-After
    that a browser on the allowed origin can read; the slots come back once the slow ones time out.
    Both 413 paths answer alike. Each answer is counted under /v1/reconstruct."""
    before = metrics_text(server)
    holders = [server.connect() for _ in range(MAX_IN_FLIGHT)]
    for sock in holders:
        sock.sendall(request_head(length=50_000) + b"--b\r\n")
    time.sleep(0.3)
    with server.connect() as sock:
        sock.sendall(request_head(length=len(multipart(photo_jpeg))) + multipart(photo_jpeg))
        overloaded = read_answer(sock)
    assert overloaded is not None and overloaded.status == 503
    overloaded.problem("overloaded")
    assert overloaded.headers["retry-after"] == "2"
    assert overloaded.headers["access-control-allow-origin"] == ORIGIN
    assert "retry-after" in overloaded.headers["access-control-expose-headers"].lower()
    for sock in holders:
        answer = read_answer(sock)
        assert answer is not None and answer.status == 408
        sock.close()
    assert authenticated_reconstruct(server, photo_jpeg, photo_box)[0] == 200

    with server.connect() as sock:  # too large, by its Content-Length
        sock.sendall(request_head(length=MAX_UPLOAD_BYTES + 1))
        declared = read_answer(sock)
    with server.connect() as sock:  # too large, counted while it streams in (chunked: no Content-Length)
        sock.sendall(request_head(extra="Transfer-Encoding: chunked\r\n"))
        sock.sendall(b"%x\r\n%s\r\n" % (len(FILE_PART), FILE_PART))
        piece = b"%x\r\n%s\r\n" % (65536, b"a" * 65536)
        try:
            for _ in range(MAX_UPLOAD_BYTES // 65536 + 2):
                sock.sendall(piece)
        except OSError:
            pass
        streamed = read_answer(sock)
    documents = []
    for answer in (declared, streamed):
        assert answer is not None and answer.status == 413 and answer.closed
        documents.append(answer.problem("upload-too-large"))
        assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert documents[0]["title"] == documents[1]["title"] and documents[0]["detail"] == documents[1]["detail"]

    after = metrics_text(server)
    for status, count in ((503, 1), (408, MAX_IN_FLIGHT), (413, 2), (200, 1)):
        assert counted(after, "/v1/reconstruct", status) - counted(before, "/v1/reconstruct", status) == count, status
    assert 'facerecon_requests_in_flight 0.0' in after
    server.assert_healthy()


def test_cors_preflight_needs_no_key_and_probes_stay_open(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("OPTIONS", "/v1/reconstruct", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                                         "Access-Control-Request-Headers": "x-api-key"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200 and response.getheader("access-control-allow-origin") == ORIGIN
    for path in ("/healthz", "/v1/info", "/metrics"):
        assert _get(server.port, path)[0] == 200
    refused = metrics_text(server)
    assert 'facerecon_connections_refused_total{reason="headers-too-large"}' in refused
    assert 'facerecon_connections_refused_total{reason="request-timeout"}' in refused
    server.assert_healthy()


def test_unexpected_errors_and_early_answers_carry_cors_request_id_and_route_in_process():
    """The app alone (no models loaded): a 500 from an unexpected error and a 413 answered before routing
    carry the CORS headers and the request id, and are counted under the route they were for."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import ServiceSettings

    app = create_app(ServiceSettings(cors_origins=[ORIGIN], max_upload_bytes=2048))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaputt")

    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: nothing loaded
    failed = client.get("/boom", headers={"Origin": ORIGIN, "X-Request-ID": "r-500"})
    assert failed.status_code == 500 and failed.json()["type"] == PROBLEM_TYPE + "internal-error"
    assert "kaputt" not in failed.text
    assert failed.headers["access-control-allow-origin"] == ORIGIN and failed.headers["x-request-id"] == "r-500"
    too_large = client.post("/healthz", content=b"x" * 4096, headers={"Origin": ORIGIN})
    assert too_large.status_code == 413 and too_large.json()["type"] == PROBLEM_TYPE + "upload-too-large"
    assert too_large.headers["access-control-allow-origin"] == ORIGIN
    client.post("/nowhere", content=b"x" * 4096)
    metrics = client.get("/metrics").text
    assert 'facerecon_requests_total{method="GET",route="/boom",status="500"} 1.0' in metrics
    assert 'facerecon_requests_total{method="POST",route="/healthz",status="413"} 1.0' in metrics
    assert 'facerecon_requests_total{method="POST",route="unmatched",status="413"} 1.0' in metrics
