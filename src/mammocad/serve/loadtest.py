"""Load testing the REST API: many concurrent uploads against a real HTTP server, latency percentiles.

:func:`load_test` takes a running server's URL, or a FastAPI app which it serves with uvicorn on a free
loopback port in a background thread for the duration of the test (:func:`serve_in_thread`).

With an app, the client threads and the server share one Python process (and its GIL), so latencies
and throughput are a conservative bound; for a service-level figure, start ``mammocad serve`` and
pass its URL.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np

_START_TIMEOUT_S = 30.0


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve an ASGI ``app`` with uvicorn on a free port of ``host`` in a daemon thread; yields the base URL.

    The listening socket is bound before the server starts (port 0: the OS picks a free one), so no
    other process can take the port in between. The server is shut down gracefully on exit.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="mammocad-loadtest", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the test server stopped while starting (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test server did not start within {_START_TIMEOUT_S:.0f} s")
            time.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=_START_TIMEOUT_S)
        sock.close()


def load_test(
    app_or_url: Any,
    image_bytes: bytes,
    requests: int = 1000,
    concurrency: int = 16,
    endpoint: str = "/predict",
    token: str | None = None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Fire ``requests`` uploads of ``image_bytes`` at ``endpoint`` from ``concurrency`` threads.

    Args:
        app_or_url: a base URL (``http://host:port``) or an ASGI app (served for the test, then stopped).
        image_bytes: the file every request uploads (``/predict``: field ``files``; ``/explain``: ``file``).
        token: bearer token, when the server needs one.

    Returns:
        ``requests``, ``concurrency``, ``errors_5xx``, ``errors_other`` (any other non-2xx, or no response at all),
        latency ``p50_ms``/``p95_ms``/``p99_ms`` (every request, failed ones included),
        ``throughput_rps`` (requests / wall time) and ``wall_s``.
    """
    if requests < 1 or concurrency < 1:
        raise ValueError("requests and concurrency must be at least 1")
    if isinstance(app_or_url, str):
        return _fire(app_or_url, image_bytes, requests, concurrency, endpoint, token, timeout_s)
    with serve_in_thread(app_or_url) as url:
        return _fire(url, image_bytes, requests, concurrency, endpoint, token, timeout_s)


def _fire(
    base_url: str,
    image_bytes: bytes,
    requests: int,
    concurrency: int,
    endpoint: str,
    token: str | None,
    timeout_s: float,
) -> dict[str, Any]:
    field = "file" if endpoint.rstrip("/").endswith("/explain") else "files"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    local = threading.local()
    clients: list[httpx.Client] = []
    clients_lock = threading.Lock()

    def client() -> httpx.Client:
        # One client (one keep-alive connection) per thread, like independent callers.
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)
            with clients_lock:
                clients.append(local.client)
        return local.client

    def one(_: int) -> tuple[int | None, float]:
        start = time.perf_counter()
        try:
            response = client().post(endpoint, files={field: ("image", image_bytes, "application/octet-stream")})
            status: int | None = response.status_code
        except httpx.HTTPError:
            status = None
        return status, (time.perf_counter() - start) * 1000

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="mammocad-load") as pool:
            outcomes = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    finally:
        for each in clients:
            each.close()
    statuses = [status for status, _ in outcomes]
    latencies = np.array([latency for _, latency in outcomes])
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {
        "requests": requests,
        "concurrency": concurrency,
        "errors_5xx": sum(1 for s in statuses if s is not None and s >= 500),
        "errors_other": sum(1 for s in statuses if s is None or (s < 500 and not 200 <= s < 300)),
        "p50_ms": round(float(p50), 2),
        "p95_ms": round(float(p95), 2),
        "p99_ms": round(float(p99), 2),
        "throughput_rps": round(requests / wall, 2),
        "wall_s": round(wall, 3),
    }
