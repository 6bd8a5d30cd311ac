"""The HTTP API of ``fastdiffsr serve`` through FastAPI's test client: good images, each kind of
bad input, a full queue, concurrent and failing jobs, expiry, and that nothing a request sends
becomes a path."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from fastdiffsr import upscale  # noqa: E402
from fastdiffsr.serve import app as serve_app  # noqa: E402
from fastdiffsr.serve.app import Limits, create_app  # noqa: E402

MODELS = ["bicubic", "rdsr-x4"]


def png(width: int = 20, height: int = 16, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def png_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    """A PNG whose header declares width x height RGB pixels (100 MP): a few hundred bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def make_client(tmp_path):
    clients = []

    def make(**limits) -> TestClient:
        root = tmp_path / f"jobs{len(clients)}"
        client = TestClient(create_app(MODELS, Limits(**limits), root))
        client.root = root
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def post(client, data: bytes, name: str = "photo.png", **fields):
    return client.post("/v1/upscale", files={"image": (name, data, "image/png")},
                       data={k: str(v) for k, v in fields.items()})


def wait(client, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running") or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def test_an_upscale_job_from_upload_to_download(make_client):
    client = make_client()
    response = post(client, png(), model="bicubic")
    assert response.status_code == 202
    job = wait(client, response.json()["id"])
    assert job["state"] == "done" and job["done_tiles"] == job["total_tiles"] >= 1
    result = client.get(job["result"])
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert 'filename="photo_bicubic-x4.png"' in result.headers["content-disposition"]
    out = np.asarray(Image.open(io.BytesIO(result.content)))
    expected = upscale(np.asarray(Image.open(io.BytesIO(png()))), "bicubic")
    np.testing.assert_array_equal(out, expected)


def test_models_lists_what_the_page_needs(make_client):
    body = make_client().get("/v1/models").json()
    assert body["default"] == "rdsr-x4"
    names = [m["name"] for m in body["models"]]
    assert names == ["bicubic-x4", "rdsr-x4"]
    rdsr = body["models"][1]
    assert rdsr["default"] and rdsr["psnr"]["Set5"] > 30 and rdsr["latency_ms"] > 0
    assert rdsr["seeded"] and rdsr["default_sampling_steps"] == 0
    assert body["limits"]["max_pixels"] == Limits().max_pixels


def test_options_and_jpeg_keep_their_meaning(make_client):
    client = make_client()
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(png())).save(jpeg, "JPEG")
    job = wait(client, post(client, jpeg.getvalue(), "p.jpg", model="bicubic",
                            outscale=2).json()["id"])
    result = client.get(job["result"])
    assert result.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(result.content)).size == (40, 32)


def test_a_compressed_jpeg_for_a_clean_trained_model_gets_a_note(make_client):
    client = make_client()
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(png())).save(jpeg, "JPEG", quality=60)

    def note(data: bytes, name: str, model: str) -> str | None:
        job = post(client, data, name, model=model).json()
        assert wait(client, job["id"])["note"] == job["note"]  # kept with the job
        return job["note"]

    advice = note(jpeg.getvalue(), "p.jpg", "rdsr-x4")
    assert "p.jpg" in advice and "quality 60" in advice and "rdsr-x4-real" in advice
    assert note(jpeg.getvalue(), "p.jpg", "bicubic") is None  # interpolation: nothing to say
    assert note(png(), "p.png", "rdsr-x4") is None


@pytest.mark.parametrize(("data", "name", "fields", "status", "words"), [
    (b"not an image at all", "x.png", {}, 400, "x.png"),
    (png()[:60], "cut.png", {}, 400, "cut.png"),
    (png_bomb(), "bomb.png", {}, 413, "max_pixels"),
    (png(), "p.png", {"model": "nope"}, 400, "unknown model 'nope'"),
    (png(), "p.png", {"steps": 10**6}, 422, "steps"),
    (png(), "p.png", {"outscale": 0}, 422, "outscale"),
    (png(), "p.png", {"seed": -1}, 422, "seed"),
    (png(), "p.png", {"outscale": "abc"}, 422, "outscale"),
    (png(), "p.exe", {}, 415, "unsupported file type"),
    (png(), "", {}, 422, "image"),
])
def test_bad_input_is_a_readable_4xx_and_the_server_serves_on(make_client, data, name, fields,
                                                              status, words):
    client = make_client()
    response = post(client, data, name, **fields)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert str(client.root) not in response.text  # our paths are not the user's business
    assert list(client.root.iterdir()) == [] if client.root.exists() else True
    good = post(client, png(), model="bicubic")
    assert good.status_code == 202 and wait(client, good.json()["id"])["state"] == "done"


