"""Speed and memory: latency of whole upscales, peak RSS rise (sampled every millisecond in a
fresh process), FLOPs and achieved GFLOP/s."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .upscaler import (
    DEFAULTS,
    UpscaleOptions,
    Upscaler,
    count_params,
    measure_flops,
    model_device,
    upscale_tensor,
)
from .zoo import load_model, method

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakRSS:
    """Context manager sampling RSS every millisecond; ``peak`` is the rise above the start."""

    def __init__(self, interval: float = 1e-3):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self._base = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes() - self._base)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes() - self._base)


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    """This machine's measured float32 matmul rate (GFLOP/s), the floor's denominator."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def bench_model(spec: str, device: str = "cpu", deploy: bool = True) -> Upscaler:
    """A shipped name or a weights file (``load_model``), or a training config ``.toml``: the
    model it configures with random weights, to time a configuration not trained here (the
    paper configs). Cost does not depend on the weights."""
    if not spec.endswith(".toml"):
        return load_model(spec, device, deploy)
    from .train.run import load_recipe  # only a config needs the training side

    name, _, recipe = load_recipe(Path(spec))
    model = method(name).build(recipe.model)
    if deploy:
        model.fuse()
    return model.to(device).eval()


def fresh_process_peak_mb(model: str, lr_side: int, deploy: bool = True, threads: int = 2) -> float:
    """Peak RSS rise (MB) of one upscale in a new process, so no earlier work has grown the heap.

    ``model`` is what ``bench_model`` takes; the baseline is taken after building it.
    """
    code = ("import sys; from fastdiffsr.bench import _child_peak; a = sys.argv; "
            "print(_child_peak(a[1], int(a[2]), a[3] == '1', int(a[4])))")
    out = subprocess.run([sys.executable, "-c", code, model, str(lr_side), str(int(deploy)),
                          str(threads)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _child_peak(model: str, lr_side: int, deploy: bool, threads: int) -> float:
    torch.set_num_threads(threads)
    net = bench_model(model, deploy=deploy)
    x = torch.rand(1, 3, lr_side, lr_side)
    with PeakRSS() as mem:
        upscale_tensor(net, x)
    return mem.peak / 2**20


@dataclass(frozen=True)
class Timing:
    lr_side: int
    latency_s: float  # median over repeats
    flops: int
    tiles: int  # model evaluations per sampling step
    sampling_steps: int  # 0: not a diffusion sampler

    @property
    def gflops_per_s(self) -> float:
        return self.flops / self.latency_s / 1e9


def time_upscale(model: Upscaler, lr_side: int, repeats: int = 5,
                 opts: UpscaleOptions = DEFAULTS) -> Timing:
    """Median latency of ``upscale_tensor`` on a random lr_side^2 image (after one warm-up)."""
    device = model_device(model)
    x = torch.rand(1, 3, lr_side, lr_side, device=device)
    tiles = []
    upscale_tensor(model, x, opts, progress=lambda done, total: tiles.append(total))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        upscale_tensor(model, x, opts)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    flops = measure_flops(model, lambda: upscale_tensor(model, x, opts))
    diffusion = model.default_sampling_steps > 0
    steps = (opts.sampling_steps or model.default_sampling_steps) if diffusion else 0
    return Timing(lr_side, statistics.median(times), flops, tiles[-1], steps)


def bench_table(name: str, model: Upscaler, timings: list[Timing], peaks_mb: list[float],
                threads: int, matmul: float) -> str:
    """Markdown table; a diffusion sampler also gets its sampling steps and the latency per
    sampling step."""
    rows = [f"`{name}`: {count_params(model):,} params, {threads} threads, matmul floor "
            f"{matmul:.0f} GFLOP/s", "",
            "| input -> output | tiles | sampling steps | latency (ms) | per step (ms) "
            "| peak RSS rise (MB) | GFLOPs | achieved GFLOP/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for t, peak in zip(timings, peaks_mb, strict=True):
        side = t.lr_side * model.scale
        per_step = f"{t.latency_s * 1e3 / t.sampling_steps:.1f}" if t.sampling_steps else ""
        rows.append(f"| {t.lr_side}->{side} | {t.tiles} | {t.sampling_steps or ''} | "
                    f"{t.latency_s * 1e3:.1f} | {per_step} | {peak:.0f} | "
                    f"{t.flops / 1e9:.2f} | {t.gflops_per_s:.1f} |")
    return "\n".join(rows)
