"""A real S3-compatible server for the tests and benchmarks: moto's standalone server on loopback,
reached through the real s3fs client (nothing is mocked inside the client)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "fastckpt-test",
    "AWS_SECRET_ACCESS_KEY": "fastckpt-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str]  # for subprocesses: credentials and FSSPEC_S3_ENDPOINT_URL
    fs: Any  # an s3fs.S3FileSystem talking to the server

    def upload(self, local: str, url: str) -> None:
        """Copies a local file or folder to s3://bucket/key (the bucket is created when needed)."""
        path = url.removeprefix("s3://")
        bucket = path.split("/", 1)[0]
        if not self.fs.exists(bucket):
            self.fs.mkdir(bucket)
        if os.path.isdir(local):
            for root, _, files in os.walk(local):
                for name in sorted(files):
                    full = os.path.join(root, name)
                    rel = os.path.relpath(full, local).replace(os.sep, "/")
                    self.fs.put_file(full, f"{path.rstrip('/')}/{rel}")
        else:
            self.fs.put_file(local, path)
        self.invalidate()

    def invalidate(self) -> None:
        """Forgets cached listings (ours and those of the instance fastckpt uses)."""
        import fsspec

        self.fs.invalidate_cache()
        fsspec.filesystem("s3").invalidate_cache()


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """Starts moto's ThreadedMotoServer on 127.0.0.1 (a free port) and points fsspec's s3 protocol
    at it, for this process (fsspec.config) and for subprocesses (the returned env)."""
    import fsspec
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved_env = {k: os.environ.get(k) for k in CREDENTIALS}
    saved_conf = fsspec.config.conf.get("s3")
    os.environ.update(CREDENTIALS)
    fsspec.config.conf["s3"] = {"endpoint_url": endpoint}
    env = dict(CREDENTIALS, FSSPEC_S3_ENDPOINT_URL=endpoint)
    try:
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        yield S3Server(endpoint, env, fs)
    finally:
        if saved_conf is None:
            fsspec.config.conf.pop("s3", None)
        else:
            fsspec.config.conf["s3"] = saved_conf
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
