"""A real S3 HTTP endpoint on loopback for the tests: moto's server mode in its own process.

`moto_s3_server()` starts `python -m moto.server` on a free 127.0.0.1 port and yields an
`S3Endpoint`: its URL and the environment that points boto3/s3fs at it (`AWS_ENDPOINT_URL`, dummy
credentials, a region). Child processes (the CLI, Dagster run workers, Celery workers) get the same
endpoint by inheriting that environment. `S3Endpoint.new_bucket()` makes an empty bucket per test.

`PausableProxy` is a loopback TCP proxy to put in front of it: `pause()` cuts every connection
(uploads in flight included) and answers new ones by closing them, `resume()` forwards again. It
stands for "the S3 endpoint went down, then came back" (moto keeps its objects in memory, so the
server itself must stay up).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import httpx

__all__ = ["PausableProxy", "S3Endpoint", "free_port", "moto_s3_server", "s3_env", "stop"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_env(url: str) -> dict[str, str]:
    """What points botocore (and so s3fs) at the endpoint `url`, with moto's dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        # No instance-metadata probing (it waits for a timeout on a machine without one).
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@dataclass
class S3Endpoint:
    url: str
    process: subprocess.Popen
    env: dict[str, str] = field(default_factory=dict)

    def new_bucket(self, prefix: str = "echo") -> str:
        """Create an empty bucket with a unique name and return it."""
        import boto3

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        client = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=name)
        return name


def _wait_until_up(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode} before answering")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server on {url} did not answer within {timeout:.0f} s")


@contextmanager
def moto_s3_server() -> Iterator[S3Endpoint]:
    """moto's S3 server in a process of its own on a free loopback port, stopped afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, **s3_env(url))
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        _wait_until_up(url, process)
        yield S3Endpoint(url=url, process=process, env=s3_env(url))
    finally:
        stop(process, grace=10)


def stop(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM `process`, SIGKILL it if it is still there after `grace` seconds, and reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PausableProxy:
    """A TCP proxy on a free 127.0.0.1 port to `target_port` on 127.0.0.1 (see the module docstring).

    `url` is what clients use instead of the target's. `connections` counts the connections
    accepted while forwarding, `refused` those closed at once while paused, `bytes_up` the bytes
    forwarded to the target. `chunk_delay` (seconds per 64 KiB sent upstream) slows uploads down
    so that a test can cut one in the middle. Use as a context manager (or call `close()`).
    """

    def __init__(self, target_port: int, chunk_delay: float = 0.0):
        self.target_port = target_port
        self.chunk_delay = chunk_delay
        self.bytes_up = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.refused = 0
        self._paused = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name="s3-proxy", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """The endpoint is "down": cut every open connection, close new ones at once."""
        self._paused.set()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _close(sock)

    def resume(self) -> None:
        self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def close(self) -> None:
        self._closed.set()
        self.pause()
        _close(self._listener)
        self._thread.join(5)

    def __enter__(self) -> PausableProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.2)
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._paused.is_set():
                self.refused += 1
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            self.connections += 1
            with self._lock:
                self._open.update((client, upstream))
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, up), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if up and self.chunk_delay:
                    time.sleep(self.chunk_delay)
                if self._paused.is_set():
                    break
                dst.sendall(data)
                if up:
                    self.bytes_up += len(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    """End a connection at once (a reset where possible) and wake the thread reading from it."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()