def test_an_oversize_upload_is_refused_before_it_is_stored(make_client):
    client = make_client(max_upload_bytes=4096)
    response = post(client, png(64, 64), model="bicubic")  # ~12 KB of noise
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    body = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + png(64, 64) + b"\r\n--b--\r\n")
    chunks = iter([body[i : i + 1000] for i in range(0, len(body), 1000)])  # no length given
    streamed = client.post("/v1/upscale", content=chunks,
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert streamed.status_code == 413
    assert post(client, png(8, 8), model="bicubic").status_code == 202


@pytest.fixture
def gate(monkeypatch):
    """Jobs block until the gate opens; a file named fail.png fails."""
    opened = threading.Event()
    real = serve_app.upscale_picture

    def gated(model, pic, opts, progress, levels):
        assert opened.wait(30)
        if pic.meta is not None and pic.meta.text.get("fail"):
            raise RuntimeError("this one was meant to fail")
        return real(model, pic, opts, progress, levels=levels)

    monkeypatch.setattr(serve_app, "upscale_picture", gated)
    return opened


def test_a_full_queue_is_a_503_and_frees_up(make_client, gate):
    client = make_client(workers=1, queue=1)
    first, second = post(client, png(), model="bicubic"), post(client, png(), model="bicubic")
    assert first.status_code == second.status_code == 202
    full = post(client, png(), model="bicubic")
    assert full.status_code == 503 and full.headers["retry-after"]
    assert "try again later" in full.json()["detail"]
    gate.set()
    assert wait(client, second.json()["id"])["state"] == "done"
    assert post(client, png(), model="bicubic").status_code == 202


def test_concurrent_jobs_each_get_their_own_result_and_a_failure_harms_none(make_client, gate):
    client = make_client(workers=2, queue=4)
    fail = io.BytesIO()
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("fail", "1")
    Image.open(io.BytesIO(png())).save(fail, "PNG", pnginfo=info)
    ids = [post(client, png(10 + i, 12, seed=i), f"p{i}.png", model="bicubic").json()["id"]
           for i in range(4)]
    failed = post(client, fail.getvalue(), "fail.png", model="bicubic").json()["id"]
    gate.set()
    for i, job_id in enumerate(ids):
        job = wait(client, job_id)
        assert job["state"] == "done"
        out = Image.open(io.BytesIO(client.get(job["result"]).content))
        assert out.size == (4 * (10 + i), 48)
    job = wait(client, failed)
    assert job["state"] == "failed" and "meant to fail" in job["error"]
    assert client.get(f"/v1/jobs/{failed}/result").status_code == 409


def test_a_job_can_be_cancelled(make_client, gate):
    client = make_client(workers=1, queue=2)
    running, waiting = (post(client, png(), model="bicubic").json()["id"] for _ in range(2))
    assert client.delete(f"/v1/jobs/{waiting}").status_code == 200
    gate.set()
    assert wait(client, waiting)["state"] == "cancelled"
    assert wait(client, running)["state"] == "done"


def test_nothing_a_request_sends_becomes_a_path(make_client, tmp_path):
    client = make_client()
    job = wait(client, post(client, png(), "../../../evil.png", model="bicubic").json()["id"])
    assert job["state"] == "done" and job["filename"] == "evil.png"
    assert not (tmp_path / "evil.png").exists()
    files = sorted(p.relative_to(client.root) for p in client.root.rglob("*") if p.is_file())
    assert files == [Path(job["id"]) / "input_result.png"]
    assert 'filename="evil_bicubic-x4.png"' in client.get(job["result"]).headers[
        "content-disposition"]
    for probe in ("..", "../jobs0", "%2e%2e", job["id"] + "/../x"):
        assert client.get(f"/v1/jobs/{probe}/result").status_code == 404


def test_finished_jobs_expire_with_their_files(make_client):
    client = make_client(keep_jobs=1)
    first = wait(client, post(client, png(), model="bicubic").json()["id"])
    assert (client.root / first["id"]).is_dir()
    second = wait(client, post(client, png(), model="bicubic").json()["id"])
    assert client.get(f"/v1/jobs/{first['id']}").status_code == 404  # a request expires
    assert not (client.root / first["id"]).exists()
    assert client.get(second["result"]).status_code == 200


def test_the_api_is_documented_and_the_page_is_served(make_client):
    client = make_client()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/upscale", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result",
            "/v1/models"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "http" not in client.get("/static/app.js").text.replace("HTTP API", "")


def test_shutdown_deletes_every_job_folder(tmp_path):
    root = tmp_path / "jobs"
    with TestClient(create_app(MODELS, Limits(), root)) as client:
        wait(client, post(client, png(), model="bicubic").json()["id"])
        assert any(root.iterdir())
    assert not root.exists()
