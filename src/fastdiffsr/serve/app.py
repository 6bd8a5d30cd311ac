"""The HTTP API and the web page (FastAPI; ``fastdiffsr serve`` runs it under uvicorn).

``POST /v1/upscale`` checks everything it can before a job exists: the body's size while it
arrives (``BodyLimit``: a declared or streamed body over the limit is a 413 before it is
stored), the options, the model, and the image (its declared pixel count is checked from the
header before any pixel is decoded: a decompression bomb is a 413, a corrupt file a 400).
The job then waits in ``Jobs``' bounded queue (503 when full) and runs on a worker thread.
"""


import shutil
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ..api import upscale_picture
from ..commands import output_path
from ..errors import ImageReadError, ImageTooLargeError, OptionError
from ..imageio import SUPPORTED_SUFFIXES, Picture, read_image, write_image
from ..upscaler import UpscaleOptions, Upscaler
from ..zoo import ALIASES, DEFAULT_MODEL, compressed_input_note, load_model, summary
from .jobs import Job, Jobs, QueueFull

MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
               "webp": "image/webp", "bmp": "image/bmp", "tif": "image/tiff",
               "tiff": "image/tiff", "avif": "image/avif"}


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the machine."""

    max_upload_bytes: int = 32 * 1024**2
    max_pixels: int = 4_000_000  # input pixels (2000 x 2000): a x4 output of 64 MP
    max_steps: int = 50  # sampling steps of a diffusion model
    max_outscale: float = 8.0
    workers: int = 1  # jobs that run at once
    queue: int = 8  # jobs that wait
    keep_jobs: int = 32  # finished jobs kept (their results deleted beyond this)
    keep_seconds: float = 600.0  # how long a result is kept


class BodyLimit:
    """ASGI middleware: refuse a body over ``max_bytes`` as it arrives, whether declared
    (Content-Length) or streamed (chunked), before the multipart parser stores it. A streamed
    body that crosses the limit gets the 413 at once; the app then sees the client gone and
    whatever it answers is dropped."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _too_large(self.max_bytes)(scope, receive, send)
        seen, refused = 0, False

        async def counted():
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes and not refused:
                refused = True
                await _too_large(self.max_bytes)(scope, receive, send)
            return {"type": "http.disconnect"} if refused else message

        async def unless_refused(message):
            if not refused:
                await send(message)

        return await self.app(scope, counted, unless_refused)


def _too_large(max_bytes: int) -> JSONResponse:
    return JSONResponse({"detail": f"the upload is over the {max_bytes / 1024**2:.0f} MB limit"},
                        status_code=413)


class Models:
    """The models the server offers, each loaded once on first use (thread-safe)."""

    def __init__(self, names: list[str]):
        self.names = [ALIASES.get(n, n) for n in names]
        self.loaded: dict[str, Upscaler] = {}
        self.lock = threading.Lock()

    def get(self, name: str) -> Upscaler:
        with self.lock:
            if name not in self.loaded:
                self.loaded[name] = load_model(name)
            return self.loaded[name]

    def listing(self) -> list[dict]:
        """Each model's ``zoo.summary`` and what the page needs to offer its options."""
        rows = []
        for name in self.names:
            info = self.get(name).info()
            rows.append({**summary(name), "default_sampling_steps":
                         info["default_sampling_steps"], "seeded": info["seeded"]})
        return rows


