"""The server's jobs: a bounded queue, a bounded number of workers, results kept for a while.

Each job owns one temporary folder (``Jobs.root / <id>``, the id a random hex token the server
makes): the upload is decoded from there under a server-chosen name, the result is written
beside it, and the folder is deleted when the job expires. Nothing a request sends becomes a path.
Workers are threads (``concurrent.futures``): the model work runs in torch, which releases the
GIL, so the HTTP side keeps answering while a job runs.
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..upscaler import Cancelled


class QueueFull(Exception):
    """Every worker is busy and the queue holds its maximum of waiting jobs."""


@dataclass
class Job:
    """One upscale request and what became of it (``state``: queued, running, done, failed or
    cancelled)."""

    id: str
    folder: Path
    model: str
    filename: str  # the name the client gave, shown back and used for the download's name
    note: str | None = None  # advice on the input for this model (zoo.compressed_input_note)
    state: str = "queued"
    done_tiles: int = 0
    total_tiles: int = 0
    error: str | None = None
    result: Path | None = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self, done: int, total: int) -> bool:
        """The upscaler's progress callback: record it; False (cancel) once asked to."""
        self.done_tiles, self.total_tiles = done, total
        return not self.cancel.is_set()

    def view(self) -> dict:
        """The job as the API shows it."""
        now = time.monotonic()
        end = self.finished or now
        return {"id": self.id, "state": self.state, "model": self.model,
                "filename": self.filename, "note": self.note, "done_tiles": self.done_tiles,
                "total_tiles": self.total_tiles, "error": self.error,
                "queued_seconds": round((self.started or end) - self.created, 3),
                "run_seconds": None if self.started is None else round(end - self.started, 3),
                "result": f"/v1/jobs/{self.id}/result" if self.state == "done" else None}


Work = Callable[[Job, Any], Path]  # runs a job on its payload; returns the result (in its folder)


class Jobs:
    """At most ``workers`` jobs run at once and ``queue`` wait; finished jobs (and their
    folders) are deleted ``keep_seconds`` after they finish, or earlier when more than
    ``keep_jobs`` finished ones are held (oldest first)."""

    def __init__(self, root: Path, work: Work, workers: int = 1, queue: int = 8,
                 keep_jobs: int = 32, keep_seconds: float = 600.0):
        self.root, self.work = root, work
        self.workers, self.queue = workers, queue
        self.keep_jobs, self.keep_seconds = keep_jobs, keep_seconds
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upscale")

    def submit(self, model: str, filename: str, prepare: Callable[[Path], Any]) -> Job:
        """A new job: ``prepare(folder)`` makes its payload (what ``work`` gets) in the job's
        new folder; what it raises deletes the job and propagates. Raises ``QueueFull``
        (nothing written) when the queue is full."""
        self.expire()
        with self.lock:
            pending = sum(job.state in ("queued", "running") for job in self.jobs.values())
            if pending >= self.workers + self.queue:
                raise QueueFull(f"{pending} jobs are queued or running (at most "
                                f"{self.workers} run and {self.queue} wait): try again later")
            job_id = secrets.token_hex(16)
            folder = self.root / job_id
            folder.mkdir(parents=True)
            job = Job(job_id, folder, model, filename)
            self.jobs[job_id] = job
        try:
            payload = prepare(folder)
        except BaseException:
            self.forget(job)
            raise
        self.pool.submit(self._run, job, payload)
        return job

    def _run(self, job: Job, payload: Any) -> None:
        if job.cancel.is_set():
            job.state, job.finished = "cancelled", time.monotonic()
            return
        job.state, job.started = "running", time.monotonic()
        try:
            job.result = self.work(job, payload)
            job.state = "done"
        except Cancelled:
            job.state = "cancelled"
        except Exception as e:  # a failed job reports its error; the others carry on
            job.state, job.error = "failed", f"{type(e).__name__}: {e}"
        finally:
            job.finished = time.monotonic()

    def get(self, job_id: str) -> Job | None:
        self.expire()
        with self.lock:
            return self.jobs.get(job_id)

    def expire(self) -> None:
        """Delete finished jobs past ``keep_seconds``, and the oldest beyond ``keep_jobs``."""
        now = time.monotonic()
        with self.lock:
            finished = sorted((j for j in self.jobs.values() if j.finished is not None),
                              key=lambda j: j.finished)
            excess = len(finished) - self.keep_jobs
            stale = [j for i, j in enumerate(finished)
                     if i < excess or now - j.finished > self.keep_seconds]
        for job in stale:
            self.forget(job)

    def forget(self, job: Job) -> None:
        with self.lock:
            self.jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    def close(self) -> None:
        """Cancel what waits or runs, wait for the workers, delete every job's folder and the
        root (the server's shutdown: uvicorn re-raises SIGTERM / SIGINT after it, so nothing
        after ``uvicorn.run`` would run)."""
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for job in jobs:
            self.forget(job)
        shutil.rmtree(self.root, ignore_errors=True)
