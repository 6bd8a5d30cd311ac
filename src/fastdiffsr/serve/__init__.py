"""``fastdiffsr serve``: a local web page and HTTP API (the ``serve`` extra: FastAPI, uvicorn)."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UsageError

__all__ = ["run", "running"]


def run(host: str, port: int, models: list[str], limits_overrides: dict) -> None:
    """Serve until interrupted; jobs' folders live in a temporary folder deleted at shutdown."""
    try:
        import uvicorn

        from .app import Limits, create_app
    except ImportError as e:
        raise UsageError(f"fastdiffsr serve needs the serve extra ({e.name} is missing): "
                         "pip install 'fastdiffsr[serve]'") from e
    limits = Limits(**limits_overrides)
    root = Path(tempfile.mkdtemp(prefix="fastdiffsr-serve-"))  # deleted at shutdown (Jobs.close)
    app = create_app(models, limits, root)
    print(f"fastdiffsr: serving {', '.join(models)} on http://{host}:{port}/ "
          f"({limits.workers} worker(s), {limits.queue} queued at most)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` on a thread (port 0: a free one) for the ``with`` block; yields its URL
    (the browser test, the load benchmark and the README's screenshot use it)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(60)
