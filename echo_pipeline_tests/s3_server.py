"""A real S3 HTTP endpoint on loopback for the tests: moto's server mode in its own process.

`moto_s3_server()` starts `python -m moto.server` on a free 127.0.0.1 port and yields an
`S3Endpoint`: its URL and the environment that points boto3/s3fs at it (`AWS_ENDPOINT_URL`, dummy
credentials, a region). Child processes (the CLI, Dagster run workers, Celery workers) get the same
endpoint by inheriting that environment. `S3Endpoint.new_bucket()` makes an empty bucket per test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

__all__ = ["S3Endpoint", "free_port", "moto_s3_server", "s3_env"]


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
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
