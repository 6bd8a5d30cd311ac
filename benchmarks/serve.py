"""Load on ``fastdiffsr serve`` over loopback: N client threads each send small images (upload,
follow the job, download the result) for a bounded count and time, per model; the server runs
in its own process (``fastdiffsr serve``, default limits: 1 worker, 8 queued), so its peak
memory (VmHWM) is its own.

    .venv/bin/python benchmarks/serve.py --clients 1,4,16 --requests 24 --threads 2

writes ``benchmarks/results/serve.md``. A request is counted from the upload to the end of
the download; a 503 (queue full) is an error, as a user would see it.
"""

from __future__ import annotations

import argparse
import io
import platform
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def picture(side: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC).save(buf, "PNG")
    return buf.getvalue()


def one_request(base: str, model: str, data: bytes, deadline: float) -> tuple[float, str]:
    """(seconds, '' or the error) of upload -> job done -> download."""
    start = time.perf_counter()
    with httpx.Client(base_url=base, timeout=120) as client:
        sent = client.post("/v1/upscale", files={"image": ("p.png", data, "image/png")},
                           data={"model": model})
        if sent.status_code != 202:
            return time.perf_counter() - start, f"{sent.status_code}"
        job = sent.json()
        while job["state"] in ("queued", "running"):
            if time.monotonic() > deadline:
                return time.perf_counter() - start, "timeout"
            time.sleep(0.01)
            job = client.get(f"/v1/jobs/{job['id']}").json()
        if job["state"] != "done":
            return time.perf_counter() - start, job["state"]
        result = client.get(job["result"])
        ok = result.status_code == 200 and result.content[:4] == b"\x89PNG"
        return time.perf_counter() - start, "" if ok else f"download {result.status_code}"


def load(base: str, model: str, clients: int, requests: int, side: int,
         seconds: float) -> dict:
    """``requests`` requests from ``clients`` threads, stopped after ``seconds``."""
    deadline = time.monotonic() + seconds
    images = [picture(side, i) for i in range(requests)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda d: one_request(base, model, d, deadline), images))
    wall = time.perf_counter() - start
    ok = sorted(t for t, err in results if not err)
    errors = [err for _, err in results if err]
    pct = (lambda q: np.percentile(ok, q) * 1000) if ok else (lambda q: float("nan"))
    return {"model": model, "clients": clients, "requests": requests, "ok": len(ok),
            "errors": ", ".join(sorted(set(errors))) or "-", "n_errors": len(errors),
            "rps": len(ok) / wall, "p50": pct(50), "p90": pct(90), "p99": pct(99)}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,4,16",
                        help="comma-separated client counts (over 9 the server's queue is full: "
                             "503s)")
    parser.add_argument("--requests", type=int, default=24, help="requests per (model, clients)")
    parser.add_argument("--side", type=int, default=64, help="side of the images sent (px)")
    parser.add_argument("--seconds", type=float, default=120, help="time bound per row")
    parser.add_argument("--models", default="bicubic,rdsr-x4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.md")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "fastdiffsr", "serve", "--port", str(port),
                               "--models", args.models, "--threads", str(args.threads)],
                              stdout=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    lines = ["# `fastdiffsr serve` under load", "",
             f"`benchmarks/serve.py` on {platform.machine()}, loopback, the server in its own "
             f"process with {args.threads} torch threads and its default limits (1 job runs, 8 "
             f"wait); {args.side}x{args.side} PNGs (x4 out); each request is upload -> job done "
             "-> download, from the first byte sent to the last received. Nothing else running.",
             "", "| model | clients | requests | ok | errors | requests/s | p50 ms | p90 ms "
             "| p99 ms | server peak RSS (MB) |", "| --- | ---: | ---: | ---: | --- | ---: | ---: "
             "| ---: | ---: | ---: |"]
    try:
        server.stdout.readline()  # "fastdiffsr: serving ..." once it listens
        for _ in range(600):
            try:
                models = httpx.get(f"{base}/v1/models", timeout=60).json()["models"]
                break
            except httpx.TransportError:
                time.sleep(0.1)
        names = [m["name"] for m in models]
        for model in names:
            for clients in map(int, args.clients.split(",")):
                row = load(base, model, clients, args.requests, args.side, args.seconds)
                lines.append(f"| {model} | {clients} | {row['requests']} | {row['ok']} | "
                             f"{row['errors']} | {row['rps']:.1f} | {row['p50']:.0f} | "
                             f"{row['p90']:.0f} | {row['p99']:.0f} | "
                             f"{peak_rss_mb(server.pid):.0f} |")
                print(lines[-1], flush=True)
                args.out.write_text("\n".join(lines) + "\n")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
