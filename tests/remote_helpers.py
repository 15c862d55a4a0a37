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


class _ProcessServer:
    """moto's server in its own process (`python -m moto.server`), so that its Python request
    handling does not share this process's GIL with the client being measured."""

    def __init__(self, port: int) -> None:
        import subprocess
        import sys
        import time

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start within 30 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def s3_server(*, own_process: bool = False) -> Iterator[S3Server]:
    """Starts moto's S3 server on 127.0.0.1 (a free port; a thread of this process, or its own
    process) and points fsspec's s3 protocol at it, for this process (fsspec.config) and for
    subprocesses (the returned env)."""
    import fsspec

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # moto spills objects above its key buffer size to temporary files and reads the whole object
    # for every ranged GET; keeping objects in memory makes that read a copy instead of disk I/O.
    os.environ.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(4 << 30))
    port = _free_port()
    server: Any
    if own_process:
        server = _ProcessServer(port)
    else:
        from moto.server import ThreadedMotoServer

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