def create_app(models: list[str], limits: Limits, root: Path) -> FastAPI:
    """The server: the page at ``/``, the API under ``/v1``; jobs' folders under ``root``."""
    offered = Models(models)
    default = DEFAULT_MODEL if DEFAULT_MODEL in offered.names else offered.names[0]

    def work(job: Job, payload: tuple[Picture, UpscaleOptions, Path]) -> Path:
        pic, opts, dst = payload
        out = upscale_picture(offered.get(job.model), pic, opts, job.progress, levels=True)
        return write_image(dst, out)

    jobs = Jobs(root, work, limits.workers, limits.queue, limits.keep_jobs, limits.keep_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        jobs.close()

    app = FastAPI(title="fastdiffsr", version="1", summary="Diffusion super-resolution on CPU",
                  lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)
    static = resources.files("fastdiffsr.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        """One readable line per bad field (the page shows ``detail`` as it is)."""
        lines = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                 for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(lines)}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (static / "index.html").read_text()

    @app.get("/v1/models", summary="The models offered, with their scores and speed")
    def list_models() -> dict:
        return {"default": default, "models": offered.listing(),
                "limits": {"max_upload_bytes": limits.max_upload_bytes,
                           "max_pixels": limits.max_pixels, "max_steps": limits.max_steps,
                           "max_outscale": limits.max_outscale}}

    @app.post("/v1/upscale", status_code=202, summary="Start an upscale job")
    def upscale(
        image: Annotated[UploadFile, File(description="the picture")],
        model: Annotated[str | None, Form(description="a model name (GET /v1/models)")] = None,
        outscale: Annotated[float | None, Form(gt=0, le=limits.max_outscale)] = None,
        steps: Annotated[int | None, Form(ge=1, le=limits.max_steps)] = None,
        seed: Annotated[int, Form(ge=0, le=2**63 - 1)] = 0,
    ) -> dict:
        name = ALIASES.get(model, model) if model else default
        if name not in offered.names:
            raise HTTPException(400, f"unknown model {name!r}; models: "
                                     f"{', '.join(offered.names)}")
        suffix = Path(image.filename or "").suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            raise HTTPException(415, f"unsupported file type {suffix or '(none)'!r}; "
                                     f"supported: {', '.join(SUPPORTED_SUFFIXES)}")
        try:
            opts = UpscaleOptions(outscale=outscale, sampling_steps=steps, seed=seed)
        except OptionError as e:
            raise HTTPException(422, str(e)) from e
        filename = Path(image.filename or "image").name
        notes: list[str | None] = []

        def store(folder: Path) -> tuple[Picture, UpscaleOptions, Path]:
            """The upload, decoded from a file of the server's naming in the job's folder;
            the advice on it for the model goes to ``notes``."""
            src = folder / f"input{suffix}"
            with src.open("wb") as f:
                shutil.copyfileobj(image.file, f)
            try:
                pic = read_image(src, max_pixels=limits.max_pixels)
            except ImageReadError as e:  # name the user's file, not ours
                status = 413 if isinstance(e, ImageTooLargeError) else 400
                raise HTTPException(status, str(e).replace(str(src), filename)) from e
            finally:
                src.unlink()
            notes.append(compressed_input_note(filename, pic.meta.jpeg_quality, name))
            return pic, opts, output_path(src, folder, "auto", "result")

        try:
            job = jobs.submit(name, filename, store)
        except QueueFull as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "5"}) from e
        job.note = notes[0]
        return job.view()

    @app.get("/v1/jobs/{job_id}", summary="A job's state and progress")
    def job_state(job_id: str) -> dict:
        return _job(jobs, job_id).view()

    @app.delete("/v1/jobs/{job_id}", summary="Cancel a job")
    def cancel(job_id: str) -> dict:
        job = _job(jobs, job_id)
        job.cancel.set()
        return job.view()

    @app.get("/v1/jobs/{job_id}/result", summary="The upscaled picture of a finished job",
             response_class=FileResponse)
    def result(job_id: str) -> FileResponse:
        job = _job(jobs, job_id)
        if job.state != "done" or job.result is None:
            raise HTTPException(409, f"job {job_id} is {job.state}: no result"
                                     + (f" ({job.error})" if job.error else ""))
        ext = job.result.suffix.lstrip(".")
        stem = "".join(c for c in Path(job.filename).stem if c.isalnum() or c in "-_")[:64]
        return FileResponse(job.result, media_type=MEDIA_TYPES.get(ext),
                            filename=f"{stem or 'image'}_{job.model}.{ext}")

    app.state.jobs = jobs
    return app


def _job(jobs: Jobs, job_id: str) -> Job:
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r} (unknown, or its result expired)")
    return job
